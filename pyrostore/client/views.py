"""Rich renderables for what the store returns: pure functions from plain dicts to tables.

The CLI prints them and the terminal client reuses them; tests render them to a
``Console(file=io.StringIO())``. Nothing here talks to the store.

Every text from the store goes through :func:`clean` (and :func:`cell`, a ``Text`` of it, which
rich never reads as markup): a title with an escape sequence or a NUL, from data older than
the store's checks or from a misbehaving service, shows a visible U+FFFD where the control
character was and never reaches the terminal raw.
"""

from __future__ import annotations

import time
import unicodedata
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import PurePath
from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

from pyrostore.clusterfile import uri_address
from pyrostore.errors import OutcomeUnknown

BOOK_COLUMNS = ("item", "title", "topic", "stock", "cost")
STATE_STYLES = {
    "leader": "bold green",
    "follower": "green",
    "candidate": "yellow",
    "primary": "bold green",
    "backup": "green",
    "serving": "green",
    "joining": "yellow",
    "down": "bold red",
}


UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
"""Unicode categories never shown as they are: controls (escape, NUL, newline), formatting
(bidirectional overrides), surrogates, line and paragraph separators."""
REPLACEMENT = "\ufffd"


def clean(value: Any) -> str:
    """``value`` as text safe to show: each control or format character becomes U+FFFD."""
    text = str(value)
    if text.isprintable():
        return text
    return "".join(REPLACEMENT if unicodedata.category(char) in UNSAFE_CATEGORIES else char
                   for char in text)


def cell(value: Any, style: str = "") -> Text:
    """A table cell of ``value`` from the store: cleaned, and never read as markup."""
    return Text(clean(value), style=style)


def money(value: float) -> str:
    """``$30.00``."""
    return f"${value:,.2f}"


def book_table(books: Iterable[Mapping[str, Any]], *, title: str | None = None) -> Table:
    """Books as rows of item, title, topic, stock, cost: the columns the books have."""
    books = list(books)
    columns = [c for c in BOOK_COLUMNS if any(c in book for book in books)] or ["item", "title"]
    table = Table(title=title, header_style="bold")
    for column in columns:
        table.add_column(column, justify="left" if column in ("title", "topic") else "right")
    for book in books:
        table.add_row(*(_book_cell(book, column) for column in columns))
    return table


def _book_cell(book: Mapping[str, Any], column: str) -> Text:
    value = book.get(column)
    if value is None:
        return Text("")
    if column == "cost":
        return cell(money(value))
    return cell(value, style="red" if column == "stock" and value == 0 else "")


def order_table(orders: Iterable[Mapping[str, Any]], *, title: str | None = None) -> Table:
    """Orders as rows: id, when, item, title, qty, unit cost, total."""
    table = Table(title=title, header_style="bold")
    for name in ("order", "when", "item", "title", "qty", "unit", "total"):
        table.add_column(name, justify="left" if name in ("when", "title") else "right",
                         no_wrap=name == "when")
    for order in orders:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(order["created_at"]))
        table.add_row(cell(order["order_id"]), when, cell(order["item"]), cell(order["title"]),
                      cell(order["qty"]), cell(money(order["unit_cost"])),
                      cell(money(order["total"])))
    return table


