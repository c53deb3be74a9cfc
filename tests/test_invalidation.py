"""The catalog primary's cache leases, and a frontend's floors, on their own (no network).

:class:`CacheLeases` leases only to registered frontends, at most so many of them, tells them
in parallel and takes any failure of one as "unreachable" (it waits out that lease, nothing
worse). :class:`VersionedCache` keeps a floor only until a lease renewal sent after it was
answered, and keeps its bookkeeping bounded whatever it is sent.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

from pyrostore.cache import VersionedCache
from pyrostore.config import Settings
from pyrostore.errors import InvalidRequest, NotServing, PyrostoreError
from pyrostore.invalidation import MAX_CACHE_LEASES, CacheLeases, RegisteredFrontends
from tests.conftest import wait_until

FRONTEND = "PYRO:pyrostore.frontend.{}@127.0.0.1:{}"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def registry(uris: Iterable[str], clock: Clock | None = None
             ) -> tuple[RegisteredFrontends, list[int]]:
    """A registry that lists ``uris`` and counts its lookups."""
    lookups = [0]

    def lookup() -> list[str]:
        lookups[0] += 1
        return list(uris)

    settings = Settings.from_env(environ={}, refresh_interval=1.0)
    return RegisteredFrontends(settings, lookup=lookup, clock=clock or Clock()), lookups


def leases(tmp_path: Path, uris: Iterable[str]) -> CacheLeases:
    settings = Settings.from_env(environ={}, data_dir=tmp_path)
    return CacheLeases(settings, frontends=registry(uris)[0])


def test_only_a_registered_frontend_is_admitted_and_misses_are_looked_up_sparingly() -> None:
    clock = Clock()
    known, lookups = registry([FRONTEND.format(1, 5000)], clock)
    assert FRONTEND.format(1, 5000) in known
    assert lookups == [1]
    for _ in range(100):  # a stream of made-up URIs: one lookup per refresh interval
        assert FRONTEND.format(2, 5001) not in known
    assert lookups == [1]
    clock.now += 1.5
    assert FRONTEND.format(2, 5001) not in known
    assert lookups == [2]


def test_a_registry_without_a_name_server_admits_what_it_knew() -> None:
    known, _ = registry([FRONTEND.format(1, 5000)])
    assert FRONTEND.format(1, 5000) in known

    def down() -> list[str]:
        raise PyrostoreError("no name server")

    known._lookup = down
    assert FRONTEND.format(1, 5000) in known
    assert FRONTEND.format(2, 5001) not in known


def test_cache_leases_refuse_the_unregistered_and_past_the_cap(tmp_path: Path) -> None:
    uris = [FRONTEND.format(i, 5000 + i) for i in range(1, MAX_CACHE_LEASES + 2)]
    primary = leases(tmp_path, uris)
    try:
        with pytest.raises(InvalidRequest, match="not a registered frontend"):
            primary.admit("PYRO:pyrostore.coordinator.1@127.0.0.1:4000")
        for uri in uris[:-1]:
            assert primary.grant(primary.admit(uri), 1.0) == 1.0
        with pytest.raises(NotServing, match=f"already leases to {MAX_CACHE_LEASES}"):
            primary.grant(primary.admit(uris[-1]), 1.0)
        assert primary.grant(uris[0], 1.0) == 1.0  # a renewal is not a new lease
        assert len(primary.leases()["cache_leases"]) == MAX_CACHE_LEASES
    finally:
        primary.close()


class Frontends:
    """Stands in for the pool of connections to frontends: each behaves as told."""

    def __init__(self, behaviour: dict[str, Any]) -> None:
        self.behaviour = behaviour
        self.calls: list[str] = []
        self.lock = threading.Lock()
        self.in_flight = 0
        self.most_in_flight = 0
        self.release = threading.Event()

    def call(self, uri: str, method: str, *args: Any) -> Any:
        with self.lock:
            self.calls.append(uri)
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            action = self.behaviour[uri]
            if action == "block":
                assert self.release.wait(30), "never released"
                return None
            if isinstance(action, BaseException):
                raise action
            return action
        finally:
            with self.lock:
                self.in_flight -= 1

    def close(self) -> None:
        pass


def test_frontends_are_told_in_parallel(tmp_path: Path) -> None:
    uris = [FRONTEND.format(i, 5000 + i) for i in range(1, 21)]
    primary = leases(tmp_path, uris)
    fake = primary._peers = Frontends(dict.fromkeys(uris, "block"))  # type: ignore[assignment]
    for uri in uris:
        primary.grant(uri, 1.0)
    writer = threading.Thread(target=primary.invalidate, args=(1, [(["item:1"], 7)]))
    writer.start()
    try:  # twenty mute frontends are all asked at once, not one after another
        wait_until(lambda: fake.most_in_flight == 20, what="all twenty in flight")
    finally:
        fake.release.set()
        writer.join(30)
        primary.close()
    assert primary.counters["invalidations_sent"] == 20


def test_any_failure_of_a_frontend_only_waits_out_its_lease(tmp_path: Path) -> None:
    failures: dict[str, Any] = {
        FRONTEND.format(1, 5001): AttributeError("no such method"),
        FRONTEND.format(2, 5002): "garbage",
        FRONTEND.format(3, 5003): InvalidRequest("refused"),
        FRONTEND.format(4, 5004): TimeoutError("mute"),
        FRONTEND.format(5, 5005): None,  # a frontend that took it
    }
    primary = leases(tmp_path, failures)
    primary._peers = Frontends(failures)  # type: ignore[assignment]
    for uri in failures:
        primary.grant(uri, 0.05)  # what is left of the primary's own lease: little
    try:
        primary.invalidate(1, [(["item:1"], 7)])  # returns: no error reaches the write
        assert primary.counters["unreachable"] == 4
        assert primary.counters["invalidations_sent"] == 1
        assert list(primary.leases()["cache_leases"]) in ([], [FRONTEND.format(5, 5005)])
    finally:
        primary.close()


# -- the frontend's floors --------------------------------------------------------------------

def test_a_floor_far_above_the_truth_lasts_until_the_next_renewal_answered() -> None:
    clock = Clock()
    cache = VersionedCache(clock=clock)
    cache.invalidate(["item:1"], (1, 2**62))  # a forged or buggy version
    assert not cache.fill("item:1", None, cache.token("item:1"), "v", (1, 5))
    cache.forget_floors(clock.now)  # a renewal sent before the floor: it stays
    assert not cache.fill("item:1", None, cache.token("item:1"), "v", (1, 5))
    clock.now += 0.25
    cache.forget_floors(clock.now)  # a renewal sent after it was answered
    assert cache.fill("item:1", None, cache.token("item:1"), "v", (1, 5))


def test_a_read_in_flight_when_floors_are_forgotten_is_not_kept() -> None:
    clock = Clock()
    cache = VersionedCache(clock=clock)
    cache.invalidate(["item:1"], (1, 9))
    token = cache.token("item:1")  # a read that began after the invalidation...
    clock.now += 0.25
    cache.forget_floors(clock.now)  # ...may have read a replica that lacked the write
    assert not cache.fill("item:1", None, token, "maybe stale", (1, 5))
    assert cache.fill("item:1", None, cache.token("item:1"), "fresh", (1, 9))


def test_a_hundred_thousand_keys_leave_the_bookkeeping_bounded() -> None:
    clock = Clock()
    cache = VersionedCache(clock=clock, max_floors=100)
    for n in range(1, 100_001, 1000):
        cache.invalidate([f"item:{k}" for k in range(n, n + 1000)], (1, 7))
    assert len(cache._floors) <= 100 and len(cache._generations) <= 100
    # folded, the floors still refuse what they refused, for every key...
    assert not cache.fill("item:5", None, cache.token("item:5"), "old", (1, 6))
    assert not cache.fill("item:999", None, cache.token("item:999"), "old", (1, 6))
    assert cache.fill("item:5", None, cache.token("item:5"), "new", (1, 7))
    clock.now += 0.25
    cache.forget_floors(clock.now)  # ...until the next renewal answered
    assert cache.fill("item:999", None, cache.token("item:999"), "old", (1, 6))
    assert not cache._floors and not cache._generations
