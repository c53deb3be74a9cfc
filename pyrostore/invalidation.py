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
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from pyrostore.config import Settings
from pyrostore.errors import PyrostoreError
from pyrostore.transport import TRANSPORT_FAILURES, ProxyPool

log = logging.getLogger(__name__)
CLOCK_MARGIN = 1.1
"""A lease the frontend counts from sending its renewal is over for the primary after this x."""


class CacheLeases:
    """The cache leases this primary granted, and the invalidations it sends."""

    def __init__(self, settings: Settings) -> None:
        self.lease = settings.lease
        # a mute frontend holds a call for at most a lease: then its lease is over anyway
        self._peers = ProxyPool(settings, timeout=settings.lease)
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._until: dict[str, float] = {}  # frontend uri -> when its lease is certainly over
        self.counters = {"invalidations_sent": 0, "unreachable": 0, "waited_ms": 0.0}

    def grant(self, frontend_uri: str, primary_lease_left: float) -> float:
        """Renew a frontend's cache lease for what is left of this primary's own lease (at
        most one lease); the lease in seconds, which the frontend counts from its sending."""
        granted = max(0.0, min(self.lease, primary_lease_left))
        with self._lock:
            self._until[frontend_uri] = time.monotonic() + granted * CLOCK_MARGIN
        return granted

    def invalidate(self, epoch: int, changes: list[tuple[list[str], int]]) -> None:
        """Tell every leased frontend what a batch of writes changes: for each write of
        ``epoch``, its read keys and its sequence number."""
        with self._lock:
            now = time.monotonic()
            leased = {uri: until for uri, until in self._until.items() if until > now}
            self._until = dict(leased)
        for uri, until in leased.items():
            try:
                self._peers.call(uri, "invalidate", epoch,
                                 [[keys, [epoch, seq]] for keys, seq in changes])
                self.counters["invalidations_sent"] += 1
            except (*TRANSPORT_FAILURES, PyrostoreError) as exc:
                log.warning("frontend %s unreachable (%s); waiting out its cache lease", uri, exc)
                self.counters["unreachable"] += 1
                started = time.monotonic()
                self._wait_until(until)
                self.counters["waited_ms"] += 1000 * (time.monotonic() - started)
                with self._lock:
                    if self._until.get(uri) == until:
                        del self._until[uri]

    def frontends(self) -> dict[str, Any]:
        """The leased frontends and the counters (for ``info()``)."""
        now = time.monotonic()
        with self._lock:
            leases = {uri: round(until - now, 3) for uri, until in self._until.items()
                      if until > now}
        return {"cache_leases": leases, **self.counters}

    def close(self) -> None:
        """Stop waiting for any frontend, and close the connections to them."""
        self._stopping.set()
        self._peers.close()

    def _wait_until(self, moment: float) -> None:
        delay = moment - time.monotonic()
        if delay > 0:
            self._stopping.wait(delay)
