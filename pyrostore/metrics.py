"""Per-method timings: count, mean, p50 and p99, as every service's ``stats()`` returns them.

The mean is over every call since start; the percentiles over the most recent
``window`` calls, so a long-running service reports its present, not its whole past.
"""

from __future__ import annotations

import functools
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


class MethodStats:
    """Thread-safe latency records, one series per method name."""

    def __init__(self, *, window: int = 10_000, clock: Callable[[], float] = time.perf_counter):
        self._window = window
        self.clock = clock
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}
        self._totals: dict[str, float] = {}
        self._recent: dict[str, deque[float]] = {}

    def record(self, method: str, seconds: float) -> None:
        """Add one call of ``method`` that took ``seconds``."""
        with self._lock:
            self._counts[method] = self._counts.get(method, 0) + 1
            self._totals[method] = self._totals.get(method, 0.0) + seconds
            self._recent.setdefault(method, deque(maxlen=self._window)).append(seconds)

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
