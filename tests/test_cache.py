"""VersionedCache on its own (no network): counters, tokens, floors, LRU, max_age, single flight."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from pyrostore.cache import COUNTERS, VersionedCache
from tests.conftest import wait_until as wait_for

WAIT = 5.0
"""Seconds any test waits for another thread before it calls the wait a failure."""




def put(cache: VersionedCache, key: str, value: Any, version: tuple[int, int] = (0, 1),
        variant: Any = None) -> bool:
    """Fill ``key`` with a token taken just now (a read that nothing raced)."""
    return cache.fill(key, variant, cache.token(key), value, version)


class BlockedLoader:
    """A loader that counts its calls and, when held, blocks until released."""

    def __init__(self, value: Any, version: tuple[int, int] = (0, 1), *,
                 hold: bool = True) -> None:
        self.value = value
        self.version = version
        self.calls = 0
        self.started = threading.Event()
        self.go = threading.Event()
        if not hold:
            self.go.set()
        self._lock = threading.Lock()

    def __call__(self) -> tuple[Any, tuple[int, int]]:
        with self._lock:
            self.calls += 1
        self.started.set()
        assert self.go.wait(WAIT), "loader was never released"
        return self.value, self.version


class LoadThread(threading.Thread):
    """Runs ``cache.load`` and keeps its result or error."""

    def __init__(self, cache: VersionedCache, key: str, variant: Any,
                 loader: Callable[[], tuple[Any, tuple[int, int]]]) -> None:
        super().__init__(daemon=True)
        self.cache, self.key, self.variant, self.loader = cache, key, variant, loader
        self.result: Any = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = self.cache.load(self.key, self.variant, self.loader)
        except BaseException as exc:
            self.error = exc

    def finish(self) -> Any:
        self.join(WAIT)
        assert not self.is_alive(), "load did not return"
        if self.error is not None:
            raise self.error
        return self.result


# --- hits, misses, variants -------------------------------------------------------------------


def test_get_of_missing_key_is_a_miss() -> None:
    cache = VersionedCache()
    assert cache.get("item:1") == (False, None)
    assert cache.get("item:1", (10, 0)) == (False, None)
    stats = cache.stats()
    assert stats["misses"] == 2
    assert stats["hits"] == 0
    assert stats["entries"] == 0


def test_fill_then_get_returns_the_value_and_counts() -> None:
    cache = VersionedCache()
    assert put(cache, "item:1", {"title": "a"}) is True
    assert cache.get("item:1") == (True, {"title": "a"})
    assert cache.get("item:1") == (True, {"title": "a"})
    assert cache.get("item:2") == (False, None)
    stats = cache.stats()
    assert (stats["hits"], stats["misses"], stats["fills"], stats["entries"]) == (2, 1, 1, 1)


def test_a_later_fill_replaces_the_value() -> None:
    cache = VersionedCache()
    assert put(cache, "item:1", "old", (0, 1))
    assert put(cache, "item:1", "new", (0, 2))
    assert cache.get("item:1") == (True, "new")
    assert cache.stats()["entries"] == 1


def test_variants_are_separate_entries() -> None:
    cache = VersionedCache()
    key = "topic:distributed systems"
    assert put(cache, key, ["p0"], variant=(10, 0))
    assert put(cache, key, ["p1"], variant=(10, 10))
    assert cache.get(key, (10, 0)) == (True, ["p0"])
    assert cache.get(key, (10, 10)) == (True, ["p1"])
    assert cache.get(key, (10, 20)) == (False, None)
    assert cache.get(key) == (False, None)  # the variant None is an entry of its own
    assert cache.stats()["entries"] == 2


def test_invalidate_drops_every_variant_of_that_key_only() -> None:
    cache = VersionedCache()
    key, other = "topic:distributed systems", "topic:graduate school"
    for offset in (0, 10, 20):
        assert put(cache, key, f"page{offset}", variant=(10, offset))
    assert put(cache, other, "other page", variant=(10, 0))
    assert put(cache, "topics", ["a", "b"])
    cache.invalidate([key], (0, 2))
    for offset in (0, 10, 20):
        assert cache.get(key, (10, offset)) == (False, None)
    assert cache.get(other, (10, 0)) == (True, "other page")
    assert cache.get("topics") == (True, ["a", "b"])
    stats = cache.stats()
    assert stats["entries"] == 2
    assert stats["invalidations"] == 1


def test_invalidate_counts_each_key() -> None:
    cache = VersionedCache()
    cache.invalidate(["item:1", "topic:x", "topics"], (0, 3))
    assert cache.stats()["invalidations"] == 3


def test_stats_has_every_counter_and_entries() -> None:
    cache = VersionedCache()
    stats = cache.stats()
    assert set(stats) == {*COUNTERS, "entries"}
    assert all(value == 0 for value in stats.values())
    assert {"hits", "misses", "fills_refused", "invalidations"} <= set(COUNTERS)


# --- the token rule ---------------------------------------------------------------------------


def test_fill_with_token_taken_before_invalidate_is_refused() -> None:
    cache = VersionedCache()
    token = cache.token("item:1")
    cache.invalidate(["item:1"], (0, 1))
    # The version is above the floor: only the token can refuse this fill.
    assert cache.fill("item:1", None, token, "stale", (0, 9)) is False
    assert cache.stats()["fills_refused"] == 1
    assert cache.stats()["fills"] == 0
    assert cache.get("item:1") == (False, None)


def test_fill_with_token_taken_after_invalidate_is_accepted() -> None:
    cache = VersionedCache()
    cache.invalidate(["item:1"], (0, 1))
    token = cache.token("item:1")
    assert cache.fill("item:1", None, token, "fresh", (0, 1)) is True
    assert cache.get("item:1") == (True, "fresh")
    assert cache.stats()["fills_refused"] == 0


def test_invalidating_another_key_does_not_void_the_token() -> None:
    cache = VersionedCache()
    token = cache.token("item:1")
    cache.invalidate(["item:2", "topic:x"], (0, 5))
    assert cache.fill("item:1", None, token, "value", (0, 1)) is True
    assert cache.get("item:1") == (True, "value")


def test_flush_voids_every_token_taken_before_it() -> None:
    cache = VersionedCache()
    assert put(cache, "item:3", "kept?")
    tokens = {key: cache.token(key) for key in ("item:1", "item:2")}
    cache.flush()
    for key, token in tokens.items():
        assert cache.fill(key, None, token, "stale", (0, 1)) is False
        assert cache.get(key) == (False, None)
    assert cache.get("item:3") == (False, None)  # flush dropped the entries too
    stats = cache.stats()
    assert stats["fills_refused"] == 2
    assert stats["flushes"] == 1
    assert stats["entries"] == 0
    # A token taken after the flush is good.
    assert put(cache, "item:1", "fresh")
    assert cache.get("item:1") == (True, "fresh")


# --- the floor rule ---------------------------------------------------------------------------


def test_fill_below_the_floor_is_refused_even_with_a_fresh_token() -> None:
    cache = VersionedCache()
    cache.invalidate(["item:1"], (1, 5))
    token = cache.token("item:1")
    assert cache.fill("item:1", None, token, "lagging replica", (1, 4)) is False
    assert cache.stats()["fills_refused"] == 1
    assert cache.get("item:1") == (False, None)


@pytest.mark.parametrize("version", [(1, 5), (1, 6), (2, 0)])
def test_fill_at_or_above_the_floor_is_accepted(version: tuple[int, int]) -> None:
    cache = VersionedCache()
    cache.invalidate(["item:1"], (1, 5))
    assert cache.fill("item:1", None, cache.token("item:1"), "ok", version) is True
    assert cache.get("item:1") == (True, "ok")


def test_versions_compare_as_epoch_seq_tuples() -> None:
    cache = VersionedCache()
    cache.invalidate(["item:1"], (1, 9))
    # A newer epoch with a smaller seq passes: it holds every acknowledged write of epoch 1.
    assert cache.fill("item:1", None, cache.token("item:1"), "new epoch", (2, 5)) is True
    cache.invalidate(["item:2"], (2, 0))
    # An older epoch with a larger seq does not.
    assert cache.fill("item:2", None, cache.token("item:2"), "old epoch", (1, 99)) is False


def test_version_given_as_a_list_works() -> None:
    cache = VersionedCache()
    cache.invalidate(["item:1"], [1, 9])  # type: ignore[arg-type]  # as serpent delivers it
    assert cache.fill("item:1", None, cache.token("item:1"), "below",
                      [1, 8]) is False  # type: ignore[arg-type]
    assert cache.fill("item:1", None, cache.token("item:1"), "at",
                      [1, 9]) is True  # type: ignore[arg-type]
    assert cache.get("item:1") == (True, "at")
    cache.invalidate(["item:1"], [2, 0])  # type: ignore[arg-type]
    assert cache.fill("item:1", None, cache.token("item:1"), "old",
                      [1, 9]) is False  # type: ignore[arg-type]


def test_floor_never_goes_down() -> None:
    cache = VersionedCache()
    cache.invalidate(["item:1"], (0, 7))
    cache.invalidate(["item:1"], (0, 3))  # a late, older invalidation
    assert cache.fill("item:1", None, cache.token("item:1"), "v5", (0, 5)) is False
    assert cache.fill("item:1", None, cache.token("item:1"), "v7", (0, 7)) is True


def test_floor_outlives_flush() -> None:
    cache = VersionedCache()
    cache.invalidate(["item:1"], (0, 7))
    cache.flush()
    assert cache.fill("item:1", None, cache.token("item:1"), "v6", (0, 6)) is False


# --- LRU bound and max_age --------------------------------------------------------------------


def test_lru_evicts_the_least_recently_filled() -> None:
    cache = VersionedCache(max_entries=3)
    for key in ("a", "b", "c", "d"):
        assert put(cache, key, key.upper())
    assert cache.get("a") == (False, None)
    for key in ("b", "c", "d"):
        assert cache.get(key) == (True, key.upper())
    stats = cache.stats()
    assert stats["evictions"] == 1
    assert stats["entries"] == 3


def test_lru_get_refreshes_recency() -> None:
    cache = VersionedCache(max_entries=3)
    for key in ("a", "b", "c"):
        assert put(cache, key, key.upper())
    assert cache.get("a") == (True, "A")  # a is now the most recent; b the least
    assert put(cache, "d", "D")
    assert cache.get("b") == (False, None)
    assert cache.get("a") == (True, "A")
    assert cache.get("c") == (True, "C")
    assert cache.get("d") == (True, "D")
    assert cache.stats()["evictions"] == 1


def test_lru_counts_variants_as_entries_and_invalidate_after_eviction() -> None:
    cache = VersionedCache(max_entries=2)
    assert put(cache, "k", "p0", variant=0)
    assert put(cache, "k", "p1", variant=1)
    assert put(cache, "other", "o")
    assert cache.get("k", 0) == (False, None)
    assert cache.stats()["evictions"] == 1
    cache.invalidate(["k"], (0, 2))
    assert cache.get("k", 1) == (False, None)
    assert cache.get("other") == (True, "o")
    assert cache.stats()["entries"] == 1


def test_entry_older_than_max_age_is_a_miss() -> None:
    now = [100.0]
    cache = VersionedCache(max_age=10.0, clock=lambda: now[0])
    assert put(cache, "item:1", "v")
    now[0] = 105.0
    assert cache.get("item:1") == (True, "v")
    now[0] = 110.0
    assert cache.get("item:1") == (True, "v")  # exactly max_age old: still good
    now[0] = 110.5
    assert cache.get("item:1") == (False, None)
    stats = cache.stats()
    assert (stats["hits"], stats["misses"]) == (2, 1)


def test_load_reads_again_after_max_age() -> None:
    now = [0.0]
    cache = VersionedCache(max_age=1.0, clock=lambda: now[0])
    loader = BlockedLoader("v", hold=False)
    assert cache.load("k", None, loader) == "v"
    assert cache.load("k", None, loader) == "v"
    assert loader.calls == 1
    now[0] = 2.0
    assert cache.load("k", None, loader) == "v"
    assert loader.calls == 2
    now[0] = 2.5
    assert cache.get("k") == (True, "v")  # the re-read was cached at its own time


# --- load() -----------------------------------------------------------------------------------


def test_load_miss_calls_loader_once_and_caches() -> None:
    cache = VersionedCache()
    loader = BlockedLoader({"id": 1}, (0, 4), hold=False)
    assert cache.load("item:1", None, loader) == {"id": 1}
    assert loader.calls == 1
    assert cache.get("item:1") == (True, {"id": 1})
    assert cache.load("item:1", None, loader) == {"id": 1}
    assert loader.calls == 1
    stats = cache.stats()
    assert stats["fills"] == 1
    assert stats["misses"] == 1
    assert stats["hits"] == 2


def test_load_keeps_variants_apart() -> None:
    cache = VersionedCache()
    first = BlockedLoader("page 0", hold=False)
    second = BlockedLoader("page 1", hold=False)
    assert cache.load("topic:x", (10, 0), first) == "page 0"
    assert cache.load("topic:x", (10, 10), second) == "page 1"
    assert cache.load("topic:x", (10, 0), second) == "page 0"
    assert (first.calls, second.calls) == (1, 1)


def test_load_error_propagates_and_nothing_is_cached() -> None:
    cache = VersionedCache()
    calls = []

    def failing() -> tuple[Any, tuple[int, int]]:
        calls.append(1)
        raise ConnectionError("catalog down")

    with pytest.raises(ConnectionError, match="catalog down"):
        cache.load("item:1", None, failing)
    assert cache.get("item:1") == (False, None)
    assert cache.stats()["fills"] == 0
    assert cache.stats()["entries"] == 0
    # The failed flight is gone: the next load reads again and can succeed.
    assert cache.load("item:1", None, BlockedLoader("ok", hold=False)) == "ok"
    assert cache.get("item:1") == (True, "ok")
    assert len(calls) == 1


def test_load_single_flight_shares_one_loader_call() -> None:
    cache = VersionedCache()
    loader = BlockedLoader("shared", (0, 3))
    threads = [LoadThread(cache, "item:1", None, loader) for _ in range(8)]
    for thread in threads:
        thread.start()
    assert loader.started.wait(WAIT)
    wait_for(lambda: cache.stats()["shared_misses"] == len(threads) - 1,
             what="every other thread to join the flight")
    loader.go.set()
    assert [thread.finish() for thread in threads] == ["shared"] * len(threads)
    assert loader.calls == 1
    stats = cache.stats()
    assert stats["shared_misses"] == len(threads) - 1
    assert stats["misses"] == len(threads)
    assert stats["fills"] == 1
    assert cache.get("item:1") == (True, "shared")


def test_load_single_flight_shares_the_error() -> None:
    cache = VersionedCache()
    started, go = threading.Event(), threading.Event()
    calls = []

    def failing() -> tuple[Any, tuple[int, int]]:
        calls.append(1)
        started.set()
        assert go.wait(WAIT)
        raise ConnectionError("catalog down")

    threads = [LoadThread(cache, "item:1", None, failing) for _ in range(4)]
    for thread in threads:
        thread.start()
    assert started.wait(WAIT)
    wait_for(lambda: cache.stats()["shared_misses"] == 3, what="followers to join")
    go.set()
    for thread in threads:
        with pytest.raises(ConnectionError):
            thread.finish()
    assert len(calls) == 1
    assert cache.get("item:1") == (False, None)


# --- the race the cache exists for ------------------------------------------------------------


def test_invalidate_during_load_returns_the_read_but_does_not_cache_it() -> None:
    cache = VersionedCache()
    # Above the floor on purpose: only the token (taken before the read) can refuse this fill.
    loader = BlockedLoader("old", (0, 9))
    reader = LoadThread(cache, "item:1", None, loader)
    reader.start()
    assert loader.started.wait(WAIT)
    cache.invalidate(["item:1"], (0, 1))  # the write lands while the read is in flight
    loader.go.set()
    assert reader.finish() == "old"
    assert cache.get("item:1") == (False, None)
    stats = cache.stats()
    assert stats["fills_refused"] == 1
    assert stats["fills"] == 0
    assert loader.calls == 1


def test_load_after_invalidate_does_not_join_the_older_flight() -> None:
    cache = VersionedCache()
    old = BlockedLoader("old", (0, 1))
    reader = LoadThread(cache, "item:1", None, old)
    reader.start()
    assert old.started.wait(WAIT)
    cache.invalidate(["item:1"], (0, 2))
    new = BlockedLoader("new", (0, 2), hold=False)
    assert cache.load("item:1", None, new) == "new"  # its own read, not the held one
    assert new.calls == 1
    assert cache.stats()["shared_misses"] == 0
    old.go.set()
    assert reader.finish() == "old"
    # The old read finished last but must not overwrite the newer value.
    assert cache.get("item:1") == (True, "new")
    assert cache.stats()["fills_refused"] == 1
    # And the newer flight is cleaned up: a later miss (after another write) reads again.
    cache.invalidate(["item:1"], (0, 3))
    newest = BlockedLoader("newest", (0, 3), hold=False)
    assert cache.load("item:1", None, newest) == "newest"
    assert newest.calls == 1


def test_flush_during_load_voids_the_fill_and_the_flight() -> None:
    cache = VersionedCache()
    old = BlockedLoader("old", (0, 1))
    reader = LoadThread(cache, "item:1", None, old)
    reader.start()
    assert old.started.wait(WAIT)
    cache.flush()
    new = BlockedLoader("new", (0, 1), hold=False)
    assert cache.load("item:1", None, new) == "new"
    assert new.calls == 1
    old.go.set()
    assert reader.finish() == "old"
    assert cache.get("item:1") == (True, "new")


def test_before_fill_runs_between_loader_and_fill() -> None:
    cache = VersionedCache()
    order: list[str] = []

    def loader() -> tuple[Any, tuple[int, int]]:
        order.append("loader")
        return "v", (0, 1)

    def before_fill() -> None:
        order.append("before_fill")
        assert cache.stats()["fills"] == 0

    assert cache.load("item:1", None, loader, before_fill) == "v"
    assert order == ["loader", "before_fill"]
    assert cache.get("item:1") == (True, "v")


def test_invalidate_injected_by_before_fill_refuses_the_fill() -> None:
    cache = VersionedCache()
    calls = []

    def loader() -> tuple[Any, tuple[int, int]]:
        calls.append(1)
        return "old", (0, 9)

    value = cache.load("item:1", None, loader,
                       before_fill=lambda: cache.invalidate(["item:1"], (0, 1)))
    assert value == "old"
    assert cache.get("item:1") == (False, None)
    assert cache.stats()["fills_refused"] == 1
    # The next load reads again (and is kept: nothing raced it).
    assert cache.load("item:1", None, loader) == "old"
    assert len(calls) == 2
    assert cache.get("item:1") == (True, "old")


def test_invalidate_of_another_key_in_before_fill_keeps_the_fill() -> None:
    cache = VersionedCache()
    value = cache.load("item:1", None, lambda: ("v", (0, 1)),
                       before_fill=lambda: cache.invalidate(["item:2"], (0, 5)))
    assert value == "v"
    assert cache.get("item:1") == (True, "v")


# --- properties -------------------------------------------------------------------------------

VERSIONS = st.tuples(st.integers(0, 3), st.integers(0, 20))


@given(floor=VERSIONS, version=VERSIONS)
def test_fill_is_kept_iff_version_not_below_floor(floor: tuple[int, int],
                                                  version: tuple[int, int]) -> None:
    cache = VersionedCache()
    cache.invalidate(["k"], floor)
    kept = cache.fill("k", None, cache.token("k"), version, version)
    assert kept == (version >= floor)
    assert cache.get("k") == ((True, version) if kept else (False, None))


KEYS = st.sampled_from(["item:1", "item:2"])
VARIANT = st.sampled_from([None, (10, 0), (10, 10)])
NO_FLOOR = (0, 0)


class CacheModel(RuleBasedStateMachine):
    """Random fills (fresh or held tokens), invalidations, flushes and gets against a model.

    Each value is ``(key, variant, version)`` so that a get can check the version it served.
    """

    def __init__(self) -> None:
        super().__init__()
        self.cache = VersionedCache(max_entries=1_000, max_age=1e9)
        self.floors: dict[str, tuple[int, int]] = {}
        self.entries: dict[tuple[str, Any], tuple[str, Any, tuple[int, int]]] = {}
        self.held: list[tuple[str, tuple[int, int], list[bool]]] = []  # key, token, [valid]

    def _fill(self, key: str, variant: Any, token: tuple[int, int], valid: bool,
              version: tuple[int, int]) -> None:
        value = (key, variant, version)
        kept = self.cache.fill(key, variant, token, value, version)
        assert kept == (valid and version >= self.floors.get(key, NO_FLOOR))
        if kept:
            self.entries[(key, variant)] = value

    @rule(key=KEYS, variant=VARIANT, version=VERSIONS)
    def fill_fresh(self, key: str, variant: Any, version: tuple[int, int]) -> None:
        self._fill(key, variant, self.cache.token(key), True, version)

    @rule(key=KEYS)
    def take_token(self, key: str) -> None:
        self.held.append((key, self.cache.token(key), [True]))

    @precondition(lambda self: bool(self.held))
    @rule(index=st.integers(0, 50), variant=VARIANT, version=VERSIONS)
    def fill_held(self, index: int, variant: Any, version: tuple[int, int]) -> None:
        key, token, valid = self.held.pop(index % len(self.held))
        self._fill(key, variant, token, valid[0], version)

    @rule(keys=st.lists(KEYS, min_size=1, max_size=2, unique=True), version=VERSIONS)
    def invalidate(self, keys: list[str], version: tuple[int, int]) -> None:
        self.cache.invalidate(keys, version)
        for key in keys:
            self.floors[key] = max(self.floors.get(key, NO_FLOOR), version)
            self.entries = {k: v for k, v in self.entries.items() if k[0] != key}
        for held_key, _, valid in self.held:
            if held_key in keys:
                valid[0] = False

    @rule()
    def flush(self) -> None:
        self.cache.flush()
        self.entries.clear()
        for _, _, valid in self.held:
            valid[0] = False

    @rule(key=KEYS, variant=VARIANT)
    def get(self, key: str, variant: Any) -> None:
        hit, value = self.cache.get(key, variant)
        if hit:
            assert value[:2] == (key, variant)
            assert value[2] >= self.floors.get(key, NO_FLOOR), "served below the floor"
        assert (hit, value) == ((True, self.entries[(key, variant)])
                                if (key, variant) in self.entries else (False, None))

    @invariant()
    def never_below_the_floor(self) -> None:
        for key in ("item:1", "item:2"):
            for variant in (None, (10, 0), (10, 10)):
                hit, value = self.cache.get(key, variant)
                assert not hit or value[2] >= self.floors.get(key, NO_FLOOR)
        assert self.cache.stats()["entries"] == len(self.entries)


CacheModel.TestCase.settings = settings(max_examples=100, stateful_step_count=25,
                                        deadline=None)
test_cache_model = CacheModel.TestCase