def status_table(services: Iterable[Mapping[str, Any]], *, title: str | None = None,
                 hosts: Mapping[str, str] | None = None) -> Table:
    """Services as rows: role, id, state, epoch, applied (for a coordinator: its Raft state,
    ``term N`` and its commit index), pid, restarts (by ``pyrostore up``; ``-`` for a service it
    did not start), uri, and where its Prometheus metrics are (``host:port``); with ``hosts``
    (address -> host name, from a cluster file) a host column first."""
    table = Table(title=title, header_style="bold", caption=COORDINATOR_CAPTION)
    columns = ("role", "id", "state", "epoch", "applied", "pid", "restarts", "uri", "metrics")
    for name in ("host", *columns) if hosts is not None else columns:
        table.add_column(
            name, justify="right" if name in ("id", "epoch", "applied", "pid", "restarts")
            else "left"
        )
    for row in services:
        state, epoch, applied = _progress(row)
        cells = [cell(row.get("role", "")), _cell(row.get("id")),
                 cell(state, style=STATE_STYLES.get(state, "")), epoch, applied,
                 _cell(row.get("pid")), _restarts(row.get("restarts")),
                 cell(row.get("uri", "")), _cell(row.get("metrics"))]
        if hosts is not None:
            address = uri_address(str(row.get("uri", "")))
            cells.insert(0, cell(hosts.get(address, address)))
        table.add_row(*cells)
    return table


def _restarts(count: Any) -> Text:
    """A restart count, yellow once a service was restarted (it had failed)."""
    return _cell(count) if not count else cell(count, style="yellow")


def hosts_table(hosts: Iterable[Mapping[str, Any]], *, title: str | None = None) -> Table:
    """The hosts of a cluster file: address, name server, services up of those placed there,
    and which are missing."""
    table = Table(title=title, header_style="bold")
    for name in ("host", "address", "name server", "services up", "missing"):
        table.add_column(name, justify="right" if name == "services up" else "left")
    for row in hosts:
        up, expected = row.get("up", 0), row.get("expected", 0)
        nameserver = {True: cell("up", style="green"), False: cell("down", style="bold red"),
                      None: Text("")}[row.get("nameserver")]
        table.add_row(cell(row.get("host", "")), cell(row.get("address", "")), nameserver,
                      cell(f"{up}/{expected}", style="green" if up == expected else "bold red"),
                      cell(", ".join(row.get("missing", []))))
    return table


COORDINATOR_CAPTION = "coordinators: state is the Raft state, epoch the term, applied the commit"


def _progress(row: Mapping[str, Any]) -> tuple[str, Text, Text]:
    """A service's state, epoch and applied cells (a coordinator's Raft state, term, commit)."""
    state = clean(row.get("state", "?"))
    raft = row.get("raft")
    if row.get("role") == "coordinator" and isinstance(raft, Mapping):
        return state, Text("term ") + _cell(raft.get("term")), _cell(raft.get("commit"))
    return state, _cell(row.get("epoch")), _cell(row.get("applied"))


def group_table(groups: Mapping[str, Mapping[str, Any]], *, title: str | None = None) -> Table:
    """Replica groups as the coordinator sees them: epoch, and each replica's part in it."""
    table = Table(title=title, header_style="bold")
    for name in ("group", "epoch", "replica", "part", "applied", "lease left"):
        table.add_column(name, justify="left" if name in ("group", "part") else "right")
    for group, view in groups.items():
        replicas = view.get("replicas", {})
        for replica_id, replica in sorted(replicas.items(), key=lambda kv: int(kv[0])):
            part = _part(view, int(replica_id), replica)
            table.add_row(cell(group), cell(view["epoch"]), cell(replica_id),
                          Text(part, style=STATE_STYLES.get(part.split()[0], "")),
                          cell(replica["applied"]), f"{replica['lease_left']:.2f} s")
        if not replicas:
            table.add_row(cell(group), cell(view["epoch"]), "-", "no replica yet", "-", "-")
    return table


def _part(view: Mapping[str, Any], replica_id: int, replica: Mapping[str, Any]) -> str:
    if replica_id == view.get("primary"):
        part = "primary"
    elif replica_id in view.get("backups", []):
        part = "backup"
    else:
        part = "joining" if replica["lease_left"] > 0 else "down"
    return part + (" (reported)" if replica.get("suspended") else "")


