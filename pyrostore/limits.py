"""What a store daemon will spend on one peer: serializers, message sizes, idle connections.

Pyro5's defaults trust the network: any serializer (``marshal`` turns 81 bytes into
gigabytes), messages up to 1 GiB, connections idle forever, 80 worker threads. A store process
calls :func:`install` once, before any daemon starts, and then:

- only the store's serializers are read (:data:`ACCEPTED_SERIALIZERS`); a message in another
  one is refused with Pyro5's ``SerializeError`` before a byte of it is decoded;
- a message above :data:`MAX_MESSAGE_SIZE` is refused from its header, before it is read;
- a compressed message is refused before it is inflated (zlib turns 16 MiB into 16 GiB, and
  the store never compresses), and so is a "keep serialized" blob call (Pyro5 reads its
  annotation with ``marshal`` itself, past the refusal above: 5 bytes claim 16 GiB);
- a connection that sends nothing for :data:`IDLE_TIMEOUT` seconds is closed, and up to
  :data:`WORKER_THREADS` connections are served at once (Pyro5's thread-pool server gives
  each its own thread: 2,000 idle connections and a slow sender leave room for real callers);
- a connection beyond those is closed at once (Pyro5 would first read a handshake from it in
  its accept thread, which a peer that sends nothing holds for twice the idle timeout, and
  the daemon would accept nobody meanwhile);
- the process may open :data:`OPEN_FILES` descriptors (or its hard limit, if lower): a shell's
  default soft limit, 1024, would run out long before the worker threads do.

Connections the store keeps open to itself are dropped by the pool that holds them before
the other side's idle timeout can close them mid-call (see :mod:`pyrostore.transport`).
"""

from __future__ import annotations

import resource
import threading
from typing import Any

from Pyro5 import config as pyro_config
from Pyro5 import errors as pyro_errors
from Pyro5 import protocol, serializers, svr_threads

from pyrostore.config import Settings

ACCEPTED_SERIALIZERS = ("msgpack", "serpent", "json")
"""The serializers a store daemon decodes: the store's own and those of Pyro5's tools."""
MAX_MESSAGE_SIZE = 4 * 1024 * 1024
"""Bytes of the largest message a daemon reads: above the largest the store sends (a snapshot
travels in parts of about 1 MiB of rows, :mod:`pyrostore.snapshots`)."""
IDLE_TIMEOUT = Settings.idle_timeout
"""Seconds a connection may stay silent before the daemon closes it (Pyro5's COMMTIMEOUT,
which is also each socket operation's timeout), unless the settings say otherwise."""
WORKER_THREADS = Settings.worker_threads
"""Connections one daemon serves at once (each holds a thread while it is open), unless the
settings say otherwise."""
WORKER_STACK = 1024 * 1024
"""Bytes of stack per thread: a worker needs little, and thousands of them must fit."""
OPEN_FILES = 65536
"""File descriptors a store process asks for (its soft limit), at most its hard limit: each
connection holds one, and a daemon serves up to :data:`WORKER_THREADS` of them."""
_REFUSED_FLAGS = {protocol.FLAGS_COMPRESSED: "compressed messages",
                  protocol.FLAGS_KEEPSERIALIZED: "serialized blobs"}
_add_payload = protocol.ReceivingMessage.add_payload


class _Refused:
    """A serializer the store does not read: it may write (Pyro5 answers a refused request
    in the same serializer), but every read raises ``SerializeError``."""

    def __init__(self, name: str, serializer: Any) -> None:
        self._name = name
        self._serializer = serializer

    def __getattr__(self, name: str) -> Any:
        return getattr(self._serializer, name)

    def loads(self, data: bytes) -> Any:
        raise pyro_errors.SerializeError(
            f"the {self._name} serializer is refused here; use one of "
            f"{', '.join(ACCEPTED_SERIALIZERS)}")

    loadsCall = loads


def _checked_add_payload(message: protocol.ReceivingMessage, payload: bytes) -> None:
    """Pyro5's ``add_payload``, for a message that asks for neither inflation nor a blob."""
    for flag, what in _REFUSED_FLAGS.items():
        if message.flags & flag:
            raise pyro_errors.ProtocolError(f"{what} are refused here")
    _add_payload(message, payload)


def _turn_away(job: svr_threads.ClientConnectionJob, reason: str) -> None:
    """Pyro5's ``denyConnection`` (no worker is free), without its handshake: just close."""
    job.csock.close()


def keep_idle_for(settings: Settings) -> float:
    """Seconds a pooled connection may wait for reuse: well inside the other side's timeout."""
    return settings.idle_timeout / 2


def install(settings: Settings | None = None) -> None:
    """Apply the limits to this process's Pyro5 (before any daemon or proxy is made), with
    the idle timeout and worker count of ``settings`` (default: the defaults)."""
    settings = settings or Settings()
    for name, serializer in serializers.serializers.items():
        if name not in ACCEPTED_SERIALIZERS:
            serializers.serializers_by_id[serializer.serializer_id] = _Refused(name, serializer)
    protocol.ReceivingMessage.add_payload = _checked_add_payload
    svr_threads.ClientConnectionJob.denyConnection = _turn_away
    pyro_config.MAX_MESSAGE_SIZE = MAX_MESSAGE_SIZE
    pyro_config.COMMTIMEOUT = settings.idle_timeout
    pyro_config.THREADPOOL_SIZE = settings.worker_threads
    pyro_config.SOCK_NODELAY = True  # small request/response messages: never wait for Nagle
    threading.stack_size(WORKER_STACK)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = OPEN_FILES if hard == resource.RLIM_INFINITY else min(hard, OPEN_FILES)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
