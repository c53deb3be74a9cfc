"""The terminal client, headless (Textual's pilot, 80x24), against a real running store."""

from __future__ import annotations

import asyncio
import io
import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any, cast

import pytest
from rich.console import Console
from textual.pilot import Pilot
from textual.widgets import DataTable, HelpPanel, Input, Select, Static, TabbedContent
from textual.widgets._footer import FooterKey

from pyrostore.client import Client
from pyrostore.client.tui import StoreApp
from pyrostore.client.tui.dialogs import BuyScreen
from pyrostore.client.tui.status import StatusLine
from pyrostore.launcher import Cluster

pytestmark = pytest.mark.timeout(120)


class CountingClient:
    """The real client, counting the calls the app makes through it."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.calls: Counter[str] = Counter()
        self.lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.client, name)

        def counted(*args: Any, **kwargs: Any) -> Any:
            with self.lock:
                self.calls[name] += 1
            return method(*args, **kwargs)
        return counted

    def count(self, name: str) -> int:
        with self.lock:
            return self.calls[name]


async def until(pilot: Pilot[None], condition: Callable[[], object], *, what: str,
                timeout: float = 20.0) -> None:
    """Let the app run until ``condition()`` holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await pilot.pause(0.05)


def rows(app: StoreApp, table_id: str = "#books-table") -> list[list[str]]:
    table = app.query_one(table_id, DataTable)
    return [[str(cell) for cell in table.get_row_at(i)] for i in range(table.row_count)]


def text_of(app: StoreApp, widget_id: str, *, dialog: bool = False) -> str:
    """What a Static of the main screen (or of the dialog shown) shows, as plain text."""
    out = io.StringIO()
    screen = app.screen if dialog else app.screen_stack[0]
    Console(file=out, width=80, color_system=None).print(
        screen.query_one(widget_id, Static).content)
    return out.getvalue()


def stock_shown(app: StoreApp, item: int) -> int | None:
    """The stock the details line shows for ``item`` (None: another book, or none)."""
    details = " ".join(text_of(app, "#details").split())
    found = re.match(rf"#{item} .*, (\d+) in stock", details)
    return int(found.group(1)) if found else None


def active_tab(app: StoreApp) -> str:
    return app.query_one("#tabs", TabbedContent).active


def highlight(app: StoreApp, item: int) -> None:
    table = app.query_one("#books-table", DataTable)
    table.focus()
    table.move_cursor(row=table.get_row_index(str(item)))


async def open_buy(pilot: Pilot[None], app: StoreApp, item: int) -> None:
    """Highlight ``item`` in the table and press b: the buy dialog."""
    highlight(app, item)
    await pilot.press("b")
    await until(pilot, lambda: isinstance(app.screen, BuyScreen) and app.screen.query("#qty"),
                what="the buy dialog")


async def buy(pilot: Pilot[None], app: StoreApp, item: int, qty: int) -> None:
    """Highlight ``item``, press b, type the quantity, confirm."""
    await open_buy(pilot, app, item)
    app.screen.query_one("#qty", Input).value = str(qty)
    await pilot.press("enter")


def test_shopping(fresh_store: Cluster) -> None:
    async def scenario() -> None:
        with Client(settings=fresh_store.settings) as client:
            app = StoreApp(client, refresh_every=0.5)
            async with app.run_test(size=(80, 24)) as pilot:
                await until(pilot, lambda: len(rows(app)) == 7, what="the seven books")
                assert {row[2] for row in rows(app)} == {"distributed systems",
                                                         "graduate school"}

                await pilot.press("slash", *"graduate")
                await until(pilot, lambda: len(rows(app)) == 4, what="the search to filter")
                assert {row[2] for row in rows(app)} == {"graduate school"}
                app.query_one("#search", Input).value = ""
                await until(pilot, lambda: len(rows(app)) == 7, what="all books again")

                await buy(pilot, app, 1, 1)
                await until(pilot, lambda: "Order" in text_of(app, "#outcome"),
                            what="the order")
                assert "$30.00" in text_of(app, "#outcome")
                await until(pilot, lambda: stock_shown(app, 1) == 9, what="stock 9")
                assert client.lookup(1)["stock"] == 9

                await buy(pilot, app, 2, 5)  # 4 in stock
                await until(pilot, lambda: "Out of stock" in text_of(app, "#outcome"),
                            what="the out-of-stock message")
                assert client.lookup(2)["stock"] == 4
                await until(pilot, lambda: stock_shown(app, 2) == 4, what="stock 4")

                await pilot.press("2")
                await until(pilot, lambda: len(rows(app, "#orders-table")) == 1,
                            what="the order log")
                assert rows(app, "#orders-table")[0][2] == "1"

    asyncio.run(scenario())


