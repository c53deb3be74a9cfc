"""The catalog: its state machine (take, update, add) and the remote object of one replica.

Queries (``topics``, ``search``, ``lookup``) read the replica's committed state, on any
replica that may serve. Every write is an operation (a plain dict) with a request id that
goes through the replication layer's one write path (``_write``) at the primary.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from typing import Any

import Pyro5.api

from pyrostore.access import NODE, OPERATORS, allow
from pyrostore.config import Settings
from pyrostore.discovery import PEER_SUFFIX
from pyrostore.errors import InvalidRequest
from pyrostore.invalidation import CacheLeases
from pyrostore.metrics import timed_methods
from pyrostore.models import (
    TOPICS_KEY,
    check_cost,
    check_count,
    check_item,
    check_op,
    check_page,
    check_quantity,
    check_record,
    check_request_id,
    check_stock,
    check_stock_delta,
    check_text,
    check_time,
    check_uri,
    item_key,
    request_id_or_new,
    topic_key,
)
from pyrostore.peer import PeerEndpoint
from pyrostore.recovery import open_replica_store
from pyrostore.replication import ReplicatedGroup
from pyrostore.schemas import CatalogStore, check_snapshot
from pyrostore.serving import Service


def take_op(item: Any, qty: Any) -> dict[str, Any]:
    """The operation of taking ``qty`` copies of ``item`` for a buy, checked."""
    return {"op": "take", "item": check_item(item), "qty": check_quantity(qty)}


def update_op(item: Any, cost: Any, stock_delta: Any) -> dict[str, Any]:
    """The operation of repricing and/or restocking ``item``, checked."""
    if cost is None and stock_delta is None:
        raise InvalidRequest("update needs a cost, a stock_delta or both")
    return {"op": "update", "item": check_item(item),
            "cost": None if cost is None else check_cost(cost),
            "stock_delta": None if stock_delta is None else check_stock_delta(stock_delta)}


def add_op(title: Any, topic: Any, stock: Any, cost: Any) -> dict[str, Any]:
    """The operation of adding a book, checked."""
    return {"op": "add", "title": check_text(title, "title"),
            "topic": check_text(topic, "topic"), "stock": check_stock(stock),
            "cost": check_cost(cost)}


OPERATIONS: dict[str, Callable[..., dict[str, Any]]] = {
    "take": take_op, "update": update_op, "add": add_op}
"""The catalog's writes, each by the function that makes (and checks) it."""
BOOK_FIELDS = {name: check for name, check in CatalogStore.tables["books"].columns
               if name != "topic_key"}
"""A book as a write's result carries it, and the check of each field."""
TAKEN_FIELDS = {"item": check_item, "title": BOOK_FIELDS["title"], "qty": check_quantity,
                "unit_cost": check_cost, "stock": check_stock,
                "version": lambda v: check_count(v, "version"),
                "taken_at": lambda v: check_time(v, "taken_at")}
"""What a take answers, and the check of each field."""


