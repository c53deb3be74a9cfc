"""The versions this release speaks and writes, and the verdict on any other.

- **Protocol.** Each connection between the store's processes opens with Pyro5's connection
  handshake, once per connection and never per call: the caller sends its
  :data:`PROTOCOL_VERSION` (:func:`greeting`), the daemon answers with its own. A daemon
  refuses a caller of another version (:func:`check_caller`; the caller's proxy turns the
  refusal into :class:`~pyrostore.errors.ProtocolVersionError`, :func:`refusal_in`), and a
  caller refuses a daemon of another one (:func:`check_answer`). A caller that sends no
  version (a plain Pyro5 client, or a release from before versions) is welcome only where the
  store serves plain Pyro5 users: its frontend. The number changes only when a release
  changes a message in a way the previous one cannot take; releases with the same number mix
  freely, so they can be upgraded one process at a time.
- **Schema.** Each SQLite file records the :data:`SCHEMA_VERSION` that made it in
  ``PRAGMA user_version`` (:mod:`pyrostore.migrations`): an older one is migrated step by step
  (:func:`steps_due`), a newer or unknown one refused and left as it is.

The handshake itself is :mod:`pyrostore.handshake`; this module has no Pyro5 or SQLite in it.
"""

from __future__ import annotations

from pyrostore.errors import ProtocolVersionError, SchemaVersionError

PROTOCOL_VERSION = 2
"""What this release's processes speak to each other. 2: a replica asks to join with its
position, and snapshots stream in parts of one table each."""
SCHEMA_VERSION = 2
"""The schema of every SQLite file this release writes. Version 0 is a new, empty file or one
written by a release from before schema versions, which held the tables of version 1; 2 adds
the index of request ids by position (the log a returning replica catches up from)."""
HANDSHAKE_KEY = "pyrostore_protocol"
"""The key of the protocol version in a handshake's data (a dict)."""
REFUSAL = "protocol version mismatch"
"""How a daemon's refusal of a caller's version begins (a Pyro5 refusal carries only text)."""


def greeting(version: int) -> dict[str, int]:
    """A handshake's data: the protocol ``version`` its sender speaks."""
    return {HANDSHAKE_KEY: version}


def spoken_in(data: object) -> int | None:
    """The protocol version a handshake's ``data`` carries; None if it carries none."""
    if isinstance(data, dict):
        version = data.get(HANDSHAKE_KEY)
        if isinstance(version, int) and not isinstance(version, bool):
            return version
    return None


def check_caller(data: object, *, ours: int, who: str, plain_ok: bool) -> None:
    """A daemon's verdict on a caller's handshake ``data``: ProtocolVersionError unless it
    speaks ``ours`` (or speaks no version and ``plain_ok``). ``who``: the daemon's service."""
    theirs = spoken_in(data)
    if theirs == ours or (theirs is None and plain_ok):
        return
    caller = ("the caller speaks none (a release from before protocol versions, or not a "
              "process of the store)" if theirs is None else f"the caller {theirs}")
    raise ProtocolVersionError(f"{REFUSAL}: {who} speaks pyrostore protocol version {ours}, "
                               f"{caller}: refused (every process of a store must be of "
                               "releases with one protocol version)", ours=ours, theirs=theirs)


def check_answer(data: object, *, ours: int, where: str) -> None:
    """A caller's verdict on a daemon's handshake answer ``data``: ProtocolVersionError unless
    it speaks ``ours``. ``where``: the object called."""
    theirs = spoken_in(data)
    if theirs == ours:
        return
    spoken = "no protocol version (a release from before versions?)" if theirs is None \
        else f"pyrostore protocol version {theirs}"
    raise ProtocolVersionError(f"{REFUSAL}: {where} speaks {spoken}, this process {ours}: "
                               "refused (every process of a store must be of releases with "
                               "one protocol version)", ours=ours, theirs=theirs)


def refusal_in(text: str) -> ProtocolVersionError | None:
    """The daemon's refusal of this caller's version, if Pyro5's error ``text`` (a refused
    connection) carries one."""
    start = text.find(REFUSAL)
    return None if start < 0 else ProtocolVersionError(text[start:])


def steps_due(found: int, *, path: str) -> range:
    """The migration steps a file of schema version ``found`` needs: step ``i`` brings version
    ``i`` to ``i + 1``. A newer or unknown version is SchemaVersionError."""
    if not 0 <= found <= SCHEMA_VERSION:
        raise SchemaVersionError(
            f"{path} has schema version {found}, but this release reads versions 0 to "
            f"{SCHEMA_VERSION}: it was written by a newer release (run that release, or "
            "restore a backup made by this one); the file is left as it is",
            path=path, version=found, supported=SCHEMA_VERSION)
    return range(found, SCHEMA_VERSION)
