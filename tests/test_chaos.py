"""Concurrent buys while random replicas of both groups and random coordinators (leader or
follower) are killed with -9 and restarted; afterwards every safety property of
:mod:`tests.shopping` holds."""

from __future__ import annotations

import itertools
import random
import threading
import time
from pathlib import Path

import pytest

from pyrostore.discovery import survey
from pyrostore.launcher import Cluster
from tests.conftest import start_cluster, wait_until
from tests.shopping import Shoppers, add_books, check_ledger
from tests.test_replication import info, restart, serving

CHAOS_SECONDS = 20.0
MIN_KILLS = 6
STOCKS = (3000, 3000, 10)
"""Two books that last the whole run, so writes go on through every kill; one that sells out."""


def coordinator_victim(cluster: Cluster, rng: random.Random) -> tuple[int, str]:
    """A coordinator to kill, the leader half the time, and its Raft state."""
    rows = [row for row in survey(cluster.settings) if row["role"] == "coordinator"]
    wanted = rng.choice(["leader", "follower"])
    row = next((r for r in rows if r.get("state") == wanted), rng.choice(rows))
    return int(row["id"]), str(row.get("state"))


def wreak_havoc(cluster: Cluster, seconds: float, rng: random.Random) -> list[str]:
    """Kill and restart a coordinator, a catalog replica and an order replica in turn (random
    ones, for random times), for ``seconds`` and at least MIN_KILLS times (a busy machine
    fits fewer in the time); never the last live one of a group nor a coordinator majority."""
    events, deadline, pause = [], time.monotonic() + seconds, threading.Event()
    targets = itertools.cycle(["coordinator", "catalog", "order"])
    while time.monotonic() < deadline or len(events) < MIN_KILLS:
        target = next(targets)
        wait_until(lambda: serving(cluster, "catalog") and serving(cluster, "order"),
                   timeout=30, what="both groups serving")
        if target == "coordinator":
            victim, role = coordinator_victim(cluster, rng)
        else:
            victim = rng.choice([1, 2])
            role = info(cluster, target, victim)["state"]
        cluster.kill(target, victim)
        events.append(f"killed {target} {victim} ({role})")
        pause.wait(rng.uniform(0.2, 1.5))  # how long it stays down is part of the experiment
        restart(cluster, target, victim)
    return events


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_no_order_is_lost_doubled_or_oversold_under_chaos(tmp_path: Path) -> None:
    cluster = start_cluster(tmp_path / "store")
    try:
        items = add_books(cluster.settings, STOCKS)
        with Shoppers(cluster.settings, items) as shoppers:
            events = wreak_havoc(cluster, CHAOS_SECONDS, random.Random(677))
        ledger = shoppers.ledger
        resolved = check_ledger(cluster, items, STOCKS, ledger)
        assert len(ledger.acked) > 20, f"too few buys to mean anything: {len(ledger.acked)}"
        assert len(events) >= MIN_KILLS, events
        assert {event.split()[1] for event in events} == {"coordinator", "catalog", "order"}
        print(f"chaos: {len(ledger.acked)} acknowledged, {len(ledger.unknown)} unknown "
              f"({len(resolved)} applied), {len(ledger.not_run)} unavailable, "
              f"{ledger.out_of_stock} out of stock; {len(events)} kills: {events}")
    finally:
        cluster.stop()
