"""Finding services through the Pyro5 name server, and calling them with failover.

Names and tags (docs/architecture.md, "Processes and names"): a replica ``<id>`` of role
``<role>`` registers as ``pyrostore.<role>.<id>`` with the metadata tags ``pyrostore``,
``role:<role>`` and ``replica:<id>``. The name server is always found by explicit host and
port, never by broadcast. A :class:`ReplicaSet` keeps the list of one role's replicas,
refreshes it every few seconds and on error (never one name-server round trip per request),
and spreads calls over it.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import Pyro5.api
import Pyro5.errors

from pyrostore.config import Settings
from pyrostore.errors import (
    NotLeader,
    NotServing,
    OutcomeUnknown,
    ProtocolVersionError,
    PyrostoreError,
    Unavailable,
)
from pyrostore.models import SERVICE_PREFIX, service_name
from pyrostore.transport import CallLost, NotSent, ProxyPool, make_proxy

log = logging.getLogger(__name__)

ROLES = ("coordinator", "catalog", "order", "frontend")
GROUPS = ("catalog", "order")
"""The roles that are replica groups, with views kept by the coordinators."""
PREFIX = SERVICE_PREFIX
TAG = "pyrostore"
METRICS_TAG = "metrics:"
"""Tags the name server's own registration with where its Prometheus metrics are."""
HOPS_BELOW = {"frontend": 2, "order": 1, "catalog": 0, "coordinator": 0}
"""Remote hops a call to a role may wait on: its timeout is call_timeout x (1 + this), so a
caller does not give up on a frontend while the frontend's own call to a replica is still
within its timeout (a failover ridden out below may take longer: the caller then retries)."""
RETRY_DELAY = 0.05
"""Longest pause between two tries of a call riding out a failover (tries start at 10 ms)."""


PEER_SUFFIX = ".peer"
"""A replica's peer endpoint is the object ``<name>.peer`` on the replica's own daemon."""


def peer_uri(uri: str) -> str:
    """The URI of the peer endpoint beside the replica at ``uri`` (same daemon); "" for ""."""
    name, at, location = uri.partition("@")
    return f"{name}{PEER_SUFFIX}@{location}" if at else uri


def service_tags(role: str, replica_id: int) -> set[str]:
    """The metadata tags a service registers with."""
    return {TAG, f"role:{role}", f"replica:{replica_id}"}


def name_server_uri(settings: Settings) -> str:
    """The name server's URI, from its explicit host and port (never found by broadcast)."""
    return f"PYRO:Pyro.NameServer@{settings.ns_host}:{settings.ns_port}"


@contextlib.contextmanager
def name_server(settings: Settings) -> Iterator[Pyro5.api.Proxy]:
    """A proxy to the name server at ``settings.ns_host:ns_port``, closed afterwards."""
    with make_proxy(name_server_uri(settings), settings) as ns:
        try:
            ns._pyroBind()
        except Pyro5.errors.CommunicationError as exc:
            raise Unavailable(
                f"no name server answers at {settings.ns_host}:{settings.ns_port}",
                ns_host=settings.ns_host,
                ns_port=settings.ns_port,
            ) from exc
        try:
            yield ns
        except Pyro5.errors.CommunicationError as exc:  # it went away mid-call: ask again
            raise Unavailable(f"the name server at {settings.ns_host}:{settings.ns_port} "
                              f"failed: {exc}", ns_host=settings.ns_host,
                              ns_port=settings.ns_port) from exc


def name_server_answers(settings: Settings) -> bool:
    """Whether a name server answers at the configured address."""
    try:
        with name_server(settings) as ns:
            ns.ping()
        return True
    except (Unavailable, Pyro5.errors.CommunicationError):
        return False


def name_server_metrics(settings: Settings) -> str | None:
    """``host:port`` of the name server's Prometheus metrics (its own registration's
    ``metrics:`` tag); None if it serves none, or does not answer."""
    with contextlib.suppress(Unavailable, Pyro5.errors.PyroError), name_server(settings) as ns:
        _, tags = ns.lookup(Pyro5.core.NAMESERVER_NAME, return_metadata=True)
        return next((str(tag)[len(METRICS_TAG):] for tag in tags
                     if str(tag).startswith(METRICS_TAG)), None)
    return None


def announce(settings: Settings, role: str, replica_id: int, uri: str) -> None:
    """Register (or re-register) a service in the name server."""
    with name_server(settings) as ns:
        ns.register(service_name(role, replica_id), uri, metadata=service_tags(role, replica_id))


