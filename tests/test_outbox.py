"""Atomic buys: every take of stock ends in exactly one order, without help from the client.

The deterministic tests hold a buy at the order primary right after the catalog took its
stock (the ``hold_after_take`` hook), kill the order primary, the catalog primary or both
there with -9, and never send the buy again: the store alone must record its order, once.
The reconciler's decisions are stepped with a fake clock.
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any

import Pyro5.errors
import pytest

from pyrostore.client import Client
from pyrostore.config import Settings
from pyrostore.errors import (
    BuyUndone,
    ConflictingRequest,
    OutcomeUnknown,
    OutOfStock,
    PyrostoreError,
    Unavailable,
)
from pyrostore.launcher import Cluster
from pyrostore.models import request_id_or_new
from pyrostore.outbox import Reconciler
from tests.conftest import settled, wait_until
from tests.shopping import hold
from tests.test_replication import info, orders_on, primary, proxy, restart

pytestmark = pytest.mark.timeout(180)


def take(request_id: str, *, result: bool = True) -> dict[str, Any]:
    """An open take as the catalog's outbox lists it."""
    answer = {"title": "T", "unit_cost": 1.0, "taken_at": 1.0} if result else None
    return {"request_id": request_id, "item": 1, "qty": 1, "customer": "", "result": answer}


# -- the reconciler's decisions, on a fake clock ---------------------------------------------

def test_a_take_is_completed_only_after_its_grace() -> None:
    reconciler = Reconciler(grace=0.5, forgettable=lambda request_id, wall: False)
    assert reconciler.plan([take("a")], set(), now=10.0, wall=0.0).record == []
    assert reconciler.plan([take("a")], set(), now=10.4, wall=0.0).record == []
    assert [t["request_id"] for t in
            reconciler.plan([take("a")], set(), now=10.5, wall=0.0).record] == ["a"]


def test_a_take_whose_order_is_acknowledged_is_done_at_once_even_if_forgettable() -> None:
    reconciler = Reconciler(grace=0.5, forgettable=lambda request_id, wall: request_id == "c")
    plan = reconciler.plan([take("a"), take("b"), take("c")], {"b", "c"}, now=10.0, wall=0.0)
    assert (plan.done, plan.record, plan.undo) == (["b", "c"], [], [])


def test_a_forgettable_take_is_undone_and_a_forgotten_result_waits_for_that() -> None:
    old = {"old"}
    reconciler = Reconciler(grace=0.5, forgettable=lambda request_id, wall: request_id in old)
    reconciler.plan([take("old", result=False), take("new", result=False)], set(), 0.0, 0.0)
    plan = reconciler.plan([take("old", result=False), take("new", result=False)], set(),
                           5.0, 0.0)
    assert plan.undo == ["old"]
    assert plan.record == []  # without what its take answered, no order can be made


def test_a_take_seen_again_after_it_left_starts_its_grace_again() -> None:
    reconciler = Reconciler(grace=0.5, forgettable=lambda request_id, wall: False)
    reconciler.plan([take("a")], set(), now=0.0, wall=0.0)
    reconciler.plan([], set(), now=0.3, wall=0.0)
    assert reconciler.plan([take("a")], set(), now=0.6, wall=0.0).record == []


def test_the_reconciler_counts_what_it_settled() -> None:
    reconciler = Reconciler(grace=0.5, forgettable=lambda request_id, wall: False)
    reconciler.plan([take("a"), take("b"), take("c")], set(), now=0.0, wall=0.0)
    reconciler.settled(done=2, completed=1, undone=1)
    assert reconciler.stats() == {"pending": 0, "resolved": 3, "completed": 1, "undone": 1}


# -- real processes: a buy abandoned after its take ------------------------------------------

ITEM, QTY = 1, 2


