"""A versioned read cache that is never older than an acknowledged write (knows nothing of Pyro5).

Entries live under a *key* (``item:1``, ``topic:graduate school``, ``topics``), each possibly in
several *variants* (the pages of a search). Every value carries a version: the sequence number
of the state it was read from. The writer calls :meth:`VersionedCache.invalidate` before it
acknowledges a write; that drops the key's entries, raises the key's *floor* to the write's
version and bumps the key's generation. A fill is kept only if

- no invalidation of its key (and no flush) happened since the read began: the read's *token*,
  taken before the read, still matches (memcache's lease token, Redis's "caching in progress"),
- and its version is not below the key's floor (a read that raced the write it was told of).

Concurrent misses of one key and variant share one read (single flight); a read begun after an
invalidation never joins a flight begun before it. The cache is bounded (LRU) and an entry
older than ``max_age`` is a miss (a backstop, not the mechanism).

**How long a floor is kept.** A floor only has to refuse fills from reads that began after its
invalidation and read a replica that did not yet hold the write; once the write is
acknowledged, every replica that serves holds it. The writer (the catalog primary) answers a
frontend's cache-lease renewal only between batches of writes, so a renewal *sent* after an
invalidation arrived is answered only once that invalidation's write is over. The owner of the
cache then calls :meth:`VersionedCache.forget_floors` with the time it sent that renewal: the
floors set before it are dropped, and every read still in flight is voided (it may have begun
before the answer), so no fill can lean on a dropped floor. A floor therefore lives about a
quarter of a lease, whatever version it names: a version far above the writer's real position
(a bug, a forged message) keeps an item out of the cache that long, never for good. And the
bookkeeping is bounded whatever is sent: past ``max_floors`` keys the floors fold into one
floor for every key (the highest), and past as many key generations every read in flight is
voided and the generations start again; both only refuse fills, never keep a stale one.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Hashable, Iterable
from typing import Any

Variant = Hashable
Version = tuple[int, int]
"""``(epoch, seq)``: the epoch of the replica that served the read and the sequence number of
the state read. A new epoch holds every acknowledged write of the old one, so its reads pass
the floors of writes that a failover lost (those were never acknowledged)."""
Loader = Callable[[], tuple[Any, Version]]
"""Reads a value from the source of truth: ``(value, version)``."""
NO_FLOOR: Version = (0, 0)
MAX_FLOORS = 10_000
"""Keys with a floor (and keys with a generation) a cache tracks before it folds them."""


class _Flight:
    """One read in progress, that later misses of the same entry wait for."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.value: Any = None
        self.error: BaseException | None = None


