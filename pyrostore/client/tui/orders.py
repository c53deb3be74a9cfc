"""The orders tab: the newest orders, read when the tab is shown, after a buy and on ``r``.

A resize lays the columns out again from the orders already read; it never reads them again.
"""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.events import Resize
from textual.widget import Widget
from textual.widgets import DataTable

from pyrostore.client import Client
from pyrostore.client.tui.status import Reached, StoreTab, lay_out
from pyrostore.client.views import cell, order_rows
from pyrostore.errors import PyrostoreError

ORDERS_SHOWN = 200
"""How many of the newest orders the tab shows."""


def order_columns(width: int) -> list[tuple[str, int]]:
    """The order table's columns for a tab ``width`` wide: the title takes what is left."""
    fixed = [("order", 5), ("time", 8), ("item", 5), ("qty", 4)]
    title = max(16, width - sum(w for _, w in fixed) - 10 - 2 * 6 - 2)
    return [*fixed, ("title", title), ("total", 10)]


class OrdersTab(StoreTab):
    """The order log, newest first."""

    DEFAULT_CSS = "OrdersTab #orders-table { height: 1fr; }"
    HELP = "**Orders**, newest first (the shopper's own, for a shopper's certificate)."

    def __init__(self, client: Client) -> None:
        super().__init__(client, id="orders-tab")
        self.orders: list[dict[str, Any]] = []

    def compose(self) -> ComposeResult:
        yield DataTable(id="orders-table", cursor_type="row", zebra_stripes=True)

    @property
    def table(self) -> DataTable[Any]:
        """The order table."""
        return self.query_one("#orders-table", DataTable)

    def on_resize(self, event: Resize) -> None:
        lay_out(self.table, order_columns(event.size.width))
        self.show_orders()

    def home(self) -> Widget:
        return self.table

    def reload(self) -> None:
        """Read the newest orders."""
        self.load_orders()

    @work(thread=True, exclusive=True, group="orders")
    def load_orders(self) -> None:
        """The newest orders, read in a worker thread."""
        try:
            orders = self.client.orders(limit=ORDERS_SHOWN)
        except PyrostoreError as exc:
            self.failed(exc)
            return
        self.deliver(self.got_orders, orders)

    def got_orders(self, orders: list[dict[str, Any]]) -> None:
        self.orders = orders
        self.show_orders()
        self.post_message(Reached(f"{len(orders)} orders shown"))

    def show_orders(self) -> None:
        """The orders read last."""
        table = self.table
        if not table.columns:  # not laid out yet: its first resize shows the orders
            return
        table.clear()
        for row in order_rows(self.orders):
            table.add_row(*(cell(value) for value in row[:5]), Text(row[5], justify="right"))
