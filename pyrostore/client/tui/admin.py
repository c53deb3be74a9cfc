"""The admin tab: restock, take stock off or reprice a book, and add a book.

Each form is checked (:mod:`pyrostore.client.tui.forms`) before anything is sent: an empty
or bad field is named under the forms, and the store's own refusals show there too. Esc
leaves a field for the tab itself, where typing changes nothing and the tab keys work.
"""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.message import Message
from textual.widgets import Button, Input, Label, Static

from pyrostore.client import Client
from pyrostore.client.tui.forms import new_book, update_request
from pyrostore.client.tui.status import StoreTab
from pyrostore.client.views import clean, money, outcome_text
from pyrostore.errors import InvalidRequest, PyrostoreError


class AdminTab(StoreTab, can_focus=True):
    """The operators' forms."""

    DEFAULT_CSS = """
    AdminTab Input { width: 1fr; }
    AdminTab Horizontal { height: 3; }
    AdminTab #admin-outcome { height: auto; padding: 0 1; }
    """
    HELP = """\
**Admin.** Fill in a form, then **enter** (or its button): a stock change of `+5` restocks,
`-2` takes two off; a new cost reprices. **tab** moves between fields, **esc** leaves them."""

    class Changed(Message):
        """A book was changed or added: the books tab reads again."""

    def __init__(self, client: Client) -> None:
        super().__init__(client, id="admin-tab")

    def compose(self) -> ComposeResult:
        yield Label("Restock (+) / take off (-) / reprice a book: fill in, then enter")
        with Horizontal():
            yield Input(placeholder="item", id="admin-item", type="integer")
            yield Input(placeholder="stock change", id="admin-delta", type="integer")
            yield Input(placeholder="new cost", id="admin-cost", type="number")
            yield Button("Apply", id="apply")
        yield Label("Add a book: fill in, then enter")
        with Horizontal():
            yield Input(placeholder="title", id="new-title")
            yield Input(placeholder="topic", id="new-topic")
            yield Input(placeholder="stock", id="new-stock", type="integer")
            yield Input(placeholder="cost", id="new-cost", type="number")
            yield Button("Add", id="add")
        yield Static(id="admin-outcome")

    def typed(self, *ids: str) -> list[str]:
        """What the fields ``ids`` hold."""
        return [self.query_one(f"#{widget_id}", Input).value for widget_id in ids]

    @on(Button.Pressed, "#apply")
    @on(Input.Submitted, "#admin-item, #admin-delta, #admin-cost")
    def apply_update(self) -> None:
        try:
            request = update_request(*self.typed("admin-item", "admin-delta", "admin-cost"))
        except InvalidRequest as exc:
            self.show_outcome(Text(str(exc), style="bold red"))
            return
        item = request.pop("item")
        self.write("update", item, **request)

    @on(Button.Pressed, "#add")
    @on(Input.Submitted, "#new-title, #new-topic, #new-stock, #new-cost")
    def add_book(self) -> None:
        try:
            request = new_book(*self.typed("new-title", "new-topic", "new-stock", "new-cost"))
        except InvalidRequest as exc:
            self.show_outcome(Text(str(exc), style="bold red"))
            return
        self.write("add_book", request.pop("title"), request.pop("topic"), **request)

    @work(thread=True, group="writes")
    def write(self, method: str, *args: Any, **kwargs: Any) -> None:
        """An admin write, in a worker thread; its outcome under the forms."""
        try:
            book = getattr(self.client, method)(*args, **kwargs)
        except PyrostoreError as exc:
            self.deliver(self.show_outcome, outcome_text(exc))
            return
        self.deliver(self.show_outcome, Text(
            f"Done: #{book['item']} {clean(book['title'])}: {book['stock']} in stock, "
            f"{money(book['cost'])}", style="bold green"))
        self.post_message(self.Changed())

    def show_outcome(self, text: Text) -> None:
        self.query_one("#admin-outcome", Static).update(text)
