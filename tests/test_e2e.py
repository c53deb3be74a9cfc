"""Every operation and every error, through real processes: client → frontend → order/catalog."""

from __future__ import annotations

import contextlib
import math
import signal
import socket
import time
from pathlib import Path

import Pyro5.api
import pytest

from pyrostore.client import Client
from pyrostore.discovery import ReplicaSet, find, make_proxy, name_server, survey
from pyrostore.errors import (
    ConflictingRequest,
    InvalidRequest,
    NotFound,
    OutOfStock,
    RequestExpired,
    Unavailable,
)
from pyrostore.launcher import Cluster
from pyrostore.models import new_request_id, request_id_or_new
from tests.conftest import free_port, make_settings, settled, start_cluster, wait_until

pytestmark = pytest.mark.timeout(120)


def replica(store: Cluster, role: str, replica_id: int = 1) -> Pyro5.api.Proxy:
    """A proxy straight to one replica (bypassing the frontend)."""
    return make_proxy(find(store.settings, role)[f"pyrostore.{role}.{replica_id}"],
                      store.settings)


def applied(store: Cluster, role: str) -> int:
    with replica(store, role) as proxy:
        return int(proxy.info()["applied"])


def test_topics_and_search(client: Client) -> None:
    assert client.topics() == ["distributed systems", "graduate school"]
    books = client.search("Distributed Systems")
    assert [b["item"] for b in books] == [1, 2, 5]
    assert books[1] == {"item": 2, "title": "RPCs for Dummies"}
    assert [b["item"] for b in client.search("graduate school", limit=2, offset=1)] == [4, 6]
    assert client.search("no such topic") == []


def test_lookup(client: Client) -> None:
    book = client.lookup(3)
    assert (book["title"], book["topic"], book["cost"]) == (
        "Xen and the Art of Surviving Graduate School", "graduate school", 75.0)
    assert book["stock"] >= 0


def test_buy_takes_stock_and_records_the_order(client: Client) -> None:
    before = client.lookup(5)["stock"]
    order = client.buy(5, 2)
    assert (order["item"], order["qty"], order["unit_cost"], order["total"]) == (5, 2, 45.0, 90.0)
    assert order["title"] == "How to finish Project 3 on time"
    assert client.lookup(5)["stock"] == before - 2
    assert client.order(order["order_id"]) == order
    assert client.orders(limit=1) == [order]


def test_a_repeated_request_id_buys_once(client: Client) -> None:
    request_id = new_request_id()
    before = client.lookup(6)["stock"]
    first = client.buy(6, 1, request_id=request_id)
    again = client.buy(6, 1, request_id=request_id)
    assert again == first
    assert client.lookup(6)["stock"] == before - 1
    assert sum(o["request_id"] == request_id for o in client.orders(limit=1000)) == 1
    with pytest.raises(ConflictingRequest):
        client.buy(6, 2, request_id=request_id)
    assert client.lookup(6)["stock"] == before - 1


def test_out_of_stock_changes_nothing_and_stays_refused(store: Cluster, client: Client) -> None:
    book = client.lookup(4)
    orders, request_id = len(client.orders(limit=1000)), request_id_or_new(None)
    with pytest.raises(OutOfStock, match="in stock") as caught:
        client.buy(4, book["stock"] + 1, request_id=request_id)
    assert caught.value.details["stock"] == book["stock"]
    assert client.lookup(4) == book  # same stock, same version: the book was not written
    assert len(client.orders(limit=1000)) == orders
    client.update(4, stock_delta=1)  # enough now, but the refusal is that request's outcome
    with pytest.raises(OutOfStock):
        client.buy(4, book["stock"] + 1, request_id=request_id)
    assert client.outcome(request_id)["state"] == "refused"
    assert client.lookup(4)["stock"] == book["stock"] + 1


