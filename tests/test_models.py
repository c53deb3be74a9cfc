"""Input checks (check_*) and the Book/Order wire form."""

from __future__ import annotations

import math
import uuid
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from pyrostore.errors import InvalidRequest
from pyrostore.models import (
    MAX_COST,
    MAX_PAGE,
    MAX_QUANTITY,
    MAX_STOCK,
    MAX_TEXT,
    Book,
    Order,
    Retention,
    check_cost,
    check_int,
    check_item,
    check_page,
    check_quantity,
    check_request_id,
    check_stock,
    check_stock_delta,
    check_text,
    new_request_id,
    request_id_or_new,
    request_time,
)

NOT_INTEGERS = [True, False, 1.0, 2.5, "3", None, [1], b"1", float("nan")]


# --- integers -----------------------------------------------------------------------------


def test_check_int_accepts_the_bounds() -> None:
    assert check_int(3, "x", low=3, high=5) == 3
    assert check_int(5, "x", low=3, high=5) == 5


@pytest.mark.parametrize("value", [2, 6, -(2**70), 2**70])
def test_check_int_refuses_out_of_range(value: int) -> None:
    with pytest.raises(InvalidRequest, match="x must be between 3 and 5") as caught:
        check_int(value, "x", low=3, high=5)
    assert caught.value.details == {"field": "x"}


@pytest.mark.parametrize("value", NOT_INTEGERS)
def test_check_int_refuses_non_integers(value: Any) -> None:
    with pytest.raises(InvalidRequest, match="x must be an integer, not"):
        check_int(value, "x", low=-10, high=10)


@pytest.mark.parametrize("good", [1, 7, 2**62])
def test_check_item_accepts_positive_integers(good: int) -> None:
    assert check_item(good) == good


@pytest.mark.parametrize("bad", [0, -1, 2**62 + 1, 2**64, *NOT_INTEGERS])
def test_check_item_refuses(bad: Any) -> None:
    with pytest.raises(InvalidRequest) as caught:
        check_item(bad)
    assert caught.value.details["field"] == "item"


@settings(database=None)
@given(st.integers())
@example(0)
@example(1)
@example(MAX_QUANTITY)
@example(MAX_QUANTITY + 1)
@example(-1)
def test_check_quantity_accepts_exactly_one_to_max(value: int) -> None:
    if 1 <= value <= MAX_QUANTITY:
        assert check_quantity(value) == value
    else:
        with pytest.raises(InvalidRequest, match="qty must be between 1 and"):
            check_quantity(value)


@pytest.mark.parametrize("bad", [True, 1.0, "1", None, 0, -3, MAX_QUANTITY + 1, 10**30])
def test_check_quantity_refuses(bad: Any) -> None:
    with pytest.raises(InvalidRequest) as caught:
        check_quantity(bad)
    assert caught.value.details["field"] == "qty"


@pytest.mark.parametrize("good", [1, -1, MAX_QUANTITY, -MAX_QUANTITY, 42])
def test_check_stock_delta_accepts_nonzero_within_bounds(good: int) -> None:
    assert check_stock_delta(good) == good


@pytest.mark.parametrize("bad", [MAX_QUANTITY + 1, -MAX_QUANTITY - 1, True, 1.5, "2", None])
def test_check_stock_delta_refuses(bad: Any) -> None:
    with pytest.raises(InvalidRequest):
        check_stock_delta(bad)


def test_check_stock_delta_refuses_zero() -> None:
    with pytest.raises(InvalidRequest, match="stock_delta must not be 0") as caught:
        check_stock_delta(0)
    assert caught.value.details == {"field": "stock_delta"}


@pytest.mark.parametrize("good", [0, 1, MAX_STOCK])
def test_check_stock_accepts(good: int) -> None:
    assert check_stock(good) == good


@pytest.mark.parametrize("bad", [-1, MAX_STOCK + 1, False, 3.0, "5", None])
def test_check_stock_refuses(bad: Any) -> None:
    with pytest.raises(InvalidRequest) as caught:
        check_stock(bad)
    assert caught.value.details["field"] == "stock"


# --- cost ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [(30, 30.0), (0, 0.0), (19.999, 20.0), (1.234, 1.23), (1.236, 1.24), (MAX_COST, MAX_COST)],
)
def test_check_cost_accepts_and_rounds_to_cents(value: float, expected: float) -> None:
    result = check_cost(value)
    assert result == expected
    assert type(result) is float


@settings(database=None)
@given(st.floats(min_value=0, max_value=MAX_COST))
def test_check_cost_is_within_half_a_cent_and_has_at_most_two_decimals(value: float) -> None:
    result = check_cost(value)
    assert abs(result - value) <= 0.005 + 1e-9
    assert result == round(result, 2)


@pytest.mark.parametrize(
    "bad",
    [-0.01, -1, MAX_COST + 0.01, math.nan, math.inf, -math.inf, True, "30", None, [30]],
)
def test_check_cost_refuses(bad: Any) -> None:
    with pytest.raises(InvalidRequest) as caught:
        check_cost(bad)
    assert caught.value.details == {"field": "cost"}


def test_check_cost_refuses_an_int_too_large_for_a_float() -> None:
    with pytest.raises(InvalidRequest):
        check_cost(10**400)


# --- text and ids -------------------------------------------------------------------------


def test_check_text_trims() -> None:
    assert check_text("  RPCs for Dummies \n", "title") == "RPCs for Dummies"
    assert check_text("x" * MAX_TEXT, "topic") == "x" * MAX_TEXT
    assert check_text("  " + "y" * MAX_TEXT + "  ", "topic") == "y" * MAX_TEXT


