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

from pyrostore.config import Settings
from pyrostore.errors import InvalidRequest
from pyrostore.invalidation import CacheLeases
from pyrostore.metrics import timed_methods
from pyrostore.models import (
    TOPICS_KEY,
    check_cost,
    check_item,
    check_page,
    check_quantity,
    check_request_id,
    check_stock,
    check_stock_delta,
    check_text,
    item_key,
    request_id_or_new,
    topic_key,
)
from pyrostore.replication import Changes, ReplicatedService
from pyrostore.schemas import CatalogStore


class CatalogMachine:
    """Applies catalog operations to a :class:`CatalogStore`; results are plain dicts."""

    def __init__(self, store: CatalogStore) -> None:
        self.store = store

    def apply(self, op: dict[str, Any], conn: sqlite3.Connection, seq: int) -> dict[str, Any]:
        """Apply ``op`` as write number ``seq`` inside the open transaction ``conn``."""
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



@timed_methods
class CatalogReplica(ReplicatedService):
    """One catalog replica as a Pyro5 object: ``pyrostore.catalog.<id>``."""

    role = "catalog"
    publishes = True

    def __init__(self, settings: Settings, replica_id: int) -> None:
        self.store = CatalogStore(settings.database_path(self.role, replica_id))
        self.store.seed(settings.inventory)
        self.machine = CatalogMachine(self.store)
        super().__init__(settings, replica_id, self.store)
        self.caches = CacheLeases(settings, self._stopping)

    @Pyro5.api.expose
    def topics(self) -> list[str]:
        """Every topic in the catalog."""
        return self._read([TOPICS_KEY], self.store.topics, "topics")

    @Pyro5.api.expose
    def search(self, topic: str, limit: int = 100, offset: int = 0) -> list[dict[str, Any]]:
        """``[{item, title}]`` of the books in ``topic`` (any case), one page at a time."""
        limit, offset = check_page(limit, offset)
        topic = check_text(topic, "topic")
        return self._read([topic_key(topic)], lambda: self.store.search(topic, limit, offset),
                          "search", topic, limit, offset)

    @Pyro5.api.expose
    def lookup(self, item: int) -> dict[str, Any]:
        """``{item, title, topic, stock, cost, version}`` of one book."""
        item = check_item(item)
        return self._read([item_key(item)], lambda: self.store.book(item).to_wire(),
                          "lookup", item)

    @Pyro5.api.expose
    def lookup_at(self, item: int) -> dict[str, Any]:
        """For caches: ``{value: book, version: [epoch, seq of the book's last change]}``."""
        item = check_item(item)

        def read() -> dict[str, Any]:
            epoch = self.core.view.epoch  # before the read: a version may only err low
            book = self.store.book(item)
            return {"value": book.to_wire(), "version": [epoch, book.version]}

        return self._read([item_key(item)], read, "lookup_at", item)

    @Pyro5.api.expose
    def search_at(self, topic: str, limit: int = 100, offset: int = 0) -> dict[str, Any]:
        """For caches: ``{value: search(...), version: [epoch, applied position read]}``."""
        limit, offset = check_page(limit, offset)
        topic = check_text(topic, "topic")
        return self._read([topic_key(topic)],
                          lambda: self._versioned(lambda: self.store.search(topic, limit, offset)),
                          "search_at", topic, limit, offset)

    @Pyro5.api.expose
    def topics_at(self) -> dict[str, Any]:
        """For caches: ``{value: topics(), version: [epoch, applied position read]}``."""
        return self._read([TOPICS_KEY], lambda: self._versioned(self.store.topics), "topics_at")

    @Pyro5.api.expose
    def cache_lease(self, frontend_uri: str) -> dict[str, Any]:
        """A frontend renews its cache lease: ``{epoch, lease}`` (seconds from its sending)."""
        self._await_ready_primary()
        with self.db.locked():  # not while a batch is telling the leased frontends
            with self._changed:
                self._check_serving(("primary",))
                epoch = self.core.view.epoch
                lease_left = self.core.lease_until - time.monotonic()
            return {"epoch": epoch, "lease": self.caches.grant(frontend_uri, lease_left)}

    @Pyro5.api.expose
    def take(self, item: int, qty: int, request_id: str) -> dict[str, Any]:
        """Take ``qty`` copies of ``item`` for a buy, or raise OutOfStock; at most once per id."""
        op = {"op": "take", "item": check_item(item), "qty": check_quantity(qty)}
        result: dict[str, Any] = self._write(op, check_request_id(request_id))
        return result

    @Pyro5.api.expose
    def update(self, item: int, cost: float | None = None, stock_delta: int | None = None,
               request_id: str | None = None) -> dict[str, Any]:
        """Reprice and/or restock (or take stock off) a book; the book as it is after."""
        if cost is None and stock_delta is None:
            raise InvalidRequest("update needs a cost, a stock_delta or both")
        op = {"op": "update", "item": check_item(item),
              "cost": None if cost is None else check_cost(cost),
              "stock_delta": None if stock_delta is None else check_stock_delta(stock_delta)}
        result: dict[str, Any] = self._write(op, request_id_or_new(request_id))
        return result

    @Pyro5.api.expose
    def add_book(self, title: str, topic: str, stock: int, cost: float,
                 request_id: str | None = None) -> dict[str, Any]:
        """Add a new book; the book with its new item number."""
        op = {"op": "add", "title": check_text(title, "title"),
              "topic": check_text(topic, "topic"), "stock": check_stock(stock),
              "cost": check_cost(cost)}
        result: dict[str, Any] = self._write(op, request_id_or_new(request_id))
        return result

    def _apply(self, op: dict[str, Any], request_id: str, conn: sqlite3.Connection,
               seq: int) -> dict[str, Any]:
        return self.machine.apply(op, conn, seq)

    def _keys(self, op: dict[str, Any], result: Any) -> list[str]:
        return self.machine.keys(op, result)

    def _publish(self, epoch: int, changes: Changes) -> None:
        self.caches.invalidate(epoch, changes)

    def _versioned(self, read: Callable[[], Any]) -> dict[str, Any]:
        epoch = self.core.view.epoch  # before the read: a version may only err low
        value, applied = self.store.at_position(read)
        return {"value": value, "version": [epoch, applied]}

    def details(self) -> dict[str, Any]:
        details = {**super().details(), "books": self.store.book_count()}
        if details["state"] == "primary":
            details.update(self.caches.frontends())
        return details

    def close(self) -> None:
        super().close()
        self.caches.close()
        self.store.close()
