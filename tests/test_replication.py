"""Replication under crashes: real processes, ``kill -9``, SIGSTOP, restarts, on loopback."""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Any

import Pyro5.api
import pytest

from pyrostore import tls
from pyrostore.client import Client
from pyrostore.discovery import Coordinators, find, make_proxy, peer_uri
from pyrostore.errors import (
    InvalidRequest,
    NotServing,
    OutcomeUnknown,
    PyrostoreError,
    StaleEpoch,
)
from pyrostore.launcher import Cluster
from pyrostore.models import new_request_id
from tests.conftest import identity, start_cluster, wait_until

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def cluster(fresh_store: Cluster) -> Cluster:
    """A 2+2 store of its own (conftest's ``fresh_store``)."""
    return fresh_store


def proxy(cluster: Cluster, role: str, replica_id: int, *, as_node: bool = False
          ) -> Pyro5.api.Proxy:
    """A proxy to the replica, connected as the admin this process is, or as a node (to call
    what only the store's own services may)."""
    uri = find(cluster.settings, role)[f"pyrostore.{role}.{replica_id}"]
    return node_proxy(uri, cluster) if as_node else make_proxy(uri, cluster.settings)


def peer(cluster: Cluster, role: str, replica_id: int) -> Pyro5.api.Proxy:
    """A proxy to the replica's peer endpoint (what its fellow replicas call), as a node."""
    return node_proxy(peer_uri(find(cluster.settings, role)[f"pyrostore.{role}.{replica_id}"]),
                      cluster)


def node_proxy(uri: str, cluster: Cluster) -> Pyro5.api.Proxy:
    connected = make_proxy(uri, cluster.settings)
    with tls.acting_as(identity("node")):
        connected._pyroBind()
    return connected


def info(cluster: Cluster, role: str, replica_id: int) -> dict[str, Any]:
    with proxy(cluster, role, replica_id) as replica:
        return dict(replica.info())


def view(cluster: Cluster, group: str) -> dict[str, Any]:
    """The group's view, as any coordinator that answers has applied it."""
    coordinators = Coordinators(cluster.settings)
    try:
        return dict(coordinators.read("view", group))
    finally:
        coordinators.close()


def coordinators(cluster: Cluster) -> list[int]:
    """The coordinators' ids."""
    return [c.replica_id for c in cluster.children if c.role == "coordinator"]


def primary(cluster: Cluster, group: str) -> int:
    return int(view(cluster, group)["primary"])


def restart(cluster: Cluster, role: str, replica_id: int) -> None:
    cluster.spawn(role, replica_id)
    cluster.wait_ready(role, replica_id)


def orders_on(cluster: Cluster, replica_id: int) -> list[dict[str, Any]]:
    """The whole order log of one order replica, newest first, page by page."""
    orders: list[dict[str, Any]] = []
    with proxy(cluster, "order", replica_id) as replica:
        while page := replica.orders(1000, len(orders)):
            orders += page
    return orders


def serving(cluster: Cluster, group: str) -> bool:
    """Both replicas serving (under writes, their positions may differ by a few)."""
    return all(info(cluster, group, i)["serving"] for i in (1, 2))


def level(cluster: Cluster, group: str, replicas: tuple[int, ...] = (1, 2)) -> bool:
    """Every replica (both, by default) serving, at the same applied position."""
    rows = [info(cluster, group, i) for i in replicas]
    return all(r["serving"] for r in rows) and len({r["applied"] for r in rows}) == 1


@pytest.mark.parametrize("group", ["catalog", "order"])
def test_the_original_crash_experiment(cluster: Cluster, group: str) -> None:
    """The seed report's experiment: 9 buys of book 1 while replicas 1 then 2 die and return."""
    with Client(settings=cluster.settings) as client:
        assert client.lookup(1)["stock"] == 10
        orders = []
        for n in range(1, 10):
            orders.append(client.buy(1))
            if n == 4:
                cluster.kill(group, 1)
            if n == 6:
                restart(cluster, group, 1)
                cluster.kill(group, 2)
        restart(cluster, group, 2)
    wait_until(lambda: level(cluster, "catalog") and level(cluster, "order"), what="level")
    for replica_id in (1, 2):
        with proxy(cluster, "catalog", replica_id) as catalog:
            assert catalog.lookup(1)["stock"] == 1
        assert orders_on(cluster, replica_id) == orders[::-1]


