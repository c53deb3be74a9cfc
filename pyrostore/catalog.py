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
from pyrostore.errors import InvalidRequest, OutOfStock
from pyrostore.invalidation import CacheLeases
from pyrostore.metrics import timed_methods
from pyrostore.models import (
    CACHE_KEY_PREFIXES,
    OUTBOX_KEY,
    TOPICS_KEY,
    check_cost,
    check_count,
    check_customer,
    check_int,
    check_item,
    check_op,
    check_page,
    check_quantity,
    check_record,
    check_request_id,
    check_stock,
    check_stock_delta,
    check_stored_text,
    check_text,
    check_time,
    check_token,
    check_uri,
    item_key,
    request_id_or_new,
    topic_key,
)
from pyrostore.peer import PeerEndpoint
from pyrostore.recovery import open_replica_store
from pyrostore.replication import ReplicatedGroup
from pyrostore.schemas import CatalogStore, check_snapshot_rows
from pyrostore.serving import Service
from pyrostore.transfers import HOLD_POINT


def take_op(item: Any, qty: Any, customer: Any) -> dict[str, Any]:
    """The operation of taking ``qty`` copies of ``item`` for a buy by ``customer``, checked."""
    return {"op": "take", "item": check_item(item), "qty": check_quantity(qty),
            "customer": check_customer(customer)}


def settle_op(done: Any, undone: Any) -> dict[str, Any]:
    """The operation of closing takes in the outbox: ``done`` ones have their order, ``undone``
    ones never will (their stock goes back); checked."""
    done, undone = _stored_ids(done, "done"), _stored_ids(undone, "undone")
    if not done and not undone:
        raise InvalidRequest("settle needs a take that is done or undone")
    if set(done) & set(undone):
        raise InvalidRequest("a take is either done or undone", field="undone")
    return {"op": "settle", "done": done, "undone": undone}


def _stored_ids(value: Any, name: str) -> list[str]:
    if not isinstance(value, list) or len(value) > MAX_SETTLED:
        raise InvalidRequest(f"{name} must be a list of at most {MAX_SETTLED} request ids",
                             field=name)
    ids = [check_token(request_id, name) for request_id in value]
    if len(set(ids)) != len(ids):
        raise InvalidRequest(f"{name} names a request id twice", field=name)
    return ids


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


MAX_SETTLED = 1024
"""Most takes one settlement closes."""
OPERATIONS: dict[str, Callable[..., dict[str, Any]]] = {
    "take": take_op, "update": update_op, "add": add_op, "settle": settle_op}
"""The catalog's writes, each by the function that makes (and checks) it."""
BOOK_FIELDS = {name: check for name, check in CatalogStore.tables["books"].columns
               if name != "topic_key"}
"""A book as a write's result carries it, and the check of each field."""
TAKEN_FIELDS = {"item": check_item, "title": BOOK_FIELDS["title"], "qty": check_quantity,
                "unit_cost": check_cost, "stock": check_stock,
                "version": lambda v: check_count(v, "version"),
                "taken_at": lambda v: check_time(v, "taken_at")}
"""What a take answers, and the check of each field."""
REFUSED_FIELDS = {"item": check_item, "qty": check_quantity, "stock": check_stock,
                  "refused": lambda v: check_stored_text(v, "refused")}
"""What a take that found too few copies answers (a refusal is remembered like a take, so
that its request id's outcome stays "refused")."""
SETTLED_FIELDS = {"restocked": lambda v: [check_item(item) for item in _list(v, "restocked")]}
"""What a settlement answers: the items of the takes it undid."""


def _list(value: Any, name: str) -> list[Any]:
    if not isinstance(value, list) or len(value) > MAX_SETTLED:
        raise InvalidRequest(f"{name} must be a list of at most {MAX_SETTLED}", field=name)
    return value


