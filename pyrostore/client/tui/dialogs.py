"""The buy dialog: how many copies of a book, checked before anything reaches the store."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static

from pyrostore.client.tui.forms import quantity
from pyrostore.client.views import clean, money
from pyrostore.errors import InvalidRequest


class BuyScreen(ModalScreen[int | None]):
    """Ask how many copies of ``book``; dismissed with the quantity, or None if cancelled.
    An empty or bad quantity is explained under the field and the dialog stays open."""

    DEFAULT_CSS = """
    BuyScreen { align: center middle; }
    BuyScreen #dialog { width: 72; height: auto; border: round $accent; padding: 1 2; }
    BuyScreen Label, BuyScreen #why { width: 100%; }
    BuyScreen Horizontal { height: 3; }
    """
    BINDINGS = [Binding("escape", "cancel", "Cancel")]
    HELP = "Type how many copies to buy, then **enter**; **esc** closes without buying."

    def __init__(self, book: Mapping[str, Any]) -> None:
        super().__init__()
        self.book = book

    def compose(self) -> ComposeResult:
        book = self.book
        with Vertical(id="dialog"):
            yield Label(Text(f"Buy “{clean(book['title'])}”"))
            yield Label(f"{money(book['cost'])} each, {book['stock']} in stock. How many?")
            yield Input("1", id="qty", type="integer", placeholder="copies")
            yield Static(id="why")
            with Horizontal():
                yield Button("Buy (enter)", id="confirm", variant="primary")
                yield Button("Cancel (esc)", id="cancel")

    @on(Input.Submitted)
    @on(Button.Pressed, "#confirm")
    def confirm(self) -> None:
        """Buy the quantity typed, or say why it cannot be bought."""
        try:
            copies = quantity(self.query_one("#qty", Input).value)
        except InvalidRequest as exc:
            self.query_one("#why", Static).update(Text(str(exc), style="bold red"))
            self.query_one("#qty", Input).focus()
            return
        self.dismiss(copies)

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        """Close without buying."""
        self.dismiss(None)
