"""Per-method timings: count, mean, p50 and p99, as every service's ``stats()`` returns them.

The mean is over every call since start; the percentiles over the most recent
``window`` calls, so a long-running service reports its present, not its whole past. Given a
Prometheus registry, every call recorded is also observed, once, by the histogram
``pyrostore_request_duration_seconds{method}`` there (whose ``_count`` is the calls so far:
:meth:`MethodStats.reset` leaves it alone, since Prometheus counters only grow).
"""

from __future__ import annotations

import functools
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, TypeVar

from prometheus_client import CollectorRegistry, Histogram

F = TypeVar("F", bound=Callable[..., Any])
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                   5.0, 10.0)
"""Upper bounds (seconds) of the request histogram's buckets: a call within a process takes
well under a millisecond, one through a frontend a few, a failover a few seconds."""


class MethodStats:
    """Thread-safe latency records, one series per method name."""

    def __init__(self, *, window: int = 10_000, clock: Callable[[], float] = time.perf_counter,
                 registry: CollectorRegistry | None = None):
        self._window = window
        self.clock = clock
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}
        self._totals: dict[str, float] = {}
        self._recent: dict[str, deque[float]] = {}
        self._histogram = None if registry is None else Histogram(
            "pyrostore_request_duration_seconds", "Time a service took to answer a call, by method",
            ["method"], registry=registry, buckets=LATENCY_BUCKETS)

    def record(self, method: str, seconds: float) -> None:
        """Add one call of ``method`` that took ``seconds``."""
        with self._lock:
            self._counts[method] = self._counts.get(method, 0) + 1
            self._totals[method] = self._totals.get(method, 0.0) + seconds
            self._recent.setdefault(method, deque(maxlen=self._window)).append(seconds)
        if self._histogram is not None:
            self._histogram.labels(method).observe(seconds)

    def timed(self, method: str, func: Callable[..., Any]) -> Callable[..., Any]:
        """``func`` wrapped so every call, raising or not, is recorded under ``method``."""
        clock = self.clock

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            start = clock()
            try:
                return func(*args, **kwargs)
            finally:
                self.record(method, clock() - start)

        return wrapper

    def snapshot(self) -> dict[str, dict[str, float]]:
        """``{method: {count, mean_ms, p50_ms, p99_ms}}`` for every method called so far."""
        with self._lock:
            series = {
                name: (self._counts[name], self._totals[name], sorted(recent))
                for name, recent in self._recent.items()
            }
        return {
            name: {
                "count": count,
                "mean_ms": 1000 * total / count,
                "p50_ms": 1000 * percentile(ordered, 50),
                "p99_ms": 1000 * percentile(ordered, 99),
            }
            for name, (count, total, ordered) in series.items()
        }

    def reset(self) -> None:
        """Forget every record (benchmarks call this between experiments)."""
        with self._lock:
            self._counts.clear()
            self._totals.clear()
            self._recent.clear()


def percentile(ordered: list[float], pct: float) -> float:
    """The ``pct`` percentile of an already sorted list (nearest rank); 0.0 if empty."""
    if not ordered:
        return 0.0
    rank = max(1, -(-len(ordered) * pct // 100))  # ceil(n * pct / 100), at least 1
    return ordered[int(rank) - 1]


def timed_methods(cls: type) -> type:
    """Class decorator: time every public method marked exposed to Pyro5 (``_pyroExposed``).

    The instance must have a ``metrics`` attribute (a :class:`MethodStats`). ``stats`` itself
    is left untimed so that reading the figures does not change them.
    """
    for name, member in list(vars(cls).items()):
        if name.startswith("_") or name == "stats" or not callable(member):
            continue
        if not getattr(member, "_pyroExposed", False):
            continue
        setattr(cls, name, _timed_method(name, member))
    return cls


def _timed_method(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(func)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        metrics: MethodStats = self.metrics
        start = metrics.clock()
        try:
            return func(self, *args, **kwargs)
        finally:
            metrics.record(name, metrics.clock() - start)

    return wrapper