@pytest.mark.parametrize("group", ["catalog", "order"])
def test_primary_killed_in_the_middle_of_a_buy(cluster: Cluster, group: str) -> None:
    leader = primary(cluster, group)
    backup = 3 - leader
    with proxy(cluster, group, leader) as replica:
        replica.set_hook("hold_before_ack", 30)
    request_id = new_request_id()
    outcome: dict[str, Any] = {}

    def buy() -> None:
        with Client(settings=cluster.settings) as client:
            try:
                outcome["order"] = client.buy(5, 2, request_id=request_id)
            except PyrostoreError as exc:
                outcome["error"] = exc

    buyer = threading.Thread(target=buy)
    buyer.start()
    # the backup has applied the write; the primary holds it uncommitted: now it dies
    before = info(cluster, group, leader)["applied"]
    wait_until(lambda: info(cluster, group, backup)["applied"] > before,
               what="the backup to apply the held write")
    cluster.kill(group, leader)
    buyer.join(60)
    assert "order" in outcome, outcome
    with Client(settings=cluster.settings) as client:
        assert client.lookup(5)["stock"] == 18
        log = client.orders(limit=1000)
        assert [o["request_id"] for o in log].count(request_id) == 1
        assert client.buy(5, 2, request_id=request_id) == outcome["order"]
        assert client.lookup(5)["stock"] == 18
    restart(cluster, group, leader)
    wait_until(lambda: level(cluster, group), what=f"{group} replicas level")


def test_a_primary_shows_a_write_only_once_its_backups_hold_it(cluster: Cluster) -> None:
    """The primary commits a write while it forwards it. Until the write is acknowledged,
    its reads of the written item wait, and refuse past a lease, rather than show it: it
    could still be lost with this primary."""
    leader = primary(cluster, "catalog")
    with proxy(cluster, "catalog", leader) as replica:
        stock, other = replica.lookup(4)["stock"], replica.lookup(6)
        before = info(cluster, "catalog", leader)["applied"]
        replica.set_hook("hold_before_ack", 30)
    outcome: dict[str, Any] = {}

    def restock() -> None:
        with Client(settings=cluster.settings) as admin:
            outcome["book"] = admin.update(4, stock_delta=3)

    writer = threading.Thread(target=restock)
    writer.start()
    try:
        with proxy(cluster, "catalog", leader) as replica:
            wait_until(lambda: replica.hook_waiting("hold_before_ack"), what="the held write")
            wait_until(lambda: info(cluster, "catalog", leader)["applied"] == before + 1,
                       what="the held write to commit at the primary")
            with pytest.raises(NotServing, match="in flight"):
                replica.lookup(4)
            assert replica.lookup(6) == other  # other items are served meanwhile
            replica.release_hook("hold_before_ack")
    finally:
        writer.join(30)
    assert outcome["book"]["stock"] == stock + 3
    with proxy(cluster, "catalog", leader) as replica:
        assert replica.lookup(4)["stock"] == stock + 3


def test_a_retry_queued_behind_a_failed_write_is_refused_not_answered(cluster: Cluster) -> None:
    """A write the primary committed but could not get acknowledged may be lost with it: a
    retry of it queued at the same primary must not be answered from that local copy."""
    leader = primary(cluster, "catalog")
    uri = find(cluster.settings, "catalog")[f"pyrostore.catalog.{leader}"]
    request_id, outcomes = new_request_id(), {}

    def update(name: str) -> None:
        with make_proxy(uri, cluster.settings, timeout=30) as replica:
            try:
                outcomes[name] = replica.update(4, None, 1, request_id)
            except PyrostoreError as exc:
                outcomes[name] = exc

    with proxy(cluster, "catalog", leader) as replica:
        replica.set_hook("hold_before_ack", 30)
    first, retry = (threading.Thread(target=update, args=(name,)) for name in ("first", "retry"))
    first.start()
    try:
        with proxy(cluster, "catalog", leader) as replica:
            wait_until(lambda: replica.hook_waiting("hold_before_ack"), what="the held write")
            retry.start()
            wait_until(lambda: info(cluster, "catalog", leader)["queued_writes"] == 1,
                       what="the retry queued behind it")
            for coordinator in coordinators(cluster):  # no more leases for anyone
                cluster.kill("coordinator", coordinator, signal.SIGSTOP)
            try:
                wait_until(lambda: info(cluster, "catalog", leader)["lease_left"] == 0,
                           what="the primary's lease to run out")
                replica.release_hook("hold_before_ack")
                first.join(30)
                retry.join(30)
            finally:
                for coordinator in coordinators(cluster):
                    cluster.kill("coordinator", coordinator, signal.SIGCONT)
    finally:
        first.join(30)
        retry.join(30)
    assert isinstance(outcomes["first"], OutcomeUnknown), outcomes
    assert isinstance(outcomes["retry"], NotServing), outcomes  # not the held write's answer
    wait_until(lambda: level(cluster, "catalog"), what="the group serving again")
    with Client(settings=cluster.settings) as client:  # the retry settles it, once
        book = client.update(4, stock_delta=1, request_id=request_id)
        assert client.lookup(4)["stock"] == book["stock"] == 6


