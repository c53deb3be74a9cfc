"""A replica's return without stalling the store: a snapshot streamed while writes are
acknowledged, catch-up from the log after a short absence, and a primary or a joiner killed
in the middle of a transfer. Real processes, ``kill -9``, real SQLite files compared at the end."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pyrostore import tls
from pyrostore.client import Client
from pyrostore.datadir import sqlite_files
from pyrostore.errors import NotServing
from pyrostore.launcher import Cluster
from pyrostore.models import new_request_id
from pyrostore.schemas import CatalogStore
from pyrostore.transfers import HOLD_POINT
from tests.conftest import identity, settled, start_cluster, wait_until
from tests.shopping import Shoppers, add_books, check_ledger
from tests.test_replication import info, level, peer, primary, proxy, view

pytestmark = pytest.mark.timeout(300)
BOOKS = 20_000
"""Books in the catalog: a snapshot of this many goes in several parts."""
STOCK = 1_000


def inventory(path: Path) -> Path:
    """A catalog of :data:`BOOKS` books, :data:`STOCK` copies each."""
    with path.open("w") as out:
        out.write("item,title,topic,stock,cost\n")
        for item in range(1, BOOKS + 1):
            out.write(f"{item},Book {item} of a large catalog,topic {item // 7},{STOCK},10\n")
    return path


@contextlib.contextmanager
def large_store(tmp_path: Path, **settings: Any) -> Iterator[Cluster]:
    cluster = start_cluster(tmp_path / "store", inventory=inventory(tmp_path / "books.csv"),
                            **settings)
    try:
        yield cluster
    finally:
        cluster.stop()


def replaced_by_an_empty_machine(cluster: Cluster, replica_id: int) -> None:
    """After a write (the group is past its seed), kill a catalog replica and remove its
    file: it comes back with nothing to catch up from, so it needs a snapshot."""
    with Client(settings=cluster.settings) as client:
        client.update(BOOKS, stock_delta=1)
    cluster.kill("catalog", replica_id)
    for path in sqlite_files(cluster.settings.database_path("catalog", replica_id)):
        path.unlink(missing_ok=True)


def held_mid_transfer(cluster: Cluster, at: int, joiner: int) -> Any:
    """Arm the transfer hook on replica ``at``, (re)start ``joiner``, and wait until its
    transfer is held after the first part; the primary's proxy, to release it."""
    held = proxy(cluster, "catalog", at)
    held.set_hook(HOLD_POINT, 120)
    cluster.spawn("catalog", joiner)
    wait_until(lambda: held.hook_waiting(HOLD_POINT), timeout=60,
               what="the transfer held mid-way")
    return held


def files(cluster: Cluster, replicas: tuple[int, ...]) -> list[dict[str, Any]]:
    """Each catalog replica's whole state, read from its file once the store has stopped:
    every table of a snapshot (the request ids too) and the applied position."""
    cluster.stop()
    states = []
    for replica_id in replicas:
        store = CatalogStore(cluster.settings.database_path("catalog", replica_id))
        try:
            tables = {name: sorted(tuple(row) for row in
                                   store.reader.execute(f"SELECT * FROM {name}"))
                      for name in store.snapshot_tables()}
            states.append({"applied": store.applied(), "tables": tables})
        finally:
            store.close()
    return states


def test_a_backup_rejoins_by_snapshot_while_writes_are_acknowledged(tmp_path: Path) -> None:
    with large_store(tmp_path) as cluster:
        leader = primary(cluster, "catalog")
        joiner = 3 - leader
        replaced_by_an_empty_machine(cluster, joiner)
        held = held_mid_transfer(cluster, leader, joiner)
        with held, Client(settings=cluster.settings) as client:
            bought = [client.buy(1, 1) for _ in range(5)]  # acknowledged mid-transfer
            client.update(2, stock_delta=3)
            assert info(cluster, "catalog", joiner)["state"] == "joining"
            held.release_hook(HOLD_POINT)
        cluster.wait_ready("catalog", joiner, timeout=60)
        wait_until(lambda: level(cluster, "catalog"), timeout=60, what="the joiner level")
        rejoin = info(cluster, "catalog", joiner)["rejoin"]
        assert (rejoin["by"], rejoin["from"]) == ("snapshot", 0)
        assert info(cluster, "catalog", joiner)["snapshots_installed"] == 1
        with proxy(cluster, "catalog", joiner) as backup:  # once: not lost, not twice
            assert backup.lookup(1)["stock"] == STOCK - len(bought)
            assert backup.lookup(2)["stock"] == STOCK + 3
        settled(cluster)
        states = files(cluster, (1, 2))
    assert states[0] == states[1]
    assert len(states[0]["tables"]["books"]) == BOOKS


