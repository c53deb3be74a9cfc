"""What the security and limits tests attack a real store with, and how they see its harm.

An attacker here has no help from pyrostore: raw TCP and TLS sockets (with a certificate of the
store's CA, of another CA, or none), Pyro5 messages made byte by byte, and Pyro5 proxies. What
it may have changed is read from outside too: every catalog and order replica's SQLite file,
opened read-only (:func:`replica_tables`), the coordinators' views, and a process's memory
from ``/proc``.
"""

from __future__ import annotations

import contextlib
import socket
import sqlite3
import ssl
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import Pyro5.core
import Pyro5.errors
from Pyro5 import protocol, serializers, socketutil

from pyrostore import tls
from pyrostore.config import Settings
from pyrostore.discovery import GROUPS, Coordinators
from pyrostore.launcher import Cluster
from tests.conftest import settled

MSGPACK = serializers.serializers["msgpack"]
MARSHAL = serializers.serializers["marshal"]
"""Pyro5's own marshal serializer (the store refuses to read it; an attacker writes it)."""


def replica_tables(cluster: Cluster) -> dict[str, dict[str, list[tuple[Any, ...]]]]:
    """Every row of every table (books, orders, request ids, the applied position) of every
    catalog and order replica of ``cluster``, read from its SQLite file, read-only."""
    state = {}
    for child in cluster.children:
        if child.role not in GROUPS:
            continue
        path = cluster.settings.database_path(child.role, child.replica_id)
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            tables = [name for (name,) in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
            state[child.name] = {table: sorted(conn.execute(f'SELECT * FROM "{table}"'), key=repr)
                                 for table in tables}
        finally:
            conn.close()
    return state


def views(settings: Settings) -> dict[str, Any]:
    """Each group's view as the coordinators give it (epoch, primary, backups, URIs)."""
    coordinators = Coordinators(settings)
    try:
        return {group: coordinators.read("view", group) for group in GROUPS}
    finally:
        coordinators.close()


@contextlib.contextmanager
def nothing_changes(cluster: Cluster) -> Iterator[None]:
    """Check that the block leaves every replica's tables and every view as they were."""
    settled(cluster)  # no settlement of an earlier buy lands during the block
    before = replica_tables(cluster), views(cluster.settings)
    yield
    after = replica_tables(cluster), views(cluster.settings)
    assert after[0] == before[0], "a replica's tables changed"
    assert after[1] == before[1], "a view changed"


def memory(pid: int) -> dict[str, int]:
    """``{"VmRSS": bytes, "VmHWM": bytes}`` of process ``pid`` (HWM: its peak RSS so far)."""
    found = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            found[key] = int(value.split()[0]) * 1024
    return found


def address(uri: str) -> tuple[str, int]:
    """``(host, port)`` of a Pyro5 URI."""
    parsed = Pyro5.core.URI(uri)
    return parsed.host, parsed.port


def client_context(identity: tls.Identity | None, *, ca: Path) -> ssl.SSLContext:
    """A TLS client context that trusts ``ca`` and presents ``identity`` (None: no certificate)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(cafile=ca)
    if identity is not None:
        context.load_cert_chain(identity.cert, identity.key)
    return context


def open_tls(where: tuple[str, int], context: ssl.SSLContext, *,
             timeout: float = 10.0) -> ssl.SSLSocket:
    """A TLS connection to ``where``, its handshake done (as far as the client can tell: in
    TLS 1.3 the server judges the client's certificate after the client's side is done)."""
    sock = socket.create_connection(where, timeout=timeout)
    try:
        return context.wrap_socket(sock, server_hostname=where[0])
    except BaseException:
        sock.close()
        raise


def message(msgtype: int, data: bytes = b"", *, serializer_id: int = MSGPACK.serializer_id,
            flags: int = 0, annotations: dict[str, bytes] | None = None,
            declared_size: int | None = None) -> bytes:
    """A Pyro5 message made by hand: nothing checks it on this side. ``declared_size`` is what
    the header claims the data's size is (by default, its real size)."""
    chunks = b"".join(struct.pack("!4sI", key.encode(), len(value)) + value
                      for key, value in (annotations or {}).items())
    header = struct.pack(protocol._header_format, b"PYRO", protocol.PROTOCOL_VERSION, msgtype,
                         serializer_id, flags, 1,
                         len(data) if declared_size is None else declared_size, len(chunks),
                         bytes(16), 0, protocol._magic_number)
    return header + chunks + data


def connect_message(object_id: str, *, serializer: Any = MSGPACK, **options: Any) -> bytes:
    """The CONNECT message a Pyro5 proxy opens a connection with, for ``object_id``."""
    data = serializer.dumps({"handshake": "hello", "object": object_id})
    return message(protocol.MSG_CONNECT, data, serializer_id=serializer.serializer_id, **options)


def invoke_message(object_id: str, method: str, *args: Any, serializer: Any = MSGPACK,
                   **options: Any) -> bytes:
    """The INVOKE message of ``object_id.method(*args)``."""
    data = serializer.dumpsCall(object_id, method, args, {})
    return message(protocol.MSG_INVOKE, data, serializer_id=serializer.serializer_id, **options)


def decoded(reply: protocol.ReceivingMessage) -> Any:
    """The data of ``reply``, read with Pyro5's serializer of the id it names (marshal too)."""
    by_id = {serializer.serializer_id: serializer
             for serializer in serializers.serializers.values()}
    return by_id[reply.serializer_id].loads(reply.data)


def answer(sock: socket.socket) -> protocol.ReceivingMessage | None:
    """The next Pyro5 message on ``sock``, or None if the other side closed the connection
    (or broke it off: a reset, a TLS alert) instead."""
    try:
        return protocol.recv_stub(socketutil.SocketConnection(sock, keep_open=True))
    except (Pyro5.errors.ConnectionClosedError, OSError):
        return None


def handshaken(where: tuple[str, int], object_id: str, identity: tls.Identity, *,
               ca: Path) -> ssl.SSLSocket:
    """A TLS connection presenting ``identity`` whose Pyro5 handshake for ``object_id`` is done:
    what a proxy holds before its first call."""
    sock = open_tls(where, client_context(identity, ca=ca))
    try:
        sock.sendall(connect_message(object_id))
        reply = answer(sock)
        assert reply is not None and reply.type == protocol.MSG_CONNECTOK, "handshake refused"
        return sock
    except BaseException:
        sock.close()
        raise


def refused(where: tuple[str, int], context: ssl.SSLContext | None, object_id: str) -> str:
    """Try a Pyro5 handshake with ``object_id`` at ``where`` over TLS with ``context`` (None:
    plaintext); return how it was refused. Fail if the server answered as Pyro5 does, or held
    the connection open without a word until the timeout."""
    try:
        with socket.create_connection(where, timeout=10.0) as raw:
            sock = raw if context is None else context.wrap_socket(
                raw, server_hostname=where[0])
            with sock:
                sock.sendall(connect_message(object_id))
                reply = sock.recv(64)
    except TimeoutError as exc:
        raise AssertionError(f"the server held the connection without refusing it: {exc}") \
            from exc
    except ssl.SSLError as exc:
        return f"TLS refused: {exc}"
    except OSError as exc:
        return f"connection broken: {exc}"
    assert not reply.startswith(b"PYRO"), f"the server answered in Pyro5: {reply!r}"
    return f"closed, after {reply[:8]!r}"
