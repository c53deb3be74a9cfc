"""Experiment 4: throughput as clients are added, and latency as the catalog grows.

Throughput: each of ``k`` client processes makes requests for a fixed time; the figure is all
their requests over the window from the first start to the last end, with the p50 and p99 of
every request together. Catalog size: a store of its own per size, seeded from a generated
inventory (topics of :data:`TOPIC_BOOKS` books), with the cache off so that every request
reaches a catalog replica's SQLite; and how long its catalog replicas took to start (see
:class:`StartSteps`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import random
import time
from collections.abc import Callable, Iterator, Mapping
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
from pyrostore.launcher import Cluster

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


class StartSteps:
    """When each step of a store's start was reported (:meth:`Cluster.start`'s progress
    messages: the name server, then each role's services ready, in turn)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.steps: list[tuple[float, str]] = [(clock(), "start")]

    def __call__(self, text: str) -> None:
        self.steps.append((self._clock(), text))

    def seconds(self, role: str) -> float | None:
        """From the step before ``role``'s services were started until all were ready (None
        if the start never said so)."""
        for (before, _), (at, text) in itertools.pairwise(self.steps):
            if text.endswith(f" {role} service(s) ready"):
                return at - before
        return None


@dataclasses.dataclass(frozen=True)
class SizedStore:
    """A started store with a generated catalog, and how long its catalog replicas took to
    start: from their spawn until both served, on a first start, in which each loads the
    inventory CSV into its own SQLite file (the two at once, on the machine's cores) and the
    second to register then joins the group as a backup (today: by a snapshot of the first's
    whole catalog, since it cannot know that its own seed is the same)."""

    cluster: Cluster
    catalog_start_s: float | None

    @property
    def settings(self) -> Settings:
        """The store's settings."""
        return self.cluster.settings


def inventory_of(root: Path, books: int) -> Path:
    """The generated inventory of ``books`` books (topics of :data:`TOPIC_BOOKS`), written
    once per run into ``root``."""
    return write_inventory(root / f"inventory-{books}.csv", books, per_topic=TOPIC_BOOKS)


@contextlib.contextmanager
def sized_store(stores: Stores, root: Path, books: int, *, serializer: str,
                cache: bool = False, name: str = "",
                variables: Mapping[str, str] | None = None) -> Iterator[SizedStore]:
    """A store (without cache unless ``cache``) whose catalog holds ``books`` generated books,
    in ``root/store-<books><name>``, with ``variables`` (see :func:`store_settings`)."""
    settings = store_settings(root / f"store-{books}{name}", cache=cache, serializer=serializer,
                              inventory=inventory_of(root, books), variables=variables)
    steps = StartSteps()
    # a catalog replica loads the inventory on its first start: ~1 min a million books on a
    # quiet 2-core machine, 2-3 min on a busy one
    with stores.started(settings, progress=steps,
                        timeout=max(stores.timeout, books / 2_000)) as cluster:
        yield SizedStore(cluster, steps.seconds("catalog"))


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
    """:func:`run_catalog_size` for each size, each on a store of its own, with the start-up
    of its catalog replicas (``catalog_start_s``, see :class:`SizedStore`)."""
    rows = []
    for books in sizes:
        on_store(f"store with {books:,} books")
        with sized_store(stores, root, books, serializer=serializer) as store:
            on_store(f"store with {books:,} books up; its catalog replicas started in "
                     f"{store.catalog_start_s or 0:.1f} s")
            row = run_catalog_size(pool, store.settings, books=books, requests=requests,
                                   tick=tick)
            rows.append({**row, "catalog_start_s": store.catalog_start_s})
    return rows
