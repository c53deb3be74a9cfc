"""``pyrostore.Client``: the store's Python API, as scripts, the CLI and the TUI use it.

    >>> from pyrostore import Client
    >>> with Client(ns_host="127.0.0.1", ns_port=9090) as store:
    ...     store.lookup(1)["stock"]

In secure mode (the default) it presents the certificate that ``settings`` name (``admin``,
or ``identity="client.alice"``) unless this process already has one (:func:`pyrostore.tls.
install`, as the ``pyrostore`` command does). It finds the frontends through the name server
and fails over between them. A buy gets its
request id here, once, and keeps it on every retry, so a buy whose outcome was unknown (a
connection lost mid-call) is sent again and applied at most once; if that does not settle
it, the store is asked what became of it (:meth:`Client.outcome`).
"""

from __future__ import annotations

import time
from typing import Any

from pyrostore import limits, tls
from pyrostore.config import Settings
from pyrostore.discovery import ReplicaSet
from pyrostore.errors import BuyUndone, OutcomeUnknown, OutOfStock, Unavailable
from pyrostore.models import request_id_or_new

PENDING_LEASES = 3
"""How many leases :meth:`Client.buy` waits for a buy the store is finishing on its own."""


class Client:
    """A connection to the store through any live frontend."""

    def __init__(
        self,
        *,
        settings: Settings | None = None,
        ns_host: str | None = None,
        ns_port: int | None = None,
    ) -> None:
        self.settings = (settings or Settings.from_env()).replace(
            **{k: v for k, v in {"ns_host": ns_host, "ns_port": ns_port}.items() if v}
        )
        if tls.installed() is None and not self.settings.insecure:
            limits.install(self.settings)
            tls.install(tls.identity_of(self.settings, default="admin"))
        self.frontends = ReplicaSet(self.settings, "frontend")

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connections to the frontends."""
        self.frontends.close()

    def topics(self) -> list[str]:
        """Every topic in the catalog."""
        result: list[str] = self.frontends.call("topics")
        return result

    def search(self, topic: str, *, limit: int = 100, offset: int = 0) -> list[dict[str, Any]]:
        """``[{item, title}]`` of the books in ``topic``, one page at a time."""
        result: list[dict[str, Any]] = self.frontends.call("search", topic, limit, offset)
        return result

    def lookup(self, item: int) -> dict[str, Any]:
        """``{item, title, topic, stock, cost, version}`` of one book."""
        result: dict[str, Any] = self.frontends.call("lookup", item)
        return result

    def buy(self, item: int, qty: int = 1, *, request_id: str | None = None) -> dict[str, Any]:
        """Buy ``qty`` copies of ``item``; the order.

        A call whose outcome it cannot know (a connection lost mid-call) is retried with the
        same request id while the store fails over; if that does not settle it, the store is
        asked what became of the request id (:meth:`outcome`), and a buy it is still
        finishing is waited for, briefly. Only then does it raise :class:`OutcomeUnknown`,
        whose ``details["request_id"]`` is the id to ask about later."""
        request_id = request_id_or_new(request_id)
        try:
            return self._write("buy", item, qty, request_id=request_id)
        except OutcomeUnknown as exc:
            return self._resolve(request_id, exc)

    def outcome(self, request_id: str) -> dict[str, Any]:
        """What became of the buy ``request_id``: ``{request_id, state, order, error,
        reason}``, where ``state`` is ``done`` (``order`` is the order), ``pending`` (the
        stock is taken and the store is recording the order: it finishes within about two
        leases of both groups serving), ``refused`` (``error`` names the error, ``reason``
        says why) or ``unknown`` (no buy with this id reached the store, or it was longer ago
        than the store keeps request ids)."""
        result: dict[str, Any] = self.frontends.call("order_status", request_id)
        return result

    def _resolve(self, request_id: str, unknown: OutcomeUnknown) -> dict[str, Any]:
        """Ask what became of a buy whose call could not tell; wait for a pending one up to
        ``PENDING_LEASES`` leases. Its order, its refusal raised, or OutcomeUnknown."""
        deadline = time.monotonic() + PENDING_LEASES * self.settings.lease
        delay = 0.05
        while True:
            try:
                outcome = self.outcome(request_id)
            except (Unavailable, OutcomeUnknown):
                break
            if outcome["state"] == "done":
                order: dict[str, Any] = outcome["order"]
                return order
            if outcome["state"] == "refused":
                refusal = BuyUndone if outcome["error"] == "BuyUndone" else OutOfStock
                raise refusal(outcome["reason"], request_id=request_id) from unknown
            if outcome["state"] != "pending" or time.monotonic() + delay > deadline:
                break
            time.sleep(delay)  # the store finishes it on its own: nothing to wait on here
            delay = min(2 * delay, 0.5)
        raise OutcomeUnknown(f"the outcome of buy {request_id} is not known yet ({unknown}); "
                             "ask for it later by its request id", request_id=request_id
                             ) from unknown

    def update(
        self,
        item: int,
        *,
        cost: float | None = None,
        stock_delta: int | None = None,
        request_id: str | None = None,
    ) -> dict[str, Any]:
        """Reprice and/or restock a book; the book as it is after."""
        return self._write("update", item, cost, stock_delta, request_id=request_id)

    def add_book(
        self, title: str, topic: str, *, stock: int, cost: float, request_id: str | None = None
    ) -> dict[str, Any]:
        """Add a new book; the book with its item number."""
        return self._write("add_book", title, topic, stock, cost, request_id=request_id)

    def orders(self, *, limit: int = 20, offset: int = 0) -> list[dict[str, Any]]:
        """The order log, newest first."""
        result: list[dict[str, Any]] = self.frontends.call("orders", limit, offset)
        return result

    def order(self, order_id: int) -> dict[str, Any]:
        """One order by id."""
        result: dict[str, Any] = self.frontends.call("order", order_id)
        return result

    def status(self) -> list[dict[str, Any]]:
        """Every service of the store, as a frontend sees it."""
        result: list[dict[str, Any]] = self.frontends.call("status")
        return result

    def stats(self) -> dict[str, Any]:
        """The timings of the frontend that answers."""
        result: dict[str, Any] = self.frontends.call("stats")
        return result

    def _write(self, method: str, *args: Any, request_id: str | None) -> dict[str, Any]:
        """Call a write with one request id; every retry (through a failover) reuses it."""
        result: dict[str, Any] = self.frontends.call(method, *args, request_id_or_new(request_id))
        return result
