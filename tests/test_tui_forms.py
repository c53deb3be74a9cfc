"""What the terminal client's forms accept, and the words for what they refuse."""

from __future__ import annotations

import pytest

from pyrostore.client.tui.app import StoreApp
from pyrostore.client.tui.books import book_columns
from pyrostore.client.tui.forms import new_book, quantity, update_request
from pyrostore.client.tui.orders import order_columns
from pyrostore.errors import InvalidRequest


def test_a_quantity_is_a_whole_number_from_one() -> None:
    assert quantity(" 3 ") == 3
    for typed, why in (("", "Type the number of copies"), ("two", "whole number"),
                       ("1.5", "whole number"), ("0", "at least 1"), ("-2", "at least 1")):
        with pytest.raises(InvalidRequest, match=why):
            quantity(typed)


def test_an_update_needs_an_item_and_something_to_change() -> None:
    assert update_request("2", "+5", "") == {"item": 2, "stock_delta": 5, "cost": None}
    assert update_request("2", "", "$12.5") == {"item": 2, "stock_delta": None, "cost": 12.5}
    for args, why in ((("2", "", ""), "stock change"), (("", "5", ""), "item number"),
                      (("2", "", "free"), "must be a number"), (("2", "", "-1"), "zero or more"),
                      (("2", "", "nan"), "zero or more")):
        with pytest.raises(InvalidRequest, match=why):
            update_request(*args)


def test_a_new_book_needs_every_field() -> None:
    assert new_book(" T ", "t", "3", "9.5") == {"title": "T", "topic": "t", "stock": 3,
                                                "cost": 9.5}
    for args, why in ((("", "t", "1", "1"), "title"), (("T", " ", "1", "1"), "topic"),
                      (("T", "t", "", "1"), "stock"), (("T", "t", "-1", "1"), "at least 0"),
                      (("T", "t", "1", ""), "cost")):
        with pytest.raises(InvalidRequest, match=why):
            new_book(*args)


@pytest.mark.parametrize("columns", [book_columns, order_columns])
def test_columns_fill_the_width_and_the_title_takes_the_rest(columns: object) -> None:
    assert callable(columns)
    narrow, wide = dict(columns(80)), dict(columns(160))
    assert wide["title"] > narrow["title"] >= 16
    assert {k: v for k, v in wide.items() if k not in ("title", "topic")} == \
        {k: v for k, v in narrow.items() if k not in ("title", "topic")}
    padding = 2 * len(narrow)  # a cell's padding on either side
    assert sum(narrow.values()) + padding <= 80


def test_the_app_is_importable_from_the_package() -> None:
    from pyrostore.client import tui
    assert tui.StoreApp is StoreApp