def test_the_cluster_panel_follows_a_replica_down_and_back(fresh_store: Cluster) -> None:
    async def scenario() -> None:
        with Client(settings=fresh_store.settings) as client:
            app = StoreApp(client, refresh_every=0.3)
            async with app.run_test(size=(80, 24)) as pilot:
                await pilot.press("4")

                def line(service: str) -> str:
                    return next((x for x in text_of(app, "#cluster-panel").splitlines()
                                 if service in x), "")

                await until(pilot, lambda: "backup" in line("order 2")
                            or "primary" in line("order 2"), what="order 2 serving")
                fresh_store.kill("order", 2)
                await until(pilot, lambda: "down" in line("order 2"), what="order 2 down")
                # the books tab's news ("7 books") comes and goes beside it; the health stays
                await until(pilot, lambda: "down: order 2" in text_of(app, "#status-line"),
                            what="the status line to name order 2 down")
                app.query_one(StatusLine).reached("7 books")
                assert "down: order 2" in text_of(app, "#status-line")
                fresh_store.spawn("order", 2)
                await until(pilot, lambda: "backup" in line("order 2")
                            or "primary" in line("order 2"), what="order 2 back",
                            timeout=40)

                fresh_store.stop()
                await until(pilot, lambda: "unreachable" in text_of(app, "#cluster-panel"),
                            what="the cluster tab to say the store is unreachable")
                assert "serving" not in text_of(app, "#cluster-panel")
                assert "primary" not in text_of(app, "#cluster-panel")

    asyncio.run(scenario())


def test_no_frontend_is_said_plainly_and_does_not_crash(fresh_store: Cluster) -> None:
    async def scenario() -> None:
        with Client(settings=fresh_store.settings.replace(failover_timeout=1.5)) as client:
            app = StoreApp(client, refresh_every=0.3)
            async with app.run_test(size=(80, 24)) as pilot:
                await until(pilot, lambda: len(rows(app)) == 7, what="the books")
                fresh_store.kill("frontend", 1)
                await until(pilot, lambda: "no frontend reachable" in text_of(
                    app, "#status-line"), what="the unreachable message")
                fresh_store.spawn("frontend", 1)
                await until(pilot, lambda: "connected" in text_of(app, "#status-line"),
                            what="connected again", timeout=30)

    asyncio.run(scenario())


def test_esc_leaves_the_search_box_and_an_admin_field(client: Client) -> None:
    async def scenario() -> None:
        app = StoreApp(client, refresh_every=0.5)
        async with app.run_test(size=(80, 24)) as pilot:
            await until(pilot, lambda: len(rows(app)) == 7, what="the books")
            search = app.query_one("#search", Input)
            await pilot.press("slash", "7", "/", "2")  # typed, as in any text field
            assert search.value == "7/2" and active_tab(app) == "books"
            await pilot.press("escape")
            table = app.query_one("#books-table", DataTable)
            await until(pilot, lambda: app.focused is table, what="the table focused")
            await pilot.press("2")
            await until(pilot, lambda: active_tab(app) == "orders", what="the orders tab")
            assert search.value == "7/2"

            await pilot.press("3")
            item = app.query_one("#admin-item", Input)
            item.focus()
            await until(pilot, lambda: app.focused is item, what="the item field focused")
            await pilot.press("2", "escape")
            await until(pilot, lambda: app.focused is not item, what="the field left")
            await pilot.press("4")
            await until(pilot, lambda: active_tab(app) == "cluster", what="the cluster tab")
            assert item.value == "2"

    asyncio.run(scenario())


def test_tab_keys_work_after_choosing_a_topic(client: Client) -> None:
    async def scenario() -> None:
        app = StoreApp(client, refresh_every=0.5)
        async with app.run_test(size=(80, 24)) as pilot:
            await until(pilot, lambda: len(rows(app)) == 7, what="the books")
            topic = app.query_one("#topic", Select)
            topic.focus()
            await pilot.press("enter", "down", "enter")  # open, the first topic, choose
            await until(pilot, lambda: topic.value == "distributed systems",
                        what="the topic chosen")
            await until(pilot, lambda: len(rows(app)) == 3, what="the topic's books")
            await pilot.press("2")
            await until(pilot, lambda: active_tab(app) == "orders", what="the orders tab")
            assert app.query_one("#search", Input).value == ""
            await pilot.press("1")
            await until(pilot, lambda: active_tab(app) == "books", what="the books tab")
            assert topic.value == "distributed systems" and len(rows(app)) == 3

    asyncio.run(scenario())


