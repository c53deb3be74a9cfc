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


class _Flight:
    """One read in progress, that later misses of the same entry wait for."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.value: Any = None
        self.error: BaseException | None = None


class VersionedCache:
    """Thread-safe, versioned, LRU-bounded cache with fill tokens and floors."""

    def __init__(self, *, max_entries: int = 10_000, max_age: float = 30.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_entries = max_entries
        self.max_age = max_age
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: OrderedDict[tuple[str, Variant], tuple[Any, float]] = OrderedDict()
        self._variants: dict[str, set[Variant]] = {}
        self._floors: dict[str, Version] = {}
        self._generations: dict[str, int] = {}
        self._epoch = 0  # bumped by flush: every token taken before is void
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
                     or tuple(version) < self._floors.get(key, NO_FLOOR))
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
            for key in keys:
                self._floors[key] = max(self._floors.get(key, NO_FLOOR), version)
                self._generations[key] = self._generations.get(key, 0) + 1
                for variant in self._variants.pop(key, set()):
                    self._entries.pop((key, variant), None)
                for flight_key in [k for k in self._flights if k[0] == key]:
                    del self._flights[flight_key]  # later misses start a read of their own
                self.counters["invalidations"] += 1

    def flush(self) -> None:
        """Drop everything and void every read in flight (epoch change, lost channel)."""
        with self._lock:
            self._entries.clear()
            self._variants.clear()
            self._flights.clear()
            self._epoch += 1
            self.counters["flushes"] += 1

    def stats(self) -> dict[str, int]:
        """The counters, and how many entries are held."""
        with self._lock:
            return {**{name: self.counters[name] for name in COUNTERS},
                    "entries": len(self._entries)}

    def _forget_variant(self, key: str, variant: Variant) -> None:
        variants = self._variants.get(key)
        if variants is not None:
            variants.discard(variant)
            if not variants:
                del self._variants[key]


COUNTERS = ("hits", "misses", "shared_misses", "fills", "fills_refused", "invalidations",
            "evictions", "flushes")
