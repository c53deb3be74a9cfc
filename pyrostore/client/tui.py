"""``pyrostore client``: shop and watch the cluster in a full-screen terminal client (Textual).

It talks to the store only through :class:`pyrostore.Client`, in worker threads, so the screen
never waits on the network. The client fails over between frontends by itself; when none
answers, the status line says so and the next refresh tries again. Every action has a key,
shown in the footer; ``?`` lists them all. The rows and panels it shows are the pure functions
of :mod:`pyrostore.client.views`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.css.query import NoMatches
from textual.screen import ModalScreen
from textual.widgets import (
    Button,
    DataTable,
    Footer,
    Header,
    Input,
    Label,
    Select,
    Static,
    TabbedContent,
    TabPane,
)

from pyrostore.client import Client
from pyrostore.client.views import (
    book_rows,
    cluster_table,
    filter_books,
    money,
    order_rows,
    outcome_text,
)
from pyrostore.errors import Forbidden, PyrostoreError, Unavailable

BOOK_PAGE = 1000
"""Books the client loads per topic (a topic of 100,000 books shows its first page)."""


class BuyScreen(ModalScreen[int | None]):
    """Ask how many copies, and confirm."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, book: Mapping[str, Any]) -> None:
        super().__init__()
        self.book = book

    def compose(self) -> ComposeResult:
        book = self.book
        with Vertical(id="dialog"):
            yield Label(f"Buy “{book['title']}”")
            yield Label(f"{money(book['cost'])} each, {book['stock']} in stock. How many?")
            yield Input("1", id="qty", type="integer", placeholder="copies")
            with Horizontal():
                yield Button("Buy (enter)", id="confirm", variant="primary")
                yield Button("Cancel (esc)", id="cancel")

    @on(Input.Submitted)
    @on(Button.Pressed, "#confirm")
    def confirm(self) -> None:
        """Buy the quantity typed (a bad one is left for the store to refuse)."""
        text = self.query_one("#qty", Input).value.strip()
        self.dismiss(int(text) if text.lstrip("-").isdigit() else 0)

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        """Close without buying."""
        self.dismiss(None)