def test_writes_that_queue_behind_one_go_to_the_backup_as_one_batch(cluster: Cluster) -> None:
    leader = primary(cluster, "catalog")
    backup = 3 - leader

    def forwards() -> int:
        with proxy(cluster, "catalog", backup) as replica:
            return int(replica.stats()["methods"].get("replicate", {}).get("count", 0))

    with Client(settings=cluster.settings) as client:
        stocks = {item: client.lookup(item)["stock"] for item in range(1, 8)}
    before = forwards()
    with proxy(cluster, "catalog", leader) as replica:
        replica.set_hook("hold_before_ack", 30)
    books: dict[int, dict[str, Any]] = {}

    def restock(item: int) -> None:
        with Client(settings=cluster.settings) as admin:
            books[item] = admin.update(item, stock_delta=item)

    writers = [threading.Thread(target=restock, args=(item,)) for item in range(1, 8)]
    try:
        writers[0].start()
        with proxy(cluster, "catalog", leader) as replica:
            wait_until(lambda: replica.hook_waiting("hold_before_ack"), what="the held write")
            for writer in writers[1:]:
                writer.start()
            wait_until(lambda: info(cluster, "catalog", leader)["queued_writes"] == 6,
                       what="six writes queued behind the held one")
            replica.release_hook("hold_before_ack")
    finally:
        for writer in writers:
            writer.join(30)
    assert forwards() == before + 2  # the held write, then the other six at once
    assert {item: book["stock"] for item, book in books.items()} == {
        item: stock + item for item, stock in stocks.items()}
    wait_until(lambda: level(cluster, "catalog"), what="both level")
    with proxy(cluster, "catalog", backup) as replica:
        assert [replica.lookup(item)["stock"] for item in range(1, 8)] == [
            stocks[item] + item for item in range(1, 8)]


def test_a_retried_buy_after_both_primaries_died_applies_once(cluster: Cluster) -> None:
    request_id = new_request_id()
    with Client(settings=cluster.settings) as client:
        order = client.buy(3, 1, request_id=request_id)
        cluster.kill("order", primary(cluster, "order"))
        cluster.kill("catalog", primary(cluster, "catalog"))
        assert client.buy(3, 1, request_id=request_id) == order
        assert client.lookup(3)["stock"] == 9
        assert [o["request_id"] for o in client.orders(limit=1000)] == [request_id]


def test_a_paused_primary_serves_nothing_stale(cluster: Cluster) -> None:
    old = primary(cluster, "catalog")
    cluster.kill("catalog", old, signal.SIGSTOP)
    try:
        wait_until(lambda: primary(cluster, "catalog") != old, what="a new catalog primary")
        with Client(settings=cluster.settings) as client:
            client.buy(1, 3)
            stock = client.lookup(1)["stock"]
        assert stock == 7
    finally:
        cluster.kill("catalog", old, signal.SIGCONT)
    with proxy(cluster, "catalog", old, as_node=True) as stale:
        with pytest.raises((NotServing, StaleEpoch)):
            stale.take(1, 1, new_request_id())
        with contextlib.suppress(NotServing):  # if it answers at all, it has caught up
            assert stale.lookup(1)["stock"] == stock
    wait_until(lambda: level(cluster, "catalog"), what="the old primary to rejoin")
    with proxy(cluster, "catalog", old) as rejoined:
        assert rejoined.lookup(1)["stock"] == stock


def snapshots_installed(cluster: Cluster, group: str) -> int:
    """How many snapshots the group's replicas have installed since they started."""
    total = 0
    for replica_id in (1, 2):
        with proxy(cluster, group, replica_id) as replica:
            total += replica.info()["snapshots_installed"]
    return total


def test_every_coordinator_restarts_without_losing_a_view(cluster: Cluster) -> None:
    before = {group: view(cluster, group) for group in ("catalog", "order")}
    snapshots = {group: snapshots_installed(cluster, group) for group in ("catalog", "order")}
    for coordinator in coordinators(cluster):
        cluster.kill("coordinator", coordinator)
    for coordinator in coordinators(cluster):
        cluster.spawn("coordinator", coordinator)
    for coordinator in coordinators(cluster):
        cluster.wait_ready("coordinator", coordinator)
    with Client(settings=cluster.settings) as client:
        assert client.buy(6)["qty"] == 1
        assert client.lookup(6)["stock"] == 11
    for group in ("catalog", "order"):
        after = view(cluster, group)
        assert after["epoch"] >= before[group]["epoch"] > 0
        assert after["primary"] == before[group]["primary"]
    wait_until(lambda: level(cluster, "catalog") and level(cluster, "order"), what="level")
    assert {group: snapshots_installed(cluster, group) for group in snapshots} == snapshots