class CatalogMachine:
    """Applies catalog operations to a :class:`CatalogStore`; results are plain dicts."""

    def __init__(self, store: CatalogStore) -> None:
        self.store = store

    def apply(self, op: dict[str, Any], request_id: str, conn: sqlite3.Connection,
              seq: int) -> dict[str, Any]:
        """Apply ``op`` as write number ``seq`` inside the open transaction ``conn`` (the
        request id is the replication layer's to remember)."""
        kind = op["op"]
        if kind == "take":
            before = self.store.take(conn, seq, op["item"], op["qty"])
            return {
                "item": before.item,
                "title": before.title,
                "qty": op["qty"],
                "unit_cost": before.cost,
                "stock": before.stock - op["qty"],
                "version": seq,
                "taken_at": time.time(),
            }
        if kind == "update":
            return self.store.change(conn, seq, op["item"], op["cost"], op["stock_delta"]).to_wire()
        if kind == "add":
            return self.store.add(
                conn, seq, op["title"], op["topic"], op["stock"], op["cost"]
            ).to_wire()
        raise InvalidRequest(f"unknown catalog operation {kind!r}")

    @staticmethod
    def keys(op: dict[str, Any], result: dict[str, Any]) -> list[str]:
        """The read keys a write changes: its item; for a new book also its topic's list."""
        if op["op"] == "add":
            return [item_key(result['item']), topic_key(result["topic"]), TOPICS_KEY]
        return [item_key(op['item'])]

    @staticmethod
    def check_write(op: Any, result: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        """A forwarded write: an operation as :data:`OPERATIONS` make it, and its result."""
        op = check_op(op, OPERATIONS)
        if op["op"] == "take":
            return op, check_record(result, "take's result", TAKEN_FIELDS)
        return op, check_record(result, f"{op['op']}'s result", BOOK_FIELDS)

    @staticmethod
    def check_snapshot(snapshot: Any) -> dict[str, Any]:
        """A catalog snapshot, checked row by row."""
        return check_snapshot(snapshot, CatalogStore.tables)



@timed_methods
class CatalogReplica(Service):
    """One catalog replica as a Pyro5 object: ``pyrostore.catalog.<id>``, with its share of
    the group (:class:`ReplicatedGroup`) and its peer endpoint beside it."""

    role = "catalog"
    hook_names = ("hold_before_ack",)

    def __init__(self, settings: Settings, replica_id: int) -> None:
        super().__init__(settings, replica_id)
        self.store = open_replica_store(settings, self.role, replica_id, CatalogStore)
        self.store.seed(settings.inventory)
        self.caches = CacheLeases(settings)
        self.group = ReplicatedGroup(settings, self.role, replica_id, self.store,
                                     CatalogMachine(self.store), hooks=self.hooks,
                                     publish=self.caches.invalidate)
        self.peer = PeerEndpoint(self.group, self.metrics)

    @Pyro5.api.expose
    @allow(*OPERATORS)
    def topics(self) -> list[str]:
        """Every topic in the catalog."""
        return self.group.read([TOPICS_KEY], self.store.topics, "topics")

    @Pyro5.api.expose
    @allow(*OPERATORS)
    def search(self, topic: str, limit: int = 100, offset: int = 0) -> list[dict[str, Any]]:
        """``[{item, title}]`` of the books in ``topic`` (any case), one page at a time."""
        limit, offset = check_page(limit, offset)
        topic = check_text(topic, "topic")
        return self.group.read([topic_key(topic)], lambda: self.store.search(topic, limit, offset),
                          "search", topic, limit, offset)

    @Pyro5.api.expose
    @allow(*OPERATORS)
    def lookup(self, item: int) -> dict[str, Any]:
        """``{item, title, topic, stock, cost, version}`` of one book."""
        item = check_item(item)
        return self.group.read([item_key(item)], lambda: self.store.book(item).to_wire(),
                          "lookup", item)

    @Pyro5.api.expose
    @allow(NODE)
    def lookup_at(self, item: int) -> dict[str, Any]:
        """For caches: ``{value: book, version: [epoch, seq of the book's last change]}``."""
        item = check_item(item)

        def read() -> dict[str, Any]:
            epoch = self.group.member.core.view.epoch  # before the read: a version may only err low
            book = self.store.book(item)
            return {"value": book.to_wire(), "version": [epoch, book.version]}

        return self.group.read([item_key(item)], read, "lookup_at", item)

    @Pyro5.api.expose
    @allow(NODE)
    def search_at(self, topic: str, limit: int = 100, offset: int = 0) -> dict[str, Any]:
        """For caches: ``{value: search(...), version: [epoch, applied position read]}``."""
        limit, offset = check_page(limit, offset)
        topic = check_text(topic, "topic")
        return self.group.read([topic_key(topic)],
                          lambda: self._versioned(lambda: self.store.search(topic, limit, offset)),
                          "search_at", topic, limit, offset)

    @Pyro5.api.expose
    @allow(NODE)
    def topics_at(self) -> dict[str, Any]:
        """For caches: ``{value: topics(), version: [epoch, applied position read]}``."""
        return self.group.read([TOPICS_KEY], lambda: self._versioned(self.store.topics),
                               "topics_at")

    @Pyro5.api.expose
    @allow(NODE)
    def cache_lease(self, frontend_uri: str) -> dict[str, Any]:
        """A frontend renews its cache lease: ``{epoch, lease}`` (seconds from its sending).
        Only a frontend registered in the name server gets one, and only so many of them
        (:class:`CacheLeases`)."""
        frontend_uri = self.caches.admit(check_uri(frontend_uri, "frontend_uri"))
        member = self.group.member
        member.await_ready_primary()
        with self.store.locked():  # not while a batch is telling the leased frontends
            with member.changed:
                member.check_serving(("primary",))
                epoch = member.core.view.epoch
                lease_left = member.core.lease_until - time.monotonic()
            return {"epoch": epoch, "lease": self.caches.grant(frontend_uri, lease_left)}

    @Pyro5.api.expose
    @allow(NODE)
    def take(self, item: int, qty: int, request_id: str) -> dict[str, Any]:
        """Take ``qty`` copies of ``item`` for a buy, or raise OutOfStock; at most once per id."""
        op = take_op(item, qty)
        result: dict[str, Any] = self.group.write(op, check_request_id(request_id))
        return result

    @Pyro5.api.expose
    @allow(*OPERATORS)
    def update(self, item: int, cost: float | None = None, stock_delta: int | None = None,
               request_id: str | None = None) -> dict[str, Any]:
        """Reprice and/or restock (or take stock off) a book; the book as it is after."""
        op = update_op(item, cost, stock_delta)
        result: dict[str, Any] = self.group.write(op, request_id_or_new(request_id))
        return result

    @Pyro5.api.expose
    @allow(*OPERATORS)
    def add_book(self, title: str, topic: str, stock: int, cost: float,
                 request_id: str | None = None) -> dict[str, Any]:
        """Add a new book; the book with its new item number."""
        op = add_op(title, topic, stock, cost)
        result: dict[str, Any] = self.group.write(op, request_id_or_new(request_id))
        return result

    def _versioned(self, read: Callable[[], Any]) -> dict[str, Any]:
        epoch = self.group.member.core.view.epoch  # before the read: a version may only err low
        value, applied = self.store.at_position(read)
        return {"value": value, "version": [epoch, applied]}

    def details(self) -> dict[str, Any]:
        details = {**self.group.details(), "books": self.store.book_count()}
        if details["state"] == "primary":
            details.update(self.caches.leases())
        return details

    def endpoints(self) -> dict[str, object]:
        return {f"{self.name}{PEER_SUFFIX}": self.peer}

    def start(self) -> None:
        self.group.start(self.uri)

    def close(self) -> None:
        self.group.close()
        self.caches.close()
        self.store.close()