def cache_table(services: Iterable[Mapping[str, Any]], *, title: str | None = None) -> Table:
    """Each frontend's cache: hits, misses, refused fills, invalidations, entries, lease."""
    table = Table(title=title, header_style="bold")
    columns = ("hits", "misses", "fills_refused", "invalidations", "entries")
    for name in ("frontend", *columns, "lease left"):
        table.add_column(name.replace("_", " "), justify="right")
    for row in services:
        if row.get("role") != "frontend":
            continue
        cache = row.get("cache")
        if not cache:
            table.add_row(_cell(row.get("id")), *("-" for _ in columns),
                          "down" if row.get("state") == "down" else "off")
            continue
        table.add_row(_cell(row.get("id")), *(cell(cache.get(c, 0)) for c in columns),
                      f"{cache.get('lease_left', 0):.2f} s")
    return table


def buys_table(services: Iterable[Mapping[str, Any]], *, title: str | None = None) -> Table:
    """Buys in flight between the groups: each catalog primary's open takes (stock taken,
    order not yet recorded), and what each order primary's reconciler has resolved."""
    table = Table(title=title, header_style="bold")
    columns = ("pending", "resolved", "completed", "undone")
    for name in ("group", *columns):
        table.add_column(name, justify="left" if name == "group" else "right")
    for row in services:
        if row.get("state") != "primary":
            continue
        if row.get("role") == "catalog":
            table.add_row(cell(f"catalog {row.get('id')}"), _cell(row.get("pending_buys")),
                          "", "", "")
        elif row.get("role") == "order":
            buys = row.get("buys") or {}
            table.add_row(cell(f"order {row.get('id')}"), *(_cell(buys.get(c)) for c in columns))
    table.caption = ("pending: stock taken, order not yet recorded; resolved: settled by the "
                     "store itself, completed (order recorded) or undone (stock given back)")
    return table


def outcome_view(outcome: Mapping[str, Any]) -> Any:
    """What became of a buy: its state, and its order or why it was refused."""
    state = str(outcome.get("state"))
    line = Text.assemble((f"{state}", OUTCOME_STYLES.get(state, "")),
                         f"  request {clean(outcome.get('request_id'))}")
    if outcome.get("order"):
        return Group(line, order_table([outcome["order"]]))
    explained = outcome.get("reason") or OUTCOME_WORDS.get(state, "")
    return Group(line, cell(explained)) if explained else line


OUTCOME_STYLES = {"done": "bold green", "pending": "bold yellow", "refused": "bold red",
                  "unknown": "bold"}
OUTCOME_WORDS = {"pending": "the stock is taken and the store is recording the order",
                 "unknown": "no buy with this request id reached the store, or it was longer "
                            "ago than the store keeps request ids"}


def settings_table(values: Mapping[str, str]) -> Table:
    """``PYROSTORE_*`` settings as rows."""
    table = Table(header_style="bold")
    table.add_column("setting")
    table.add_column("value")
    for key, value in values.items():
        table.add_row(cell(key), cell(value))
    return table


def certificate_table(certificates: Iterable[Mapping[str, Any]], *, title: str | None = None,
                      now: datetime | None = None) -> Table:
    """Certificates (as ``pyrostore.certs.describe`` gives them) as rows: file, role, name,
    hosts, usage, issuer, expiry (red once past ``now``, default the present) and fingerprint."""
    now = now or datetime.now(UTC)
    table = Table(title=title, header_style="bold")
    for name in ("file", "role", "name", "hosts", "usage", "issuer", "expires", "sha256"):
        table.add_column(name)
    for cert in certificates:
        expires = datetime.fromisoformat(cert["not_after"])
        usage = ", ".join(cert["extended_key_usage"]) or ("certificate signing"
                                                          if cert["is_ca"] else "")
        table.add_row(  # every cell Text: a fingerprint's ":AB:" is no emoji, a "[" no markup
            cell(PurePath(cert["path"]).name),
            Text("CA") if cert["is_ca"] else _cell(cert["role"]),
            _cell(cert["name"]),
            cell(", ".join(cert["sans"])),
            cell(usage),
            _cell(cert["issuer"]),
            Text(expires.strftime("%Y-%m-%d"), style="bold red" if expires <= now else ""),
            cell(cert["sha256"][:23] + "…"),
        )
    return table


