"""Concurrent buys while random replicas of both groups are killed with -9 and restarted.

Afterwards: stock never below zero; for every book, initial - final stock = the quantity of its
orders; every acknowledged order is on every order replica, once; no order that nobody was
told of (an outcome left unknown is resolved by retrying its request id); a buy refused as
``Unavailable`` did not run; all replicas of a group hold the same state.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from pyrostore.client import Client
from pyrostore.errors import OutcomeUnknown, OutOfStock, Unavailable
from pyrostore.launcher import Cluster
from tests.conftest import start_cluster, wait_until
from tests.test_replication import info, level, orders_on, proxy, restart

CHAOS_SECONDS = 20.0
SHOPPERS = 4
STOCKS = (3000, 3000, 10)
"""Two books that last the whole run, so writes go on through every kill; one that sells out."""


class Ledger:
    """What the shoppers were told, shared between their threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.acked: list[dict[str, Any]] = []
        self.unknown: list[tuple[str, int, int]] = []
        self.not_run: list[str] = []
        self.out_of_stock = 0


def shop(settings: Any, items: list[int], seed: int, stop: threading.Event,
         ledger: Ledger) -> None:
    rng = random.Random(seed)
    with Client(settings=settings) as client:
        while not stop.is_set():
            item, qty, request_id = rng.choice(items), rng.randint(1, 2), uuid.uuid4().hex
            try:
                order = client.buy(item, qty, request_id=request_id)
                with ledger.lock:
                    ledger.acked.append(order)
            except OutOfStock:
                with ledger.lock:
                    ledger.out_of_stock += 1
            except OutcomeUnknown:
                with ledger.lock:
                    ledger.unknown.append((request_id, item, qty))
            except Unavailable:
                with ledger.lock:
                    ledger.not_run.append(request_id)


def wreak_havoc(cluster: Cluster, seconds: float, rng: random.Random) -> list[str]:
    """Kill and restart random replicas, never the last live one of a group."""
    events, deadline, pause = [], time.monotonic() + seconds, threading.Event()
    while time.monotonic() < deadline:
        group, victim = rng.choice(["catalog", "order"]), rng.choice([1, 2])
        wait_until(lambda g=group: level(cluster, g), timeout=30, what=f"{group} level")
        role = info(cluster, group, victim)["state"]
        cluster.kill(group, victim)
        events.append(f"killed {group} {victim} ({role})")
        pause.wait(rng.uniform(0.2, 1.5))  # how long it stays down is part of the experiment
        restart(cluster, group, victim)
    return events


@pytest.mark.timeout(300)
def test_no_order_is_lost_doubled_or_oversold_under_chaos(tmp_path: Path) -> None:
    cluster = start_cluster(tmp_path / "store")
    try:
        with Client(settings=cluster.settings) as admin:
            items = [admin.add_book(f"Chaos {n}", "chaos", stock=stock, cost=5)["item"]
                     for n, stock in enumerate(STOCKS)]
        stop, ledger = threading.Event(), Ledger()
        shoppers = [threading.Thread(target=shop, args=(cluster.settings, items, seed, stop,
                                                        ledger)) for seed in range(SHOPPERS)]
        for shopper in shoppers:
            shopper.start()
        try:
            events = wreak_havoc(cluster, CHAOS_SECONDS, random.Random(677))
        finally:
            stop.set()
            for shopper in shoppers:
                shopper.join(120)
        resolved = resolve(cluster, ledger.unknown)
        wait_until(lambda: level(cluster, "catalog") and level(cluster, "order"), timeout=30,
                   what="both groups level")
        check(cluster, items, ledger, resolved, events)
        print(f"chaos: {len(ledger.acked)} acknowledged, {len(ledger.unknown)} unknown "
              f"({len(resolved)} applied), {len(ledger.not_run)} unavailable, "
              f"{ledger.out_of_stock} out of stock; {len(events)} kills: {events}")
    finally:
        cluster.stop()


def resolve(cluster: Cluster, unknown: list[tuple[str, int, int]]) -> list[dict[str, Any]]:
    """Retry every buy whose outcome was unknown, with its own request id."""
    resolved = []
    with Client(settings=cluster.settings) as client:
        for request_id, item, qty in unknown:
            # OutOfStock: it had not run, and now too little is left: it was never acknowledged
            with contextlib.suppress(OutOfStock):
                resolved.append(client.buy(item, qty, request_id=request_id))
    return resolved


def check(cluster: Cluster, items: list[int], ledger: Ledger,
          resolved: list[dict[str, Any]], events: list[str]) -> None:
    logs = [orders_on(cluster, replica_id) for replica_id in (1, 2)]
    assert logs[0] == logs[1], "the order replicas differ"
    log = logs[0]
    request_ids = [order["request_id"] for order in log]
    assert len(request_ids) == len(set(request_ids)), "a request id was applied twice"
    told = {order["request_id"] for order in ledger.acked + resolved}
    assert {order["request_id"] for order in ledger.acked} <= set(request_ids), "lost an order"
    assert set(request_ids) <= told, "an order that nobody was told of"
    assert not set(ledger.not_run) & set(request_ids), "an Unavailable buy ran"
    sold = Counter()
    for order in log:
        sold[order["item"]] += order["qty"]
    for item, initial in zip(items, STOCKS, strict=True):
        stocks = []
        for replica_id in (1, 2):
            with proxy(cluster, "catalog", replica_id) as catalog:
                stocks.append(catalog.lookup(item)["stock"])
        assert stocks[0] == stocks[1], f"catalog replicas differ on item {item}"
        assert stocks[0] >= 0
        assert initial - stocks[0] == sold[item], f"item {item}: stock and orders disagree"
    assert len(ledger.acked) > 20, f"too few buys to mean anything: {len(ledger.acked)}"
    assert len(events) >= 4, events
