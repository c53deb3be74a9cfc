"""The terminal client's app: four tabs, the status line, the footer, and the keys they share.

Each tab is a widget of its own (books, orders, admin, cluster) that reads the store in worker
threads and owns its keys; the app switches between them and says whether the store answers.
Keys follow Textual's habits: the footer shows the keys that work where the focus is, a text
field keeps the keys typed into it, Esc returns to the tab's table, and ``?`` toggles
Textual's help panel.
"""

from __future__ import annotations

from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.widgets import Footer, Header, HelpPanel, TabbedContent, TabPane

from pyrostore.client import Client
from pyrostore.client.tui.admin import AdminTab
from pyrostore.client.tui.books import BooksTab
from pyrostore.client.tui.cluster import ClusterTab
from pyrostore.client.tui.orders import OrdersTab
from pyrostore.client.tui.status import Reached, StatusLine, StoreTab, Unreachable

TABS = ("books", "orders", "admin", "cluster")
"""The tabs, in the order of their keys (1 to 4)."""

BOOKS_EVERY = 5
"""The book list is read every this many cluster refreshes (it changes rarely)."""


class StoreApp(App[None]):
    """The store, full screen: books, orders, admin, cluster."""

    TITLE = "pyrostore"
    CSS = "#tabs { height: 1fr; }"
    BINDINGS = [
        Binding("q", "quit", "Quit"),
        Binding("question_mark", "toggle_help", "Keys", key_display="?"),
        Binding("r", "reload", "Refresh"),
        Binding("escape", "home", "Back"),
        *(Binding(str(key), f"show('{tab}')", f"{tab.title()} tab", show=False)
          for key, tab in enumerate(TABS, 1)),
    ]

    def __init__(self, client: Client, *, refresh_every: float = 1.0) -> None:
        super().__init__()
        self.client = client
        self.refresh_every = refresh_every

    def compose(self) -> ComposeResult:
        self.tabs = {
            "books": BooksTab(self.client, refresh_every=self.refresh_every * BOOKS_EVERY),
            "orders": OrdersTab(self.client),
            "admin": AdminTab(self.client),
            "cluster": ClusterTab(self.client, refresh_every=self.refresh_every),
        }
        self.status_line = StatusLine("connecting…", id="status-line")
        self.tabbed = TabbedContent(id="tabs", initial="books")
        yield Header()
        with self.tabbed:
            for key, name in enumerate(TABS, 1):
                with TabPane(f"{name.title()} [{key}]", id=name):
                    yield self.tabs[name]
        yield self.status_line
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.tab("books").home().focus()

    def tab(self, name: str) -> StoreTab:
        """The widget of the tab ``name``."""
        return self.tabs[name]

    @property
    def active_tab(self) -> StoreTab:
        """The widget of the tab shown."""
        return self.tabs[self.tabbed.active]

    def action_show(self, name: str) -> None:
        """Show the tab ``name`` and focus its table."""
        # Let go of the focus first: a focused widget that the switch hides would hand it to
        # its neighbour in the old tab, which would make that tab the active one again.
        self.screen.set_focus(None)
        self.tabbed.active = name
        self.tab(name).home().focus()

    def action_home(self) -> None:
        """Back to the table of the tab shown (from a search box, a form field, ...)."""
        self.active_tab.home().focus()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Esc is offered only away from the tab's table (in a search box, a form field)."""
        if action == "home":
            return self.focused is not None and self.focused is not self.active_tab.home()
        return True

    def action_reload(self) -> None:
        """Read everything again."""
        for tab in self.tabs.values():
            tab.reload()

    def action_toggle_help(self) -> None:
        """Show Textual's help panel (the keys that work here), or hide it."""
        if self.screen.query(HelpPanel):
            self.action_hide_help_panel()
        else:
            self.action_show_help_panel()

    def on_tabbed_content_tab_activated(self, event: TabbedContent.TabActivated) -> None:
        if event.pane.id == "orders":
            self.tab("orders").reload()

    def on_books_tab_bought(self) -> None:
        self.tab("orders").reload()

    def on_admin_tab_changed(self) -> None:
        self.tab("books").reload()

    def on_reached(self, message: Reached) -> None:
        self.status_line.reached(message.news, health=message.health)

    def on_unreachable(self, message: Unreachable) -> None:
        self.status_line.unreachable(message.error)
