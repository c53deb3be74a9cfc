"""The rich tables render what the store returns: titles, prices, states, settings."""

from __future__ import annotations

import io
import time

from rich.console import Console, RenderableType

from pyrostore.client.views import (
    book_rows,
    book_table,
    buys_table,
    cache_table,
    cluster_table,
    filter_books,
    group_table,
    matches,
    money,
    order_rows,
    order_table,
    outcome_text,
    outcome_view,
    settings_table,
    status_table,
)
from pyrostore.config import Settings
from pyrostore.errors import NotFound, OutcomeUnknown, OutOfStock, Unavailable

BOOKS = [
    {"item": 1, "title": "How to get a good grade in 677 in 20 minutes a day",
     "topic": "distributed systems", "stock": 10, "cost": 30.0},
    {"item": 4, "title": "Cooking for the Impatient Graduate Student",
     "topic": "graduate school", "stock": 0, "cost": 150},
]


def render(renderable: RenderableType) -> str:
    console = Console(file=io.StringIO(), width=120, color_system=None)
    console.print(renderable)
    output = console.file.getvalue()
    assert isinstance(output, str)
    return output


def header(text: str, first_column: str) -> str:
    """The table's header line: the first line naming its first column."""
    return next(line for line in text.splitlines() if first_column in line)


def test_money() -> None:
    assert money(30) == "$30.00"
    assert money(0.5) == "$0.50"
    assert money(1234.5) == "$1,234.50"


def test_book_table_shows_every_column_and_price() -> None:
    text = render(book_table(BOOKS, title="Catalog"))
    assert "Catalog" in text
    for column in ("item", "title", "topic", "stock", "cost"):
        assert column in header(text, "item")
    assert "How to get a good grade in 677 in 20 minutes a day" in text
    assert "Cooking for the Impatient Graduate Student" in text
    assert "distributed systems" in text
    assert "$30.00" in text
    assert "$150.00" in text


def test_book_table_of_search_rows_has_only_item_and_title() -> None:
    rows = [{"item": 2, "title": "RPCs for Dummies"}, {"item": 5,
            "title": "How to finish Project 3 on time"}]
    text = render(book_table(rows))
    assert "title" in header(text, "item")
    assert "stock" not in text
    assert "topic" not in text
    assert "cost" not in text
    assert "RPCs for Dummies" in text
    assert "How to finish Project 3 on time" in text


def test_book_table_of_nothing_still_has_a_header() -> None:
    text = render(book_table([]))
    assert "item" in text and "title" in text
    assert "stock" not in text


def test_order_table() -> None:
    created = time.mktime((2024, 1, 2, 3, 4, 5, 0, 0, -1))
    orders = [{"order_id": 12, "item": 2, "title": "RPCs for Dummies", "qty": 2,
               "unit_cost": 40.0, "total": 80.0, "request_id": "r", "created_at": created}]
    text = render(order_table(orders, title="Orders"))
    assert "Orders" in text
    for column in ("order", "when", "qty", "unit", "total"):
        assert column in header(text, "order")
    assert "RPCs for Dummies" in text
    assert "2024-01-02 03:04:05" in text
    assert "$40.00" in text
    assert "$80.00" in text
    assert "12" in text


def test_outcome_view_shows_the_order_or_the_reason() -> None:
    order = {"order_id": 7, "item": 2, "title": "RPCs for Dummies", "qty": 1, "unit_cost": 40.0,
             "total": 40.0, "request_id": "r", "created_at": 0.0}
    done = render(outcome_view({"request_id": "r", "state": "done", "order": order}))
    assert "done" in done and "RPCs for Dummies" in done
    refused = render(outcome_view({"request_id": "r", "state": "refused", "order": None,
                                   "error": "OutOfStock", "reason": "only 1 of item 2"}))
    assert "refused" in refused and "only 1 of item 2" in refused
    assert "recording the order" in render(outcome_view({"request_id": "r", "state": "pending"}))


