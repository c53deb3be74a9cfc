"""The frontend: the store's one client-facing API, ``pyrostore.frontend.<id>``.

It holds nothing durable. It finds the catalog and order replicas through the name server,
spreads reads over them, sends writes to each group's primary, fails over (see
:class:`ReplicaSet`), and makes the request id of a buy or an admin write when the caller gave
none, so that its own retries apply it once.
"""

from __future__ import annotations

from typing import Any

import Pyro5.api

from pyrostore.config import Settings
from pyrostore.discovery import ReplicaSet, survey
from pyrostore.metrics import timed_methods
from pyrostore.models import request_id_or_new
from pyrostore.serving import Service


@timed_methods
class Frontend(Service):
    """The client-facing remote object."""

    role = "frontend"

    def __init__(self, settings: Settings, replica_id: int) -> None:
        super().__init__(settings, replica_id)
        self.catalog = ReplicaSet(settings, "catalog")
        self.order_log = ReplicaSet(settings, "order")

    @Pyro5.api.expose
    def topics(self) -> list[str]:
        """Every topic in the catalog."""
        topics: list[str] = self.catalog.call("topics")
        return topics

    @Pyro5.api.expose
    def search(self, topic: str, limit: int = 100, offset: int = 0) -> list[dict[str, Any]]:
        """``[{item, title}]`` of the books in ``topic`` (any case), one page at a time."""
        books: list[dict[str, Any]] = self.catalog.call("search", topic, limit, offset)
        return books

    @Pyro5.api.expose
    def lookup(self, item: int) -> dict[str, Any]:
        """``{item, title, topic, stock, cost, version}`` of one book."""
        book: dict[str, Any] = self.catalog.call("lookup", item)
        return book

    @Pyro5.api.expose
    def buy(self, item: int, qty: int = 1, request_id: str | None = None) -> dict[str, Any]:
        """Buy ``qty`` copies of ``item``; the order. A repeated ``request_id`` buys once."""
        order: dict[str, Any] = self.order_log.call(
            "buy", item, qty, request_id_or_new(request_id), primary=True)
        return order

    @Pyro5.api.expose
    def update(
        self,
        item: int,
        cost: float | None = None,
        stock_delta: int | None = None,
        request_id: str | None = None,
    ) -> dict[str, Any]:
        """Reprice and/or restock a book (admin); the book as it is after."""
        book: dict[str, Any] = self.catalog.call(
            "update", item, cost, stock_delta, request_id_or_new(request_id), primary=True)
        return book

    @Pyro5.api.expose
    def add_book(
        self, title: str, topic: str, stock: int, cost: float, request_id: str | None = None
    ) -> dict[str, Any]:
        """Add a new book (admin); the book with its item number."""
        book: dict[str, Any] = self.catalog.call(
            "add_book", title, topic, stock, cost, request_id_or_new(request_id), primary=True)
        return book

    @Pyro5.api.expose
    def orders(self, limit: int = 20, offset: int = 0) -> list[dict[str, Any]]:
        """The order log, newest first."""
        orders: list[dict[str, Any]] = self.order_log.call("orders", limit, offset)
        return orders

    @Pyro5.api.expose
    def order(self, order_id: int) -> dict[str, Any]:
        """One order by id."""
        order: dict[str, Any] = self.order_log.call("order", order_id)
        return order

    @Pyro5.api.expose
    def status(self) -> list[dict[str, Any]]:
        """Every registered service of the store and its ``info()`` (``state: down`` if mute)."""
        return survey(self.settings)

    def close(self) -> None:
        self.catalog.close()
        self.order_log.close()
