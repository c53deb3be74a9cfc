"""Where Prometheus scrapes the store: each service's HTTP endpoint, and the file that lists them.

:class:`MetricsEndpoint` serves a registry (:mod:`pyrostore.exporter`) at ``/metrics`` on
daemon threads, plain HTTP, and says which ``host:port`` it bound. :func:`scrape_targets` and
:func:`write_targets` make Prometheus's file-based service discovery (``file_sd_configs``) of
``pyrostore status``'s rows.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import socketserver
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

from pyrostore.datadir import storage_error
from pyrostore.errors import ConfigError

TARGETS_FILE_MODE = 0o644
POLL_INTERVAL = 0.1
"""Seconds between the metrics server's looks at whether it should stop (so a service that
stops waits for it that long at most)."""


class MetricsEndpoint:
    """The HTTP server Prometheus scrapes (``/metrics``), on daemon threads of its own."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self._server: _Server | None = None

    def start(self, host: str, port: int) -> str | None:
        """Serve on ``host:port`` (0: a free port; -1: not at all); ``host:port`` served."""
        if port < 0:
            return None
        server_class = _Server6 if ":" in host else _Server
        try:
            self._server = make_server(host, port, make_wsgi_app(self.registry), server_class,
                                       handler_class=_QuietHandler)
        except OSError as exc:
            raise ConfigError(f"cannot serve metrics on {host}:{port}: {exc.strerror or exc} "
                              "(set PYROSTORE_METRICS_PORT to a free port, 0 for any, or off)",
                              host=host, port=port) from None
        threading.Thread(target=self._server.serve_forever, args=(POLL_INTERVAL,),
                         name="metrics", daemon=True).start()
        bound = self._server.server_address[1]
        return f"[{host}]:{bound}" if ":" in host else f"{host}:{bound}"

    def stop(self) -> None:
        """Stop serving and close the socket (idempotent)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


class _Server(ThreadingWSGIServer):
    """prometheus_client's threaded server, without the reverse DNS lookup of its own
    address that ``HTTPServer`` makes when it binds (slow where DNS is)."""

    def server_bind(self) -> None:
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), self.server_address[1]
        self.setup_environ()


class _Server6(_Server):
    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    """Logs no line per scrape."""

    def log_message(self, format: str, *args: Any) -> None:
        """Log nothing."""


def scrape_targets(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Prometheus's file-based service discovery of ``status`` rows: a target group for each
    service serving metrics, labelled with its ``role``, ``service`` name and ``replica`` id
    (if it has one)."""
    return [{"targets": [str(row["metrics"])],
             "labels": {"role": str(row.get("role")), "service": str(row.get("name")),
                        **({} if row.get("id") is None else {"replica": str(row["id"])})}}
            for row in rows if row.get("metrics") and row.get("state") != "down"]


def write_targets(path: Path, targets: list[dict[str, Any]]) -> None:
    """Write ``targets`` to ``path`` as JSON, whole or not at all (Prometheus rereads the file
    when it changes, and must never read half of one). Readable by all (0644): Prometheus
    usually runs as a user of its own, and the file holds addresses only."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW,
                     TARGETS_FILE_MODE)
        os.fchmod(fd, TARGETS_FILE_MODE)  # whatever the umask
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(targets, handle, indent=2)
            handle.write("\n")
        partial.replace(path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            partial.unlink()
        raise storage_error(exc, str(path)) from exc