def withdraw(settings: Settings, role: str, replica_id: int, uri: str) -> None:
    """Remove a service's registration, if it is still ours (best effort)."""
    name = service_name(role, replica_id)
    with contextlib.suppress(PyrostoreError, Pyro5.errors.PyroError), name_server(settings) as ns:
        if str(ns.lookup(name)) == uri:
            ns.remove(name)


class Registration:
    """One service's entry in the name server, checked over one kept connection (a check every
    half second costs a lookup, not a new connection); for the one thread that keeps it."""

    def __init__(self, settings: Settings, role: str, replica_id: int, uri: str) -> None:
        self.settings, self.role, self.replica_id, self.uri = settings, role, replica_id, uri
        self.name = service_name(role, replica_id)
        self._ns: Pyro5.api.Proxy | None = None

    def ensure(self, *, look: bool = True) -> bool:
        """Register again if the name server does not map the name to this URI; whether it
        had to. With ``look=False`` only a ping, unless the connection is new (a name server
        that restarted broke the old one). Raises :class:`Unavailable` if none answers."""
        if self._ns is not None and not look:
            try:
                self._ns.ping()
                return False
            except Pyro5.errors.CommunicationError:
                self.close()  # it went away; it may be back already: connect again now
        try:
            if self._ns is None:
                ns = make_proxy(name_server_uri(self.settings), self.settings)
                ns._pyroBind()
                self._ns = ns
            try:
                if str(self._ns.lookup(self.name)) == self.uri:
                    return False
            except Pyro5.errors.NamingError:
                pass
            self._ns.register(self.name, self.uri,
                              metadata=service_tags(self.role, self.replica_id))
            return True
        except Pyro5.errors.CommunicationError as exc:
            self.close()
            raise Unavailable(f"the name server did not answer: {exc}") from exc

    def close(self) -> None:
        """Drop the kept connection."""
        if self._ns is not None:
            self._ns._pyroRelease()
            self._ns = None


def find(settings: Settings, role: str | None = None) -> dict[str, str]:
    """``{name: uri}`` of every registered service of ``role`` (all roles if None)."""
    tags = {TAG} if role is None else {TAG, f"role:{role}"}
    with name_server(settings) as ns:
        found = ns.yplookup(meta_all=tags, return_metadata=False)
    return {name: str(uri) for name, uri in found.items()}


def parse_name(name: str) -> tuple[str, int]:
    """``("catalog", 1)`` from ``"pyrostore.catalog.1"``."""
    _, role, *replica_id = name.split(".", 2)
    return role, int(replica_id[0]) if replica_id else 1


class Coordinators:
    """The coordinator group as the store calls it: reads from any member, commands (lease
    renewals, failure reports, new members) to the Raft leader, found by following the hints
    that followers give (:class:`~pyrostore.errors.NotLeader`).

    The members' URIs come from ``settings.coordinators`` (fixed addresses), else from the name
    server. Each call tries each coordinator at most once (a hint may add one more try), so it
    fails within a few call timeouts: callers that repeat (heartbeats) just call again.
    """

    def __init__(self, settings: Settings, *, timeout: float | None = None) -> None:
        self.settings = settings
        self._pool = ProxyPool(settings, timeout=timeout)
        self._lock = threading.Lock()
        self._leader: str | None = None
        self._found: list[str] = []
        self._configured = [address.uri(i) for i, address in
                            enumerate(settings.coordinator_addresses(), start=1)]

    def uris(self) -> list[str]:
        """Every coordinator's URI, the leader (as last known) first."""
        configured = list(self._configured)
        if not configured:
            with contextlib.suppress(Unavailable):
                self._found = sorted(find(self.settings, "coordinator").values()) or self._found
            configured = list(self._found)
        with self._lock:
            leader = self._leader
        return sorted(configured, key=lambda uri: uri != leader)

    def command(self, method: str, *args: Any) -> Any:
        """``method(*args)`` on the leader. Raises :class:`Unavailable` if no coordinator took
        it, :class:`OutcomeUnknown` if one may have (a connection lost mid-call)."""
        return self._call(method, args, leader_only=True)

    def read(self, method: str, *args: Any) -> Any:
        """``method(*args)`` on any coordinator that answers, the leader first."""
        return self._call(method, args, leader_only=False)

    def _call(self, method: str, args: tuple[Any, ...], *, leader_only: bool) -> Any:
        queue, tried = self.uris(), set()
        may_have_run, last_error = False, "no coordinator is known"
        refused: ProtocolVersionError | None = None
        refusals = 0
        while queue:
            uri = queue.pop(0)
            if uri in tried:
                continue
            tried.add(uri)
            try:
                result = self._pool.call(uri, method, *args)
            except NotLeader as exc:
                last_error = str(exc)
                hint = exc.details.get("leader")
                if isinstance(hint, str) and hint and hint not in tried:
                    queue.insert(0, hint)
                continue
            except (NotSent, NotServing) as exc:
                last_error = str(exc)
                continue
            except CallLost as exc:
                may_have_run, last_error = True, str(exc)
                continue
            except ProtocolVersionError as exc:
                refused, refusals = exc, refusals + 1
                last_error = str(exc)
                continue
            if leader_only:
                with self._lock:
                    self._leader = uri
            return result
        with self._lock:
            self._leader = None
        if refused is not None and refusals == len(tried):  # news waiting will not change
            raise refused  # (one coordinator of another release alone is not: it is skipped)
        if may_have_run and leader_only:
            raise OutcomeUnknown(f"coordinator {method} may or may not have run ({last_error})")
        raise Unavailable(f"no coordinator could take {method} ({last_error})",
                          role="coordinator")

    def close(self) -> None:
        """Close every pooled connection."""
        self._pool.close()