@pytest.mark.parametrize("call", [
    lambda c: c.lookup("1"),
    lambda c: c.lookup(0),
    lambda c: c.lookup(True),
    lambda c: c.lookup(1.5),
    lambda c: c.buy(1, 0),
    lambda c: c.buy(1, -3),
    lambda c: c.buy(1, 10**12),
    lambda c: c.buy(1, "2"),
    lambda c: c.buy(1, 1, request_id=""),
    lambda c: c.buy(1, 1, request_id="retry-1"),  # not a UUIDv7: it carries no time
    lambda c: c.buy(1, 1, request_id=new_request_id(time.time() - 25 * 3600)),  # expired
    lambda c: c.update(1, stock_delta=1, request_id=new_request_id(time.time() - 25 * 3600)),
    lambda c: c.update(1),
    lambda c: c.update(1, cost=-1),
    lambda c: c.update(1, cost=math.nan),
    lambda c: c.update(1, stock_delta=0),
    lambda c: c.add_book("", "x", stock=1, cost=1),
    lambda c: c.add_book("t", "x", stock=-1, cost=1),
    lambda c: c.search(123),
    lambda c: c.search("x", limit=0),
    lambda c: c.orders(limit=-1),
], ids=lambda _: "")
def test_bad_input_is_refused_and_changes_nothing(store: Cluster, client: Client, call) -> None:
    settled(store)
    positions = applied(store, "catalog"), applied(store, "order")
    with pytest.raises(InvalidRequest):
        call(client)
    assert (applied(store, "catalog"), applied(store, "order")) == positions


def test_replicas_forget_request_ids_after_the_retention_and_refuse_them_then(
        tmp_path: Path) -> None:
    retention = 12.0  # seconds; ids are aged by the wall clock, so the test makes old ones
    with start_cluster(tmp_path, request_retention=retention, clock_skew=0.0) as cluster, \
            Client(settings=cluster.settings) as client:
        old, young = new_request_id(time.time() - retention + 2), new_request_id()
        stock = client.update(1, stock_delta=1, request_id=old)["stock"]
        assert client.update(1, stock_delta=1, request_id=young)["stock"] == stock + 1

        def forgotten() -> bool:
            rows = [row for row in survey(cluster.settings) if row["role"] == "catalog"]
            return len(rows) == 2 and all(row["forgotten_request_ids"] >= 1 for row in rows)
        wait_until(forgotten, timeout=30, what="both catalog replicas compacting the old id")
        with pytest.raises(RequestExpired) as caught:
            client.update(1, stock_delta=1, request_id=old)
        assert caught.value.details["request_id"] == old
        assert client.update(1, stock_delta=1, request_id=young)["stock"] == stock + 1
        assert client.lookup(1)["stock"] == stock + 1


def test_unknown_things_are_not_found(client: Client) -> None:
    with pytest.raises(NotFound, match="no book with item number 99"):
        client.lookup(99)
    with pytest.raises(NotFound):
        client.buy(99)
    with pytest.raises(NotFound):
        client.update(99, cost=1)
    with pytest.raises(NotFound):
        client.order(10**9)


def test_restock_reprice_and_take_off(client: Client) -> None:
    stock = client.lookup(7)["stock"]
    book = client.update(7, stock_delta=5, cost=16.5)
    assert (book["stock"], book["cost"]) == (stock + 5, 16.5)
    assert client.update(7, stock_delta=-2)["stock"] == stock + 3
    with pytest.raises(OutOfStock):
        client.update(7, stock_delta=-(stock + 4))
    assert client.lookup(7)["stock"] == stock + 3


def test_add_book(client: Client) -> None:
    book = client.add_book("Paxos Made Simple", "Consensus", stock=3, cost=12)
    assert book["item"] >= 8
    assert client.lookup(book["item"])["title"] == "Paxos Made Simple"
    assert {"item": book["item"], "title": "Paxos Made Simple"} in client.search("consensus")
    assert "Consensus" in client.topics()


def test_names_and_tags_in_the_name_server(store: Cluster) -> None:
    with name_server(store.settings) as ns:
        entries = ns.list(prefix="pyrostore.", return_metadata=True)
    for role in ("catalog", "order", "frontend"):
        _, tags = entries[f"pyrostore.{role}.1"]
        assert set(tags) == {"pyrostore", f"role:{role}", "replica:1"}


def test_a_user_can_use_pyroname_from_any_shell(store: Cluster) -> None:
    uri = f"PYRONAME:pyrostore.frontend.1@127.0.0.1:{store.settings.ns_port}"
    with Pyro5.api.Proxy(uri) as frontend:
        assert frontend.lookup(1)["item"] == 1