def _cell(value: Any) -> Text:
    return Text("-") if value is None else cell(value)


def book_rows(books: Iterable[Mapping[str, Any]]) -> list[tuple[str, str, str, str, str]]:
    """Rows of the client's book table: item, title, topic, stock, cost."""
    return [(clean(b["item"]), clean(b["title"]), clean(b["topic"]), clean(b["stock"]),
             money(b["cost"])) for b in books]


def matches(book: Mapping[str, Any], text: str) -> bool:
    """Whether every word of ``text`` is in ``book``'s title or topic, in any case (each
    word may be a part of a word: ``distrib`` finds "distributed systems"); "" matches all."""
    haystack = f"{book.get('title', '')}\n{book.get('topic', '')}".casefold()
    return all(word in haystack for word in text.casefold().split())


def filter_books(books: Iterable[Mapping[str, Any]], *, topic: str | None = None,
                 text: str = "") -> list[Mapping[str, Any]]:
    """The books of ``topic`` (any case; None: all) that :func:`matches` ``text``."""
    return [b for b in books
            if (topic is None or b["topic"].lower() == topic.lower()) and matches(b, text)]


def order_rows(orders: Iterable[Mapping[str, Any]]) -> list[tuple[str, str, str, str, str, str]]:
    """Rows of the client's order table: order, when, item, qty, title, total."""
    return [(clean(o["order_id"]), time.strftime("%H:%M:%S", time.localtime(o["created_at"])),
             clean(o["item"]), clean(o["qty"]), clean(o["title"]), money(o["total"]))
            for o in orders]


def cluster_table(services: Iterable[Mapping[str, Any]], *, title: str | None = None) -> Table:
    """The cluster at a glance, 80 columns wide: each service, its part, and cache figures."""
    table = Table(title=title, header_style="bold", expand=True, caption=COORDINATOR_CAPTION)
    for name in ("service", "state", "epoch", "applied", "pid", "cache hits/misses"):
        table.add_column(name, justify="left" if name in ("service", "state") else "right")
    for row in sorted(services, key=lambda r: (ROLE_ORDER.get(str(r.get("role")), 9),
                                                 r.get("id") or 0)):
        state, epoch, applied = _progress(row)
        cache = row.get("cache") or {}
        table.add_row(cell(f"{row.get('role')} {row.get('id')}"),
                      Text(state, style=STATE_STYLES.get(state, "")), epoch, applied,
                      _cell(row.get("pid")),
                      cell(f"{cache['hits']}/{cache['misses']}") if cache else "")
    return table


ROLE_ORDER = {"coordinator": 0, "catalog": 1, "order": 2, "frontend": 3}


def outcome_text(result: Mapping[str, Any] | BaseException) -> Text:
    """A buy's outcome in plain words: the order, or what went wrong."""
    if isinstance(result, BaseException):
        kind = ERROR_WORDS.get(type(result).__name__, "Failed")
        request_id = getattr(result, "details", {}).get("request_id")
        if isinstance(result, OutcomeUnknown) and request_id:  # the id to ask about later
            return cell(f"{kind}: {result} (pyrostore outcome {request_id})", style="bold red")
        return cell(f"{kind}: {result}", style="bold red")
    return cell(f"Order {result['order_id']}: {result['qty']} x {result['title']} = "
                f"{money(result['total'])}", style="bold green")


ERROR_WORDS = {"OutOfStock": "Out of stock", "NotFound": "Not found",
               "InvalidRequest": "Not accepted", "ConflictingRequest": "Not accepted",
               "Unavailable": "Store unreachable", "NotServing": "Store unreachable",
               "OutcomeUnknown": "Outcome not known yet", "BuyUndone": "Undone",
               "RequestExpired": "Request id too old"}
