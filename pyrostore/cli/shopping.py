"""The commands that ask the store something: its status and settings, and a shopper's or an
administrator's requests."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from Pyro5.core import NAMESERVER_NAME
from rich.console import Console, Group
from rich.text import Text

from pyrostore.cli.options import AddCommand, host_names, show
from pyrostore.cli.pinging import add_ping_command
from pyrostore.client import Client
from pyrostore.client.views import (
    book_table,
    buys_table,
    cache_table,
    clean,
    group_table,
    hosts_table,
    matches,
    order_table,
    outcome_view,
    settings_table,
    status_table,
)
from pyrostore.clusterfile import host_report
from pyrostore.config import Settings
from pyrostore.discovery import name_server_metrics, survey
from pyrostore.scraping import scrape_targets, write_targets


def add_store_commands(add: AddCommand) -> None:
    """The commands that ask the store something."""
    status = add("status", cmd_status, "every service of the store and its state",
                 json_flag=True)
    status.add_argument("--prometheus-targets", metavar="FILE", type=Path,
                        help="also write FILE: every service's metrics address, for "
                             "Prometheus's file_sd_configs")
    add("config", cmd_config, "print the settings in force", json_flag=True, secure=None)
    add("topics", cmd_topics, "list the topics", json_flag=True)
    add("search", cmd_search, "books whose title or topic has every word (in any case)",
        json_flag=True).add_argument("words", nargs="+", metavar="WORD",
                                     help="a word or part of one: distrib, grade, ...")
    add("lookup", cmd_lookup, "one book: its title, topic, stock and price",
        json_flag=True).add_argument("item", type=int, help="the book's item number")
    add_ping_command(add)
    buy = add("buy", cmd_buy, "buy a book", json_flag=True)
    buy.add_argument("item", type=int, help="the book's item number")
    buy.add_argument("--qty", type=int, default=1, help="copies to buy (1)")
    update = add("update", cmd_update, "restock, take off stock or reprice (admin)", json_flag=True)
    update.add_argument("item", type=int, help="the book's item number")
    update.add_argument("--cost", type=float, help="new price of one copy")
    update.add_argument("--stock-delta", type=int, help="copies to add (or, negative, remove)")
    new = add("add-book", cmd_add_book, "add a book (admin)", json_flag=True)
    new.add_argument("title", help="its title")
    new.add_argument("topic", help="its topic: an existing one, or a new one")
    new.add_argument("--stock", type=int, default=0, help="copies in stock (0)")
    new.add_argument("--cost", type=float, required=True, help="price of one copy")
    add("outcome", cmd_outcome, "what became of a buy, by its request id",
        json_flag=True).add_argument("request_id", help="as an unfinished buy printed it")
    orders = add("orders", cmd_orders, "the order log, newest first", json_flag=True)
    orders.add_argument("--limit", type=int, default=20, help="orders to show (20)")
    orders.add_argument("--id", dest="order_id", type=int, help="show only this order")


def cmd_status(args: argparse.Namespace, settings: Settings, console: Console) -> int:
    """Every registered service and its state, asked of each service directly."""
    rows = survey(settings)
    if args.prometheus_targets is not None:
        nameserver = {"role": "nameserver", "name": NAMESERVER_NAME,
                      "metrics": name_server_metrics(settings)}
        write_targets(args.prometheus_targets, scrape_targets([nameserver, *rows]))
    coordinators = sorted((row for row in rows if row["role"] == "coordinator"),
                          key=lambda row: row.get("state") != "leader")  # the leader's view first
    groups: dict[str, Any] = next((row["groups"] for row in coordinators if "groups" in row), {})
    if args.spec is None:
        return show(console, args, rows, lambda: Group(
            status_table(rows, title="services"), group_table(groups, title="groups"),
            buys_table(rows, title="buys"), cache_table(rows, title="frontend caches")))
    hosts = host_report(args.spec, rows, nameserver_up=True)  # survey() reached it
    return show(console, args, {"hosts": hosts, "services": rows}, lambda: Group(
        hosts_table(hosts, title="hosts"),
        status_table(rows, title="services", hosts=host_names(args)),
        group_table(groups, title="groups"), buys_table(rows, title="buys"),
        cache_table(rows, title="frontend caches")))


def cmd_config(args: argparse.Namespace, settings: Settings, console: Console) -> int:
    """The settings in force, as PYROSTORE_* variables (typed values with ``--json``)."""
    values = settings.dump()
    return show(console, args, settings.dump_typed(), lambda: settings_table(values))


def cmd_topics(args: argparse.Namespace, settings: Settings, console: Console) -> int:
    """The topics."""
    with Client(settings=settings) as store:
        topics = store.topics()
    return show(console, args, topics, lambda: Text("\n".join(map(clean, topics))))


def cmd_search(args: argparse.Namespace, settings: Settings, console: Console) -> int:
    """The books whose title or topic has every word, as the terminal client finds them
    (:func:`~pyrostore.client.views.matches`), from one search per topic."""
    text = " ".join(args.words)
    with Client(settings=settings) as store:
        books = [book for topic in store.topics() for book in books_of(store, topic)
                 if matches(book, text)]
    return show(console, args, books,
                lambda: book_table(books, title=f"{len(books)} book(s) matching {text!r}"))


SEARCH_PAGE = 100


def books_of(store: Client, topic: str) -> list[dict[str, Any]]:
    """Every book of ``topic`` as ``{item, title, topic}``, page by page."""
    books: list[dict[str, Any]] = []
    while True:
        page = store.search(topic, limit=SEARCH_PAGE, offset=len(books))
        books += [{**book, "topic": topic} for book in page]
        if len(page) < SEARCH_PAGE:
            return books


def cmd_lookup(args: argparse.Namespace, settings: Settings, console: Console) -> int:
    """One book."""
    with Client(settings=settings) as store:
        book = store.lookup(args.item)
    return show(console, args, book, lambda: book_table([book]))


def cmd_buy(args: argparse.Namespace, settings: Settings, console: Console) -> int:
    """Buy a book."""
    with Client(settings=settings) as store:
        order = store.buy(args.item, args.qty)
    return show(console, args, order, lambda: order_table([order], title="bought"))


def cmd_outcome(args: argparse.Namespace, settings: Settings, console: Console) -> int:
    """What became of a buy: done, pending, refused or unknown."""
    with Client(settings=settings) as store:
        outcome = store.outcome(args.request_id)
    return show(console, args, outcome, lambda: outcome_view(outcome))


def cmd_update(args: argparse.Namespace, settings: Settings, console: Console) -> int:
    """Restock, take off stock, reprice."""
    with Client(settings=settings) as store:
        book = store.update(args.item, cost=args.cost, stock_delta=args.stock_delta)
    return show(console, args, book, lambda: book_table([book], title="updated"))


def cmd_add_book(args: argparse.Namespace, settings: Settings, console: Console) -> int:
    """Add a book."""
    with Client(settings=settings) as store:
        book = store.add_book(args.title, args.topic, stock=args.stock, cost=args.cost)
    return show(console, args, book, lambda: book_table([book], title="added"))


def cmd_orders(args: argparse.Namespace, settings: Settings, console: Console) -> int:
    """The order log, or one order with --id."""
    with Client(settings=settings) as store:
        if args.order_id is not None:
            order = store.order(args.order_id)
            return show(console, args, order, lambda: order_table([order]))
        orders = store.orders(limit=args.limit)
    return show(console, args, orders, lambda: order_table(orders, title="orders"))
