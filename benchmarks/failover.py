"""Experiment 5: how long buys stop when one process dies.

While ``SHOPPERS`` threads of this process buy without pause (each its own
:class:`pyrostore.Client`), one process at a time is killed with SIGKILL and restarted: the
coordinator leader, a coordinator follower, the catalog primary, the order primary and a
catalog backup, ``kills`` times each. A kill's *gap* is the longest time without an
acknowledged buy from just before it until the first buy acknowledged after the window in
which it can still stop buys (a lease for a coordinator, whose death ends no lease at once;
0.1 s for a replica).
"""

from __future__ import annotations

import itertools
import signal
import statistics
import threading
import time
from collections.abc import Callable
from typing import Any

from benchmarks.pool import BenchError
from benchmarks.stores import shelve_books
from pyrostore.client import Client
from pyrostore.config import Settings
from pyrostore.discovery import survey
from pyrostore.errors import PyrostoreError
from pyrostore.launcher import Cluster
from pyrostore.models import new_request_id

SHOPPERS = 4
VICTIMS = (("coordinator", "leader"), ("coordinator", "follower"), ("catalog", "primary"),
           ("order", "primary"), ("catalog", "backup"))
"""What is killed, by role and by its state in ``pyrostore status``."""


class Buys:
    """Shoppers buying without pause, and when each buy was acknowledged."""

    def __init__(self, settings: Settings, items: tuple[int, ...]) -> None:
        self.settings, self.items = settings, items
        self.lock = threading.Lock()
        self.acked: list[float] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._buy, args=(n,), daemon=True)
                         for n in range(SHOPPERS)]

    def __enter__(self) -> Buys:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)

    def _buy(self, number: int) -> None:
        with Client(settings=self.settings) as client:
            while not self._stop.is_set():
                item = self.items[number % len(self.items)]
                try:
                    client.buy(item, 1, request_id=new_request_id())
                except PyrostoreError:
                    continue  # a failover under way: the gap is what is measured
                with self.lock:
                    self.acked.append(time.monotonic())

    def gap_after(self, kill: float, window: float, timeout: float = 30.0) -> float:
        """The longest time without a buy from ``kill`` to the first buy after the window."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                after = [t for t in self.acked if t > kill + window]
                if after:
                    stamps = [t for t in self.acked if kill - 0.05 <= t <= after[0]]
                    points = [kill - 0.05, *stamps]
                    return max(b - a for a, b in itertools.pairwise(points))
            time.sleep(0.05)  # polling the shoppers' record; nothing to wait on
        raise BenchError(f"no buy went through within {timeout:.0f} s of a kill")


def run_failover(cluster: Cluster, *, kills: int, tick: Callable[[int], None]
                 ) -> dict[str, Any]:
    """Kill each victim ``kills`` times under buys; the gaps, by victim."""
    settings = cluster.settings
    items = shelve_books(settings)
    series: dict[str, dict[str, Any]] = {}
    with Buys(settings, items) as buys:
        for role, state in VICTIMS:
            window = settings.lease * 1.2 if role == "coordinator" else 0.1
            gaps = []
            for _ in range(kills):
                victim = _find(settings, role, state)
                killed_at = time.monotonic()
                cluster.kill(role, victim, signal.SIGKILL)
                gaps.append(buys.gap_after(killed_at, window))
                cluster.spawn(role, victim)
                cluster.wait_ready(role, victim, timeout=60)
                tick(1)
            series[f"{role} {state}"] = {"gaps_s": gaps, "median_s": statistics.median(gaps),
                                         "worst_s": max(gaps)}
    return {"kills": kills, "shoppers": SHOPPERS, "lease_s": settings.lease, "series": series}


def _find(settings: Settings, role: str, state: str, timeout: float = 30.0) -> int:
    """The id of a service of ``role`` now in ``state`` (waiting for one)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for row in survey(settings):
            if row["role"] == role and row.get("state") == state:
                return int(row["id"])
        time.sleep(0.1)  # polling the cluster's status; nothing to wait on
    raise BenchError(f"no {role} was {state} within {timeout:.0f} s")
