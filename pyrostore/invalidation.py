"""The catalog primary's side of the frontends' caches: cache leases and write-through invalidation.

A frontend may answer reads from its cache only while it holds a *cache lease* from the current
catalog primary; it renews it every fraction of a lease, and so the primary knows every
frontend that may be serving cached reads, and where it is. Before the primary acknowledges a
write it tells each of them which keys the write changed (:meth:`CacheLeases.invalidate`), and
no read shows the write before that (see :mod:`pyrostore.replication`). A frontend
that cannot be told is waited for until its lease is certainly over (it then serves nothing
from its cache, and flushes it before it serves again): an unreachable frontend delays writes by
at most one lease.

A cache lease never outlasts the primary's own lease: it is granted for what is left of that
(:meth:`CacheLeases.grant`) and counted by the frontend from when it *sent* the renewal. The
coordinators replace a primary only once its lease is certainly over, so by then every cache
lease it granted is over too, and a new primary writes at once, with no fence of its own.

Whom the primary will call back is bounded, since every write waits for them: a lease goes
only to a URI that the name server lists as a frontend (:class:`RegisteredFrontends`), to at
most :data:`MAX_CACHE_LEASES` of them at once. They are told in parallel, each call bounded by a
lease, and whatever goes wrong with one of them (a timeout, an error, an
answer that is not ``None``) only makes the primary wait out that frontend's lease: a
frontend can delay a write, never fail it nor make the primary step down.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor

from pyrostore.config import Settings
from pyrostore.discovery import find
from pyrostore.errors import InvalidRequest, NotServing, PyrostoreError
from pyrostore.transport import ProxyPool

log = logging.getLogger(__name__)
CLOCK_MARGIN = 1.1
"""A lease the frontend counts from sending its renewal is over for the primary after this x."""
MAX_CACHE_LEASES = 64
"""Most frontends one primary leases to at once (each is told of every write)."""


class RegisteredFrontends:
    """The URIs the name server lists as frontends, looked up again on a miss, at most once
    every ``refresh_interval`` (a stream of made-up URIs costs one lookup per interval)."""

    def __init__(self, settings: Settings, *,
                 lookup: Callable[[], Iterable[str]] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.refresh_interval = settings.refresh_interval
        self._lookup = lookup or (lambda: find(settings, "frontend").values())
        self._clock = clock
        self._lock = threading.Lock()
        self._known: frozenset[str] = frozenset()
        self._looked_at = float("-inf")

    def __contains__(self, uri: object) -> bool:
        with self._lock:
            if uri in self._known:
                return True
            if self._clock() - self._looked_at < self.refresh_interval:
                return False
            self._looked_at = self._clock()
        try:
            known = frozenset(self._lookup())
        except PyrostoreError as exc:  # the name server is down: keep what we knew
            log.debug("cannot look frontends up: %s", exc)
            return False
        with self._lock:
            self._known = known
        return uri in known


class CacheLeases:
    """The cache leases this primary granted, and the invalidations it sends."""

    def __init__(self, settings: Settings, *,
                 frontends: RegisteredFrontends | None = None) -> None:
        self.lease = settings.lease
        self.frontends = frontends or RegisteredFrontends(settings)
        # a mute frontend holds a call for at most a lease: then its lease is over anyway
        self._peers = ProxyPool(settings, timeout=settings.lease)
        self._callers = ThreadPoolExecutor(max_workers=MAX_CACHE_LEASES,
                                           thread_name_prefix="invalidate")
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._until: dict[str, float] = {}  # frontend uri -> when its lease is certainly over
        self.counters = {"invalidations_sent": 0, "unreachable": 0, "waited_ms": 0.0}

    def admit(self, frontend_uri: str) -> str:
        """``frontend_uri`` if the name server lists it as a frontend; else InvalidRequest."""
        if frontend_uri not in self.frontends:
            raise InvalidRequest(f"{frontend_uri} is not a registered frontend: no cache lease",
                                 field="frontend_uri")
        return frontend_uri

    def grant(self, frontend_uri: str, primary_lease_left: float) -> float:
        """Renew a frontend's cache lease for what is left of this primary's own lease (at
        most one lease); the lease in seconds, which the frontend counts from its sending.
        A new frontend beyond :data:`MAX_CACHE_LEASES` is refused (NotServing)."""
        granted = max(0.0, min(self.lease, primary_lease_left))
        with self._lock:
            now = time.monotonic()
            if frontend_uri not in self._until and len(self._until) >= MAX_CACHE_LEASES:
                self._until = {uri: until for uri, until in self._until.items() if until > now}
                if len(self._until) >= MAX_CACHE_LEASES:
                    raise NotServing(f"this primary already leases to {MAX_CACHE_LEASES} "
                                     "frontends; no cache lease for another")
            self._until[frontend_uri] = now + granted * CLOCK_MARGIN
        return granted

    def invalidate(self, epoch: int, changes: list[tuple[list[str], int]]) -> None:
        """Tell every leased frontend, in parallel, what a batch of writes changes: for each
        write of ``epoch``, its read keys and its sequence number. Returns once each frontend
        has been told or its lease is over."""
        with self._lock:
            now = time.monotonic()
            leased = {uri: until for uri, until in self._until.items() if until > now}
            self._until = dict(leased)
        message = [[keys, [epoch, seq]] for keys, seq in changes]
        calls = [self._callers.submit(self._tell, uri, until, epoch, message)
                 for uri, until in leased.items()]
        for call in calls:
            call.result()

    def _tell(self, uri: str, until: float, epoch: int, message: list[list[object]]) -> None:
        """Invalidate at one frontend; if that fails in any way, wait out its lease."""
        try:
            answer = self._peers.call(uri, "invalidate", epoch, message)
            if answer is not None:
                raise ValueError(f"it answered {str(answer)[:40]!r}")
        except Exception as exc:  # whatever it is, the frontend was not told
            log.warning("frontend %s unreachable (%s); waiting out its cache lease", uri, exc)
            with self._lock:
                self.counters["unreachable"] += 1
            started = time.monotonic()
            self._stopping.wait(max(0.0, until - started))
            with self._lock:
                self.counters["waited_ms"] += 1000 * (time.monotonic() - started)
                if self._until.get(uri) == until:
                    del self._until[uri]
            return
        with self._lock:
            self.counters["invalidations_sent"] += 1

    def leases(self) -> dict[str, object]:
        """The leased frontends and the counters (for ``info()``)."""
        now = time.monotonic()
        with self._lock:
            leases = {uri: round(until - now, 3) for uri, until in self._until.items()
                      if until > now}
            return {"cache_leases": leases, **self.counters}

    def close(self) -> None:
        """Stop waiting for any frontend, and close the connections to them."""
        self._stopping.set()
        self._callers.shutdown(wait=False, cancel_futures=True)
        self._peers.close()