def test_a_write_sent_to_a_backup_is_refused_with_the_primary_named(cluster: Cluster) -> None:
    leader = primary(cluster, "catalog")
    with proxy(cluster, "catalog", 3 - leader) as backup, pytest.raises(NotServing) as refused:
        backup.update(1, None, 5, new_request_id())
    assert refused.value.details["primary"] == find(cluster.settings, "catalog")[
        f"pyrostore.catalog.{leader}"]
    with proxy(cluster, "catalog", 3 - leader) as backup:
        assert backup.lookup(1)["stock"] == 10  # reads are served on the backup


def test_the_whole_store_restarts_from_its_files(cluster: Cluster) -> None:
    with Client(settings=cluster.settings) as client:
        client.buy(7, 2)
    cluster.stop()
    again = start_cluster(cluster.settings.data_dir)
    try:
        with Client(settings=again.settings) as client:
            assert client.lookup(7)["stock"] == 6
            assert len(client.orders()) == 1
    finally:
        again.stop()



def test_a_group_whose_members_all_died_recovers_when_they_return(cluster: Cluster) -> None:
    with Client(settings=cluster.settings) as client:
        client.buy(2, 1)
    cluster.kill("catalog", 1)
    cluster.kill("catalog", 2)
    wait_until(lambda: view(cluster, "catalog")["primary"] is None,
               what="the coordinator to wait for a member")
    # Which of them the group waits for depends on whose lease ran out first (a backup
    # dropped before the primary died may lack writes): bring both back, then wait.
    cluster.spawn("catalog", 2)
    cluster.spawn("catalog", 1)
    cluster.wait_ready("catalog", 1)
    cluster.wait_ready("catalog", 2)
    wait_until(lambda: level(cluster, "catalog"), what="the group serving again")
    with Client(settings=cluster.settings) as client:
        assert client.lookup(2)["stock"] == 3  # the acknowledged buy survived
        assert client.buy(2, 1)["qty"] == 1


def test_a_backup_fences_off_a_stale_primary_and_a_foreign_write(cluster: Cluster) -> None:
    with Client(settings=cluster.settings) as client:  # a write for the forged one to clash with
        client.update(5, stock_delta=1)
    wait_until(lambda: level(cluster, "catalog"), what="both level")
    current = view(cluster, "catalog")
    leader, epoch = current["primary"], current["epoch"]
    snapshots = snapshots_installed(cluster, "catalog")
    op = {"op": "update", "item": 2, "cost": 999.0, "stock_delta": None}

    def forward(seq: int) -> list[dict[str, Any]]:
        book = {"item": 2, "title": "RPCs for Dummies", "topic": "distributed systems",
                "stock": 4, "cost": 999.0, "version": seq}
        return [{"seq": seq, "op": op, "request_id": new_request_id(), "result": book,
                 "keys": ["item:2"], "epoch": 1}]

    applied = info(cluster, "catalog", 3 - leader)["applied"]
    with tls.acting_as(identity("node")), peer(cluster, "catalog", 3 - leader) as backup, \
            pytest.raises(NotServing):
        backup.replicate(epoch, forward(applied), applied)  # held, under another request id
    # it refused the write, stepped down and rejoins (so fast, on an idle machine, that its
    # state may already read "backup" again: the new epoch and its rejoin are what show it);
    # it holds nothing but the primary's writes, so it needs no snapshot
    wait_until(lambda: view(cluster, "catalog")["epoch"] > epoch and level(cluster, "catalog"),
               what="the backup to rejoin")
    rejoin = info(cluster, "catalog", 3 - leader)["rejoin"]
    assert rejoin["from"] == applied and rejoin["by"] in ("level", "catch-up")
    assert snapshots_installed(cluster, "catalog") == snapshots
    epoch = view(cluster, "catalog")["epoch"]
    applied = info(cluster, "catalog", 3 - leader)["applied"]
    with tls.acting_as(identity("node")), peer(cluster, "catalog", 3 - leader) as backup:
        backup.position(epoch + 1)  # a newer primary has spoken to it...
        with pytest.raises(StaleEpoch):  # ...so a delayed forward from this epoch is refused
            backup.replicate(epoch, forward(applied + 1), 0)
        with pytest.raises(InvalidRequest):  # and a malformed one is refused before anything
            backup.replicate(epoch + 1, [[applied + 1, op, "r", {}, []]], 0)
    with Client(settings=cluster.settings) as client:  # the store heals and goes on
        assert client.update(3, cost=5.0)["cost"] == 5.0
    wait_until(lambda: level(cluster, "catalog"), what="both level")
    for replica_id in (1, 2):
        with proxy(cluster, "catalog", replica_id) as replica:
            assert replica.lookup(3)["cost"] == 5.0
            assert replica.lookup(2)["cost"] == 40.0
