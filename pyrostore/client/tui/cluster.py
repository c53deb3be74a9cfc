"""The cluster tab: every service and its part, as a frontend sees it, read every second.

When no frontend answers, the tab says the store is unreachable (and since when) instead of
showing the last table it read, which would claim services that may be gone.
"""

from __future__ import annotations

import time
from typing import Any

from rich.console import Group
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.widgets import Static

from pyrostore.client import Client
from pyrostore.client.tui.status import Reached, StoreTab, unreachable_words
from pyrostore.client.views import cluster_table
from pyrostore.errors import Forbidden, PyrostoreError


class ClusterTab(StoreTab, can_focus=True):
    """The store's services: role, state, epoch, position, cache figures."""

    DEFAULT_CSS = """
    ClusterTab { overflow-y: auto; }
    ClusterTab #cluster-panel { height: auto; padding: 0 1; }
    """
    HELP = """\
**Cluster**: every service of the store as a frontend sees it, read every second. A shopper's
certificate may not see it."""

    def __init__(self, client: Client, *, refresh_every: float) -> None:
        super().__init__(client, id="cluster-tab")
        self.refresh_every = refresh_every
        self.last_reached: float | None = None

    def compose(self) -> ComposeResult:
        yield Static("asking the store…", id="cluster-panel")

    def on_mount(self) -> None:
        self.reload()
        self.set_interval(self.refresh_every, self.reload)

    def reload(self) -> None:
        """Ask a frontend for every service's state."""
        self.load_cluster()

    @work(thread=True, exclusive=True, group="cluster")
    def load_cluster(self) -> None:
        """Every service's state, read in a worker thread."""
        try:
            services = self.client.status()
        except Forbidden:
            self.deliver(self.show, Text("The cluster is the operators' to see: this "
                                         "certificate is a shopper's."))
            return
        except PyrostoreError as exc:
            self.deliver(self.show_unreachable, exc)
            self.failed(exc)
            return
        self.deliver(self.got_cluster, services)

    def got_cluster(self, services: list[dict[str, Any]]) -> None:
        self.last_reached = time.time()
        self.show(cluster_table(services))
        down = [f"{s['role']} {s['id']}" for s in services if s.get("state") == "down"]
        self.post_message(Reached("down: " + ", ".join(down) if down else "all services up",
                                  health=True))

    def show_unreachable(self, error: PyrostoreError) -> None:
        since = ("" if self.last_reached is None else
                 " (last answer at " + time.strftime("%H:%M:%S",
                                                     time.localtime(self.last_reached)) + ")")
        self.show(Group(Text("Store unreachable" + since, style="bold red"),
                        Text(unreachable_words(error))))

    def show(self, what: Any) -> None:
        self.query_one("#cluster-panel", Static).update(what)
