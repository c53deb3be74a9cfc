"""Pyro5's own name server, run in the foreground (what ``pyrostore up`` embeds).

It binds to ``settings.ns_host:ns_port`` with broadcast off: the store always finds it by
explicit address. Registrations live in memory, or with ``storage="sql:FILE"`` (what
``pyrostore up`` uses) in SQLite, so that a restarted name server still knows every service;
every service re-registers itself within half a second if one has forgotten it. Its
Prometheus metrics (the process's, and how many names it holds) are served as a service's are
(:mod:`pyrostore.exporter`), and its own registration is tagged ``metrics:<host:port>``.

In secure mode only the store's services (node certificates) may register or remove names;
anyone with a certificate of the store's CA may look them up. A forged entry would lead
nowhere anyway: clients and services only talk to servers presenting a node certificate.
"""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from typing import Any

import Pyro5.api
from Pyro5 import core, nameserver

from pyrostore.access import NODE, ROLES, allow, unguarded
from pyrostore.config import Settings
from pyrostore.datadir import make_private, sqlite_files
from pyrostore.discovery import METRICS_TAG
from pyrostore.errors import ConfigError
from pyrostore.exporter import InfoCollector, new_registry
from pyrostore.scraping import MetricsEndpoint

log = logging.getLogger(__name__)


class GuardedNameServer(nameserver.NameServer):
    """Pyro5's name server, with every method open to the store's roles only and changes
    open to nodes only."""

    @Pyro5.api.expose
    @allow(NODE)
    def register(self, name: str, uri: Any, safe: bool = False, metadata: Any = None) -> None:
        """Register ``name`` (nodes only)."""
        super().register(name, uri, safe, metadata)

    @Pyro5.api.expose
    @allow(NODE)
    def set_metadata(self, name: str, metadata: Any) -> None:
        """Replace the metadata of ``name`` (nodes only)."""
        super().set_metadata(name, metadata)

    @Pyro5.api.expose
    @allow(NODE)
    def remove(self, name: str | None = None, prefix: str | None = None,
               regex: str | None = None) -> int:
        """Remove names (nodes only)."""
        removed: int = super().remove(name, prefix, regex)
        return removed

    @Pyro5.api.expose
    @allow(*ROLES)
    def lookup(self, name: str, return_metadata: bool = False) -> Any:
        """The URI (and metadata) of ``name``."""
        return super().lookup(name, return_metadata)

    @Pyro5.api.expose
    @allow(*ROLES)
    def list(self, prefix: str | None = None, regex: str | None = None,
             return_metadata: bool = False) -> Any:
        """The names matching ``prefix`` or ``regex``, with their URIs."""
        return super().list(prefix, regex, return_metadata)

    @Pyro5.api.expose
    @allow(*ROLES)
    def yplookup(self, meta_all: Any = None, meta_any: Any = None,
                 return_metadata: bool = True) -> Any:
        """The names with the given metadata."""
        return super().yplookup(meta_all, meta_any, return_metadata)

    @Pyro5.api.expose
    @allow(*ROLES)
    def count(self) -> int:
        """How many names are registered."""
        counted: int = super().count()
        return counted

    @Pyro5.api.expose
    @allow(*ROLES)
    def ping(self) -> None:
        """Answer, to show it is alive."""


def run_name_server(settings: Settings, *, storage: str | None = None) -> None:
    """Serve the name server until SIGTERM or SIGINT (``storage``: Pyro5's, e.g. ``sql:FILE``)."""
    uri, daemon, _ = nameserver.start_ns(
        host=settings.ns_host, port=settings.ns_port, enableBroadcast=False, storage=storage
    )
    guarded = GuardedNameServer(daemon.nameserver.storage)
    if unguarded(guarded):  # a method a newer Pyro5 added to its NameServer, served as it is
        daemon.close()
        raise ConfigError(f"the name server exposes methods open to no role: "
                          f"{', '.join(unguarded(guarded))} (see pyrostore.access)")
    daemon.unregister(daemon.nameserver)
    daemon.register(guarded, core.NAMESERVER_NAME)
    daemon.nameserver = guarded
    if storage and storage.startswith("sql:"):
        make_private(*sqlite_files(Path(storage[4:])))  # Pyro5 made it; with our umask, too
    registry = new_registry()
    registry.register(InfoCollector(lambda: {"role": "nameserver",
                                             "registrations": guarded.count()}))
    endpoint = MetricsEndpoint(registry)
    try:
        metrics = endpoint.start(settings.ns_host, settings.metrics_port)
    except ConfigError:
        daemon.close()
        raise
    if metrics is not None:
        guarded.set_metadata(core.NAMESERVER_NAME, {METRICS_TAG + metrics})
    try:
        _serve(daemon, uri, metrics)
    finally:
        endpoint.stop()


def _serve(daemon: Any, uri: Any, metrics: str | None) -> None:
    stopping = threading.Event()

    def request_stop(*_: object) -> None:
        if not stopping.is_set():
            stopping.set()
            threading.Thread(target=daemon.shutdown, name="shutdown", daemon=True).start()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, request_stop)
        signal.signal(signal.SIGINT, request_stop)
    log.info("name server at %s (metrics: %s)", uri, metrics or "off")
    try:
        daemon.requestLoop(loopCondition=lambda: not stopping.is_set())
    finally:
        daemon.close()
        log.info("name server stopped")
