"""The order service: buy (take stock at the catalog, then record the order) and the order log.

A buy carries a request id from end to end. The catalog takes the stock at most once per id
and remembers its answer; the order log records at most one order per id. So a buy retried
after any failure ends with exactly one decrement and one order. One that is never retried
(its client vanished) is finished by the store itself: the take waits in the catalog's
outbox until the order primary has recorded its order (:mod:`pyrostore.outbox`). What became
of any request id can be asked (:meth:`OrderReplica.outcome`).
"""

from __future__ import annotations

import sqlite3
from typing import Any

import Pyro5.api

from pyrostore.access import NODE, OPERATORS, allow
from pyrostore.config import Settings
from pyrostore.discovery import PEER_SUFFIX, ReplicaSet
from pyrostore.errors import InvalidRequest, OutcomeUnknown, Unavailable
from pyrostore.metrics import timed_methods
from pyrostore.models import (
    MAX_POSITION,
    ORDERS_KEY,
    check_cost,
    check_customer,
    check_int,
    check_item,
    check_op,
    check_page,
    check_quantity,
    check_record,
    check_request_id,
    check_stored_text,
    check_time,
    order_key,
)
from pyrostore.outbox import Reconciler, Settler
from pyrostore.peer import PeerEndpoint
from pyrostore.recovery import open_replica_store, retention_of
from pyrostore.replication import ReplicatedGroup
from pyrostore.schemas import OrderStore, check_snapshot_rows
from pyrostore.serving import Service
from pyrostore.transfers import HOLD_POINT


def record_op(item: Any, qty: Any, title: Any, unit_cost: Any, created_at: Any,
              customer: Any) -> dict[str, Any]:
    """The operation of recording a buy's order (``title``, ``unit_cost`` and ``created_at``
    as the catalog's take answered them), checked."""
    return {"op": "record", "item": check_item(item), "qty": check_quantity(qty),
            "title": check_stored_text(title, "title"), "unit_cost": check_cost(unit_cost),
            "created_at": check_time(created_at, "created_at"),
            "customer": check_customer(customer)}


def record_of(take: dict[str, Any]) -> dict[str, Any]:
    """The operation that records the order of an open take (``{item, qty, customer,
    result}``, as the catalog's outbox holds it): the buy's own, to the byte."""
    taken = take["result"]
    return record_op(take["item"], take["qty"], taken["title"], taken["unit_cost"],
                     taken["taken_at"], take["customer"])


ORDER_FIELDS = dict(OrderStore.tables["orders"].columns)
"""An order as a write's result carries it, and the check of each field."""