def abandoned_buy(cluster: Cluster, request_id: str) -> threading.Thread:
    """A buy sent straight to the order primary (as the frontend would, once, never again)
    and held there right after the catalog took its stock."""
    order_primary = primary(cluster, "order")
    with proxy(cluster, "order", order_primary) as replica:
        replica.set_hook("hold_after_take", 60)

    def buy() -> None:
        # its server may be killed under it, on purpose: whatever it raises, it never retries
        with proxy(cluster, "order", order_primary, as_node=True) as replica, \
                contextlib.suppress(Exception):
            replica.buy(ITEM, QTY, request_id, "")

    thread = threading.Thread(target=buy, daemon=True)
    thread.start()
    with proxy(cluster, "order", order_primary) as replica:
        wait_until(lambda: replica.hook_waiting("hold_after_take"), what="the buy held")
    return thread


def serving(cluster: Cluster, group: str) -> bool:
    """The group has a primary that serves."""
    try:
        return bool(info(cluster, group, primary(cluster, group))["state"] == "primary")
    except (PyrostoreError, KeyError, Pyro5.errors.PyroError):  # killed a moment ago
        return False


@pytest.mark.parametrize("victims", [("order",), ("catalog",), ("order", "catalog")])
def test_a_take_ends_in_exactly_one_order_without_the_client(fresh_store: Cluster,
                                                             victims: tuple[str, ...]) -> None:
    cluster, request_id = fresh_store, request_id_or_new(None)
    with Client(settings=cluster.settings) as client:
        stock = client.lookup(ITEM)["stock"]
        buyer = abandoned_buy(cluster, request_id)
        assert client.lookup(ITEM)["stock"] == stock - QTY  # taken; no order yet
        killed = {group: primary(cluster, group) for group in victims}
        for group, replica_id in killed.items():
            cluster.kill(group, replica_id)
        if "order" not in victims:  # the held buy goes on, to a catalog that failed over
            with proxy(cluster, "order", primary(cluster, "order")) as replica:
                replica.release_hook("hold_after_take")
        buyer.join(timeout=30)
        wait_until(lambda: serving(cluster, "catalog") and serving(cluster, "order"),
                   timeout=30, what="both groups serving again")
        both_serving = time.monotonic()
        wait_until(lambda: client.outcome(request_id)["state"] == "done", timeout=30,
                   what="the store to record the abandoned buy's order")
        took = time.monotonic() - both_serving
        print(f"order recorded {took:.2f} s after both groups served ({victims})")
        for group, replica_id in killed.items():
            restart(cluster, group, replica_id)
        settled(cluster)
        assert client.lookup(ITEM)["stock"] == stock - QTY
        order = client.outcome(request_id)["order"]
        assert (order["item"], order["qty"]) == (ITEM, QTY)
    for replica_id in (1, 2):
        wait_until(lambda r=replica_id: info(cluster, "order", r)["applied"]
                   == info(cluster, "order", 3 - r)["applied"], what="order replicas level")
        matching = [o for o in orders_on(cluster, replica_id) if o["request_id"] == request_id]
        assert matching == [order], f"order replica {replica_id}"
    # the bound is two leases once both groups serve; a busy machine gets some slack
    assert took < 2 * cluster.settings.lease + 3.0, f"the order took {took:.2f} s"


def test_a_take_stays_open_while_its_order_is_not_yet_acknowledged(fresh_store: Cluster) -> None:
    """An order committed at the order primary but held before every backup acknowledged it
    could still be lost with that primary: its take must not leave the outbox meanwhile."""
    cluster, request_id = fresh_store, request_id_or_new(None)
    order_primary, catalog_primary = primary(cluster, "order"), primary(cluster, "catalog")
    with Client(settings=cluster.settings) as client:
        stock = client.lookup(ITEM)["stock"]
    with proxy(cluster, "order", order_primary) as replica:
        replica.set_hook("hold_before_ack", 60)

    def buy() -> None:
        with Client(settings=cluster.settings) as shopper:
            shopper.buy(ITEM, QTY, request_id=request_id)

    buyer = threading.Thread(target=buy, daemon=True)
    buyer.start()
    try:
        with proxy(cluster, "order", order_primary) as replica:
            wait_until(lambda: replica.hook_waiting("hold_before_ack"),
                       what="the order held before its acknowledgement")
        hold(3 * cluster.settings.lease)  # a dozen of the settler's passes go by
        assert info(cluster, "catalog", catalog_primary)["pending_buys"] == 1
    finally:
        with proxy(cluster, "order", order_primary) as replica:
            replica.release_hook("hold_before_ack")
        buyer.join(30)
    settled(cluster)
    with Client(settings=cluster.settings) as client:
        assert client.outcome(request_id)["state"] == "done"
        assert client.lookup(ITEM)["stock"] == stock - QTY