@pytest.mark.parametrize("bad", ["", "   ", "\t\n", "x" * (MAX_TEXT + 1)])
def test_check_text_refuses_empty_blank_and_too_long(bad: str) -> None:
    with pytest.raises(InvalidRequest, match=f"title must have 1 to {MAX_TEXT} characters"):
        check_text(bad, "title")


@pytest.mark.parametrize("bad", [None, 5, b"title", ["a"]])
def test_check_text_refuses_non_strings(bad: Any) -> None:
    with pytest.raises(InvalidRequest, match="topic must be a string") as caught:
        check_text(bad, "topic")
    assert caught.value.details == {"field": "topic"}


V7 = "0190a3c4d5e67abc8def0123456789ab"


@pytest.mark.parametrize(("given", "taken"), [
    (V7, V7), (V7.upper(), V7), ("0190a3c4-d5e6-7abc-8def-0123456789ab", V7),
    ("0190A3C4-D5E6-7ABC-BDEF-0123456789AB", "0190a3c4d5e67abcbdef0123456789ab")])
def test_check_request_id_takes_a_uuid7_in_either_form(given: str, taken: str) -> None:
    assert check_request_id(given) == taken


@pytest.mark.parametrize("bad", [
    "", "a", "retry-1", "r" * 65, "a\nb", "\x00", None, 12345, b"abc", V7[:-1], V7 + "0",
    "9f1c2a7e5b0d4c3e8a6f1b2c3d4e5f60", "9f1c2a7e-5b0d-4c3e-8a6f-1b2c3d4e5f60",
    V7[:12] + "4" + V7[13:],  # a UUIDv4: no time in it
    V7[:16] + "c" + V7[17:],  # wrong variant
    "0190a3c4d-5e6-7abc-8def-0123456789ab", "0190a3c4-d5e6-7abc-8def-0123456789-b"])
def test_check_request_id_refuses(bad: Any) -> None:
    with pytest.raises(InvalidRequest, match="request_id must be") as caught:
        check_request_id(bad)
    assert caught.value.details == {"field": "request_id"}


def test_request_id_or_new_keeps_a_given_id_and_makes_fresh_ones() -> None:
    assert request_id_or_new(V7.upper()) == V7
    first, second = request_id_or_new(None), request_id_or_new(None)
    assert first != second
    assert check_request_id(first) == first
    with pytest.raises(InvalidRequest):
        request_id_or_new("")


@given(st.floats(min_value=0, max_value=2**48 / 1000 - 1))
def test_a_new_request_id_is_a_uuid7_that_says_when_it_was_made(now: float) -> None:
    request_id = new_request_id(now)
    assert check_request_id(request_id) == request_id
    parsed = uuid.UUID(request_id)
    assert (parsed.version, parsed.variant) == (7, uuid.RFC_4122)
    made = request_time(request_id)
    assert made is not None and now - 0.001 < made <= now


def test_request_ids_sort_by_their_time() -> None:
    ids = [new_request_id(t) for t in (1.7e9, 1.7e9 + 0.002, 1.7e9 + 1, 2e9)]
    assert ids == sorted(ids)
    assert request_time(uuid.uuid4().hex) is None


def test_a_retention_refuses_old_ids_and_forgets_them_only_after_the_clock_skew() -> None:
    retention, now = Retention(keep=100.0, skew=10.0), 1.8e9
    young, old, older = (new_request_id(now - age) for age in (99.0, 101.0, 111.0))
    assert retention.expired_by(young, now) is None
    assert retention.expired_by(old, now) == pytest.approx(1.0, abs=0.002)
    assert not retention.forgettable(old, now)
    assert retention.forgettable(older, now)
    assert old > retention.oldest_kept(now) > older
    legacy = uuid.uuid4().hex  # an id from a file written before ids carried their time
    assert retention.expired_by(legacy, now) is None and not retention.forgettable(legacy, now)


def test_check_page() -> None:
    assert check_page(1, 0) == (1, 0)
    assert check_page(MAX_PAGE, 500) == (MAX_PAGE, 500)
    for limit, offset in [(0, 0), (MAX_PAGE + 1, 0), (10, -1), (True, 0), (10, 1.0)]:
        with pytest.raises(InvalidRequest):
            check_page(limit, offset)


# --- wire form ----------------------------------------------------------------------------


def test_book_wire_round_trip() -> None:
    book = Book(item=2, title="RPCs for Dummies", topic="distributed systems", stock=4,
                cost=40.0, version=9)
    wire = book.to_wire()
    assert wire == {
        "item": 2,
        "title": "RPCs for Dummies",
        "topic": "distributed systems",
        "stock": 4,
        "cost": 40.0,
        "version": 9,
    }
    assert Book.from_wire(wire) == book


def test_book_from_wire_defaults_version_and_ignores_extra_keys() -> None:
    book = Book.from_wire(
        {"item": 1, "title": "t", "topic": "p", "stock": 0, "cost": 1.5, "extra": "x"}
    )
    assert book == Book(item=1, title="t", topic="p", stock=0, cost=1.5, version=0)


def test_order_wire_round_trip() -> None:
    order = Order(order_id=3, item=2, title="RPCs for Dummies", qty=2, unit_cost=40.0,
                  total=80.0, request_id="r-1", created_at=1_700_000_000.5)
    wire = order.to_wire()
    assert wire["order_id"] == 3
    assert wire["total"] == 80.0
    assert set(wire) == {"order_id", "item", "title", "qty", "unit_cost", "total",
                         "request_id", "created_at", "customer"}
    assert Order.from_wire(wire) == order
    del wire["customer"]  # an order from before shoppers had names: an operator's
    assert Order.from_wire(wire).customer == ""
