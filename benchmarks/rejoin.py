"""The rejoin experiment: write latency while a catalog backup rejoins, by catch-up and by snapshot.

For each catalog size and each path a store of its own (2 catalog + 2 order replicas, 1
frontend, the cache on) is seeded with that many generated books, and its first
:data:`FIRST_BUYS` buys are made one by one. Then one client process (a
:class:`~benchmarks.shopper.Shopper`) buys without pause, stamping each buy. After
:data:`WARM_UP_S` the catalog backup is SIGKILLed; once the coordinators' view has dropped it
and :data:`AWAY_S` more seconds of buys have gone by, it is restarted as the crash experiment
restarts a replica, and polled until its ``info()`` says it is a serving backup again. The
figures: the time to rejoin (from the restart until it serves, to within a poll), the latency
of every buy in flight at any moment of that window, and the longest time without an
acknowledged buy from the restart on.

The "snapshot" path runs the whole store with ``PYROSTORE_CATCH_UP_LIMIT=0`` (a rejoining
replica may receive no missed operations from the primary's log, so it always takes a
snapshot); "catch-up" runs it with the default. A release without that setting ignores the
variable: both paths then rejoin as it always does, and ``catch_up_limit`` is None in the
figures. The replica's own account of the path it took, ``info()["rejoin"]``, is kept when
the release reports one.
"""

from __future__ import annotations

import contextlib
import itertools
import random
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import Pyro5.errors

from benchmarks.figures import summarize
from benchmarks.pool import BenchError
from benchmarks.scale import SizedStore, sized_store
from benchmarks.shopper import Attempt, Shopper
from benchmarks.stores import Stores, replica_info, services, view_of
from pyrostore.client import Client
from pyrostore.config import Settings
from pyrostore.discovery import make_proxy
from pyrostore.errors import NotFound, PyrostoreError

PATHS: dict[str, dict[str, str]] = {"catch-up": {},
                                    "snapshot": {"PYROSTORE_CATCH_UP_LIMIT": "0"}}
"""Each path, and the variables its store runs with."""
FIRST_BUYS = 20
"""Buys acknowledged one by one before the shopper starts, timed apart (``first_buys``): a
fresh store's first writes can wait for seconds (with a million books, 4 s, or two in a row
over the 10 s call timeout, while its second catalog replica joined once more by snapshot
just after the store said it was up), a cost of the store's start, not of a rejoin."""
WARM_UP_S = 2.0
"""Seconds of buys before the backup is killed; the last :data:`BEFORE_S` of them are the
steady state the figures are set against."""
BEFORE_S = 1.0
AWAY_S = 1.0
"""Seconds of buys, after the view has dropped the killed backup, before its restart."""
TAIL_S = 0.3
"""Seconds of buys after it serves again, so the window's last buys are complete."""
REJOIN_TIMEOUT_S = 300.0
POLL_S = 0.02


def rejoin_series(stores: Stores, root: Path, *, sizes: list[int], serializer: str,
                  tick: Callable[[int], None],
                  on_store: Callable[[str], None] = lambda _: None) -> list[dict[str, Any]]:
    """:func:`run_rejoin` for each size and path, each on a store of its own."""
    rows = []
    for books in sizes:
        for path, variables in PATHS.items():
            on_store(f"rejoin: store with {books:,} books, {path} path")
            with sized_store(stores, root, books, serializer=serializer, cache=True,
                             name=f"-{path}", variables=variables) as store:
                row = run_rejoin(store, books=books, on_step=on_store)
            rows.append({"path": path, **row})
            tick(1)
    return rows


