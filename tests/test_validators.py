"""The checks of messages between the store's services, on their own (no network)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pyrostore.catalog import MAX_SETTLED, CatalogMachine, add_op, settle_op, take_op, update_op
from pyrostore.control import EPOCH_LEAD, ControlState, Renewal
from pyrostore.errors import InvalidRequest
from pyrostore.frontend import MAX_INVALIDATED_KEYS, _changes
from pyrostore.models import (
    View,
    check_fields,
    check_op,
    check_read_key,
    check_token,
    check_uri,
    check_version,
    item_key,
    new_request_id,
    topic_key,
)
from pyrostore.order import OrderMachine, record_op
from pyrostore.schemas import CatalogStore, OrderStore, check_snapshot_rows
from pyrostore.store import fingerprint


@pytest.mark.parametrize("uri", ["PYRO:pyrostore.catalog.1@127.0.0.1:40001",
                                 "PYRO:x@[::1]:1", "PYRO:a.b-c_d@my-host.local:65535"])
def test_check_uri_takes_store_uris(uri: str) -> None:
    assert check_uri(uri) == uri


@pytest.mark.parametrize("uri", [None, 7, "", "PYRO:x@h", "PYRO:x@h:0", "PYRO:x@h:65536",
                                 "PYRO:x y@h:1", "PYRONAME:x", "PYRO:x@h:1\x1b", "x" * 300,
                                 "PYRO:x@[::1:1", "PYRO:x@h:1 "])
def test_check_uri_refuses_anything_else(uri: Any) -> None:
    with pytest.raises(InvalidRequest):
        check_uri(uri)


def test_check_uri_can_insist_on_the_object() -> None:
    assert check_uri("PYRO:pyrostore.order.2@h:1", object_name="pyrostore.order.2")
    with pytest.raises(InvalidRequest, match=r"URI of pyrostore\.order\.2"):
        check_uri("PYRO:pyrostore.coordinator.1@h:1", object_name="pyrostore.order.2")


@given(st.integers(1, 2**62), st.text(min_size=1, max_size=200).filter(
    lambda t: t.strip() and t.isprintable()))
def test_every_key_the_store_makes_is_a_read_key(item: int, topic: str) -> None:
    for key in (item_key(item), topic_key(topic.strip()), "topics", "orders", "order:3"):
        assert check_read_key(key) == key


@pytest.mark.parametrize("key", [None, 1, "", "item:", "item:0", "item:01", "item:-2", "Topics",
                                 "topic:", "topic:Mixed", "topic: x", "topic:a\x00", "junk",
                                 "topic:" + "x" * 700])
def test_check_read_key_refuses_others(key: Any) -> None:
    with pytest.raises(InvalidRequest):
        check_read_key(key)


@pytest.mark.parametrize("version", [[1, 2], (0, 0), [2**62, 2**62]])
def test_check_version_takes_pairs_in_range(version: Any) -> None:
    assert check_version(version) == tuple(version)


@pytest.mark.parametrize("version", [None, [], [1], [1, 2, 3], [True, 1], [1, -1],
                                     [2**62 + 1, 0], ["1", 2], {"epoch": 1}])
def test_check_version_refuses_others(version: Any) -> None:
    with pytest.raises(InvalidRequest):
        check_version(version)


def test_check_fields_names_what_is_missing_and_extra() -> None:
    assert check_fields({"a": 1, "b": 2}, "pair", ("a", "b")) == {"a": 1, "b": 2}
    with pytest.raises(InvalidRequest, match="missing b; unknown 'c'"):
        check_fields({"a": 1, "c": 2}, "pair", ("a", "b"))
    with pytest.raises(InvalidRequest, match="must be a dict"):
        check_fields([1, 2], "pair", ("a", "b"))


def test_check_token_is_taken_as_it_is() -> None:
    assert check_token(" x ", "incarnation") == " x "
    for bad in ("", "x" * 65, "a\nb", None, 3):
        with pytest.raises(InvalidRequest):
            check_token(bad, "incarnation")
    assert check_token("", "customer", empty=True) == ""


# -- forwarded writes -----------------------------------------------------------------------

BOOK = {"item": 8, "title": "T", "topic": "t", "stock": 3, "cost": 1.5, "version": 4}


TAKEN = {"item": 1, "title": "T", "qty": 2, "unit_cost": 3.0, "stock": 0, "version": 4,
         "taken_at": 1.7e9}
REFUSED = {"item": 1, "qty": 5, "stock": 2, "refused": "only 2 left"}


@pytest.mark.parametrize(("op", "result"), [
    (take_op(1, 2, "alice"), TAKEN), (take_op(1, 5, ""), REFUSED),
    (update_op(1, 9.99, None), BOOK), (update_op(1, None, -3), BOOK),
    (add_op("A book", "Some Topic", 5, 12), BOOK),
    (settle_op(["r1", "r2"], ["r3"]), {"restocked": [1]}),
    (settle_op([], ["r3"]), {"restocked": []})])
def test_the_catalog_takes_back_every_op_its_primary_makes(op: dict[str, Any],
                                                           result: dict[str, Any]) -> None:
    assert CatalogMachine.check_write(op, result) == (op, result)


@pytest.mark.parametrize(("done", "undone"), [([], []), (["r"], ["r"]), (["r", "r"], []),
                                              ("r", []), ([""], []), (["r"] * 1025, [])])
def test_a_settlement_names_each_take_once(done: Any, undone: Any) -> None:
    with pytest.raises(InvalidRequest):
        settle_op(done, undone)


@pytest.mark.parametrize("op", [
    None, {}, {"op": "record"}, {"op": "take", "item": 1}, {"op": "take", "item": 1, "qty": 0},
    {"op": "take", "item": 1, "qty": 1, "extra": 1},
    {"op": "take", "item": 1, "qty": 1, "customer": "a\nb"}, {"op": "settle", "done": ["r"]},
    {"op": "update", "item": 1, "cost": None,
                                                      "stock_delta": None},
    {"op": "add", "title": " padded ", "topic": "t", "stock": 1, "cost": 1.0},
    {"op": "add", "title": "a\x1b[31m", "topic": "t", "stock": 1, "cost": 1.0},
    {"op": "update", "item": True, "cost": 1.0, "stock_delta": None}, {"op": ["take"]}])
def test_the_catalog_refuses_any_other_op(op: Any) -> None:
    with pytest.raises(InvalidRequest):
        CatalogMachine.check_write(op, BOOK)


@pytest.mark.parametrize("result", [None, {}, {**BOOK, "extra": 1}, {**BOOK, "stock": -1},
                                    {**BOOK, "title": 5}, {**BOOK, "item": "8"}])
def test_the_catalog_refuses_a_result_of_the_wrong_shape(result: Any) -> None:
    with pytest.raises(InvalidRequest):
        CatalogMachine.check_write(update_op(8, 2.0, None), result)


def test_the_order_log_checks_its_record() -> None:
    op = record_op(1, 2, "Old \x1b title", 3.0, 1.7e9, "")  # old data may hold any text
    order = {"order_id": 1, "item": 1, "title": "T", "qty": 2, "unit_cost": 3.0, "total": 6.0,
             "request_id": "r", "created_at": 1.7e9, "customer": ""}
    assert OrderMachine.check_write(op, order) == (op, order)
    for bad in ({**op, "created_at": float("nan")}, {**op, "qty": 0}, {**op, "op": "take"}):
        with pytest.raises(InvalidRequest):
            OrderMachine.check_write(bad, order)
    with pytest.raises(InvalidRequest):
        OrderMachine.check_write(op, {**order, "total": -1})


def test_check_op_refuses_a_builder_it_was_not_given() -> None:
    with pytest.raises(InvalidRequest, match="one of take"):
        check_op({"op": "add"}, {"take": take_op})


# -- snapshots ------------------------------------------------------------------------------

REQUEST = ["r-1", "{}", "{}", 1, 1]
BOOK_ROW = [1, "T", "t", "t", 3, 1.0, 1]
TAKE_ROW = ["r-1", 1, 1, 2, "alice", "open"]
ORDER_ROW = [1, 1, "T", 2, 3.0, 6.0, "r-1", 1.7e9, ""]


def test_snapshot_rows_of_the_right_shape_are_taken() -> None:
    for name, rows in (("requests", [REQUEST]), ("books", [BOOK_ROW]), ("takes", [TAKE_ROW])):
        assert check_snapshot_rows(name, rows, 1, CatalogStore.tables) == rows
    for name, rows in (("requests", [REQUEST]), ("orders", [ORDER_ROW])):
        assert check_snapshot_rows(name, rows, 1, OrderStore.tables) == rows


def test_a_snapshot_carries_the_largest_settlement() -> None:
    ids = [new_request_id() for _ in range(MAX_SETTLED)]
    op, result = settle_op(ids, []), {"restocked": [123_456_789] * MAX_SETTLED}
    row = ["r-1", fingerprint(op), json.dumps(result), 1, 1]
    assert check_snapshot_rows("requests", [row], 1, CatalogStore.tables) == [row]


@pytest.mark.parametrize(("name", "rows"), [
    ("orders", [ORDER_ROW]),  # not a catalog's table
    ("meta", []), ("incoming_books", []), (["books"], []),
    ("books", [BOOK_ROW[:-1]]),
    ("books", [BOOK_ROW, BOOK_ROW]),
    ("requests", [REQUEST, REQUEST]),
    ("requests", [["r-2", "{}", "{}", 9, 1]]),  # beyond the snapshot's position
    ("requests", [["r-2", "{", "{}", 1, 1]]),
    ("requests", [REQUEST[:-1]]),  # without its epoch
    ("requests", [["r-2", "{}", "{}", 1, -1]]),
    ("books", [[1, "T", "t", "t", -3, 1.0, 1]]),
    ("books", [[1, None, "t", "t", 3, 1.0, 1]]),
    ("books", "rows"),
    ("takes", [["r-1", 1, 1, 2, "alice", "closed"]]),
    ("takes", [TAKE_ROW, TAKE_ROW]),
    ("takes", [["r-1", 1, 1, 0, "alice", "open"]])])
def test_snapshot_rows_of_another_shape_are_refused(name: Any, rows: Any) -> None:
    with pytest.raises(InvalidRequest):
        check_snapshot_rows(name, rows, 1, CatalogStore.tables)


# -- invalidations and renewals -------------------------------------------------------------

def test_an_invalidation_is_checked_and_bounded() -> None:
    assert _changes(3, [[["item:1", "topics"], [3, 9]]]) == [(["item:1", "topics"], (3, 9))]
    too_many = [[[f"item:{n}" for n in range(1, 600)], [3, 1]]] * 2
    for bad in (too_many, [[["item:1"], [4, 9]]], [[["item:1"]]], [["item:1", [3, 1]]],
                [[["item:x"], [3, 1]]], "changes", [[["item:1"], [3, 1]]] * 1025):
        with pytest.raises(InvalidRequest):
            _changes(3, bad)
    assert MAX_INVALIDATED_KEYS == 1024


def test_a_renewal_names_its_own_replica() -> None:
    renewal = {"group": "order", "replica": 2, "incarnation": "i", "seq": 1,
               "uri": "PYRO:pyrostore.order.2@h:1", "applied": 0, "epoch": 0, "state": "backup"}
    assert Renewal.from_wire(renewal).uri == renewal["uri"]
    for uri in ("PYRO:pyrostore.order.3@h:1", "PYRO:pyrostore.coordinator.1@h:1", "x"):
        with pytest.raises(InvalidRequest):
            Renewal.from_wire({**renewal, "uri": uri})
    with pytest.raises(InvalidRequest):
        Renewal.from_wire({**renewal, "replica": "2"})


def test_the_state_machine_refuses_an_epoch_no_view_was_near() -> None:
    state = ControlState()
    state.groups["catalog"].view = View(epoch=5, primary=1)
    renewal = Renewal("catalog", 3, "i", 1, "PYRO:pyrostore.catalog.3@h:1", 0,
                      5 + EPOCH_LEAD + 1, "joining").to_wire()
    result = state.apply({"op": "renew", "renewal": renewal})
    assert not result["ok"] and 3 not in state.groups["catalog"].reports
    # a command logged by an older coordinator, malformed by today's checks, changes nothing
    assert not state.apply({"op": "renew", "renewal": {**renewal, "uri": "x"}})["ok"]
