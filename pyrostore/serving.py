"""A service's life in a Pyro5 daemon: start, register, stay registered, stop cleanly.

Every remote object of the store is a :class:`Service`: it knows its role and replica id,
times its exposed methods, and answers ``stats()`` and ``info()``. :func:`serve` runs one in
a daemon bound to a free port, with its Prometheus metrics on an HTTP port of their own
(:mod:`pyrostore.exporter`; ``info()`` says where), registers it in the name server under its
name and tags, re-registers it if the name server forgets it (a restarted name server), and on
SIGTERM or SIGINT withdraws the registration and shuts down.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import random
import signal
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import Pyro5.api
import Pyro5.errors

from pyrostore.access import OPERATORS, allow, unguarded
from pyrostore.config import Settings
from pyrostore.discovery import Registration, announce, service_name, withdraw
from pyrostore.errors import ConfigError, ProtocolVersionError, PyrostoreError
from pyrostore.exporter import InfoCollector, new_registry
from pyrostore.handshake import VersionedDaemon
from pyrostore.hooks import Hooks
from pyrostore.metrics import MethodStats
from pyrostore.scraping import MetricsEndpoint

log = logging.getLogger(__name__)
FIXED_PORTS_FROM = 20000
"""The lowest port :func:`fixed_port` picks."""
REREGISTER_INTERVAL = 0.5
"""Seconds between checks that the name server still knows this service."""
LOOKUP_EVERY = 10
"""Every how many checks the entry itself is looked up (the others ping the kept connection,
which a restarted name server breaks)."""


class Service:
    """Base of every remote object: identity, timings, ``stats()`` and ``info()``."""

    role: ClassVar[str] = "service"
    plain_callers: ClassVar[bool] = False
    """Whether a caller that speaks no protocol version (a plain Pyro5 client) is welcome: only
    where users call with plain Pyro5 (see :mod:`pyrostore.handshake`)."""
    hook_names: ClassVar[tuple[str, ...]] = ()
    """The points where a test may hold a request (see :mod:`pyrostore.hooks`)."""

    def __init__(self, settings: Settings, replica_id: int) -> None:
        self.settings = settings
        self.replica_id = replica_id
        self.registry = new_registry()
        """This service's Prometheus metrics (its own registry, not the global one)."""
        self.metrics = MethodStats(registry=self.registry)
        self.registry.register(InfoCollector(self.info))
        self.metrics_address: str | None = None
        """``host:port`` of its metrics endpoint once serving (None: off, or not yet)."""
        self.hooks = Hooks(enabled=settings.test_hooks, names=self.hook_names)
        self.uri = ""
        self.host = settings.host
        self.port = 0
        """Where its daemon binds: port 0 is any free one (coordinators have fixed ones)."""
        self.started_at = time.time()
        self.refused: ProtocolVersionError | None = None
        """Why the store refused this service, once it did (:meth:`refuse`)."""
        self._stop: Callable[[], None] = lambda: None
        self.restarts: int | None = None
        """How many times a supervisor (``pyrostore up``) restarted this service; None if no
        supervisor started it."""

    @property
    def name(self) -> str:
        """The name this service registers under."""
        return service_name(self.role, self.replica_id)

    @Pyro5.api.expose
    @allow(*OPERATORS)
    def stats(self) -> dict[str, Any]:
        """``{role, id, methods: {name: {count, mean_ms, p50_ms, p99_ms}}}``."""
        return {"role": self.role, "id": self.replica_id, "methods": self.metrics.snapshot()}

    @Pyro5.api.expose
    @allow(*OPERATORS)
    def reset_stats(self) -> None:
        """Forget the timings so far (benchmarks call this between experiments)."""
        self.metrics.reset()

    @Pyro5.api.expose
    @allow(*OPERATORS)
    def set_hook(self, name: str, seconds: float) -> None:
        """Test hook: hold the next request at point ``name`` for up to ``seconds``."""
        self.hooks.arm(name, seconds)

    @Pyro5.api.expose
    @allow(*OPERATORS)
    def release_hook(self, name: str) -> None:
        """Test hook: let the request held at ``name`` go on."""
        self.hooks.release(name)

    @Pyro5.api.expose
    @allow(*OPERATORS)
    def hook_waiting(self, name: str) -> bool:
        """Test hook: whether a request is held at ``name``."""
        return self.hooks.waiting(name)

    @Pyro5.api.expose
    @allow(*OPERATORS)
    def info(self) -> dict[str, Any]:
        """Who and where this service is and how it is doing (what ``status`` shows)."""
        return {
            "role": self.role,
            "id": self.replica_id,
            "pid": os.getpid(),
            "uri": self.uri,
            "state": "serving",
            "epoch": None,
            "applied": None,
            "uptime_s": round(time.time() - self.started_at, 1),
            "protocol": self.settings.protocol_version,
            "restarts": self.restarts,
            "metrics": self.metrics_address,
            **self.details(),
        }

    def details(self) -> dict[str, Any]:
        """Role-specific figures added to ``info()``; overridden by subclasses."""
        return {}

    def endpoints(self) -> dict[str, object]:
        """Other Pyro5 objects to serve beside it on its daemon, by object id (a replica's
        peer endpoint)."""
        return {}

    def start(self) -> None:
        """Called once the service is registered; start background work here."""

    def refuse(self, error: ProtocolVersionError) -> None:
        """The store refused this service for its protocol version: it stops serving, and
        :func:`serve` raises ``error`` (its process exits non-zero with that line)."""
        if self.refused is None:
            self.refused = error
            log.error("%s stops: %s", self.name, error)
        self._stop()

    def close(self) -> None:
        """Called once the daemon has stopped; release resources here."""