def test_a_resize_lays_the_columns_out_again_without_reading_orders_again(
        client: Client) -> None:
    async def scenario() -> None:
        counting = CountingClient(client)
        app = StoreApp(cast(Client, counting), refresh_every=0.5)
        async with app.run_test(size=(80, 24)) as pilot:
            books = app.query_one("#books-table", DataTable)
            await until(pilot, lambda: len(rows(app)) == 7, what="the books")
            await pilot.press("2")
            await until(pilot, lambda: counting.count("orders") == 1, what="orders read")
            orders = app.query_one("#orders-table", DataTable)
            await until(pilot, lambda: orders.columns, what="the order columns")
            narrow = {key.value: column.width for key, column in orders.columns.items()}

            await pilot.resize_terminal(120, 30)
            await until(pilot, lambda: orders.columns["title"].width > narrow["title"],
                        what="a wider title column")
            assert orders.columns["total"].width == narrow["total"]
            await pilot.press("1")
            await until(pilot, lambda: books.columns["title"].width >= 80,
                        what="the book table laid out at 120 columns")
            assert len(rows(app)) == 7
            await pilot.resize_terminal(100, 30)
            await until(pilot, lambda: books.columns["title"].width < 80,
                        what="the book table laid out at 100 columns")
            assert counting.count("orders") == 1

    asyncio.run(scenario())


def test_books_load_with_one_search_per_topic(client: Client) -> None:
    async def scenario() -> None:
        counting = CountingClient(client)
        app = StoreApp(cast(Client, counting), refresh_every=0.1)  # books every 0.5 s
        async with app.run_test(size=(80, 24)) as pilot:
            await until(pilot, lambda: len(rows(app)) == 7, what="the books")
            await until(pilot, lambda: counting.count("topics") >= 4,
                        what="the books read again, thrice")
            topics = counting.count("topics")
            assert counting.count("search") >= 2 * (topics - 1)  # two topics
            # the highlighted book's, once a read (one of them may be counted before its
            # read's topics); a lookup per book would be seven a read
            assert counting.count("lookup") <= topics + 2

    asyncio.run(scenario())


def test_question_mark_toggles_the_help_panel(client: Client) -> None:
    async def scenario() -> None:
        app = StoreApp(client, refresh_every=0.5)
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.press("question_mark")
            await until(pilot, lambda: app.screen.query(HelpPanel), what="the help panel")
            await pilot.press("question_mark")
            await until(pilot, lambda: not app.screen.query(HelpPanel),
                        what="the help panel closed")

    asyncio.run(scenario())


def test_the_footer_at_80_columns_shows_buy_and_refresh(client: Client) -> None:
    async def scenario() -> None:
        app = StoreApp(client, refresh_every=0.5)
        async with app.run_test(size=(80, 24)) as pilot:
            await until(pilot, lambda: len(rows(app)) == 7, what="the books")

            def shown() -> set[str]:
                return {key.description for key in app.query(FooterKey)
                        if key.region.width and key.region.right <= 80}
            await until(pilot, lambda: {"Buy", "Refresh", "Search", "Keys"} <= shown(),
                        what="Buy, Refresh, Search and Keys in the footer")
            await pilot.press("slash")  # in the search box: only what works there
            await until(pilot, lambda: "Buy" not in shown() and "Back" in shown(),
                        what="the search box's keys")
            assert "Refresh" not in shown()

    asyncio.run(scenario())


def test_an_empty_quantity_is_explained_and_buys_nothing(client: Client) -> None:
    async def scenario() -> None:
        app = StoreApp(client, refresh_every=0.5)
        async with app.run_test(size=(80, 24)) as pilot:
            await until(pilot, lambda: len(rows(app)) == 7, what="the books")
            before = client.lookup(3)["stock"]
            await open_buy(pilot, app, 3)
            for typed, why in (("", "Type the number of copies"),
                               ("0", "at least 1")):
                app.screen.query_one("#qty", Input).value = typed
                await pilot.press("enter")
                await until(pilot, lambda why=why: why in text_of(app, "#why", dialog=True),
                            what=f"the reason for {typed!r}")
                assert isinstance(app.screen, BuyScreen)
            await pilot.press("escape")
            await until(pilot, lambda: not isinstance(app.screen, BuyScreen),
                        what="the dialog closed")
            assert client.lookup(3)["stock"] == before

    asyncio.run(scenario())


def test_bad_admin_input_is_explained(client: Client) -> None:
    async def scenario() -> None:
        app = StoreApp(client, refresh_every=0.5)
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.press("3")
            item = app.query_one("#admin-item", Input)
            item.focus()
            await pilot.press("enter")
            await until(pilot, lambda: "stock change" in text_of(app, "#admin-outcome"),
                        what="what to fill in")
            await pilot.press("tab", "5", "enter")  # a stock change, but no item
            await until(pilot, lambda: "item number" in text_of(app, "#admin-outcome"),
                        what="the missing item")
            app.query_one("#new-title", Input).focus()
            await pilot.press("enter")
            await until(pilot, lambda: "title" in text_of(app, "#admin-outcome"),
                        what="the missing title")

    asyncio.run(scenario())