def test_outcome_of_done_refused_pending_and_never_sent(fresh_store: Cluster) -> None:
    cluster = fresh_store
    with Client(settings=cluster.settings) as client:
        done = request_id_or_new(None)
        order = client.buy(ITEM, 1, request_id=done)
        assert client.outcome(done) == {"request_id": done, "state": "done", "order": order,
                                        "error": None, "reason": None}

        refused = request_id_or_new(None)
        with pytest.raises(OutOfStock):
            client.buy(ITEM, 10_000, request_id=refused)
        outcome = client.outcome(refused)
        assert (outcome["state"], outcome["error"], outcome["order"]) == \
            ("refused", "OutOfStock", None)
        assert "in stock" in outcome["reason"]

        never = request_id_or_new(None)
        assert client.outcome(never)["state"] == "unknown"

        pending = request_id_or_new(None)
        buyer = abandoned_buy(cluster, pending)  # held after the take, at a live primary
        order_primary = primary(cluster, "order")
        try:
            assert client.outcome(pending)["state"] == "pending"
        finally:
            with proxy(cluster, "order", order_primary) as replica:
                replica.release_hook("hold_after_take")
        buyer.join(timeout=30)
        assert client.outcome(pending)["state"] == "done"
        with pytest.raises(ConflictingRequest):  # the same id for another buy
            client.buy(ITEM, 3, request_id=pending)


# -- Client.buy when a call cannot tell the outcome ------------------------------------------

class Frontends:
    """Stands in for the client's frontends: the buy's call is lost; ``order_status`` answers
    each of ``outcomes`` in turn (an exception is raised). The network cannot be made to
    lose exactly this call every time it is retried, for as long as a failover lasts."""

    def __init__(self, *outcomes: Any) -> None:
        self.outcomes = list(outcomes)
        self.asked: list[str] = []

    def call(self, method: str, *args: Any) -> Any:
        if method == "buy":
            raise OutcomeUnknown("frontend.buy may or may not have run (connection lost)")
        self.asked.append(args[0])
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, BaseException):
            raise outcome
        return {"request_id": args[0], "order": None, "error": None, "reason": None, **outcome}

    def close(self) -> None:
        pass


def lost_buy(frontends: Frontends) -> Any:
    client = Client(settings=Settings.from_env(environ={}, insecure=True, lease=0.4,
                                               heartbeat_interval=0.1, failover_timeout=1.0))
    client.frontends = frontends  # type: ignore[assignment]
    return client.buy(1, 1, request_id=REQUEST_ID)


REQUEST_ID = request_id_or_new(None)
ORDER = {"order_id": 1, "request_id": REQUEST_ID}


def test_a_lost_buy_that_the_store_finishes_returns_its_order() -> None:
    frontends = Frontends({"state": "pending"}, {"state": "pending"},
                          {"state": "done", "order": ORDER})
    assert lost_buy(frontends) == ORDER
    assert frontends.asked == [REQUEST_ID] * 3


def test_a_lost_buy_that_was_refused_raises_the_refusal() -> None:
    with pytest.raises(OutOfStock, match="only 0"):
        lost_buy(Frontends({"state": "refused", "error": "OutOfStock", "reason": "only 0"}))
    with pytest.raises(BuyUndone):
        lost_buy(Frontends({"state": "refused", "error": "BuyUndone", "reason": "undone"}))


@pytest.mark.parametrize("answers", [
    [{"state": "unknown"}],
    [Unavailable("no frontend")],
    [{"state": "pending"}] * 100,  # still pending after PENDING_LEASES leases
], ids=["unknown", "unreachable", "pending"])
def test_a_lost_buy_still_unknown_raises_outcome_unknown_with_its_id(answers: Any) -> None:
    with pytest.raises(OutcomeUnknown, match=REQUEST_ID) as caught:
        lost_buy(Frontends(*answers))
    assert caught.value.details["request_id"] == REQUEST_ID