class OrderMachine:
    """Applies order operations to an :class:`OrderStore`; results are plain dicts."""

    def __init__(self, store: OrderStore) -> None:
        self.store = store

    def apply(
        self, op: dict[str, Any], request_id: str, conn: sqlite3.Connection, seq: int
    ) -> dict[str, Any]:
        """Apply ``op`` as write number ``seq`` inside the open transaction ``conn``."""
        if op["op"] != "record":
            raise InvalidRequest(f"unknown order operation {op['op']!r}")
        order = self.store.record(
            conn,
            seq,
            item=op["item"],
            title=op["title"],
            qty=op["qty"],
            unit_cost=op["unit_cost"],
            request_id=request_id,
            created_at=op["created_at"],
            customer=op.get("customer", ""),
        )
        return order.to_wire()

    @staticmethod
    def keys(op: dict[str, Any], result: dict[str, Any]) -> list[str]:
        """The read keys a new order changes: itself and the log."""
        return [order_key(result['order_id']), ORDERS_KEY]

    @staticmethod
    def check_write(op: Any, result: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        """A forwarded write: an operation as :func:`record_op` makes it, and its order."""
        return (check_op(op, {"record": record_op}),
                check_record(result, "recorded order", ORDER_FIELDS))

    @staticmethod
    def check_snapshot_rows(name: Any, rows: Any, applied: int) -> list[list[Any]]:
        """Rows of one table of an order log's snapshot, checked row by row."""
        return check_snapshot_rows(name, rows, applied, OrderStore.tables)


@timed_methods
class OrderReplica(Service):
    """One order replica as a Pyro5 object: ``pyrostore.order.<id>``, with its share of the
    group (:class:`ReplicatedGroup`) and its peer endpoint beside it."""

    role = "order"
    hook_names = ("hold_before_ack", "hold_after_take", HOLD_POINT)

    def __init__(self, settings: Settings, replica_id: int) -> None:
        super().__init__(settings, replica_id)
        self.store = open_replica_store(settings, self.role, replica_id, OrderStore)
        self.catalog = ReplicaSet(settings, "catalog", on_refused=self.refuse)
        self.group = ReplicatedGroup(settings, self.role, replica_id, self.store,
                                     OrderMachine(self.store), hooks=self.hooks,
                                     on_refused=self.refuse)
        self.peer = PeerEndpoint(self.group, self.metrics)
        self.reconciler = Reconciler(grace=settings.lease / 2,
                                     forgettable=retention_of(settings).forgettable)
        self.settler = Settler(settings, self.group, self.store, self.catalog, record_of,
                               self.reconciler)

    @Pyro5.api.expose
    @allow(NODE)
    def buy(self, item: int, qty: int = 1, request_id: str | None = None,
            customer: str = "") -> dict[str, Any]:
        """Buy ``qty`` copies of ``item`` for ``customer`` (a shopper's certificate name, given
        by the frontend): the order, or OutOfStock with nothing changed."""
        item, qty = check_item(item), check_quantity(qty)
        customer = check_customer(customer)
        if request_id is None:
            raise InvalidRequest("buy needs a request_id (the frontend or client makes one)")
        request_id = check_request_id(request_id)
        self.group.member.await_ready_primary()  # before taking stock only it may record
        taken = self.catalog.call("take", item, qty, request_id, customer, primary=True)
        self.hooks.point("hold_after_take")  # tests: stock taken, order not yet recorded
        op = record_of({"item": item, "qty": qty, "customer": customer, "result": taken})
        try:
            result: dict[str, Any] = self.group.write(op, request_id)
        except Unavailable as exc:  # the stock is taken: this buy is not "did not run"
            raise OutcomeUnknown(f"the order could not be recorded ({exc}); "
                                 "retry with the same request id") from exc
        return result

    @Pyro5.api.expose
    @allow(NODE)
    def outcome(self, request_id: str) -> dict[str, Any]:
        """What became of the buy ``request_id``: ``{state, order, error, reason, customer}``
        with ``state`` ``done`` (its ``order``), ``pending`` (stock taken, the order is being
        recorded: the store finishes it), ``refused`` (``error`` OutOfStock or BuyUndone, and
        the ``reason``) or ``unknown`` (no buy with this id reached the catalog, or it is too
        old to be remembered). ``customer``: whose buy it was (shoppers see only theirs)."""
        request_id = check_request_id(request_id)
        for _ in range(2):  # once more if the order was recorded between the two reads
            order = self.group.read([ORDERS_KEY], lambda: self._order_for(request_id),
                                    "order_for", request_id)
            if order is not None:
                return {"state": "done", "order": order, "error": None, "reason": None,
                        "customer": order["customer"]}
            take = self.catalog.call("take_status", request_id)
            if take["state"] != "settled":
                break
        state = {"open": "pending", "settled": "pending", "none": "unknown"}.get(
            take["state"], "refused")
        error, reason = {
            "refused": ("OutOfStock", take["result"] and take["result"].get("refused")),
            "undone": ("BuyUndone", "its order could not be recorded before its request id "
                                    "expired, so its stock was given back"),
        }.get(take["state"], (None, None))
        return {"state": state, "order": None, "error": error, "reason": reason,
                "customer": take["customer"]}

    @Pyro5.api.expose
    @allow(NODE)
    def order_for(self, request_id: str) -> dict[str, Any] | None:
        """The order of the buy ``request_id``, or None (a backup asks its primary this)."""
        request_id = check_request_id(request_id)
        return self.group.read([ORDERS_KEY], lambda: self._order_for(request_id),
                               "order_for", request_id)

    def _order_for(self, request_id: str) -> dict[str, Any] | None:
        order = self.store.order_for(request_id)
        return None if order is None else order.to_wire()

    @Pyro5.api.expose
    @allow(*OPERATORS)
    def order(self, order_id: int) -> dict[str, Any]:
        """One order by its id."""
        order_id = check_int(order_id, "order_id", low=1, high=MAX_POSITION)
        return self.group.read([order_key(order_id)],
                          lambda: self.store.order(order_id).to_wire(), "order", order_id)

    @Pyro5.api.expose
    @allow(*OPERATORS)
    def orders(self, limit: int = 20, offset: int = 0, customer: str | None = None
               ) -> list[dict[str, Any]]:
        """The order log (of ``customer`` only, if given), newest first, a page at a time."""
        limit, offset = check_page(limit, offset)
        if customer is not None:
            customer = check_customer(customer)
        return self.group.read([ORDERS_KEY], lambda: [
            o.to_wire() for o in self.store.orders(limit, offset, customer=customer)],
            "orders", limit, offset, customer)

    def details(self) -> dict[str, Any]:
        details = {**self.group.details(), "orders": self.store.order_count()}
        if details["state"] == "primary":
            details["buys"] = self.reconciler.stats()
        return details

    @Pyro5.api.expose
    @allow(*OPERATORS)
    def stats(self) -> dict[str, Any]:
        """Timings per method, and the buys the outbox's reconciler resolved here."""
        return {**super().stats(), "buys": self.reconciler.stats()}

    def endpoints(self) -> dict[str, object]:
        return {f"{self.name}{PEER_SUFFIX}": self.peer}

    def start(self) -> None:
        self.group.start(self.uri)
        self.settler.start()

    def close(self) -> None:
        self.settler.stop()
        self.group.close()
        self.catalog.close()
        self.store.close()