def run_rejoin(store: SizedStore, *, books: int,
               on_step: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """Kill the catalog backup of ``store`` under buys, restart it, and time its return."""
    settings, cluster = store.settings, store.cluster
    items = tuple(random.Random(books).sample(range(1, books + 1), min(books, 1000)))
    first_buys = _first_buys(settings, items)
    with Shopper(settings, items) as shopper:
        time.sleep(WARM_UP_S)  # a timed phase of the experiment, not a wait on a condition
        backup = _backup(settings)
        killed = time.monotonic()
        cluster.kill("catalog", backup, signal.SIGKILL)
        _wait(lambda: backup not in view_of(settings, "catalog")["backups"],
              f"the view still names catalog {backup} a backup")
        dropped = time.monotonic()
        time.sleep(AWAY_S)  # buys the backup misses
        restarted = time.monotonic()
        child = cluster.spawn("catalog", backup)
        on_step(f"rejoin: catalog {backup} killed and restarted; waiting until it serves")
        with Watch(settings, "catalog", backup, child.pid) as watch:
            info = _wait(watch.serving_backup, f"catalog {backup} did not serve as a backup")
        served = time.monotonic()
        time.sleep(TAIL_S)
        attempts = shopper.stop()
    return {
        "books": books, "backup": backup,
        "catch_up_limit": getattr(settings, "catch_up_limit", None),
        "catalog_start_s": store.catalog_start_s, "first_buys": first_buys,
        "drop_s": dropped - killed,
        "away_s": restarted - killed, "rejoin_s": served - restarted,
        "missed_buys": sum(1 for start, took, error in attempts
                           if not error and killed <= start + took < restarted),
        "rejoin": info.get("rejoin"),
        "during": {**window(attempts, restarted, served),
                   "stalled_s": longest_stall(attempts, restarted, served)},
        # ended before the kill: the buy in flight at the kill waits for the backup's drop
        "before": window([a for a in attempts if a[0] + a[1] < killed], killed - BEFORE_S,
                         killed),
        "failed_buys": sum(1 for *_, error in attempts if error),
        "level": _level(settings),
        # every attempt: [start, ms, error], the start in seconds from the restart
        "attempts": [[round(start - restarted, 4), round(1000 * took, 3), error]
                     for start, took, error in attempts],
    }


def window(attempts: list[Attempt], start: float, end: float) -> dict[str, Any]:
    """Each buy in flight at any moment from ``start`` to ``end``, acknowledged or refused
    (a refused one's time is how long its shopper waited): ``{count, mean_ms, p50_ms, p99_ms,
    max_ms, failed}``."""
    inside = [(took, error) for began, took, error in attempts
              if began <= end and began + took >= start]
    latencies = [took for took, _ in inside]
    return {**summarize(latencies), "max_ms": 1000 * max(latencies) if latencies else None,
            "failed": sum(1 for _, error in inside if error)}


def longest_stall(attempts: list[Attempt], start: float, end: float) -> float:
    """The longest time without an acknowledged buy from ``start`` until the first buy
    acknowledged after ``end`` (or the last attempt's end, if none was)."""
    acks = sorted(began + took for began, took, error in attempts if not error)
    stop = next((ack for ack in acks if ack >= end),
                max((began + took for began, took, _ in attempts), default=end))
    points = [start, *(ack for ack in acks if start < ack < stop), max(stop, start)]
    return max(b - a for a, b in itertools.pairwise(points))


class Watch:
    """``info()`` of one replica process, through one connection kept between polls (so
    polling every :data:`POLL_S` costs a round trip, not a lookup and a TLS handshake)."""

    def __init__(self, settings: Settings, role: str, replica_id: int, pid: int | None) -> None:
        self.settings, self.role, self.replica_id, self.pid = settings, role, replica_id, pid
        self._proxy: Any = None

    def __enter__(self) -> Watch:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def serving_backup(self) -> dict[str, Any]:
        """Its ``info()`` if that process answers as a serving backup, else ``{}``."""
        try:
            if self._proxy is None:
                uri = services(self.settings).get((self.role, self.replica_id))
                if uri is None:
                    return {}
                self._proxy = make_proxy(uri, self.settings, timeout=2.0)
            info = dict(self._proxy.info())
        except (NotFound, Pyro5.errors.CommunicationError):
            self.close()  # not registered yet, or the entry of the process that was killed
            return {}
        if info.get("pid") != self.pid:
            self.close()
            return {}
        return info if info.get("state") == "backup" and info.get("serving") else {}

    def close(self) -> None:
        """Drop the connection."""
        if self._proxy is not None:
            with contextlib.suppress(Exception):
                self._proxy._pyroRelease()
            self._proxy = None


def _first_buys(settings: Settings, items: tuple[int, ...]) -> list[list[Any]]:
    """Buy one by one until :data:`FIRST_BUYS` are acknowledged; ``[ms, error]`` of each
    attempt (error "" if acknowledged)."""
    attempts: list[list[Any]] = []
    deadline = time.monotonic() + REJOIN_TIMEOUT_S
    with Client(settings=settings) as client:
        while sum(1 for _, error in attempts if not error) < FIRST_BUYS:
            if time.monotonic() > deadline:
                raise BenchError(f"the store's first buys failed: {attempts}")
            began, error = time.perf_counter(), ""
            try:
                client.buy(items[len(attempts) % len(items)])
            except PyrostoreError as exc:
                error = type(exc).__name__
            attempts.append([1000 * (time.perf_counter() - began), error])
    return attempts


def _backup(settings: Settings) -> int:
    """The catalog group's backup (the group has two replicas, so one)."""
    backups = _wait(lambda: view_of(settings, "catalog")["backups"], "no catalog backup")
    return int(backups[0])


def _level(settings: Settings, timeout: float = 30.0) -> bool:
    """Whether both catalog replicas serve at one applied position (buys have stopped)."""
    with contextlib.suppress(BenchError):
        _wait(lambda: _at_one_position(settings), "not level", timeout=timeout)
        return True
    return False


def _at_one_position(settings: Settings) -> bool:
    rows = [replica_info(settings, "catalog", i) for i in (1, 2)]
    return all(r.get("serving") for r in rows) and rows[0]["applied"] == rows[1]["applied"]


def _wait(probe: Callable[[], Any], failure: str, *, timeout: float = REJOIN_TIMEOUT_S) -> Any:
    """``probe()``'s first true answer, polled every :data:`POLL_S`, or :class:`BenchError`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if answer := probe():
            return answer
        time.sleep(POLL_S)  # polling the store's state; nothing to wait on
    raise BenchError(f"{failure} within {timeout:.0f} s")
