"""The books tab: every book by topic, a search box and a topic filter, and buying.

The list comes from one search per topic (item, title, topic), never a lookup per book; the
highlighted book alone is looked up, for its stock and cost, shown under the table and in the
buy dialog. Columns follow the tab's width.
"""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.events import Resize
from textual.message import Message
from textual.widget import Widget
from textual.widgets import DataTable, Input, Select, Static

from pyrostore.client import Client
from pyrostore.client.tui.dialogs import BuyScreen
from pyrostore.client.tui.status import Reached, StoreTab, lay_out
from pyrostore.client.views import cell, clean, filter_books, money, outcome_text
from pyrostore.errors import PyrostoreError

BOOK_PAGE = 1000
"""Books the client loads per topic (a topic of 100,000 books shows its first page)."""


def book_columns(width: int) -> list[tuple[str, int]]:
    """The book table's columns for a tab ``width`` wide: the title takes what is left."""
    topic = max(12, min(24, width // 4))
    return [("item", 5), ("title", max(16, width - topic - 5 - 8)), ("topic", topic)]


class BooksTab(StoreTab):
    """Books: browse, filter, search, buy."""

    DEFAULT_CSS = """
    BooksTab #filters { height: 3; }
    BooksTab #search { width: 1fr; }
    BooksTab #topic { width: 28; }
    BooksTab #books-table { height: 1fr; }
    BooksTab #details, BooksTab #outcome { height: auto; padding: 0 1; }
    """
    BINDINGS = [Binding("b", "buy", "Buy"),
                Binding("slash", "find", "Search", key_display="/")]
    HELP = """\
**Books.** Arrows move; **b** or **enter** buys the highlighted book; **/** searches titles and
topics; the topic menu narrows the list. **esc** leaves the search box."""

    class Bought(Message):
        """An order was placed: the orders tab has a new row."""

    def __init__(self, client: Client, *, refresh_every: float) -> None:
        super().__init__(client, id="books-tab")
        self.refresh_every = refresh_every
        self.books: list[dict[str, Any]] = []
        self.topics: list[str] = []
        self.detailed: int | None = None
        """The item whose stock and cost are shown (or being read)."""

    def compose(self) -> ComposeResult:
        with Horizontal(id="filters"):
            yield Input(placeholder="/ search titles and topics", id="search")
            yield Select[str]([], prompt="all topics", id="topic")
        yield DataTable(id="books-table", cursor_type="row", zebra_stripes=True)
        yield Static(id="details")
        yield Static(id="outcome")

    @property
    def table(self) -> DataTable[Any]:
        """The book table."""
        return self.query_one("#books-table", DataTable)

    def on_mount(self) -> None:
        self.reload()
        self.set_interval(self.refresh_every, self.reload)

    def on_resize(self, event: Resize) -> None:
        lay_out(self.table, book_columns(event.size.width))
        self.show_books()

    def home(self) -> Widget:
        return self.table

    def reload(self) -> None:
        """Read the books again, and the highlighted one's stock and cost."""
        self.load_books()
        if (item := self.selected_item()) is not None:
            self.load_details(item)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Buy is shown dimmed while no book is highlighted; Search is hidden in the search
        box, where ``/`` is typed like any other character."""
        if action == "buy":
            return self.selected_item() is not None or None
        if action == "find":
            return self.app.focused is not self.query_one("#search", Input)
        return True

    def action_find(self) -> None:
        """Focus the search box."""
        self.query_one("#search", Input).focus()

    def action_buy(self) -> None:
        """Buy the highlighted book: look up its stock and cost, then ask how many."""
        if (item := self.selected_item()) is not None:
            self.load_details(item, then_buy=True)

    @on(DataTable.RowSelected, "#books-table")
    def row_chosen(self) -> None:
        self.action_buy()

    @on(DataTable.RowHighlighted, "#books-table")
    def row_highlighted(self) -> None:
        item = self.selected_item()
        if item is None:
            self.query_one("#details", Static).update("")
        elif item != self.detailed:
            self.load_details(item)
        self.detailed = item
        self.refresh_bindings()

    @on(Input.Changed, "#search")
    @on(Select.Changed, "#topic")
    def filters_changed(self) -> None:
        self.show_books()

    @on(Input.Submitted, "#search")
    def search_done(self) -> None:
        self.table.focus()

    # -- worker threads ----------------------------------------------------------------

    @work(thread=True, exclusive=True, group="books")
    def load_books(self) -> None:
        """Every book: the topics, then one search per topic."""
        try:
            topics = self.client.topics()
            books = [{**row, "topic": topic} for topic in topics
                     for row in self.client.search(topic, limit=BOOK_PAGE)]
        except PyrostoreError as exc:
            self.failed(exc)
            return
        self.deliver(self.got_books, topics, books)

    @work(thread=True, exclusive=True, group="details")
    def load_details(self, item: int, *, then_buy: bool = False) -> None:
        """One book's stock and cost, shown under the table; then, to buy it, ask how many."""
        try:
            book = self.client.lookup(item)
        except PyrostoreError as exc:
            self.deliver(self.show_outcome, outcome_text(exc))
            return
        self.deliver(self.show_details, book)
        if then_buy:
            self.deliver(self.ask_quantity, book)

    @work(thread=True, group="writes")
    def buy(self, item: int, qty: int) -> None:
        """Buy, then show the outcome and the new stock."""
        try:
            result: dict[str, Any] | PyrostoreError = self.client.buy(item, qty)
        except PyrostoreError as exc:
            result = exc
        self.deliver(self.show_outcome, outcome_text(result))
        self.post_message(self.Bought())
        self.load_details(item)

    # -- on the screen's thread --------------------------------------------------------

    def ask_quantity(self, book: dict[str, Any]) -> None:
        def bought(qty: int | None) -> None:
            if qty is not None:
                self.buy(book["item"], qty)

        self.app.push_screen(BuyScreen(book), bought)

    def got_books(self, topics: list[str], books: list[dict[str, Any]]) -> None:
        self.books = books
        if topics != self.topics:
            self.topics = topics
            select = self.query_one("#topic", Select)
            current = select.value
            select.set_options([(clean(topic), topic) for topic in topics])
            if current in topics:
                select.value = current
        self.show_books()
        self.post_message(Reached(f"{len(books)} books"))

    def show_books(self) -> None:
        """The books that the search box and the topic menu let through."""
        topic = self.query_one("#topic", Select).value
        shown = filter_books(self.books, topic=topic if isinstance(topic, str) else None,
                             text=self.query_one("#search", Input).value)
        table, selected = self.table, self.selected_item()
        if not table.columns:  # not laid out yet: its first resize shows the books
            return
        table.clear()
        for book in shown:
            table.add_row(Text(str(book["item"]), justify="right"), cell(book["title"]),
                          cell(book["topic"]), key=str(book["item"]))
        if selected is not None and str(selected) in table.rows:
            table.move_cursor(row=table.get_row_index(str(selected)))
        self.refresh_bindings()

    def show_details(self, book: dict[str, Any]) -> None:
        if book["item"] != self.selected_item():
            return
        self.query_one("#details", Static).update(Text.assemble(
            (f"#{book['item']} ", "bold"), clean(book["title"]),
            f" — {clean(book['topic'])}, {book['stock']} in stock, {money(book['cost'])}"))

    def show_outcome(self, text: Text) -> None:
        self.query_one("#outcome", Static).update(text)

    def selected_item(self) -> int | None:
        """The highlighted book's item number (None: the table is empty)."""
        table = self.table
        if table.row_count == 0:
            return None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        return None if key is None else int(key)
