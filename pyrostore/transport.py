"""Calling one Pyro5 object: proxies, a pool of connected ones, and what a failure means.

This is the one place where Pyro5's communication errors are translated. A call through a
:class:`ProxyPool` either answers, raises the remote object's own error, or fails with one of
two local errors: :class:`NotSent` (no connection could be made: the request never left) or
:class:`CallLost` (it failed after it was sent: it may have run). Everything above decides
what to do about those (retry elsewhere, report a peer, wait out a lease). A connection
refused for its protocol version is :class:`~pyrostore.errors.ProtocolVersionError`: nothing
was sent, and trying that object again will not help. A refusal the called object met in a
call of its own (it is of another release than a service it calls, and stops) is no news about
this process: it is :class:`CallLost`, since that object may have done part of the work.
"""

from __future__ import annotations

import itertools
import threading
import time
from typing import Any

import Pyro5.api
import Pyro5.errors

from pyrostore.config import Settings
from pyrostore.errors import ProtocolVersionError
from pyrostore.handshake import VersionedProxy
from pyrostore.limits import keep_idle_for

MAX_IDLE_CONNECTIONS = 16
"""Connections kept open per replica for reuse (each holds a worker thread at the replica)."""


def make_proxy(uri: str, settings: Settings, *, timeout: float | None = None) -> Pyro5.api.Proxy:
    """A proxy with the store's serializer and timeout, and no automatic retries, whose
    connections open by exchanging protocol versions (:mod:`pyrostore.handshake`)."""
    proxy = VersionedProxy(uri, version=settings.protocol_version)
    proxy._pyroSerializer = settings.serializer
    proxy._pyroTimeout = settings.call_timeout if timeout is None else timeout
    proxy._pyroMaxRetries = 0
    return proxy


class ProxyPool:
    """Connected proxies by URI, shared by threads: each call borrows one and gives it back.

    A Pyro5 proxy belongs to one thread at a time; the pool hands it over with
    ``_pyroClaimOwnership``. A call whose connection cannot even be made raises
    :class:`NotSent`: the request never left this process. A connection idle for longer than
    :func:`~pyrostore.limits.keep_idle_for` is closed instead of reused: the other side
    closes idle ones, and a call sent on a connection it has just closed would be lost.
    """

    def __init__(self, settings: Settings, *, timeout: float | None = None) -> None:
        self.settings = settings
        self.timeout = timeout
        self._lock = threading.Lock()
        self._idle: dict[str, list[tuple[float, Pyro5.api.Proxy]]] = {}

    def call(self, uri: str, method: str, *args: Any) -> Any:
        """``method(*args)`` on the object at ``uri``."""
        if not uri:
            raise NotSent(f"no address known for {method}")
        proxy = self._borrow(uri)
        try:
            result = getattr(proxy, method)(*args)
        except Pyro5.errors.CommunicationError as exc:
            proxy._pyroRelease()
            raise CallLost(f"{method} at {uri}: {exc}") from exc
        except ProtocolVersionError as exc:
            if not hasattr(exc, "_pyroTraceback"):  # raised here: the refusal is of us
                proxy._pyroRelease()
                raise
            # raised there: the service we called was refused by one it called, is stopping,
            # and may have done part of the work; not news about this process's version
            self._give_back(uri, proxy)
            raise CallLost(f"{method} at {uri}: {exc}") from exc
        except BaseException:
            self._give_back(uri, proxy)
            raise
        self._give_back(uri, proxy)
        return result

    def _borrow(self, uri: str) -> Pyro5.api.Proxy:
        stale = []
        with self._lock:
            idle = self._idle.get(uri, [])
            fresh_since = time.monotonic() - keep_idle_for(self.settings)
            while idle and idle[0][0] < fresh_since:  # oldest first
                stale.append(idle.pop(0)[1])
            proxy = idle.pop()[1] if idle else None
        for old in stale:
            old._pyroClaimOwnership()
            old._pyroRelease()
        if proxy is not None:
            proxy._pyroClaimOwnership()
            return proxy
        proxy = make_proxy(uri, self.settings, timeout=self.timeout)
        try:
            proxy._pyroBind()
        except Pyro5.errors.CommunicationError as exc:
            raise NotSent(str(exc)) from exc
        return proxy

    def _give_back(self, uri: str, proxy: Pyro5.api.Proxy) -> None:
        with self._lock:
            idle = self._idle.setdefault(uri, [])
            if len(idle) < MAX_IDLE_CONNECTIONS:
                idle.append((time.monotonic(), proxy))
                return
        proxy._pyroRelease()

    def close(self) -> None:
        """Close every pooled connection."""
        with self._lock:
            pools, self._idle = self._idle, {}
        for _, proxy in itertools.chain.from_iterable(pools.values()):
            proxy._pyroClaimOwnership()
            proxy._pyroRelease()


class NotSent(Exception):
    """A connection could not be made: the request never left this process."""


class CallLost(Exception):
    """A call failed after it was sent (the connection closed, it timed out): it may have run.

    With :class:`NotSent`, the only transport failures the store's own code sees: Pyro5's
    errors are translated here, in :class:`ProxyPool`, and nowhere else."""


TRANSPORT_FAILURES = (NotSent, CallLost)
"""A call that did not reach its object, or whose answer did not come back."""
