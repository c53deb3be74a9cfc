"""The frontend: the store's one client-facing API, ``pyrostore.frontend.<id>``, and its cache.

It holds nothing durable. It finds the catalog and order replicas through the name server,
spreads reads over them, sends writes to each group's primary, fails over (see
:class:`ReplicaSet`), and makes the request id of a buy or an admin write when the caller gave
none, so that its own retries apply it once.

:class:`CachedCatalog` answers ``lookup``, ``search`` and ``topics`` from a
:class:`VersionedCache` while the frontend holds a cache lease from the catalog primary, which
invalidates entries (``invalidate``) before it acknowledges any write that changes them; see
:mod:`pyrostore.invalidation` for the primary's side.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Hashable
from typing import Any, NamedTuple

import Pyro5.api

from pyrostore.access import ADMIN, CLIENT, NODE, OPERATORS, SHOPPERS, allow, caller
from pyrostore.cache import Version, VersionedCache
from pyrostore.config import Settings
from pyrostore.discovery import ReplicaSet, survey
from pyrostore.errors import InvalidRequest, NotFound, PyrostoreError
from pyrostore.metrics import timed_methods
from pyrostore.models import (
    TOPICS_KEY,
    check_count,
    check_item,
    check_page,
    check_read_key,
    check_request_id,
    check_text,
    check_version,
    item_key,
    request_id_or_new,
    topic_key,
)
from pyrostore.serving import Service

log = logging.getLogger(__name__)
MAX_INVALIDATED_KEYS = 1024
"""Most read keys one invalidation may name (a batch of 64 writes names at most 192)."""


class CatalogRead(NamedTuple):
    """A catalog read by its two names: ``plain`` answers the value, ``versioned`` answers
    ``{value, version}`` for the cache."""

    plain: str
    versioned: str


TOPICS = CatalogRead("topics", "topics_at")
SEARCH = CatalogRead("search", "search_at")
LOOKUP = CatalogRead("lookup", "lookup_at")


class CachedCatalog:
    """Catalog reads through a versioned cache, valid only under a cache lease."""

    def __init__(self, settings: Settings, replicas: ReplicaSet,
                 before_fill: Callable[[], None]) -> None:
        self.settings = settings
        self.replicas = replicas
        self.cache = VersionedCache(max_entries=settings.cache_entries,
                                    max_age=settings.cache_max_age)
        self._before_fill = before_fill
        self._lock = threading.Lock()
        self._lease_until = 0.0
        self._lease_epoch: int | None = None
        self._stopping = threading.Event()

    def read(self, key: str, variant: Hashable, read: CatalogRead, *args: Any) -> Any:
        """The cached answer of catalog ``read``, or a read through to a replica."""
        if time.monotonic() >= self._lease_until:  # no lease: no cached answer, no fill
            return self.replicas.call(read.plain, *args)
        return self.cache.load(key, variant, lambda: self._read_versioned(read.versioned, *args),
                               before_fill=self._before_fill)

    def invalidate(self, epoch: int, changes: list[tuple[list[str], Version]]) -> None:
        """The catalog primary's word, before it answers, that writes change these keys."""
        if epoch != self._lease_epoch:
            self.cache.flush()  # a primary of another epoch: whatever we hold is suspect
        for keys, version in changes:
            self.cache.invalidate(keys, version)

    def keep_lease(self) -> None:
        """Renew the cache lease every quarter lease; flush after a lapse or a new epoch."""
        while not self._stopping.is_set():
            sent = time.monotonic()
            try:
                answer = self.replicas.call("cache_lease", self._uri, primary=True, patience=0)
            except PyrostoreError as exc:
                log.debug("cache lease not renewed: %s", exc)
            else:
                with self._lock:
                    # a lease that ran out before this renewal took effect, even one sent in
                    # time (it may have waited behind writes at the primary), may have
                    # missed invalidations: the primary forgets a frontend whose lease ended
                    lapsed = time.monotonic() >= self._lease_until
                    if lapsed or answer["epoch"] != self._lease_epoch:
                        self.cache.flush()
                    self._lease_epoch = answer["epoch"]
                    self._lease_until = sent + answer["lease"]
                    # answered between batches: every write invalidated before `sent` is over
                    self.cache.forget_floors(sent)
            self._stopping.wait(max(0.0, sent + self.settings.lease / 4 - time.monotonic()))

    def start(self, uri: str) -> None:
        """Start keeping the cache lease for the frontend at ``uri``."""
        self._uri = uri
        threading.Thread(target=self.keep_lease, name="cache-lease", daemon=True).start()

    def stop(self) -> None:
        """Stop renewing: the lease runs out by itself."""
        self._stopping.set()

    def stats(self) -> dict[str, Any]:
        """The cache's counters, and the lease."""
        left = max(0.0, self._lease_until - time.monotonic())
        return {**self.cache.stats(), "lease_left": round(left, 3),
                "epoch": self._lease_epoch}

    def _read_versioned(self, method: str, *args: Any) -> tuple[Any, Version]:
        answer = self.replicas.call(method, *args)
        return answer["value"], (answer["version"][0], answer["version"][1])


