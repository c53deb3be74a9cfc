"""Shoppers for the failure tests: concurrent buys and lookups, a ledger of what each was told,
the gaps between successful buys, and the checks that every safety property held.

Afterwards: stock never below zero; for every book, initial - final stock = the quantity of its
orders; every acknowledged order is on every order replica, once; no order that nobody was
told of (an outcome left unknown is resolved by retrying its request id); a buy refused as
``Unavailable`` did not run; all replicas of a group hold the same state.
"""

from __future__ import annotations

import contextlib
import itertools
import random
import threading
import time
from collections import Counter
from typing import Any

from pyrostore.client import Client
from pyrostore.config import Settings
from pyrostore.errors import OutcomeUnknown, OutOfStock, Unavailable
from pyrostore.launcher import Cluster
from pyrostore.models import new_request_id
from tests.conftest import settled, wait_until
from tests.test_replication import level, orders_on, proxy


class Ledger:
    """What the shoppers were told, shared between their threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.acked: list[dict[str, Any]] = []
        self.acked_at: list[float] = []  # monotonic time of each acknowledgement
        self.unknown: list[tuple[str, int, int]] = []
        self.not_run: list[str] = []
        self.out_of_stock = 0
        self.lookups = 0

    def longest_gap(self, start: float, end: float) -> float:
        """The longest time within ``[start, end]`` with no buy acknowledged."""
        with self.lock:
            stamps = sorted(t for t in self.acked_at if start <= t <= end)
        points = [start, *stamps, end]
        return max(b - a for a, b in itertools.pairwise(points))


class Shoppers:
    """``count`` threads buying (and looking up) ``items`` until stopped; a context manager."""

    def __init__(self, settings: Settings, items: list[int], *, count: int = 4,
                 seed: int = 677) -> None:
        self.settings, self.items = settings, items
        self.ledger = Ledger()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._shop, args=(seed + n,), daemon=True)
                         for n in range(count)]

    def __enter__(self) -> Shoppers:
        for thread in self._threads:
            thread.start()
        wait_until(lambda: len(self.ledger.acked) >= len(self._threads), what="first buys")
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(120)

    def _shop(self, seed: int) -> None:
        rng, ledger = random.Random(seed), self.ledger
        with Client(settings=self.settings) as client:
            while not self._stop.is_set():
                item, qty, request_id = rng.choice(self.items), rng.randint(1, 2), new_request_id()
                try:
                    order = client.buy(item, qty, request_id=request_id)
                    with ledger.lock:
                        ledger.acked.append(order)
                        ledger.acked_at.append(time.monotonic())
                    client.lookup(item)
                    ledger.lookups += 1
                except OutOfStock:
                    with ledger.lock:
                        ledger.out_of_stock += 1
                except OutcomeUnknown:
                    with ledger.lock:
                        ledger.unknown.append((request_id, item, qty))
                except Unavailable:
                    with ledger.lock:
                        ledger.not_run.append(request_id)


def hold(seconds: float) -> None:
    """Let ``seconds`` pass: a duration the experiment itself chose (a pause, an outage), not
    a wait for something to happen (those use ``wait_until``)."""
    threading.Event().wait(seconds)


def add_books(settings: Settings, stocks: tuple[int, ...]) -> list[int]:
    """New books with these stocks, in a topic of their own; their items."""
    with Client(settings=settings) as admin:
        return [admin.add_book(f"Shelf {n}", "shelf", stock=stock, cost=5)["item"]
                for n, stock in enumerate(stocks)]


def resolve(cluster: Cluster, unknown: list[tuple[str, int, int]]) -> list[dict[str, Any]]:
    """Retry every buy whose outcome was unknown, with its own request id."""
    resolved = []
    with Client(settings=cluster.settings) as client:
        for request_id, item, qty in unknown:
            # OutOfStock: it had not run, and now too little is left: it was never acknowledged
            with contextlib.suppress(OutOfStock):
                resolved.append(client.buy(item, qty, request_id=request_id))
    return resolved


def check_ledger(cluster: Cluster, items: list[int], stocks: tuple[int, ...],
                 ledger: Ledger, *, catalogs: tuple[int, ...] = (1, 2)) -> list[dict[str, Any]]:
    """Every safety property of the module's docstring (``catalogs``: the catalog replicas);
    the orders resolved afterwards."""
    resolved = resolve(cluster, ledger.unknown)
    wait_until(lambda: level(cluster, "catalog", catalogs) and level(cluster, "order"),
               timeout=30, what="both groups level")
    settled(cluster, timeout=30)  # every take the store began has its order, or is given back
    logs = [orders_on(cluster, replica_id) for replica_id in (1, 2)]
    assert logs[0] == logs[1], "the order replicas differ"
    request_ids = [order["request_id"] for order in logs[0]]
    assert len(request_ids) == len(set(request_ids)), "a request id was applied twice"
    told = {order["request_id"] for order in ledger.acked + resolved}
    assert {order["request_id"] for order in ledger.acked} <= set(request_ids), "lost an order"
    assert set(request_ids) <= told, "an order that nobody was told of"
    assert not set(ledger.not_run) & set(request_ids), "an Unavailable buy ran"
    sold: Counter[int] = Counter()
    for order in logs[0]:
        sold[order["item"]] += order["qty"]
    for item, initial in zip(items, stocks, strict=True):
        stocks_seen = []
        for replica_id in catalogs:
            with proxy(cluster, "catalog", replica_id) as catalog:
                stocks_seen.append(catalog.lookup(item)["stock"])
        assert len(set(stocks_seen)) == 1, f"catalog replicas differ on item {item}"
        assert stocks_seen[0] >= 0
        assert initial - stocks_seen[0] == sold[item], f"item {item}: stock and orders disagree"
    return resolved