def test_buys_table_shows_each_primary_and_nothing_of_backups() -> None:
    text = render(buys_table([
        {"role": "catalog", "id": 1, "state": "primary", "pending_buys": 3},
        {"role": "catalog", "id": 2, "state": "backup", "pending_buys": 99},
        {"role": "order", "id": 2, "state": "primary",
         "buys": {"pending": 3, "resolved": 11, "completed": 4, "undone": 1}}]))
    assert "catalog 1" in text and "order 2" in text and "catalog 2" not in text
    assert "99" not in text
    order_row = next(line for line in text.splitlines() if "order 2" in line)
    assert order_row.replace("│", " ").split()[2:] == ["3", "11", "4", "1"], order_row


def test_an_unknown_outcome_names_its_request_id() -> None:
    unknown = OutcomeUnknown("lost", request_id="abc123")
    assert "pyrostore outcome abc123" in outcome_text(unknown).plain


def test_status_table_shows_states_and_dashes_for_unknowns() -> None:
    services = [
        {"role": "catalog", "id": 1, "state": "primary", "epoch": 3, "applied": 41,
         "pid": 4242, "uri": "PYRO:pyrostore.catalog.1@127.0.0.1:40001"},
        {"role": "catalog", "id": 2, "state": "down", "epoch": None, "applied": None,
         "pid": None, "uri": ""},
        {"role": "frontend", "id": 1, "state": "serving", "epoch": None, "applied": None,
         "pid": 4343, "uri": "PYRO:pyrostore.frontend.1@127.0.0.1:40003"},
    ]
    text = render(status_table(services, title="Cluster"))
    assert "Cluster" in text
    for column in ("role", "state", "epoch", "applied", "pid", "restarts", "uri"):
        assert column in header(text, "role")
    assert "primary" in text
    assert "down" in text
    assert "serving" in text
    assert "4242" in text
    assert "PYRO:pyrostore.catalog.1@127.0.0.1:40001" in text
    down_line = next(line for line in text.splitlines() if "down" in line)
    assert down_line.count("-") >= 3


def test_status_table_shows_restarts_and_a_dash_for_unsupervised() -> None:
    services = [
        {"role": "catalog", "id": 1, "state": "primary", "pid": 4242, "restarts": 3},
        {"role": "catalog", "id": 2, "state": "backup", "pid": 4343, "restarts": None},
    ]
    lines = render(status_table(services)).splitlines()
    restarted = next(line for line in lines if "4242" in line)
    by_hand = next(line for line in lines if "4343" in line)
    assert restarted.split("│")[7].strip() == "3"
    assert by_hand.split("│")[7].strip() == "-"


def test_status_table_without_a_state_shows_a_question_mark() -> None:
    text = render(status_table([{"role": "order", "id": 1}]))
    assert "?" in text


def test_settings_table_lists_the_dump() -> None:
    text = render(settings_table(Settings().dump()))
    assert "setting" in text and "value" in text
    assert "PYROSTORE_NS_PORT" in text
    assert "9090" in text
    assert "PYROSTORE_SERIALIZER" in text
    assert "msgpack" in text


def test_book_rows_are_strings_in_column_order() -> None:
    assert book_rows(BOOKS) == [
        ("1", BOOKS[0]["title"], "distributed systems", "10", "$30.00"),
        ("4", BOOKS[1]["title"], "graduate school", "0", "$150.00"),
    ]


def test_filter_books_by_topic_and_text() -> None:
    assert [b["item"] for b in filter_books(BOOKS)] == [1, 4]
    assert [b["item"] for b in filter_books(BOOKS, topic="Graduate School")] == [4]
    assert [b["item"] for b in filter_books(BOOKS, text="  GRADE ")] == [1]
    assert [b["item"] for b in filter_books(BOOKS, text="systems")] == [1]  # topic matches
    assert filter_books(BOOKS, topic="graduate school", text="grade") == []


def test_matches_wants_every_word_in_the_title_or_the_topic() -> None:
    book = {"title": "RPCs for Dummies", "topic": "distributed systems"}
    assert matches(book, "") and matches(book, "rpc DISTRIB")  # one in each, parts of words
    assert not matches(book, "rpc graduate")  # every word, not any
    assert not matches(book, "dummies distributed systems school")