class ReplicaSet:
    """The live replicas of one role, with calls spread over them and failover.

    Every call the store makes through a ReplicaSet is safe to repeat (a read, or a write that
    carries a request id), so a transport failure, or a replica that says it may not serve
    (:class:`NotServing`), is retried on the next replica, or on the primary once it is known
    again, for up to ``patience`` seconds (``settings.failover_timeout`` by default): long
    enough to ride out a failover. Then it raises :class:`Unavailable` if no attempt can have
    run, and :class:`OutcomeUnknown` if one may have. A caller that has never found a replica
    and cannot reach the name server fails at once: there is no store yet to wait out.

    With ``primary=True`` calls go to the group's primary, as the coordinator's view names it
    (or as a replica that refused the call pointed to it).

    A replica that refuses this process's protocol version is skipped like one that is down
    (one of another release may be registered for a moment before the store refuses it);
    once the primary, or every replica, has refused it, the call raises ProtocolVersionError
    and ``on_refused`` hears of it: this process cannot take part in this store.
    """

    def __init__(self, settings: Settings, role: str, *,
                 clock: Callable[[], float] = time.monotonic,
                 on_refused: Callable[[ProtocolVersionError], None] | None = None) -> None:
        self.settings = settings
        self.role = role
        self._clock = clock
        self._on_refused = on_refused
        self._refused_by: set[str | None] = set()
        self._lock = threading.Lock()
        self._by_name: dict[str, str] = {}  # every replica ever seen, by name: never shrinks
        self._refreshed_at = float("-inf")
        self._primary: str | None = None
        self._turn = itertools.count()
        self._pool = ProxyPool(settings, timeout=settings.call_timeout * (1 + HOPS_BELOW[role]))
        self._coordinators: Coordinators | None = None
        self._avoid: dict[str, float] = {}  # uri -> until when reads skip it

    def uris(self, *, refresh: bool = False) -> list[str]:
        """The known replicas' URIs, refreshed if stale or if asked to.

        A group's members come from the coordinators' view first, then the name server; an
        answer only adds or updates names, so a restarted name server's empty or partial list
        never hides a replica that still runs (one that is gone fails and is skipped).
        """
        with self._lock:
            stale = self._clock() - self._refreshed_at > self.settings.refresh_interval
            known = sorted(self._by_name.values())
        if not (refresh or stale or not known):
            return known
        found: dict[str, str] = {}
        if self.role in GROUPS:
            with contextlib.suppress(PyrostoreError):
                view = self.coordinators().read("view", self.role)
                found.update({service_name(self.role, int(i)): uri
                              for i, uri in view.get("uris", {}).items()})
        try:
            found.update(find(self.settings, self.role))
        except Unavailable:
            if not (found or known):
                raise
            log.debug("name server unreachable; keeping %d known %s replicas",
                      len(known) or len(found), self.role)
        with self._lock:
            self._by_name.update(found)
            self._refreshed_at = self._clock()
            return sorted(self._by_name.values())

    def coordinators(self) -> Coordinators:
        """The coordinator group, as this replica set asks it for views."""
        if self._coordinators is None:
            self._coordinators = Coordinators(self.settings)
        return self._coordinators

    def primary(self, *, refresh: bool = False) -> str | None:
        """The URI of the group's primary, as the coordinators last said."""
        with self._lock:
            known = self._primary
        if known is None or refresh:
            view = self.coordinators().read("view", self.role)
            known = view.get("uris", {}).get(str(view["primary"]))
            with self._lock:
                self._primary = known
        return known

    def call(self, method: str, *args: Any, primary: bool = False,
             patience: float | None = None) -> Any:
        """``method(*args)`` on one replica (the primary if asked), with failover."""
        patience = self.settings.failover_timeout if patience is None else patience
        deadline = self._clock() + patience
        may_have_run, last_error = False, "no replica is registered"
        delay, refresh = 0.01, False
        while True:
            uri = None
            try:
                uri = self._pick(primary, refresh=refresh)
                if uri is not None:
                    return self._pool.call(uri, method, *args)
                refresh = True
            except NotServing as exc:  # it did not run; it may name the primary it knows of
                last_error = str(exc)
                refresh = primary and not self._hint(exc.details.get("primary"))
                self._shun(uri)
            except (NotSent, Unavailable) as exc:
                if "ns_host" in getattr(exc, "details", {}) and not self._ever_found():
                    raise  # no name server and no replica ever seen: no store to wait out
                last_error, refresh = str(exc), True
                self._shun(uri)
            except (CallLost, OutcomeUnknown) as exc:
                may_have_run, last_error, refresh = True, str(exc), True
                self._shun(uri)
            except ProtocolVersionError as exc:
                self._refused(exc, uri, primary=primary, may_have_run=may_have_run)
                last_error, refresh = str(exc), True
                self._shun(uri)
            if self._clock() + delay > deadline:
                break
            log.debug("%s.%s: %s; trying again", self.role, method, last_error)
            time.sleep(delay)  # back off before the next try; there is no event to wait on
            delay = min(delay * 2, RETRY_DELAY)
        if may_have_run:
            raise OutcomeUnknown(f"{self.role}.{method} may or may not have run ({last_error}); "
                                 "retry with the same request id", role=self.role)
        raise Unavailable(f"no {self.role} replica could take {method} ({last_error})",
                          role=self.role)

    def _pick(self, primary: bool, *, refresh: bool) -> str | None:
        if primary:
            return self.primary(refresh=refresh)
        uris = self.uris(refresh=refresh)
        now = self._clock()
        with self._lock:
            healthy = [uri for uri in uris if self._avoid.get(uri, 0.0) <= now] or uris
        return healthy[next(self._turn) % len(healthy)] if healthy else None

    def _refused(self, error: ProtocolVersionError, uri: str | None, *, primary: bool,
                 may_have_run: bool) -> None:
        """Raise ``error`` (and tell ``on_refused``) if the primary, or every replica known,
        has refused this process's protocol version; as :class:`OutcomeUnknown` if an earlier
        attempt of the same call may have run."""
        with self._lock:
            self._refused_by.add(uri)
            everyone = self._refused_by >= set(self._by_name.values())
        if primary or uri is None or everyone:
            if self._on_refused is not None:
                self._on_refused(error)
            if may_have_run:
                raise OutcomeUnknown(f"{self.role} call may or may not have run before this "
                                     f"process was refused ({error})", role=self.role) from error
            raise error

    def _ever_found(self) -> bool:
        """Whether any replica (or, for ``primary`` calls, a primary) was ever known: once
        one was, a name server that does not answer is ridden out like any failover."""
        with self._lock:
            return bool(self._by_name) or self._primary is not None

    def _shun(self, uri: str | None) -> None:
        """Skip ``uri`` for reads for a while: it failed or refused."""
        if uri is not None:
            with self._lock:
                self._avoid[uri] = self._clock() + self.settings.refresh_interval

    def _hint(self, primary_uri: Any) -> bool:
        if not (isinstance(primary_uri, str) and primary_uri):
            return False
        with self._lock:
            self._primary = primary_uri
        return True

    def close(self) -> None:
        """Close every pooled connection."""
        self._pool.close()
        if self._coordinators is not None:
            self._coordinators.close()


def survey(settings: Settings, *, timeout: float = 1.0) -> list[dict[str, Any]]:
    """``info()`` of every registered service; one that does not answer is ``state: down``."""
    rows = []
    for name, uri in sorted(find(settings).items()):
        role, replica_id = parse_name(name)
        try:
            with make_proxy(uri, settings, timeout=timeout) as proxy:
                info = dict(proxy.info())
        except (Pyro5.errors.CommunicationError, ProtocolVersionError) as exc:
            info = {"role": role, "id": replica_id, "pid": None, "state": "down", "error": str(exc)}
        info.update(name=name, uri=uri)
        rows.append(info)
    return rows