class StoreApp(App[None]):
    """The store, full screen: books, orders, admin, cluster."""

    TITLE = "pyrostore"
    CSS = """
    #tabs { height: 1fr; }
    #status-line { height: 1; }
    #filters { height: 3; }
    #search { width: 1fr; }
    #topic { width: 28; }
    #books-table { height: 1fr; }
    #details, #outcome, #status-line, #admin-outcome { height: auto; padding: 0 1; }
    #admin Input { width: 1fr; }
    #admin Horizontal { height: 3; }
    BuyScreen { align: center middle; }
    #dialog { width: 72; height: auto; border: round $accent; padding: 1 2; }
    #dialog Label { width: 100%; }
    #dialog Horizontal { height: 3; }
    """
    BINDINGS = [
        Binding("q", "quit", "Quit"),
        Binding("question_mark", "keys", "Keys", key_display="?"),
        Binding("1", "show('books')", "Books"),
        Binding("2", "show('orders')", "Orders"),
        Binding("3", "show('admin')", "Admin"),
        Binding("4", "show('cluster')", "Cluster"),
        Binding("slash", "find", "Search", key_display="/"),
        Binding("b", "buy", "Buy"),
        Binding("r", "reload", "Refresh"),
    ]

    def __init__(self, client: Client, *, refresh_every: float = 1.0) -> None:
        super().__init__()
        self.client = client
        self.refresh_every = refresh_every
        self.books: list[dict[str, Any]] = []
        self.topics: list[str] = []

    def compose(self) -> ComposeResult:
        yield Header()
        with TabbedContent(id="tabs", initial="books"):
            with TabPane("Books [1]", id="books"):
                with Horizontal(id="filters"):
                    yield Input(placeholder="/ search titles and topics", id="search")
                    yield Select[str]([], prompt="all topics", id="topic")
                yield DataTable(id="books-table", cursor_type="row", zebra_stripes=True)
                yield Static(id="details")
                yield Static(id="outcome")
            with TabPane("Orders [2]", id="orders"):
                yield DataTable(id="orders-table", cursor_type="row", zebra_stripes=True)
            with TabPane("Admin [3]", id="admin"):
                yield from self._admin_form()
            with TabPane("Cluster [4]", id="cluster"):
                yield Static("asking the store…", id="cluster-panel")
        yield Static("connecting…", id="status-line")
        yield Footer()

    def _admin_form(self) -> ComposeResult:
        yield Label("Restock (+) / take off (-) / reprice a book: fill in, then enter")
        with Horizontal():
            yield Input(placeholder="item", id="admin-item", type="integer")
            yield Input(placeholder="stock delta", id="admin-delta", type="integer")
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

    def on_mount(self) -> None:
        self.lay_out_tables()
        self.query_one("#books-table", DataTable).focus()
        self.load_books()
        self.load_orders()
        self.load_cluster()
        self.set_interval(self.refresh_every, self.load_cluster)
        self.set_interval(self.refresh_every * 5, self.load_books)

    def on_resize(self) -> None:
        self.lay_out_tables()
        self.show_books()
        self.load_orders()

    def lay_out_tables(self) -> None:
        """Columns that fit the screen: the titles take what the other columns leave."""
        title = max(16, self.size.width - 54)
        books = self.query_one("#books-table", DataTable)
        books.clear(columns=True)
        for name, width in (("item", 5), ("title", title), ("topic", 20), ("stock", 5),
                            ("cost", 9)):
            books.add_column(name, width=width, key=name)
        orders = self.query_one("#orders-table", DataTable)
        orders.clear(columns=True)
        for name, width in (("order", 5), ("time", 8), ("item", 5), ("qty", 4),
                            ("title", title + 1), ("total", 10)):
            orders.add_column(name, width=width, key=name)

    # -- actions (keys) ----------------------------------------------------------------

    def action_show(self, tab: str) -> None:
        """Switch to a tab."""
        self.query_one("#tabs", TabbedContent).active = tab
        if tab == "orders":
            self.load_orders()

    def action_find(self) -> None:
        """Focus the search box."""
        self.action_show("books")
        self.query_one("#search", Input).focus()

    def action_reload(self) -> None:
        """Read everything again."""
        self.load_books()
        self.load_orders()
        self.load_cluster()

    def action_keys(self) -> None:
        """List every key."""
        keys = [(b.key_display or b.key, b.description) for b in self.BINDINGS
                if isinstance(b, Binding)]
        keys += [("enter", "buy the selected book (table), submit (forms)"),
                 ("tab", "next field"), ("esc", "close a dialog")]
        self.notify("\n".join(f"{key:>5}  {what}" for key, what in keys), title="Keys",
                    timeout=10)

    def action_buy(self) -> None:
        """Buy the selected book: ask the quantity, then confirm."""
        book = self.selected_book()
        if book is None:
            self.show_outcome(Text("Select a book first (arrows), then press b.", style="bold"))
            return

        def bought(qty: int | None) -> None:
            if qty is not None:
                self.buy(book["item"], qty)

        self.push_screen(BuyScreen(book), bought)

    # -- events ------------------------------------------------------------------------

    @on(DataTable.RowSelected, "#books-table")
    def row_chosen(self) -> None:
        self.action_buy()

    @on(DataTable.RowHighlighted, "#books-table")
    def row_highlighted(self) -> None:
        with contextlib.suppress(NoMatches):  # a late highlight, its screen gone (closing)
            self._show_details(self.selected_book(), self.query_one("#details", Static))

    @staticmethod
    def _show_details(book: dict[str, Any] | None, details: Static) -> None:
        if book is None:
            details.update("")
            return
        details.update(Text.assemble((f"#{book['item']} ", "bold"), book["title"],
                                     f" — {book['topic']}, {book['stock']} in stock, "
                                     f"{money(book['cost'])}"))

    @on(Input.Changed, "#search")
    @on(Select.Changed, "#topic")
    def filters_changed(self) -> None:
        self.show_books()

    @on(Input.Submitted, "#search")
    def search_done(self) -> None:
        self.query_one("#books-table", DataTable).focus()

    @on(Button.Pressed, "#apply")
    @on(Input.Submitted, "#admin-item, #admin-delta, #admin-cost")
    def apply_update(self) -> None:
        values = self._numbers("#admin-item", "#admin-delta", "#admin-cost")
        if values is not None:
            item, delta, cost = values
            self.admin("update", int(item or 0), cost=cost,
                       stock_delta=None if delta is None else int(delta))

    @on(Button.Pressed, "#add")
    @on(Input.Submitted, "#new-title, #new-topic, #new-stock, #new-cost")
    def add_book(self) -> None:
        values = self._numbers("#new-stock", "#new-cost")
        if values is not None:
            stock, cost = values
            self.admin("add_book", self.query_one("#new-title", Input).value,
                       self.query_one("#new-topic", Input).value,
                       stock=int(stock or 0), cost=cost if cost is not None else -1)

    # -- talking to the store (worker threads) -------------------------------------------

    @work(thread=True, exclusive=True, group="books")
    def load_books(self) -> None:
        """Every book: the topics, their books, then each book's stock and cost."""
        try:
            topics = self.client.topics()
            items = [row["item"] for topic in topics
                     for row in self.client.search(topic, limit=BOOK_PAGE)]
            books = [self.client.lookup(item) for item in items]
        except PyrostoreError as exc:
            self._deliver(self.show_unreachable, exc)
            return
        self._deliver(self.got_books, topics, books)

    @work(thread=True, exclusive=True, group="orders")
    def load_orders(self) -> None:
        """The newest orders."""
        try:
            orders = self.client.orders(limit=200)
        except PyrostoreError as exc:
            self._deliver(self.show_unreachable, exc)
            return
        self._deliver(self.got_orders, orders)

    @work(thread=True, exclusive=True, group="cluster")
    def load_cluster(self) -> None:
        """Every service's state, as the frontend sees it."""
        try:
            services = self.client.status()
        except Forbidden:  # a shopper's certificate: the cluster is the operators' to see
            self._deliver(self.got_cluster, [])
            return
        except PyrostoreError as exc:
            self._deliver(self.show_unreachable, exc)
            return
        self._deliver(self.got_cluster, services)

    @work(thread=True, group="writes")
    def buy(self, item: int, qty: int) -> None:
        """Buy, then show the outcome and the new stock."""
        try:
            result: Mapping[str, Any] | BaseException = self.client.buy(item, qty)
        except PyrostoreError as exc:
            result = exc
        self._deliver(self.show_outcome, outcome_text(result))
        self.load_books()
        self.load_orders()

    @work(thread=True, group="writes")
    def admin(self, method: str, *args: Any, **kwargs: Any) -> None:
        """An admin write; its outcome on the admin tab."""
        try:
            book = getattr(self.client, method)(*args, **kwargs)
            text = Text(f"Done: #{book['item']} {book['title']}: {book['stock']} in stock, "
                        f"{money(book['cost'])}", style="bold green")
        except PyrostoreError as exc:
            text = outcome_text(exc)
        self._deliver(self.show_admin_outcome, text)
        self.load_books()

    def _deliver(self, show: Callable[..., None], *args: Any) -> None:
        """Hand a worker's result to the UI thread; dropped if the app is closing meanwhile."""
        # NoMatches: the screen's widgets are gone; RuntimeError: the app no longer runs
        with contextlib.suppress(NoMatches, RuntimeError):
            self.call_from_thread(show, *args)

    # -- showing what came back (UI thread) ----------------------------------------------

    def show_admin_outcome(self, text: Text) -> None:
        self.query_one("#admin-outcome", Static).update(text)

    def got_books(self, topics: list[str], books: list[dict[str, Any]]) -> None:
        self.books = books
        if topics != self.topics:
            self.topics = topics
            select = self.query_one("#topic", Select)
            current = select.value
            select.set_options([(topic, topic) for topic in topics])
            if current in topics:
                select.value = current
        self.show_books()
        self.show_reachable(f"{len(books)} books")

    def show_books(self) -> None:
        table = self.query_one("#books-table", DataTable)
        topic = self.query_one("#topic", Select).value
        shown = filter_books(self.books, topic=topic if isinstance(topic, str) else None,
                             text=self.query_one("#search", Input).value)
        selected = self.selected_book()
        table.clear()
        for row in book_rows(shown):
            table.add_row(*row[:3], *(Text(cell, justify="right") for cell in row[3:]),
                          key=row[0])
        if selected is not None and str(selected["item"]) in {r[0] for r in book_rows(shown)}:
            table.move_cursor(row=table.get_row_index(str(selected["item"])))
        self.row_highlighted()

    def got_orders(self, orders: list[dict[str, Any]]) -> None:
        table = self.query_one("#orders-table", DataTable)
        table.clear()
        for row in order_rows(orders):
            table.add_row(*row[:4], row[4], Text(row[5], justify="right"))

    def got_cluster(self, services: list[dict[str, Any]]) -> None:
        self.query_one("#cluster-panel", Static).update(cluster_table(services))
        down = [f"{s['role']} {s['id']}" for s in services if s.get("state") == "down"]
        self.show_reachable("down: " + ", ".join(down) if down else "all services up")

    def show_outcome(self, text: Text) -> None:
        self.query_one("#outcome", Static).update(text)

    def show_reachable(self, news: str) -> None:
        self.query_one("#status-line", Static).update(f"connected · {news}")

    def show_unreachable(self, exc: PyrostoreError) -> None:
        what = ("no frontend reachable; retrying every second" if isinstance(exc, Unavailable)
                else str(exc))
        self.query_one("#status-line", Static).update(Text(what, style="bold red"))

    def selected_book(self) -> dict[str, Any] | None:
        table = self.query_one("#books-table", DataTable)
        if table.row_count == 0:
            return None
        item = table.get_row_at(table.cursor_row)[0]
        return next((b for b in self.books if str(b["item"]) == item), None)

    def _numbers(self, *ids: str) -> list[float | None] | None:
        """The numbers typed in the inputs ``ids`` (None where empty), or None if any is bad."""
        values: list[float | None] = []
        for widget_id in ids:
            text = self.query_one(widget_id, Input).value.strip()
            try:
                values.append(float(text) if text else None)
            except ValueError:
                self.query_one("#admin-outcome", Static).update(
                    Text(f"Not a number: {text!r}", style="bold red"))
                return None
        return values
