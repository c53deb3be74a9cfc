"""Every error pyrostore raises, in one tree.

    PyrostoreError                 root: catch this to catch anything the store says
    ├── InvalidRequest             the caller sent something malformed (wrong type, qty <= 0, ...)
    │   ├── ConflictingRequest     a request id reused with different parameters
    │   └── RequestExpired         a new request whose id is older than the retention: not run
    ├── Forbidden                  the caller's certificate has no role allowed to call this
    ├── NotFound                   no such book or order
    ├── OutOfStock                 a buy asked for more than the stock; nothing was changed
    ├── BuyUndone                  a buy's stock was given back: its order could never be recorded
    ├── Unavailable                the store could not run the request *and did not run it*
    │   └── NotServing             this replica may not serve it now (not primary, no lease)
    │       └── NotLeader          this coordinator is not the Raft leader; it may name it
    ├── OutcomeUnknown             a call failed mid-way: it may have run; retry its request id
    ├── StaleEpoch                 replication: a message from a deposed primary (fencing)
    ├── ProtocolVersionError       two processes of releases that do not speak alike: refused
    ├── ConfigError                a setting (flag or PYROSTORE_* variable) is invalid
    │   └── CertificateError       a certificate or key is missing, unreadable or unusable
    └── StorageError               a data directory or file cannot be used (in use, read-only, full)
        ├── CorruptFile            a data file failed its integrity check: nothing is served from it
        └── SchemaVersionError     a data file of a newer (or unknown) schema: left as it is

Each class is registered with Pyro5's serializers, so a remote call that raises one re-raises
the same class at the caller, with its message and details (``err.details``) intact. An
unregistered exception would arrive as Pyro5's ``SerializeError`` instead.
"""

from __future__ import annotations

from typing import Any

from Pyro5.serializers import SerializerBase


class PyrostoreError(Exception):
    """Root of the store's errors. ``details`` holds plain values that explain the error."""

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.details: dict[str, Any] = dict(details)

    @property
    def message(self) -> str:
        """The human-readable message (the first argument)."""
        return str(self.args[0]) if self.args else ""

    def __str__(self) -> str:
        return self.message


class InvalidRequest(PyrostoreError):
    """Raised when an argument has the wrong type or an impossible value; nothing is changed."""


class ConflictingRequest(InvalidRequest):
    """Raised when a request id already used for one request arrives with other parameters."""


class RequestExpired(InvalidRequest):
    """Raised when a request id the store does not remember is older than the request-id
    retention (``request_retention``): it may have run long ago and been forgotten since, so it
    is never run now. Nothing was changed; a new request needs a new id. ``details`` names the
    ``request_id`` and its ``age`` in seconds."""


class Forbidden(PyrostoreError):
    """Raised when the caller's certificate does not carry a role allowed to call the method
    (an internal method called with a shopper's certificate, an admin operation without an
    admin one); nothing was run. ``details`` names the ``method`` and the caller's ``role``."""


class NotFound(PyrostoreError):
    """Raised when the book (item) or order asked for does not exist."""


class OutOfStock(PyrostoreError):
    """Raised when a buy asks for more copies than are in stock; nothing is changed."""


class BuyUndone(PyrostoreError):
    """The store gave a buy's stock back without an order: the order could not be recorded
    before its request id outlived the store's retention (the order group was down that long).
    """


class Unavailable(PyrostoreError):
    """Raised when no replica or frontend could take the request.

    The request was *not* run: it is always safe to send it again, to any replica. Code that
    cannot be sure a call did not run (a connection closed mid-call) must not raise this; it
    retries the call with the same request id instead, which the store applies at most once.
    """


class NotServing(Unavailable):
    """Raised by a replica that may not serve the request now; it did *not* run it.

    It is outside the current view (joining), its lease has run out, or a write reached a
    backup. ``details`` may name the ``primary`` URI it knows of. Send the request elsewhere.
    """


class NotLeader(NotServing):
    """Raised by a coordinator that is not the Raft leader for a call only the leader takes
    (a lease renewal, a view change); it did *not* run it. ``details["leader"]`` is the
    leader's URI when this coordinator knows it."""


class StaleEpoch(PyrostoreError):
    """Raised by a replica to a primary of an older epoch than its own: that primary is deposed."""


class ProtocolVersionError(PyrostoreError):
    """Raised when two of the store's processes do not speak the same protocol version (they
    are of releases that cannot be mixed; :mod:`pyrostore.versions`): the connection was
    refused when it was made, and nothing was run. Waiting does not help: one side must be
    upgraded or downgraded. ``details`` may name the versions (``ours``, ``theirs``)."""


class OutcomeUnknown(PyrostoreError):
    """Raised when a call failed after it was sent (connection closed, timeout): it may have run.

    Send it again *with the same request id*: the store applies a request id at most once, so
    the retry either runs it or returns the result of the run that did happen.
    """


class ConfigError(PyrostoreError):
    """Raised when a setting, from a flag or a ``PYROSTORE_*`` variable, is invalid."""


class CertificateError(ConfigError):
    """Raised when a certificate or key is missing, unreadable, of the wrong role, or cannot be
    made (no CA to sign it, a bad name or host, a file that may not be overwritten)."""


class StorageError(PyrostoreError):
    """Raised when a process cannot use its data directory or one of its files: another process
    holds it (``details["pid"]`` names it when known), or it cannot be written (read-only, full,
    permissions). Nothing was served from it; ``details["path"]`` names it."""


class CorruptFile(StorageError):
    """Raised when a data file is not a sound SQLite database (``PRAGMA quick_check`` failed, or
    it is no database at all). Nothing is ever served from it; a replica sets it aside
    (:mod:`pyrostore.recovery`)."""


class SchemaVersionError(StorageError):
    """Raised when a data file's schema version (its ``PRAGMA user_version``) is newer than
    this release's, or no version this release knows: it was written by a newer release. The
    file is left exactly as it was and nothing is served from it; ``details`` names the
    ``path``, its ``version`` and the ``supported`` one."""


ALL_ERRORS: tuple[type[PyrostoreError], ...] = (
    PyrostoreError,
    InvalidRequest,
    ConflictingRequest,
    RequestExpired,
    Forbidden,
    NotFound,
    OutOfStock,
    BuyUndone,
    Unavailable,
    NotServing,
    NotLeader,
    StaleEpoch,
    ProtocolVersionError,
    OutcomeUnknown,
    ConfigError,
    CertificateError,
    StorageError,
    CorruptFile,
    SchemaVersionError,
)


def _register_with_pyro() -> None:
    """Teach Pyro5's serializers to rebuild our errors instead of raising ``SerializeError``."""
    for error_class in ALL_ERRORS:
        name = f"{error_class.__module__}.{error_class.__name__}"

        def rebuild(_classname: str, data: dict[str, Any], cls: type = error_class) -> Any:
            return SerializerBase.make_exception(cls, data)

        SerializerBase.register_dict_to_class(name, rebuild)


_register_with_pyro()
