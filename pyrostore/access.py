"""Who may call what: the role in the caller's certificate, checked on every exposed method.

In secure mode (the default) every connection to a store daemon is mutual TLS, and the
certificate the caller presented carries its role in the subject's OU (see
:mod:`pyrostore.certs`): ``node`` for the store's own services, ``admin`` for operators,
``client`` for shoppers. Each exposed method declares the roles it serves with
:func:`allow`; :func:`pyrostore.serving.serve` refuses to serve an object with an exposed
method that declares none, so a new method is closed until someone opens it on purpose.

A refused call raises :class:`~pyrostore.errors.Forbidden` before the method body runs: it
changes nothing. So does a call with arguments the method does not take (too many, too few,
unknown names): :class:`~pyrostore.errors.InvalidRequest`, not a bare ``TypeError``. The role
is read once per connection and kept on Pyro5's connection object.

Two cases carry no certificate and are not checked: a plaintext connection, which a daemon
only accepts when the whole store runs ``--insecure`` (loopback only, see
:mod:`pyrostore.tls`), and a call made in-process, outside any Pyro5 request.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from Pyro5.api import current_context

from pyrostore.certs import ROLES as CERT_ROLES
from pyrostore.certs import name_from_subject, role_from_subject
from pyrostore.errors import Forbidden, InvalidRequest

NODE = "node"
"""The store's own services: replication, snapshots, leases, invalidation, coordination."""
ADMIN = "admin"
"""Operators: repricing, restocking, new books, every order, figures of every service."""
CLIENT = "client"
"""Shoppers: browsing, buying, and their own orders."""
ROLES = frozenset(CERT_ROLES)
"""Every role a certificate may carry (the three above)."""
SHOPPERS = (CLIENT, ADMIN)
OPERATORS = (NODE, ADMIN)

F = TypeVar("F", bound=Callable[..., Any])
_CALLER_ATTRIBUTE = "pyrostore_caller"


@dataclasses.dataclass(frozen=True)
class Caller:
    """Who is on the other end of the current call."""

    role: str | None
    """``node``, ``admin`` or ``client``; None for a caller without a certificate."""
    name: str | None
    """The certificate's common name (a shopper's name); None without a certificate."""
    authenticated: bool
    """Whether a certificate of the store's CA identified the caller (False: plaintext or
    in-process, both trusted)."""

    def has(self, roles: frozenset[str]) -> bool:
        """Whether this caller may call a method open to ``roles``."""
        return not self.authenticated or self.role in roles


TRUSTED = Caller(role=None, name=None, authenticated=False)


def caller() -> Caller:
    """The caller of the Pyro5 request this thread serves (:data:`TRUSTED` outside one)."""
    connection = getattr(current_context, "client", None)
    if connection is None:
        return TRUSTED
    known: Caller | None = getattr(connection, _CALLER_ATTRIBUTE, None)
    if known is None:
        known = _identify(connection.sock)
        setattr(connection, _CALLER_ATTRIBUTE, known)
    return known


def _identify(sock: Any) -> Caller:
    getpeercert = getattr(sock, "getpeercert", None)
    if getpeercert is None:  # a plaintext daemon: the store runs --insecure
        return TRUSTED
    subject = (getpeercert() or {}).get("subject", ())
    return Caller(role=role_from_subject(subject), name=name_from_subject(subject),
                  authenticated=True)


def allow(*roles: str) -> Callable[[F], F]:
    """Method decorator (under ``@Pyro5.api.expose``): serve only callers with one of
    ``roles``; anyone else gets :class:`Forbidden` and nothing runs."""
    allowed = frozenset(roles)
    if not allowed <= ROLES:
        raise ValueError(f"unknown role(s): {sorted(allowed - ROLES)}")

    def decorate(func: F) -> F:
        signature = inspect.signature(func)

        @functools.wraps(func)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            who = caller()
            if not who.has(allowed):
                raise Forbidden(f"{func.__name__} needs a certificate of role "
                                f"{' or '.join(sorted(allowed))}, not {who.role or 'none'}",
                                method=func.__name__, role=who.role)
            try:
                signature.bind(*args, **kwargs)
            except TypeError as exc:
                raise InvalidRequest(f"{func.__name__}: {exc}", method=func.__name__) from None
            return func(*args, **kwargs)

        guarded.allowed_roles = allowed  # type: ignore[attr-defined]
        return guarded  # type: ignore[return-value]

    return decorate


def exposed_methods(obj: object) -> Iterator[tuple[str, Any]]:
    """``(name, method)`` of every method of ``obj`` that Pyro5 exposes."""
    for name in dir(type(obj)):
        if name.startswith("_"):
            continue
        member = getattr(type(obj), name, None)
        if callable(member) and getattr(member, "_pyroExposed", False):
            yield name, member


def unguarded(obj: object) -> list[str]:
    """The exposed methods of ``obj`` that declare no roles (an object with any must not be
    served)."""
    return [name for name, method in exposed_methods(obj)
            if not getattr(method, "allowed_roles", None)]
