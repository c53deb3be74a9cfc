"""Experiment 4: throughput as clients are added, and latency as the catalog grows.

Throughput: each of ``k`` client processes makes requests for a fixed time; the figure is all
their requests over the window from the first start to the last end, with the p50 and p99 of
every request together. Catalog size: a store of its own per size, seeded from a generated
inventory (topics of :data:`TOPIC_BOOKS` books), with the cache off so that every request
reaches a catalog replica's SQLite.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from benchmarks.latency import Tick, pooled, throughput
from benchmarks.pool import ClientPool, Job
from benchmarks.stores import (
    Stores,
    reset_stats,
    store_settings,
    tier_stats,
    view_of,
    write_inventory,
)
from pyrostore.config import Settings

TOPIC_BOOKS = 7
"""Books per topic of a generated catalog: every search finds as many books whatever the
catalog's size (as many as the original seven-book catalog holds), so only the size varies."""


def run_throughput(pool: ClientPool, settings: Settings, *, op: str, clients: int,
                   seconds: float, items: tuple[int, ...]) -> dict[str, Any]:
    """One point of the series: ``clients`` processes making ``op`` for ``seconds``."""
    jobs = [Job("ops", settings, op=op, seconds=seconds, items=items, seed=7000 + index)
            for index in range(clients)]
    results = pool.run(jobs)
    return {"clients": clients, "ops_per_s": throughput(results), **pooled(results, op)}


@contextlib.contextmanager
def sized_store(stores: Stores, root: Path, books: int, *, serializer: str
                ) -> Iterator[Settings]:
    """A store without cache whose catalog holds ``books`` generated books."""
    inventory = write_inventory(root / f"inventory-{books}.csv", books, per_topic=TOPIC_BOOKS)
    settings = store_settings(root / f"store-{books}", cache=False, serializer=serializer,
                              inventory=inventory)
    with stores.started(settings):
        yield settings


def run_catalog_size(pool: ClientPool, settings: Settings, *, books: int, requests: int,
                     tick: Tick) -> dict[str, Any]:
    """Lookups of random books and searches of one topic in the middle of a catalog of
    ``books`` books, one client; each as the client, the frontend and the catalog saw it,
    and how many times the catalog group's view changed meanwhile (it should not)."""
    middle_topic = max(books // 2 - 1, 0) // TOPIC_BOOKS + 1
    items = tuple(random.Random(books).sample(range(1, books + 1), min(books, 1000)))
    reset_stats(settings)
    row: dict[str, Any] = {"books": books, "topic_books": min(TOPIC_BOOKS, books)}
    epoch = view_of(settings, "catalog")["epoch"]
    for op in ("lookup", "search"):
        [result] = pool.run([Job("ops", settings, op=op, count=requests, items=items,
                                 topic=f"generated topic {middle_topic}")], tick)
        row[op] = {"client": pooled([result], op), "ops_per_s": throughput([result])}
    # a new epoch means the catalog group changed (a replica dropped or rejoined) meanwhile
    row["catalog_view_changes"] = view_of(settings, "catalog")["epoch"] - epoch
    for op, tiers in tier_stats(settings).items():
        if op in row:
            row[op]["catalog"] = tiers["catalog"]
            row[op]["frontend"] = tiers["frontend"]
    return row


def sizes_series(pool: ClientPool, stores: Stores, root: Path, *, sizes: list[int],
                 requests: int,
                 serializer: str, tick: Tick,
                 on_store: Callable[[str], None] = lambda _: None) -> list[dict[str, Any]]:
    """:func:`run_catalog_size` for each size, each on a store of its own."""
    rows = []
    for books in sizes:
        on_store(f"store with {books:,} books")
        with sized_store(stores, root, books, serializer=serializer) as settings:
            rows.append(run_catalog_size(pool, settings, books=books, requests=requests,
                                         tick=tick))
    return rows
