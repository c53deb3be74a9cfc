"""The frontends' caches on a real store: hits stay local, and no read is older than a write."""

from __future__ import annotations

import contextlib
import random
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import Pyro5.api
import pytest

from pyrostore.client import Client
from pyrostore.discovery import find, make_proxy
from pyrostore.launcher import Cluster
from tests.conftest import start_cluster, wait_until
from tests.test_replication import primary

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def two_frontends(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A 2+2 store with two frontends, shared by the tests that only add stock or buy."""
    cluster = start_cluster(tmp_path_factory.mktemp("cached"), frontends=2)
    try:
        yield cluster
    finally:
        cluster.stop()


def frontend(cluster: Cluster, replica_id: int) -> Pyro5.api.Proxy:
    return make_proxy(find(cluster.settings, "frontend")[f"pyrostore.frontend.{replica_id}"],
                      cluster.settings, timeout=30)


READS = {"lookup", "lookup_at", "search", "search_at", "topics", "topics_at"}
"""The catalog's reads (its other calls: cache-lease renewals, replication, go on anyway)."""


def catalog_calls(cluster: Cluster) -> int:
    """Every read the catalog replicas have served so far."""
    total = 0
    for uri in find(cluster.settings, "catalog").values():
        with make_proxy(uri, cluster.settings) as catalog:
            total += sum(m["count"] for name, m in catalog.stats()["methods"].items()
                         if name in READS)
    return total


def cache_stats(cluster: Cluster, replica_id: int) -> dict[str, Any]:
    with frontend(cluster, replica_id) as fe:
        return dict(fe.stats()["cache"])


def new_book(cluster: Cluster, stock: int) -> int:
    with Client(settings=cluster.settings) as admin:
        return int(admin.add_book(f"Cached {random.random()}", "caching", stock=stock,
                                  cost=10)["item"])


def is_a_hit(cluster: Cluster, read: Callable[[], object]) -> bool:
    """Whether ``read`` (through frontend 1) was answered from its cache."""
    hits = cache_stats(cluster, 1)["hits"]
    read()
    return bool(cache_stats(cluster, 1)["hits"] == hits + 1)


def wait_for_leases(cluster: Cluster) -> None:
    """Both frontends hold a cache lease (right after start-up they may not yet)."""
    wait_until(lambda: all(cache_stats(cluster, i)["lease_left"] > 0 for i in (1, 2)),
               what="cache leases")


def test_a_hit_does_not_reach_the_catalog(two_frontends: Cluster) -> None:
    wait_for_leases(two_frontends)
    item = new_book(two_frontends, 5)
    with frontend(two_frontends, 1) as fe:
        first, found = fe.lookup(item), fe.search("caching")  # misses: they fill
        for read in (lambda: fe.lookup(item), lambda: fe.search("caching")):
            # a fill still in flight when the cache lease is renewed is not kept: read again
            wait_until(lambda read=read: is_a_hit(two_frontends, read), what="a cached entry")
        before, hits = catalog_calls(two_frontends), cache_stats(two_frontends, 1)["hits"]
        for _ in range(10):
            assert fe.lookup(item) == first
        assert fe.search("CACHING") == found  # the same entry: topics match in any case
    assert catalog_calls(two_frontends) == before
    assert cache_stats(two_frontends, 1)["hits"] == hits + 11


def test_lookup_buy_lookup_through_every_frontend(two_frontends: Cluster) -> None:
    wait_for_leases(two_frontends)
    item = new_book(two_frontends, 10)
    for buyer in (1, 2, 1, 2):
        stocks = []
        for reader in (1, 2):
            with frontend(two_frontends, reader) as fe:
                stocks.append(fe.lookup(item)["stock"])  # fills, or hits
        with frontend(two_frontends, buyer) as fe:
            fe.buy(item, 1)
        for reader in (1, 2):
            with frontend(two_frontends, reader) as fe:
                assert fe.lookup(item)["stock"] == stocks[0] - 1, (buyer, reader)


def test_a_read_in_flight_during_a_buy_is_not_cached(two_frontends: Cluster) -> None:
    wait_for_leases(two_frontends)
    item = new_book(two_frontends, 10)
    answers: list[int] = []
    with frontend(two_frontends, 1) as fe:
        fe.set_hook("hold_before_fill", 30)
    refused = cache_stats(two_frontends, 1)["fills_refused"]

    def slow_lookup() -> None:
        with frontend(two_frontends, 1) as fe:
            answers.append(fe.lookup(item)["stock"])

    reader = threading.Thread(target=slow_lookup)
    reader.start()
    with frontend(two_frontends, 1) as fe:
        wait_until(lambda: fe.hook_waiting("hold_before_fill"), what="the held read")
        with Client(settings=two_frontends.settings) as client:
            client.buy(item, 3)  # invalidates the key while the read is held
        fe.release_hook("hold_before_fill")
        reader.join(30)
        assert answers == [10]  # it read before the buy: a fine answer, but not to keep
        assert fe.lookup(item)["stock"] == 7
    assert cache_stats(two_frontends, 1)["fills_refused"] == refused + 1


def test_no_lookup_is_older_than_a_buy_acknowledged_before_it(two_frontends: Cluster) -> None:
    wait_for_leases(two_frontends)
    initial = 10_000
    item = new_book(two_frontends, initial)
    buys: list[tuple[float, float, int]] = []  # invoke, return, qty
    lookups: list[tuple[float, float, int]] = []  # invoke, return, stock
    lock, stop = threading.Lock(), threading.Event()

    def buyer(replica_id: int, seed: int) -> None:
        rng = random.Random(seed)
        with frontend(two_frontends, replica_id) as fe:
            while not stop.is_set():
                qty, start = rng.randint(1, 3), time.monotonic()
                fe.buy(item, qty)
                with lock:
                    buys.append((start, time.monotonic(), qty))

    def reader(replica_id: int) -> None:
        with frontend(two_frontends, replica_id) as fe:
            while not stop.is_set():
                start = time.monotonic()
                stock = fe.lookup(item)["stock"]
                with lock:
                    lookups.append((start, time.monotonic(), stock))

    threads = [threading.Thread(target=buyer, args=(i, i)) for i in (1, 2)]
    threads += [threading.Thread(target=reader, args=(i,)) for i in (1, 2, 1, 2)]
    for thread in threads:
        thread.start()
    stop.wait(5.0)  # the length of the recorded history
    stop.set()
    for thread in threads:
        thread.join(30)
    assert len(buys) > 50 and len(lookups) > 200, (len(buys), len(lookups))
    for invoked, _, stock in lookups:
        acknowledged = sum(qty for _, returned, qty in buys if returned < invoked)
        assert stock <= initial - acknowledged, "a lookup older than an acknowledged buy"
    hits = sum(cache_stats(two_frontends, i)["hits"] for i in (1, 2))
    assert hits > 0


@contextlib.contextmanager
def muted_frontend(tmp_path: Path) -> Iterator[tuple[Cluster, int]]:
    """A store with two frontends and a new book (stock 10) cached at frontend 1, which is
    then paused (SIGSTOP) until a test resumes it or the block ends: ``(cluster, item)``."""
    with start_cluster(tmp_path / "store", frontends=2) as cluster:
        wait_for_leases(cluster)
        item = new_book(cluster, 10)
        with frontend(cluster, 1) as fe:
            assert fe.lookup(item)["stock"] == 10  # cached at frontend 1
        cluster.kill("frontend", 1, signal.SIGSTOP)
        try:
            yield cluster, item
        finally:
            cluster.kill("frontend", 1, signal.SIGCONT)


def test_a_mute_frontend_delays_writes_by_at_most_a_lease(tmp_path: Path) -> None:
    with muted_frontend(tmp_path) as (cluster, item):
        with frontend(cluster, 2) as fe:
            started = time.monotonic()
            fe.buy(item, 2)
            first = time.monotonic() - started
            started = time.monotonic()
            fe.buy(item, 2)
            second = time.monotonic() - started
        cluster.kill("frontend", 1, signal.SIGCONT)
        with frontend(cluster, 1) as fe:
            assert fe.lookup(item)["stock"] == 6  # nothing older than the writes meanwhile
    lease = cluster.settings.lease
    assert first < lease * 1.1 + 1.0, first  # waited out frontend 1's lease, no longer
    assert second < lease / 2, second  # frontend 1 no longer holds one


def test_a_new_catalog_primary_leaves_no_stale_cache(tmp_path: Path) -> None:
    with start_cluster(tmp_path / "store", frontends=2) as cluster:
        wait_for_leases(cluster)
        for reader in (1, 2):
            with frontend(cluster, reader) as fe:
                assert fe.lookup(4)["stock"] == 5
        cluster.kill("catalog", primary(cluster, "catalog"))
        with Client(settings=cluster.settings) as client:
            client.buy(4, 2)
        for reader in (1, 2):
            with frontend(cluster, reader) as fe:
                assert fe.lookup(4)["stock"] == 3, reader


def test_a_new_catalog_primary_needs_no_fence_for_a_mute_frontend(tmp_path: Path) -> None:
    """Cache leases end with the primary's own lease: once the old primary's lease is over,
    so is every cache lease it gave, and the new primary writes at once (no second lease of
    waiting), while the mute frontend, when it wakes, serves nothing stale."""
    with muted_frontend(tmp_path) as (cluster, item):
        killed_at = time.monotonic()
        cluster.kill("catalog", primary(cluster, "catalog"))
        with frontend(cluster, 2) as fe:
            fe.buy(item, 3)
            failover = time.monotonic() - killed_at
        cluster.kill("frontend", 1, signal.SIGCONT)
        with frontend(cluster, 1) as fe:
            assert fe.lookup(item)["stock"] == 7
    lease = cluster.settings.lease
    # about one lease (x the margin) and a heartbeat; a fence would have added a whole lease
    assert failover < 2 * lease, failover


def test_no_cache_reads_every_time(tmp_path: Path) -> None:
    with start_cluster(tmp_path / "store", frontends=1, no_cache=True) as cluster, \
            frontend(cluster, 1) as fe:
        fe.lookup(1)
        before = catalog_calls(cluster)
        for _ in range(5):
            fe.lookup(1)
        assert catalog_calls(cluster) == before + 5
        assert "cache" not in fe.stats()
