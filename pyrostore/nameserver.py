"""Pyro5's own name server, run in the foreground (what ``pyrostore up`` embeds).

It binds to ``settings.ns_host:ns_port`` with broadcast off: the store always finds it by
explicit address. Registrations live in memory, or with ``storage="sql:FILE"`` (what
``pyrostore up`` uses) in SQLite, so that a restarted name server still knows every service;
every service re-registers itself within half a second if one has forgotten it.
"""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path

from Pyro5 import nameserver

from pyrostore.config import Settings
from pyrostore.datadir import make_private, sqlite_files

log = logging.getLogger(__name__)


def run_name_server(settings: Settings, *, storage: str | None = None) -> None:
    """Serve the name server until SIGTERM or SIGINT (``storage``: Pyro5's, e.g. ``sql:FILE``)."""
    uri, daemon, _ = nameserver.start_ns(
        host=settings.ns_host, port=settings.ns_port, enableBroadcast=False, storage=storage
    )
    if storage and storage.startswith("sql:"):
        make_private(*sqlite_files(Path(storage[4:])))  # Pyro5 made it; with our umask, too
    stopping = threading.Event()

    def request_stop(*_: object) -> None:
        if not stopping.is_set():
            stopping.set()
            threading.Thread(target=daemon.shutdown, name="shutdown", daemon=True).start()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, request_stop)
        signal.signal(signal.SIGINT, request_stop)
    log.info("name server at %s", uri)
    try:
        daemon.requestLoop(loopCondition=lambda: not stopping.is_set())
    finally:
        daemon.close()
        log.info("name server stopped")
