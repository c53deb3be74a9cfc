"""Experiment 3, the original report's crash test: 9 buys of book 1 while catalog replicas die.

Book 1 starts with stock 10. After buy 4, catalog replica 1 is killed (SIGKILL); after buy 6
it is restarted, waited for until it serves, and replica 2 is killed; after buy 9 replica 2 is
restarted. Every buy must succeed, and once the replicas are level both catalog replicas must
hold stock 1 and both order replicas 9 orders. Each event is stamped with its offset.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from typing import Any

from benchmarks.pool import BenchError, ClientPool, Job
from benchmarks.stores import (
    primary_of,
    replica_info,
    replica_lookup,
    replica_order_count,
)
from pyrostore.config import Settings
from pyrostore.launcher import Cluster

BUYS = 9
ITEM = 1
KILL_FIRST_AFTER = 4
SWAP_AFTER = 6


class Timeline:
    """Events with their offset in seconds from the start."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._start = clock()
        self.events: list[dict[str, Any]] = []

    def add(self, event: str, **details: Any) -> None:
        """Record ``event`` now."""
        self.events.append({"t_s": self._clock() - self._start, "event": event, **details})


def run_crash(pool: ClientPool, cluster: Cluster, *, tick: Callable[[int], None],
              level_timeout: float = 60.0) -> dict[str, Any]:
    """Run the experiment on ``cluster`` (a fresh store: book 1 at stock 10)."""
    settings = cluster.settings
    timeline = Timeline()
    start_stock = replica_lookup(settings, 1, ITEM)["stock"]
    timeline.add("start", stock=start_stock, catalog_primary=primary_of(settings, "catalog"))
    latencies: list[float] = []
    for number in range(1, BUYS + 1):
        [result] = pool.run([Job("ops", settings, op="buy", count=1, items=(ITEM,))])
        latencies.append(1000 * result.latencies["buy"][0])
        timeline.add(f"buy {number} ok", latency_ms=latencies[-1])
        tick(1)
        if number == KILL_FIRST_AFTER:
            _kill(cluster, timeline, 1)
        elif number == SWAP_AFTER:
            _restart(cluster, timeline, 1)
            _kill(cluster, timeline, 2)
    _restart(cluster, timeline, 2)
    _wait_level(settings, level_timeout)
    timeline.add("all replicas serving and level")
    final = {
        "catalog_stock": {str(i): replica_lookup(settings, i, ITEM)["stock"] for i in (1, 2)},
        "order_count": {str(i): replica_order_count(settings, i) for i in (1, 2)},
    }
    return {"item": ITEM, "start_stock": start_stock, "buys_ok": len(latencies),
            "buy_latency_ms": latencies, "events": timeline.events, "final": final}


def _kill(cluster: Cluster, timeline: Timeline, replica_id: int) -> None:
    was_primary = primary_of(cluster.settings, "catalog") == replica_id
    cluster.kill("catalog", replica_id, signal.SIGKILL)
    timeline.add(f"kill catalog {replica_id} (SIGKILL)", was_primary=was_primary)


def _restart(cluster: Cluster, timeline: Timeline, replica_id: int) -> None:
    cluster.spawn("catalog", replica_id)
    timeline.add(f"restart catalog {replica_id}")
    cluster.wait_ready("catalog", replica_id, timeout=60)
    timeline.add(f"catalog {replica_id} serving",
                 primary=primary_of(cluster.settings, "catalog"))


def _wait_level(settings: Settings, timeout: float) -> None:
    """Wait until both replicas of each group serve at the same applied position."""
    deadline = time.monotonic() + timeout
    delay = 0.02
    while time.monotonic() < deadline:
        if all(_level(settings, group) for group in ("catalog", "order")):
            return
        time.sleep(delay)  # polling a condition with a deadline; nothing to wait on
        delay = min(delay * 2, 0.25)
    raise BenchError(f"the replicas were not level within {timeout:.0f} s")


def _level(settings: Settings, group: str) -> bool:
    rows = [replica_info(settings, group, i) for i in (1, 2)]
    return all(r.get("serving") for r in rows) and rows[0]["applied"] == rows[1]["applied"]
