"""What every tab shares: the line that says whether the store answers, and how a tab's worker
threads hand what they read back to the screen.

A tab reads the store in worker threads (the screen never waits on the network) and posts
:class:`Reached` or :class:`Unreachable`; the app shows the latest in its :class:`StatusLine`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from rich.text import Text
from textual.css.query import NoMatches
from textual.message import Message
from textual.widget import Widget
from textual.widgets import DataTable, Static

from pyrostore.client import Client
from pyrostore.errors import PyrostoreError, Unavailable


class Reached(Message):
    """The store answered a tab; ``news`` is what the status line should say. With
    ``health``, it is the cluster's health ("down: order 2"), which stays on the line until
    the cluster tab reads it again; other news replaces only other news."""

    def __init__(self, news: str, *, health: bool = False) -> None:
        super().__init__()
        self.news = news
        self.health = health


class Unreachable(Message):
    """A tab could not reach the store (``error`` says why)."""

    def __init__(self, error: PyrostoreError) -> None:
        super().__init__()
        self.error = error


def unreachable_words(error: PyrostoreError) -> str:
    """Why the store does not answer, for a person."""
    if isinstance(error, Unavailable):
        return "no frontend reachable; retrying every second"
    return str(error)


def lay_out(table: DataTable[Any], columns: list[tuple[str, int]]) -> None:
    """Give ``table`` these columns (name, width); its rows go with the old ones."""
    table.clear(columns=True)
    for name, width in columns:
        table.add_column(name, width=width, key=name)


class StatusLine(Static):
    """One line under the tabs: connected (and the latest news), or why not."""

    DEFAULT_CSS = "StatusLine { height: 1; padding: 0 1; }"

    def __init__(self, text: str, *, id: str | None = None) -> None:
        super().__init__(text, id=id)
        self.health = ""
        self.news = ""

    def reached(self, news: str, *, health: bool = False) -> None:
        """The store answers: ``news``, or with ``health`` the cluster's health, which the
        line keeps before any other news."""
        if health:
            self.health = news
        else:
            self.news = news
        self.update(" · ".join(part for part in ("connected", self.health, self.news) if part))

    def unreachable(self, error: PyrostoreError) -> None:
        """The store does not answer."""
        self.update(Text(unreachable_words(error), style="bold red"))


class StoreTab(Widget):
    """A tab's widget: it holds the client and shows what its worker threads read."""

    DEFAULT_CSS = "StoreTab { height: 1fr; }"

    def __init__(self, client: Client, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.client = client

    def reload(self) -> None:
        """Read again what this tab shows (a tab with nothing to read does nothing)."""

    def home(self) -> Widget:
        """The widget a person works from in this tab, where Esc and the tab's key lead:
        by default the tab itself, which takes no typing."""
        return self

    def deliver(self, show: Callable[..., None], *args: Any) -> None:
        """From a worker thread: run ``show(*args)`` on the screen's thread; dropped if the
        app is closing meanwhile."""
        # NoMatches: the screen's widgets are gone; RuntimeError: the app no longer runs
        with contextlib.suppress(NoMatches, RuntimeError):
            self.app.call_from_thread(show, *args)

    def failed(self, error: PyrostoreError) -> None:
        """From a worker thread: say the store did not answer."""
        self.post_message(Unreachable(error))