def test_order_rows() -> None:
    created = time.mktime((2024, 1, 2, 3, 4, 5, 0, 0, -1))
    order = {"order_id": 7, "created_at": created, "item": 2, "qty": 3,
             "title": "RPCs for Dummies", "total": 120.0}
    assert order_rows([order]) == [("7", "03:04:05", "2", "3", "RPCs for Dummies", "$120.00")]


SERVICES = [
    {"role": "frontend", "id": 1, "state": "serving", "pid": 30,
     "cache": {"hits": 12, "misses": 3, "fills_refused": 1, "invalidations": 4,
               "entries": 2, "lease_left": 0.75}},
    {"role": "catalog", "id": 2, "state": "down", "pid": None},
    {"role": "catalog", "id": 1, "state": "primary", "epoch": 3, "applied": 41, "pid": 10},
    {"role": "coordinator", "id": 1, "state": "leader", "pid": 5,
     "raft": {"state": "leader", "term": 4, "commit": 977}},
    {"role": "coordinator", "id": 2, "state": "down", "pid": None},
]


def test_cluster_table_fits_80_columns_in_role_order() -> None:
    console = Console(file=io.StringIO(), width=80, color_system=None)
    console.print(cluster_table(SERVICES))
    text = console.file.getvalue()
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 80
    order = [next(i for i, line in enumerate(lines) if name in line)
             for name in ("coordinator 1", "catalog 1", "catalog 2", "frontend 1")]
    assert order == sorted(order)
    assert "down" in next(line for line in lines if "catalog 2" in line)
    assert "12/3" in next(line for line in lines if "frontend 1" in line)
    assert "41" in next(line for line in lines if "catalog 1" in line)
    leader = next(line for line in lines if "coordinator 1" in line)
    assert "leader" in leader and "term 4" in leader and "977" in leader
    assert "down" in next(line for line in lines if "coordinator 2" in line)


def test_cache_and_group_tables() -> None:
    text = render(cache_table(SERVICES))
    assert "12" in text and "0.75 s" in text
    groups = {"catalog": {"epoch": 3, "primary": 1, "backups": [], "replicas": {
        "1": {"applied": 41, "lease_left": 0.9, "suspended": False},
        "2": {"applied": 40, "lease_left": 0.0, "suspended": False}}}}
    text = render(group_table(groups))
    assert "primary" in text and "down" in text and "41" in text


def test_outcome_text_in_plain_words() -> None:
    order = {"order_id": 9, "qty": 2, "title": "RPCs for Dummies", "total": 80.0}
    assert outcome_text(order).plain == "Order 9: 2 x RPCs for Dummies = $80.00"
    assert outcome_text(OutOfStock("only 4 of item 2 in stock, 5 asked for")).plain == (
        "Out of stock: only 4 of item 2 in stock, 5 asked for")
    assert outcome_text(NotFound("no book with item number 99")).plain.startswith("Not found")
    assert outcome_text(Unavailable("down")).plain.startswith("Store unreachable")


def test_no_control_character_from_the_store_reaches_the_terminal() -> None:
    hostile = "Evil\x1b[31m red\x00 \u202eesrever\n[bold]markup[/]"
    book = {"item": 9, "title": hostile, "topic": hostile, "stock": 1, "cost": 2.0}
    order = {"order_id": 1, "created_at": 0, "item": 9, "title": hostile, "qty": 1,
             "unit_cost": 2.0, "total": 2.0}
    service = {"role": hostile, "id": 1, "state": hostile, "uri": hostile, "epoch": hostile}
    for renderable in (book_table([book]), order_table([order]), status_table([service]),
                       cluster_table([service]), outcome_text(OutOfStock(hostile)),
                       settings_table({"PYROSTORE_X": hostile})):
        text = render(renderable)  # to Console(file=io.StringIO(), color_system=None)
        assert "\x00" not in text and "\x1b" not in text and "\u202e" not in text
        assert "\ufffd" in text  # shown, visibly replaced
    for row in (*book_rows([book]), *order_rows([order])):
        assert all("\x1b" not in cell and "\x00" not in cell for cell in row)
