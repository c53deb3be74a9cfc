"""Mutual TLS for every Pyro5 connection of a process: which certificate it presents, and how.

Pyro5 asks ``Pyro5.socketutil.get_ssl_context`` for its contexts when ``config.SSL`` is on:
:func:`install` puts :func:`pyro_ssl_context` in its place, which answers with contexts built
from this process's :class:`Identity` (its certificate, key and the store's CA):

- as a server, TLS 1.2+ with a client certificate of the CA required (``CERT_REQUIRED``);
  the handshake is not made in Pyro5's accept thread but by the worker thread's first read,
  so a peer that connects and stalls holds one worker until the idle timeout, never the
  accept loop; the worker makes it before anything else, and closes a connection that fails
  it or sends nothing in time without a word (Pyro5 would try to answer such a peer, wait out
  the timeout a second time, and format a traceback for it: 2,000 of them timing out together
  held every thread of the daemon behind them for seconds);
- as a client, the server must present a certificate of the CA for the address dialled
  (its SANs) that may serve TLS (``serverAuth``): only node certificates carry that, so a
  shopper's or an admin's certificate can never pose as a store service.

A process has one identity (services: ``node``; the CLI: ``admin`` unless told otherwise);
:func:`acting_as` lends a thread another one for the connections it opens (tests, tools).
"""

from __future__ import annotations

import contextlib
import ssl
import threading
from collections.abc import Iterator
from typing import Any

from Pyro5 import config as pyro_config
from Pyro5 import socketutil, svr_threads

from pyrostore.certs import CertPaths, paths
from pyrostore.config import Settings
from pyrostore.errors import CertificateError

Identity = CertPaths
"""The files one TLS identity needs: its certificate, its private key, the CA."""


def identity_of(settings: Settings, *, default: str) -> Identity | None:
    """The identity ``settings`` name (``identity``, else ``default``); None if insecure."""
    if settings.insecure:
        return None
    role, _, name = (settings.identity or default).partition(".")
    return paths(settings.certificates, role, name or None)


class _ServerContext(ssl.SSLContext):
    """A server context whose accepted sockets make their handshake on first use."""

    def wrap_socket(self, sock: Any, server_side: bool = False,  # type: ignore[override]
                    do_handshake_on_connect: bool = True, **kwargs: Any) -> ssl.SSLSocket:
        return super().wrap_socket(sock, server_side=server_side,
                                   do_handshake_on_connect=do_handshake_on_connect
                                   and not server_side, **kwargs)


_handle_connection = svr_threads.ClientConnectionJob.handleConnection


def _handshake_first(job: svr_threads.ClientConnectionJob) -> bool:
    """Pyro5's ``handleConnection`` (its own handshake), once this worker has made the TLS
    handshake; a connection that failed it is closed, and the worker is free again."""
    sock = job.csock.sock
    if isinstance(sock, ssl.SSLSocket):
        try:
            sock.do_handshake()
        except (OSError, ValueError):  # refused, timed out, or closed by the peer
            job.csock.close()
            return False
    handled: bool = _handle_connection(job)
    return handled


def server_context(identity: Identity) -> ssl.SSLContext:
    """What a daemon of this identity accepts: mutual TLS with the store's CA."""
    context = _ServerContext(ssl.PROTOCOL_TLS_SERVER)
    _load(context, identity)
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def client_context(identity: Identity) -> ssl.SSLContext:
    """What a proxy of this identity presents and expects: a node certificate of the CA."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # check_hostname and CERT_REQUIRED
    _load(context, identity)
    return context


def _load(context: ssl.SSLContext, identity: Identity) -> None:
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(identity.cert, identity.key)
        context.load_verify_locations(cafile=identity.ca)
    except (OSError, ssl.SSLError) as exc:
        raise CertificateError(f"cannot use certificate {identity.cert} "
                               f"(key {identity.key}, CA {identity.ca}): {exc}") from exc


class _Contexts:
    """The process's identity, a thread's borrowed one, and their contexts, made once."""

    def __init__(self) -> None:
        self.identity: Identity | None = None
        self.local = threading.local()
        self._lock = threading.Lock()
        self._made: dict[tuple[Identity, bool], ssl.SSLContext] = {}

    def current(self) -> Identity:
        identity = getattr(self.local, "identity", None) or self.identity
        if identity is None:
            raise CertificateError("TLS is on but this process has no certificate")
        return identity

    def context(self, identity: Identity, *, server: bool) -> ssl.SSLContext:
        with self._lock:
            made = self._made.get((identity, server))
            if made is None:
                made = server_context(identity) if server else client_context(identity)
                self._made[(identity, server)] = made
            return made


_contexts = _Contexts()


def pyro_ssl_context(servercert: str = "", serverkey: str = "", clientcert: str = "",
                     clientkey: str = "", cacerts: str = "",
                     keypassword: str = "") -> ssl.SSLContext:
    """Pyro5's ``get_ssl_context``, answered from this process's identity (Pyro5 passes its
    ``SSL_*`` settings; only whether it asks for a server context matters here)."""
    return _contexts.context(_contexts.current(), server=bool(servercert))


def install(identity: Identity | None) -> None:
    """Make ``identity`` this process's TLS identity for Pyro5 (None: plaintext, --insecure).

    Sets Pyro5's ``SSL*`` settings (so that a dump of its config tells the truth) and routes
    its context lookups to :func:`pyro_ssl_context`.
    """
    _contexts.identity = identity
    pyro_config.SSL = identity is not None
    pyro_config.SSL_REQUIRECLIENTCERT = identity is not None
    if identity is None:
        return
    pyro_config.SSL_SERVERCERT = pyro_config.SSL_CLIENTCERT = str(identity.cert)
    pyro_config.SSL_SERVERKEY = pyro_config.SSL_CLIENTKEY = str(identity.key)
    pyro_config.SSL_CACERTS = str(identity.ca)
    socketutil.get_ssl_context = pyro_ssl_context
    svr_threads.ClientConnectionJob.handleConnection = _handshake_first
    _contexts.context(identity, server=False)  # a bad file fails here, not mid-call


def installed() -> Identity | None:
    """This process's identity (None: plaintext)."""
    return _contexts.identity


@contextlib.contextmanager
def acting_as(identity: Identity) -> Iterator[None]:
    """Connections this thread opens inside the block present ``identity``."""
    previous = getattr(_contexts.local, "identity", None)
    _contexts.local.identity = identity
    try:
        yield
    finally:
        _contexts.local.identity = previous