def fixed_port(host: str) -> int:
    """A port for a service whose address must be known before it starts (a name server, a
    coordinator): free on ``host`` now, and below the system's ephemeral range, so that no
    outgoing connection or port-0 bind takes it before the service binds it."""
    low = _ephemeral_low()
    if low > FIXED_PORTS_FROM + 100:
        for port in random.sample(range(FIXED_PORTS_FROM, low), k=100):
            with socket.socket() as sock:
                try:
                    sock.bind((host, port))
                except OSError:
                    continue
                return port
    with socket.socket() as sock:  # no room below the ephemeral range: any free port
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _ephemeral_low() -> int:
    """The first port of the system's ephemeral range (Linux; 32768 elsewhere)."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    return 32768


def serve(service: Service, *, on_ready: Callable[[str], None] | None = None) -> None:
    """Serve ``service`` until SIGTERM/SIGINT (or :func:`stop`), then clean up; raise the
    ProtocolVersionError that made it stop, if the store refused it (:meth:`Service.refuse`)."""
    for served in (service, *service.endpoints().values()):
        if unguarded(served):
            raise ConfigError(f"{type(served).__name__} exposes methods open to no role: "
                              f"{', '.join(unguarded(served))} (see pyrostore.access)")
    endpoint = MetricsEndpoint(service.registry)
    service.metrics_address = endpoint.start(service.host, service.settings.metrics_port)
    try:
        _serve_daemon(service, on_ready)
    finally:
        endpoint.stop()
    if service.refused is not None:
        raise service.refused


def _serve_daemon(service: Service, on_ready: Callable[[str], None] | None) -> None:
    settings = service.settings
    daemon = VersionedDaemon(host=service.host, port=service.port,
                             version=settings.protocol_version, who=service.name,
                             plain_ok=service.plain_callers)
    service.uri = str(daemon.register(service, objectId=service.name))
    for object_id, endpoint in service.endpoints().items():
        daemon.register(endpoint, objectId=object_id)
    stopping = threading.Event()

    def request_stop(*_: object) -> None:
        if not stopping.is_set():
            stopping.set()
            threading.Thread(target=daemon.shutdown, name="shutdown", daemon=True).start()

    service._stop = request_stop
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, request_stop)
        signal.signal(signal.SIGINT, request_stop)
    try:
        announce(settings, service.role, service.replica_id, service.uri)
        threading.Thread(
            target=_stay_registered, args=(service, stopping), name="registration", daemon=True
        ).start()
        service.start()
        log.info("%s serving at %s (pid %d; metrics: %s)", service.name, service.uri,
                 os.getpid(), service.metrics_address or "off")
        if on_ready is not None:
            on_ready(service.uri)
        daemon.requestLoop(loopCondition=lambda: not stopping.is_set())
    finally:
        stopping.set()
        withdraw(settings, service.role, service.replica_id, service.uri)
        daemon.close()
        service.close()
        log.info("%s stopped", service.name)


def _stay_registered(service: Service, stopping: threading.Event) -> None:
    """Re-register within half a second if the name server lost our entry (it was restarted
    without storage, or another process took the name)."""
    registration = Registration(service.settings, service.role, service.replica_id, service.uri)
    try:
        for check in itertools.count(1):
            if stopping.wait(REREGISTER_INTERVAL):
                return
            try:  # a ping on the kept connection; a lookup on a new one, and now and then
                if registration.ensure(look=check % LOOKUP_EVERY == 0):
                    log.warning("%s was missing from the name server; registered again",
                                service.name)
            except (PyrostoreError, Pyro5.errors.PyroError) as exc:
                log.debug("name server check failed: %s", exc)
    finally:
        registration.close()
