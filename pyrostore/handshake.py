"""The protocol version on the wire: both ends of Pyro5's connection handshake.

Every proxy the store makes is a :class:`VersionedProxy`: the handshake that opens each of its
connections carries this process's protocol version, and it refuses an object of the store
(named ``pyrostore.…``) whose daemon answers with another version, or none. Every daemon the
store runs is a :class:`VersionedDaemon`: it refuses a caller of another version, and one of
none unless it serves plain Pyro5 users (a frontend). Pyro5 hands the caller only the text of
a refusal; the proxy turns it back into :class:`~pyrostore.errors.ProtocolVersionError`. Both
happen once per connection: calls on an open connection carry nothing more. The verdicts are
:mod:`pyrostore.versions`'.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, TypeVar

import Pyro5.api
import Pyro5.errors

from pyrostore.errors import ProtocolVersionError
from pyrostore.versions import check_answer, check_caller, greeting, refusal_in, spoken_in

log = logging.getLogger(__name__)
STORE_OBJECTS = "pyrostore."
"""How the names of the store's own objects begin (a name server's do not)."""
F = TypeVar("F", bound=Callable[..., Any])


def _refusal_typed(method: F) -> F:
    """``method``, with a daemon's refusal of this proxy's version raised as
    ProtocolVersionError rather than Pyro5's CommunicationError."""
    @functools.wraps(method)
    def call(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except Pyro5.errors.CommunicationError as exc:
            refused = refusal_in(str(exc))
            if refused is None:
                raise
            raise refused from exc
    return call  # type: ignore[return-value]


class VersionedProxy(Pyro5.api.Proxy):
    """A Pyro5 proxy whose connections open by exchanging protocol versions."""

    def __init__(self, uri: str, *, version: int) -> None:
        super().__init__(uri)
        self._pyroHandshake = greeting(version)

    def _pyroValidateHandshake(self, response: Any) -> None:
        """Refuse an object of the store whose daemon speaks another version (or none)."""
        if not self._pyroUri.object.startswith(STORE_OBJECTS):
            return
        try:
            check_answer(response, ours=spoken_in(self._pyroHandshake) or 0,
                         where=self._pyroUri.object)
        except ProtocolVersionError:
            self._pyroRelease()
            raise

    # the calls that may open a connection
    _pyroBind = _refusal_typed(Pyro5.api.Proxy._pyroBind)
    _pyroGetMetadata = _refusal_typed(Pyro5.api.Proxy._pyroGetMetadata)
    _pyroInvoke = _refusal_typed(Pyro5.api.Proxy._pyroInvoke)


class VersionedDaemon(Pyro5.api.Daemon):
    """A Pyro5 daemon that takes only callers of its protocol version (see the module)."""

    def __init__(self, *, host: str, port: int, version: int, who: str,
                 plain_ok: bool) -> None:
        """``who``: the service it serves, as refusals name it; ``plain_ok``: whether a caller
        with no version (a plain Pyro5 client) is welcome."""
        super().__init__(host=host, port=port)
        self._version, self._who, self._plain_ok = version, who, plain_ok

    def validateHandshake(self, conn: Any, data: Any) -> Any:
        """Pyro5's hook, once per new connection: refuse a caller of another version."""
        try:
            check_caller(data, ours=self._version, who=self._who, plain_ok=self._plain_ok)
        except ProtocolVersionError as exc:
            log.warning("%s refused a connection from %s: %s", self._who,
                        _peer(conn), exc)
            raise
        return greeting(self._version)


def _peer(conn: Any) -> str:
    try:
        return str(conn.sock.getpeername())
    except (AttributeError, OSError):
        return "a caller"