def test_a_short_absence_catches_up_from_the_log_and_a_long_one_takes_a_snapshot(
        tmp_path: Path) -> None:
    cluster = start_cluster(tmp_path / "store", catch_up_limit=40)
    try:
        leader = primary(cluster, "catalog")
        away = 3 - leader
        with Client(settings=cluster.settings) as client:  # past the seed: the log begins
            client.update(3, stock_delta=1)
        wait_until(lambda: level(cluster, "catalog"), what="both level")

        def absent_for(writes: int) -> dict[str, Any]:
            cluster.kill("catalog", away)
            with Client(settings=cluster.settings) as client:
                for _ in range(writes):
                    client.update(3, stock_delta=1)
            cluster.spawn("catalog", away)
            cluster.wait_ready("catalog", away, timeout=60)
            wait_until(lambda: level(cluster, "catalog"), timeout=60, what="the replica level")
            return info(cluster, "catalog", away)

        short = absent_for(10)
        assert short["rejoin"]["by"] == "catch-up" and short["rejoin"]["writes"] >= 10
        assert short["snapshots_installed"] == 0
        long = absent_for(60)  # more than catch_up_limit writes missed
        assert long["rejoin"]["by"] == "snapshot" and long["snapshots_installed"] == 1
        brought_up = info(cluster, "catalog", leader)["brought_up"]
        assert brought_up["catch-up"] >= 1 and brought_up["snapshot"] >= 1
        with proxy(cluster, "catalog", away) as replica:
            assert replica.lookup(3)["stock"] == 10 + 1 + 10 + 60
        states = files(cluster, (1, 2))
    finally:
        cluster.stop()
    assert states[0] == states[1]


def test_a_joiner_killed_during_its_transfer_comes_back_and_nothing_is_lost(
        tmp_path: Path) -> None:
    with large_store(tmp_path) as cluster:
        leader = primary(cluster, "catalog")
        joiner = 3 - leader
        stocks = (10_000,)
        items = add_books(cluster.settings, stocks)
        with Shoppers(cluster.settings, items, count=2) as shoppers:
            replaced_by_an_empty_machine(cluster, joiner)
            with held_mid_transfer(cluster, leader, joiner) as held:
                cluster.kill("catalog", joiner)  # half a snapshot staged, then gone
                held.release_hook(HOLD_POINT)
            cluster.spawn("catalog", joiner)
            cluster.wait_ready("catalog", joiner, timeout=60)  # a serving backup again
        check_ledger(cluster, items, stocks, shoppers.ledger)  # level once the buys stop
        assert shoppers.ledger.acked
        states = files(cluster, (1, 2))
    assert states[0] == states[1]


def test_a_primary_killed_during_a_transfer_leaves_the_group_level_and_nothing_lost(
        tmp_path: Path) -> None:
    replicas = (1, 2, 3)
    with large_store(tmp_path, catalogs=3) as cluster:
        wait_until(lambda: level(cluster, "catalog", replicas), timeout=60, what="three level")
        leader = primary(cluster, "catalog")
        joiner = next(i for i in replicas if i != leader)
        stocks = (10_000,)
        items = add_books(cluster.settings, stocks)
        with Shoppers(cluster.settings, items, count=2) as shoppers:
            replaced_by_an_empty_machine(cluster, joiner)
            with held_mid_transfer(cluster, leader, joiner):
                cluster.kill("catalog", leader)  # the primary dies with the transfer under way
            wait_until(lambda: view(cluster, "catalog")["primary"] not in (None, leader),
                       timeout=60, what="a new catalog primary")
            cluster.spawn("catalog", leader)
            for replica_id in replicas:
                cluster.wait_ready("catalog", replica_id, timeout=60)  # each one serving
        check_ledger(cluster, items, stocks, shoppers.ledger, catalogs=replicas)
        assert shoppers.ledger.acked
        states = files(cluster, replicas)
    assert states[0] == states[1] == states[2]


def test_a_transfer_that_would_take_a_level_replica_back_is_refused(tmp_path: Path) -> None:
    """A transfer still on its way when the primary has found the replica level (a joiner's
    earlier request, or a levelling overtaken) would undo writes acknowledged since."""
    cluster = start_cluster(tmp_path / "store")
    try:
        with Client(settings=cluster.settings) as client:
            client.update(2, stock_delta=1)
        wait_until(lambda: level(cluster, "catalog"), what="both level")
        backup_id = 3 - primary(cluster, "catalog")
        epoch, before = view(cluster, "catalog")["epoch"], info(cluster, "catalog", backup_id)
        empty = {"transfer": uuid.uuid4().hex, "part": 0, "applied": 0, "table": "requests",
                 "rows": [], "last": True}
        write = {"seq": before["applied"] + 1, "request_id": new_request_id(), "epoch": epoch,
                 "op": {"op": "update", "item": 2, "cost": 999.0, "stock_delta": None},
                 "result": {"item": 2, "title": "RPCs for Dummies", "topic": "distributed "
                            "systems", "stock": 5, "cost": 999.0, "version": 9},
                 "keys": ["item:2"]}
        with tls.acting_as(identity("node")), peer(cluster, "catalog", backup_id) as backup:
            with pytest.raises(NotServing, match="take it back"):
                backup.install_snapshot(epoch, empty)  # an empty catalog, installed whole
            with pytest.raises(NotServing, match="take it back"):
                backup.catch_up(epoch, uuid.uuid4().hex, [write])
        after = info(cluster, "catalog", backup_id)
        assert (after["applied"], after["serving"], after["epoch"]) == \
            (before["applied"], True, epoch)
        with proxy(cluster, "catalog", backup_id) as replica:
            assert replica.lookup(2)["cost"] == 40.0 and replica.lookup(2)["stock"] == 5
    finally:
        cluster.stop()
