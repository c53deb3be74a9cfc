"""The terminal client, headless (Textual's pilot, 80x24), against a real running store."""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import Callable

import pytest
from rich.console import Console
from textual.pilot import Pilot
from textual.widgets import DataTable, Input, Static

from pyrostore.client import Client
from pyrostore.client.tui import BuyScreen, StoreApp
from pyrostore.launcher import Cluster

pytestmark = pytest.mark.timeout(120)


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


def stock_shown(app: StoreApp, item: int) -> int | None:
    return next((int(row[3]) for row in rows(app) if row[0] == str(item)), None)


def text_of(app: StoreApp, widget_id: str) -> str:
    """What a Static shows, as plain text."""
    out = io.StringIO()
    Console(file=out, width=80, color_system=None).print(
        app.query_one(widget_id, Static).content)
    return out.getvalue()


async def buy(pilot: Pilot[None], app: StoreApp, item: int, qty: int) -> None:
    """Select ``item`` in the table, press b, type the quantity, confirm."""
    table = app.query_one("#books-table", DataTable)
    table.focus()
    table.move_cursor(row=table.get_row_index(str(item)))
    await pilot.press("b")
    await until(pilot, lambda: isinstance(app.screen, BuyScreen), what="the buy dialog")
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
                assert stock_shown(app, 2) == 4

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
                assert "order 2" in text_of(app, "#status-line")
                fresh_store.spawn("order", 2)
                await until(pilot, lambda: "backup" in line("order 2")
                            or "primary" in line("order 2"), what="order 2 back",
                            timeout=40)

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
