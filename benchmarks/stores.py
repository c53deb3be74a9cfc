"""The stores a benchmark runs against: started on free ports, or found; their services' stats.

:class:`Stores` starts :class:`~pyrostore.launcher.Cluster` s (2 catalog + 2 order replicas
and 1 frontend) on free ports of 127.0.0.1, each in a directory of its own, and stops each when
its ``with`` block ends, however it ends. :func:`tier_stats` reads every service's ``stats()``
and sums each group's replicas into the four tiers of the original report's tables.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import Pyro5.errors

from benchmarks.figures import EMPTY, Summary, merge
from benchmarks.security import inherited
from pyrostore.client import Client
from pyrostore.config import Settings
from pyrostore.discovery import Coordinators, find, make_proxy, parse_name
from pyrostore.errors import NotFound
from pyrostore.launcher import Cluster
from pyrostore.serving import fixed_port

BENCH_TOPIC = "benchmark shelf"
"""The topic of the books the benchmarks search, look up and buy (one search: 100 books)."""
BENCH_BOOKS = 100
BENCH_STOCK = 1_000_000
"""Stock of each benchmark book: no run of this benchmark can sell out."""
TIER_METHODS: dict[str, dict[str, tuple[str, ...]]] = {
    "search": {"frontend": ("search",), "catalog": ("search", "search_at"), "order": ()},
    "lookup": {"frontend": ("lookup",), "catalog": ("lookup", "lookup_at"), "order": ()},
    "buy": {"frontend": ("buy",), "catalog": ("take",), "order": ("buy",)},
}
"""The methods timed at each tier for a client's operation. The catalog answers a caching
frontend's misses with ``lookup_at``/``search_at``, an uncached one with ``lookup``/``search``
(a caching frontend without a cache lease uses those too, so both are counted)."""


def store_settings(data_dir: Path, *, cache: bool, serializer: str,
                   inventory: Path | None = None,
                   variables: Mapping[str, str] | None = None) -> Settings:
    """Settings of a store of our own: a fresh port, its own data, no PYROSTORE_* from the
    shell (so every run measures the same configuration) but the benchmark's TLS choice and
    ``variables`` (``PYROSTORE_*`` values an experiment sets; one this release does not know
    is ignored, as ``Settings.from_env`` ignores it)."""
    overrides: dict[str, Any] = {"inventory": inventory} if inventory is not None else {}
    return Settings.from_env(environ={**inherited(), **(variables or {})},
                             ns_port=fixed_port("127.0.0.1"),
                             data_dir=data_dir, cache=cache, serializer=serializer,
                             log_level="WARNING", **overrides)


class Stores:
    """Starts 2 + 2 + 1 stores and stops each when its block ends, in the background.

    Stopping a store (SIGTERM to each child in turn) takes seconds of mostly waiting, so it
    runs in a thread while the next store starts; a store's block begins only once every
    earlier stop is over, so nothing stops during a measurement. :meth:`close` waits for
    every stop: call it in a ``finally``.
    """

    def __init__(self, *, timeout: float = 120.0) -> None:
        self.timeout = timeout
        self._stopping: list[threading.Thread] = []

    @contextlib.contextmanager
    def started(self, settings: Settings, *, progress: Callable[[str], None] | None = None,
                timeout: float | None = None) -> Iterator[Cluster]:
        """A started store; every child of it is stopped, by PID, after the block.
        ``progress`` hears each step of the start (:meth:`Cluster.start`'s messages), each of
        which may take ``timeout`` seconds (:attr:`timeout` if None)."""
        cluster = Cluster(settings, catalogs=2, orders=2, frontends=1)
        try:
            cluster.start(timeout=timeout or self.timeout, progress=progress)
        except BaseException:
            cluster.stop()
            raise
        try:
            self.close()
            yield cluster
        finally:
            stopping = threading.Thread(target=cluster.stop, name=f"stop-{settings.ns_port}")
            stopping.start()
            self._stopping.append(stopping)

    def close(self) -> None:
        """Wait until every store this has started is stopped."""
        while self._stopping:
            self._stopping.pop().join()


def services(settings: Settings) -> dict[tuple[str, int], str]:
    """``{(role, id): uri}`` of every registered service."""
    return {parse_name(name): uri for name, uri in find(settings).items()}


def call_each(settings: Settings, method: str, roles: tuple[str, ...] = ("frontend", "catalog",
                                                                          "order")
              ) -> dict[tuple[str, int], Any]:
    """``method()`` on every registered service of ``roles``; one that does not answer is left
    out (a replica that was just killed)."""
    answers: dict[tuple[str, int], Any] = {}
    for (role, replica_id), uri in sorted(services(settings).items()):
        if role not in roles:
            continue
        with contextlib.suppress(Pyro5.errors.CommunicationError), \
                make_proxy(uri, settings, timeout=5.0) as proxy:
            answers[(role, replica_id)] = getattr(proxy, method)()
    return answers


def reset_stats(settings: Settings) -> None:
    """Forget every service's timings (before each configuration)."""
    call_each(settings, "reset_stats")


def tier_stats(settings: Settings) -> dict[str, dict[str, Summary]]:
    """``{op: {frontend|catalog|order: summary}}`` from every service's ``stats()``, each
    group's replicas merged by count."""
    stats = call_each(settings, "stats")
    rows: dict[str, dict[str, Summary]] = {}
    for op, tiers in TIER_METHODS.items():
        rows[op] = {}
        for tier, methods in tiers.items():
            parts = [s["methods"][m] for (role, _), s in stats.items() if role == tier
                     for m in methods if m in s["methods"]]
            rows[op][tier] = merge(parts) if methods else dict(EMPTY)
    return rows


def cache_counters(settings: Settings) -> dict[str, int]:
    """The frontends' cache counters, summed (empty when no frontend caches)."""
    totals: dict[str, int] = {}
    for stats in call_each(settings, "stats", ("frontend",)).values():
        for name, value in (stats.get("cache") or {}).items():
            if isinstance(value, int) and name != "epoch":
                totals[name] = totals.get(name, 0) + value
    return totals


def caches(settings: Settings) -> bool:
    """Whether the store's frontends cache reads."""
    return any("cache" in s for s in call_each(settings, "stats", ("frontend",)).values())


def shelve_books(settings: Settings, *, count: int = BENCH_BOOKS, stock: int = BENCH_STOCK,
                 progress: Callable[[], None] | None = None) -> tuple[int, ...]:
    """Make sure ``count`` books of :data:`BENCH_TOPIC` exist with at least half ``stock``
    each (added, or restocked with ``update``); their item numbers."""
    with Client(settings=settings) as client:
        shelf = client.search(BENCH_TOPIC, limit=1000)
        for number in range(len(shelf), count):
            client.add_book(f"Benchmark volume {number + 1}", BENCH_TOPIC, stock=stock, cost=10)
            if progress is not None:
                progress()
        shelf = client.search(BENCH_TOPIC, limit=count)
        for book in shelf:
            left = client.lookup(book["item"])["stock"]
            if left < stock // 2:
                client.update(book["item"], stock_delta=min(stock - left, 1_000_000))
    return tuple(book["item"] for book in shelf)


def write_inventory(path: Path, books: int, *, per_topic: int = BENCH_BOOKS) -> Path:
    """A generated inventory CSV of ``books`` books, ``per_topic`` to a topic; one already
    at ``path`` (written earlier in the run for the same size) is kept. The rows are
    formatted by hand (no field needs quoting): a million take about a second."""
    if path.exists():
        return path
    partial = path.with_name(path.name + ".partial")
    with partial.open("w", newline="") as out:
        out.write("item,title,topic,stock,cost\r\n")
        out.writelines(f"{item},Generated volume {item},generated topic "
                       f"{(item - 1) // per_topic + 1},{BENCH_STOCK},10\r\n"
                       for item in range(1, books + 1))
    partial.replace(path)
    return path


def replica_lookup(settings: Settings, replica_id: int, item: int) -> dict[str, Any]:
    """``lookup(item)`` on catalog replica ``replica_id`` itself, not through a frontend."""
    with make_proxy(services(settings)[("catalog", replica_id)], settings) as proxy:
        book: dict[str, Any] = proxy.lookup(item)
    return book


def replica_order_count(settings: Settings, replica_id: int) -> int:
    """How many orders order replica ``replica_id`` holds, read page by page."""
    count = 0
    with make_proxy(services(settings)[("order", replica_id)], settings) as proxy:
        while page := proxy.orders(1000, count):
            count += len(page)
    return count


def replica_info(settings: Settings, role: str, replica_id: int) -> dict[str, Any]:
    """``info()`` of one replica, or ``{state: down}``."""
    try:
        with make_proxy(services(settings)[(role, replica_id)], settings, timeout=2.0) as proxy:
            return dict(proxy.info())
    except (KeyError, NotFound, Pyro5.errors.CommunicationError):
        return {"state": "down", "serving": False}


def view_of(settings: Settings, group: str) -> dict[str, Any]:
    """The coordinator's view of ``group``: ``{epoch, primary, backups, ...}``."""
    coordinators = Coordinators(settings)
    try:
        return dict(coordinators.read("view", group))
    finally:
        coordinators.close()


def primary_of(settings: Settings, group: str) -> int | None:
    """The replica id the coordinator names primary of ``group``."""
    primary = view_of(settings, group).get("primary")
    return None if primary is None else int(primary)
