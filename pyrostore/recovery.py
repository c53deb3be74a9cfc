"""A replica's database as it starts: opened if sound; if corrupt, set aside and never served.

A catalog or order replica opens its file under the file's lock (one process per file). A file
that fails its check (:class:`~pyrostore.errors.CorruptFile`) is renamed, with its WAL files,
to ``<name>.corrupt-<UTC time>`` (never deleted) and logged as an error. Then, as
:func:`~pyrostore.replica_core.on_open` decides: if the coordinators' view of the group names
a primary, other than this replica, that answers as primary (waiting up to
``failover_timeout``: a failover may be under way), the replica starts with an empty database
and rejoins by snapshot, as a new replica does; else it refuses to start. An empty replica
outside the view cannot serve, but one that started with no primary to copy from could be
counted a member of a group that lost its primary, and lead it with nothing. So it refuses
again, on every start, while its file is missing and a copy set aside is there (until a live
primary is found, or the operator takes the copies away).
"""

from __future__ import annotations

import datetime
import logging
import time
from pathlib import Path
from typing import TypeVar

from pyrostore.config import Settings
from pyrostore.datadir import Lock, hold_file, move_aside, set_aside
from pyrostore.discovery import Coordinators, service_name
from pyrostore.errors import CorruptFile, PyrostoreError, StorageError
from pyrostore.models import Retention, view_uris
from pyrostore.replica_core import on_open
from pyrostore.store import Database
from pyrostore.transport import TRANSPORT_FAILURES, ProxyPool

log = logging.getLogger(__name__)
D = TypeVar("D", bound=Database)


def open_replica_store(settings: Settings, role: str, replica_id: int, kind: type[D]) -> D:
    """The database (of class ``kind``) of replica ``replica_id`` of ``role``, under its file's
    lock; a corrupt file is set aside (see the module). Raises StorageError if it cannot."""
    path = settings.database_path(role, replica_id)
    lock = hold_file(path)
    try:
        return _open(settings, role, replica_id, kind, path, lock)
    except BaseException:
        lock.release()
        raise


def _open(settings: Settings, role: str, replica_id: int, kind: type[D], path: Path,
          lock: Lock) -> D:
    name = service_name(role, replica_id)
    earlier = [] if path.exists() else set_aside(path)
    if earlier:  # refused before: starting on a new empty file would be no safer now
        reason, aside = "found by an earlier start", earlier[-1]
    else:
        try:
            return kind(path, lock=lock, retention=retention_of(settings))
        except CorruptFile as exc:
            reason = exc.details.get("reason", str(exc))
        aside = move_aside(path, datetime.datetime.now(datetime.UTC))
        log.error("%s: %s is corrupt (%s); moved it to %s, and serves nothing from it", name,
                  path, reason, aside)
    primary = live_primary(settings, role, replica_id)
    if on_open(corrupt=True, live_primary=primary is not None) == "refuse":
        raise StorageError(f"{path} was corrupt ({reason}) and was moved to {aside}; "
                           f"{name} needs a live primary of its group to rejoin from",
                           path=str(path), aside=str(aside))
    log.warning("%s starts empty and rejoins by snapshot from the primary at %s", name, primary)
    return kind(path, lock=lock, retention=retention_of(settings))


def retention_of(settings: Settings) -> Retention:
    """How long the replicas remember request ids, as ``settings`` say."""
    return Retention(settings.request_retention, settings.clock_skew)


def live_primary(settings: Settings, role: str, replica_id: int) -> str | None:
    """The URI of the primary that the coordinators' view of ``role`` names, if it is not this
    replica and answers as primary; waits up to ``failover_timeout`` for one."""
    log.info("%s: looking for a live primary of its group (up to %.0f s)",
             service_name(role, replica_id), settings.failover_timeout)
    deadline = time.monotonic() + settings.failover_timeout
    coordinators, replicas = Coordinators(settings), ProxyPool(settings)
    try:
        while True:
            uri = _answering_primary(coordinators, replicas, role, replica_id)
            if uri is not None or time.monotonic() >= deadline:
                return uri
            time.sleep(settings.heartbeat_interval)  # polling a condition with a deadline
    finally:
        coordinators.close()
        replicas.close()


def _answering_primary(coordinators: Coordinators, replicas: ProxyPool, role: str,
                       replica_id: int) -> str | None:
    try:
        view = coordinators.read("view", role)
        primary = view.get("primary")
        if primary is None or primary == replica_id:
            return None
        uri = view_uris(view).get(primary, "")
        info = replicas.call(uri, "info")
    except (*TRANSPORT_FAILURES, PyrostoreError):
        return None
    return uri if info.get("state") == "primary" else None