def take_status(store: CatalogStore, request_id: str) -> dict[str, Any]:
    """:meth:`CatalogReplica.take_status`, read from ``store``."""
    state, op, result = store.take_state(request_id)
    if not isinstance(op, dict) or op.get("op") != "take":
        return {"state": state or "none", "customer": None, "result": None}
    if "refused" in result:
        state = "refused"
    return {"state": state or "settled", "customer": op["customer"], "result": result}


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
            return self._take(op, request_id, conn, seq)
        if kind == "settle":
            return {"restocked": self.store.settle(conn, seq, op["done"], op["undone"])}
        if kind == "update":
            return self.store.change(conn, seq, op["item"], op["cost"], op["stock_delta"]).to_wire()
        if kind == "add":
            return self.store.add(
                conn, seq, op["title"], op["topic"], op["stock"], op["cost"]
            ).to_wire()
        raise InvalidRequest(f"unknown catalog operation {kind!r}")

    def _take(self, op: dict[str, Any], request_id: str, conn: sqlite3.Connection,
              seq: int) -> dict[str, Any]:
        """Take the stock and hold the take in the outbox until its order is recorded; or,
        with too few copies, answer a refusal (remembered: a retry is refused the same)."""
        try:
            before = self.store.take(conn, seq, op["item"], op["qty"])
        except OutOfStock as exc:
            return {"item": op["item"], "qty": op["qty"], "stock": exc.details["stock"],
                    "refused": str(exc)}
        self.store.hold(conn, seq, request_id, op["item"], op["qty"], op["customer"])
        return {
            "item": before.item,
            "title": before.title,
            "qty": op["qty"],
            "unit_cost": before.cost,
            "stock": before.stock - op["qty"],
            "version": seq,
            "taken_at": time.time(),
        }

    @staticmethod
    def keys(op: dict[str, Any], result: dict[str, Any]) -> list[str]:
        """The read keys a write changes: its item; for a new book also its topic's list;
        for a take or a settlement the outbox (and the items it gives stock back to)."""
        kind = op["op"]
        if kind == "add":
            return [item_key(result['item']), topic_key(result["topic"]), TOPICS_KEY]
        if kind == "settle":
            return [OUTBOX_KEY, *(item_key(item) for item in dict.fromkeys(result["restocked"]))]
        if kind == "take":
            return [OUTBOX_KEY] if "refused" in result else [item_key(op["item"]), OUTBOX_KEY]
        return [item_key(op['item'])]

    @staticmethod
    def check_write(op: Any, result: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        """A forwarded write: an operation as :data:`OPERATIONS` make it, and its result."""
        op = check_op(op, OPERATIONS)
        if op["op"] == "take":
            refused = isinstance(result, dict) and "refused" in result
            return op, check_record(result, "take's result",
                                    REFUSED_FIELDS if refused else TAKEN_FIELDS)
        if op["op"] == "settle":
            return op, check_record(result, "settlement's result", SETTLED_FIELDS)
        return op, check_record(result, f"{op['op']}'s result", BOOK_FIELDS)

    @staticmethod
    def check_snapshot_rows(name: Any, rows: Any, applied: int) -> list[list[Any]]:
        """Rows of one table of a catalog snapshot, checked row by row."""
        return check_snapshot_rows(name, rows, applied, CatalogStore.tables)


@timed_methods
class CatalogReplica(Service):
    """One catalog replica as a Pyro5 object: ``pyrostore.catalog.<id>``, with its share of
    the group (:class:`ReplicatedGroup`) and its peer endpoint beside it."""

    role = "catalog"
    hook_names = ("hold_before_ack", HOLD_POINT)

    def __init__(self, settings: Settings, replica_id: int) -> None:
        super().__init__(settings, replica_id)
        self.store = open_replica_store(settings, self.role, replica_id, CatalogStore)
        self.store.seed(settings.inventory)
        self.caches = CacheLeases(settings)
        self.group = ReplicatedGroup(settings, self.role, replica_id, self.store,
                                     CatalogMachine(self.store), hooks=self.hooks,
                                     publish=self._publish, on_refused=self.refuse)
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
    def take(self, item: int, qty: int, request_id: str, customer: str = "") -> dict[str, Any]:
        """Take ``qty`` copies of ``item`` for ``customer``'s buy, or raise OutOfStock; at
        most once per id. The take stays in the outbox until its order is recorded."""
        op = take_op(item, qty, customer)
        result: dict[str, Any] = self.group.write(op, check_request_id(request_id))
        if "refused" in result:
            raise OutOfStock(result["refused"], item=result["item"], stock=result["stock"],
                             qty=result["qty"])
        return result

    @Pyro5.api.expose
    @allow(NODE)
    def settle(self, done: list[str], undone: list[str], request_id: str) -> dict[str, Any]:
        """The order group closes takes: ``done`` ones have their order recorded, ``undone``
        ones never will and get their stock back. Settling twice changes nothing."""
        op = settle_op(done, undone)
        result: dict[str, Any] = self.group.write(op, check_request_id(request_id))
        return result

    @Pyro5.api.expose
    @allow(NODE)
    def open_takes(self, limit: int = 256) -> list[dict[str, Any]]:
        """The oldest open takes of the outbox, each ``{request_id, item, qty, customer,
        result}`` (``result``: what the take answered; None once its id is forgotten)."""
        limit = check_int(limit, "limit", low=1, high=MAX_SETTLED)
        return self.group.read([OUTBOX_KEY], lambda: self.store.open_takes(limit),
                               "open_takes", limit)

    @Pyro5.api.expose
    @allow(NODE)
    def take_status(self, request_id: str) -> dict[str, Any]:
        """Where the buy ``request_id`` is at the catalog: ``{state, customer, result}`` with
        ``state`` ``open`` (stock taken, order not yet recorded), ``settled`` (its order is
        recorded), ``undone`` (stock given back), ``refused`` (too few copies) or ``none``."""
        request_id = check_request_id(request_id)
        return self.group.read([OUTBOX_KEY], lambda: take_status(self.store, request_id),
                               "take_status", request_id)

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

    def _publish(self, epoch: int, changes: list[tuple[list[str], int]]) -> None:
        """Tell the frontends what a batch changes of what they cache (not the outbox)."""
        cached = [(keys, seq) for keys, seq in
                  (([k for k in keys if k.startswith(CACHE_KEY_PREFIXES)], seq)
                   for keys, seq in changes) if keys]
        if cached:
            self.caches.invalidate(epoch, cached)

    def details(self) -> dict[str, Any]:
        details = {**self.group.details(), "books": self.store.book_count(),
                   "pending_buys": self.store.open_take_count()}
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