@timed_methods
class Frontend(Service):
    """The client-facing remote object."""

    role = "frontend"
    plain_callers = True  # `PYRONAME:pyrostore.frontend.1` works from any Pyro5 shell
    hook_names = ("hold_before_fill",)

    def __init__(self, settings: Settings, replica_id: int) -> None:
        super().__init__(settings, replica_id)
        self.catalog = ReplicaSet(settings, "catalog", on_refused=self.refuse)
        self.order_log = ReplicaSet(settings, "order", on_refused=self.refuse)
        self.cached = (CachedCatalog(settings, self.catalog,
                                     lambda: self.hooks.point("hold_before_fill"))
                       if settings.cache else None)

    @Pyro5.api.expose
    @allow(*SHOPPERS)
    def topics(self) -> list[str]:
        """Every topic in the catalog."""
        topics: list[str] = self._read(TOPICS_KEY, None, TOPICS)
        return topics

    @Pyro5.api.expose
    @allow(*SHOPPERS)
    def search(self, topic: str, limit: int = 100, offset: int = 0) -> list[dict[str, Any]]:
        """``[{item, title}]`` of the books in ``topic`` (any case), one page at a time."""
        topic, (limit, offset) = check_text(topic, "topic"), check_page(limit, offset)
        books: list[dict[str, Any]] = self._read(topic_key(topic), (limit, offset), SEARCH,
                                                 topic, limit, offset)
        return books

    @Pyro5.api.expose
    @allow(*SHOPPERS)
    def lookup(self, item: int) -> dict[str, Any]:
        """``{item, title, topic, stock, cost, version}`` of one book."""
        item = check_item(item)
        book: dict[str, Any] = self._read(item_key(item), None, LOOKUP, item)
        return book

    @Pyro5.api.expose
    @allow(NODE)
    def invalidate(self, epoch: int, changes: list[list[Any]]) -> None:
        """Called by the catalog primary before it answers writes: ``[[keys, version], ...]``,
        a write's read keys and its version ``[epoch, seq]`` (of that epoch), at most
        :data:`MAX_INVALIDATED_KEYS` keys in all."""
        epoch = check_count(epoch, "epoch")
        checked = _changes(epoch, changes)
        if self.cached is not None:
            self.cached.invalidate(epoch, checked)

    def _read(self, key: str, variant: Hashable, read: CatalogRead, *args: Any) -> Any:
        if self.cached is None:
            return self.catalog.call(read.plain, *args)
        return self.cached.read(key, variant, read, *args)

    @Pyro5.api.expose
    @allow(*SHOPPERS)
    def buy(self, item: int, qty: int = 1, request_id: str | None = None) -> dict[str, Any]:
        """Buy ``qty`` copies of ``item``; the order. A repeated ``request_id`` buys once."""
        order: dict[str, Any] = self.order_log.call(
            "buy", item, qty, request_id_or_new(request_id), _shopper() or "", primary=True)
        return order

    @Pyro5.api.expose
    @allow(*SHOPPERS)
    def order_status(self, request_id: str) -> dict[str, Any]:
        """What became of the buy ``request_id``: ``{request_id, state, order, error,
        reason}``, ``state`` one of ``done`` (with the ``order``), ``pending`` (the store
        is finishing it), ``refused`` (``error`` and ``reason`` say why) or ``unknown``
        (never seen, or forgotten after the retention). A shopper sees only their own buys."""
        request_id = check_request_id(request_id)
        outcome: dict[str, Any] = self.order_log.call("outcome", request_id)
        shopper = _shopper()
        if shopper is not None and outcome.get("customer") != shopper:
            outcome = {"state": "unknown", "order": None, "error": None, "reason": None}
        return {"request_id": request_id,
                **{key: outcome.get(key) for key in ("state", "order", "error", "reason")}}

    @Pyro5.api.expose
    @allow(ADMIN)
    def update(
        self,
        item: int,
        cost: float | None = None,
        stock_delta: int | None = None,
        request_id: str | None = None,
    ) -> dict[str, Any]:
        """Reprice and/or restock a book (admin); the book as it is after."""
        book: dict[str, Any] = self.catalog.call(
            "update", item, cost, stock_delta, request_id_or_new(request_id), primary=True)
        return book

    @Pyro5.api.expose
    @allow(ADMIN)
    def add_book(
        self, title: str, topic: str, stock: int, cost: float, request_id: str | None = None
    ) -> dict[str, Any]:
        """Add a new book (admin); the book with its item number."""
        book: dict[str, Any] = self.catalog.call(
            "add_book", title, topic, stock, cost, request_id_or_new(request_id), primary=True)
        return book

    @Pyro5.api.expose
    @allow(*SHOPPERS)
    def orders(self, limit: int = 20, offset: int = 0) -> list[dict[str, Any]]:
        """The order log, newest first: every order for an admin, a shopper's own for them."""
        orders: list[dict[str, Any]] = self.order_log.call("orders", limit, offset, _shopper())
        return orders

    @Pyro5.api.expose
    @allow(*SHOPPERS)
    def order(self, order_id: int) -> dict[str, Any]:
        """One order by id (a shopper's own only: anyone else's is not found)."""
        order: dict[str, Any] = self.order_log.call("order", order_id)
        shopper = _shopper()
        if shopper is not None and order.get("customer") != shopper:
            raise NotFound(f"no order with id {order_id}", order_id=order_id)
        return order

    @Pyro5.api.expose
    @allow(*OPERATORS)
    def status(self) -> list[dict[str, Any]]:
        """Every registered service of the store and its ``info()`` (``state: down`` if mute);
        operators only: it names every process and address."""
        return survey(self.settings)

    @Pyro5.api.expose
    @allow(*OPERATORS)
    def stats(self) -> dict[str, Any]:
        """Timings per method and, with the cache on, the cache's counters."""
        stats = super().stats()
        if self.cached is not None:
            stats["cache"] = self.cached.stats()
        return stats

    def details(self) -> dict[str, Any]:
        return {"cache": self.cached.stats() if self.cached is not None else None}

    def start(self) -> None:
        if self.cached is not None:
            self.cached.start(self.uri)

    def close(self) -> None:
        if self.cached is not None:
            self.cached.stop()
        self.catalog.close()
        self.order_log.close()


def _changes(epoch: int, changes: Any) -> list[tuple[list[str], Version]]:
    """An invalidation's ``[[keys, [epoch, seq]], ...]``, checked."""
    if not isinstance(changes, list) or len(changes) > MAX_INVALIDATED_KEYS:
        raise InvalidRequest(f"changes must be a list of at most {MAX_INVALIDATED_KEYS}",
                             field="changes")
    checked, named = [], 0
    for change in changes:
        if not isinstance(change, list | tuple) or len(change) != 2 \
                or not isinstance(change[0], list):
            raise InvalidRequest("a change is [keys, [epoch, seq]]", field="changes")
        named += len(change[0])
        if named > MAX_INVALIDATED_KEYS:
            raise InvalidRequest(f"an invalidation names at most {MAX_INVALIDATED_KEYS} keys",
                                 field="changes")
        version = check_version(change[1])
        if version[0] != epoch:
            raise InvalidRequest(f"a change of epoch {epoch} has a version of that epoch",
                                 field="changes")
        checked.append(([check_read_key(key) for key in change[0]], version))
    return checked


def _shopper() -> str | None:
    """The name of the shopper calling (None: an admin, or an insecure store's caller)."""
    who = caller()
    return who.name or "" if who.role == CLIENT else None