class VersionedCache:
    """Thread-safe, versioned, LRU-bounded cache with fill tokens and floors."""

    def __init__(self, *, max_entries: int = 10_000, max_age: float = 30.0,
                 max_floors: int = MAX_FLOORS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_entries = max_entries
        self.max_age = max_age
        self.max_floors = max_floors
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: OrderedDict[tuple[str, Variant], tuple[Any, float]] = OrderedDict()
        self._variants: dict[str, set[Variant]] = {}
        self._floors: dict[str, tuple[Version, float]] = {}  # key -> (floor, when it was set)
        self._floor_all: tuple[Version, float] = (NO_FLOOR, float("-inf"))  # folded floors
        self._generations: dict[str, int] = {}
        self._epoch = 0  # bumped by flush (and forget_floors): every token taken before is void
        self._flights: dict[tuple[str, Variant], _Flight] = {}
        self.counters: Counter[str] = Counter()

    def get(self, key: str, variant: Variant = None) -> tuple[bool, Any]:
        """``(True, value)`` on a hit, ``(False, None)`` on a miss."""
        entry_key = (key, variant)
        with self._lock:
            entry = self._entries.get(entry_key)
            if entry is not None and self._clock() - entry[1] <= self.max_age:
                self._entries.move_to_end(entry_key)
                self.counters["hits"] += 1
                return True, entry[0]
            self.counters["misses"] += 1
            return False, None

    def token(self, key: str) -> tuple[int, int]:
        """Taken before a read: the fill of that read is refused if this goes stale."""
        with self._lock:
            return self._epoch, self._generations.get(key, 0)

    def fill(self, key: str, variant: Variant, token: tuple[int, int], value: Any,
             version: Version) -> bool:
        """Keep ``value`` (read at ``version``) if nothing invalidated ``key`` since ``token``."""
        with self._lock:
            stale = (token != (self._epoch, self._generations.get(key, 0))
                     or tuple(version) < self._floor(key))
            if stale:
                self.counters["fills_refused"] += 1
                return False
            self._entries[(key, variant)] = (value, self._clock())
            self._entries.move_to_end((key, variant))
            self._variants.setdefault(key, set()).add(variant)
            self.counters["fills"] += 1
            while len(self._entries) > self.max_entries:
                (old_key, old_variant), _ = self._entries.popitem(last=False)
                self._forget_variant(old_key, old_variant)
                self.counters["evictions"] += 1
            return True

    def load(self, key: str, variant: Variant, loader: Loader,
             before_fill: Callable[[], None] | None = None) -> Any:
        """A hit, or one shared read through ``loader`` that is cached if still valid."""
        hit, value = self.get(key, variant)
        if hit:
            return value
        with self._lock:
            flight = self._flights.get((key, variant))
            leader = flight is None
            if leader:
                flight = self._flights[(key, variant)] = _Flight()
                token = (self._epoch, self._generations.get(key, 0))
            else:
                self.counters["shared_misses"] += 1
        assert flight is not None
        if not leader:
            flight.done.wait()
            if flight.error is not None:
                raise flight.error
            return flight.value
        try:
            flight.value, version = loader()
            if before_fill is not None:
                before_fill()
            self.fill(key, variant, token, flight.value, version)
            return flight.value
        except BaseException as exc:
            flight.error = exc
            raise
        finally:
            with self._lock:
                if self._flights.get((key, variant)) is flight:
                    del self._flights[(key, variant)]
            flight.done.set()

    def invalidate(self, keys: Iterable[str], version: Version) -> None:
        """A write at ``version`` changed ``keys``: drop them; refuse fills from before it."""
        version = (int(version[0]), int(version[1]))
        with self._lock:
            now = self._clock()
            for key in keys:
                self._floors[key] = (max(self._floors.get(key, (NO_FLOOR, now))[0], version), now)
                self._generations[key] = self._generations.get(key, 0) + 1
                for variant in self._variants.pop(key, set()):
                    self._entries.pop((key, variant), None)
                for flight_key in [k for k in self._flights if k[0] == key]:
                    del self._flights[flight_key]  # later misses start a read of their own
                self.counters["invalidations"] += 1
            self._bound_bookkeeping(now)

    def forget_floors(self, before: float) -> None:
        """The writer has answered a lease renewal sent at ``before`` (on this cache's clock):
        every write invalidated before then is over. Drop their floors, and void the reads in
        flight (see the module's docstring)."""
        with self._lock:
            kept = {key: floor for key, floor in self._floors.items() if floor[1] >= before}
            dropped = len(kept) < len(self._floors)
            if self._floor_all[1] < before and self._floor_all[0] != NO_FLOOR:
                self._floor_all, dropped = (NO_FLOOR, float("-inf")), True
            self._floors = kept
            if dropped:
                self._void_tokens()

    def flush(self) -> None:
        """Drop everything and void every read in flight (epoch change, lost channel)."""
        with self._lock:
            self._entries.clear()
            self._variants.clear()
            self._flights.clear()
            self._void_tokens()
            self.counters["flushes"] += 1

    def stats(self) -> dict[str, int]:
        """The counters, and how many entries are held."""
        with self._lock:
            return {**{name: self.counters[name] for name in COUNTERS},
                    "entries": len(self._entries)}

    def _floor(self, key: str) -> Version:
        """(Holding the lock.) The lowest version a fill of ``key`` may have."""
        floor = self._floors.get(key)
        return max(floor[0], self._floor_all[0]) if floor else self._floor_all[0]

    def _bound_bookkeeping(self, now: float) -> None:
        """(Holding the lock.) Fold the floors into one, and start the generations anew, when
        there are too many: both only refuse fills."""
        if len(self._floors) > self.max_floors:
            highest = max(floor for floor, _ in self._floors.values())
            self._floor_all = (max(highest, self._floor_all[0]), now)
            self._floors.clear()
        if len(self._generations) > self.max_floors:
            self._void_tokens()

    def _void_tokens(self) -> None:
        """(Holding the lock.) Refuse the fill of every read in flight: generations restart."""
        self._epoch += 1
        self._generations.clear()

    def _forget_variant(self, key: str, variant: Variant) -> None:
        variants = self._variants.get(key)
        if variants is not None:
            variants.discard(variant)
            if not variants:
                del self._variants[key]


COUNTERS = ("hits", "misses", "shared_misses", "fills", "fills_refused", "invalidations",
            "evictions", "flushes")