def test_every_service_times_its_methods(store: Cluster, client: Client) -> None:
    client.lookup(2)
    client.buy(2, 1)
    with replica(store, "frontend") as frontend:
        methods = frontend.stats()["methods"]
    assert methods["lookup"]["count"] >= 1 and methods["buy"]["count"] >= 1
    assert 0 < methods["lookup"]["p50_ms"] <= methods["lookup"]["p99_ms"]
    for role, expected in (("catalog", {"lookup_at", "take"}), ("order", {"buy"})):
        timed: set[str] = set()
        for replica_id in (1, 2):  # reads are spread, writes go to the primary
            with replica(store, role, replica_id) as proxy:
                timed |= set(proxy.stats()["methods"])
        assert timed >= expected, role


def test_status_lists_every_service(client: Client, store: Cluster) -> None:
    rows = {row["name"]: row for row in client.status()}
    assert set(rows) == {*(f"pyrostore.coordinator.{i}" for i in (1, 2, 3)), "pyrostore.frontend.1",
                         *(f"pyrostore.{g}.{i}" for g in ("catalog", "order") for i in (1, 2))}
    for name, row in rows.items():
        assert row["pid"] == store.child(row["role"], row["id"]).pid, name
    for group in ("catalog", "order"):
        states = sorted(rows[f"pyrostore.{group}.{i}"]["state"] for i in (1, 2))
        assert states == ["backup", "primary"], group


def test_garbage_on_a_port_does_not_hurt(store: Cluster, client: Client) -> None:
    uri = Pyro5.api.URI(find(store.settings, "frontend")["pyrostore.frontend.1"])
    for garbage in (b"GET / HTTP/1.0\r\n\r\n", b"\x00" * 4096, b"PYRO" + b"\xff" * 100):
        # The daemon may hang up at any point of this; all that matters is that it lives on.
        with socket.create_connection((uri.host, uri.port), timeout=5) as sock, \
                contextlib.suppress(OSError):
            sock.sendall(garbage)
            sock.shutdown(socket.SHUT_WR)
            while sock.recv(4096):
                pass
    assert client.lookup(1)["item"] == 1


def test_no_name_server_is_unavailable(tmp_path) -> None:
    """A client that never found the store gives up at once, with the name server's address
    (not after the failover timeout, with the frontends' role)."""
    settings = make_settings(tmp_path).replace(ns_port=free_port())
    with Client(settings=settings) as nobody, \
            pytest.raises(Unavailable, match="no name server") as raised:
        nobody.lookup(1)
    assert raised.value.details == {"ns_host": "127.0.0.1", "ns_port": settings.ns_port}


def test_a_client_that_knew_a_frontend_rides_out_a_silent_name_server(tmp_path) -> None:
    settings = make_settings(tmp_path).replace(ns_port=free_port())
    frontends = ReplicaSet(settings, "frontend")
    dead = f"PYRO:pyrostore.frontend.1@127.0.0.1:{free_port()}"
    frontends._by_name["pyrostore.frontend.1"] = dead  # found once, gone since
    try:
        with pytest.raises(Unavailable, match="no frontend replica could take lookup") as raised:
            frontends.call("lookup", 1, patience=0.5)  # tries it, and the name server, again
    finally:
        frontends.close()
    assert raised.value.details == {"role": "frontend"}


def test_orders_and_stock_survive_a_restart(fresh_store: Cluster) -> None:
    with Client(settings=fresh_store.settings) as client:
        order = client.buy(1, 3)
    fresh_store.stop()
    with start_cluster(fresh_store.settings.data_dir) as again, \
            Client(settings=again.settings) as client:
        assert client.lookup(1)["stock"] == 7
        assert client.order(order["order_id"]) == order


def test_client_fails_over_between_frontends(tmp_path) -> None:
    with start_cluster(tmp_path, frontends=2) as cluster, \
            Client(settings=cluster.settings) as client:
        assert client.lookup(1)["stock"] == 10
        cluster.kill("frontend", 1, signal.SIGKILL)
        for _ in range(4):  # round robin would hit the dead one without failover
            assert client.lookup(1)["stock"] == 10
        assert client.buy(1)["qty"] == 1
