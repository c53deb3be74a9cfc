"""A replica's place in its group: heartbeats, leases, views, leading, levelling, joining.

A :class:`Membership` heartbeats the coordinator about every 100 ms, holds the lease each
answer grants (counted from when the heartbeat was *sent*), and follows the group's view:

- named **primary**: it brings every backup level (same position and same last request id,
  else a full snapshot) or sees it dropped, and only then serves;
- named **backup**: it serves reads once the primary of its epoch has confirmed it level;
- outside the view (new, restarted, dropped or deposed), **joining**: it serves nothing and asks
  the primary to take it in; the primary snapshots it under its write lock and has the
  coordinator add it in the next epoch.

It refuses any message from a primary older than the newest epoch it has seen (fencing), and
nothing is served, reads included, without a valid lease. :mod:`pyrostore.replication` builds
the write and read paths on top of it.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import Pyro5.api
import Pyro5.errors

from pyrostore.config import Settings
from pyrostore.discovery import NotSent, ProxyPool, ReplicaSet
from pyrostore.errors import NotServing, PyrostoreError, StaleEpoch
from pyrostore.metrics import timed_methods
from pyrostore.models import View, view_uris
from pyrostore.serving import Service
from pyrostore.store import Database

log = logging.getLogger(__name__)
PEER_FAILURES = (NotSent, NotServing, Pyro5.errors.CommunicationError)
"""What a peer's failure to take a message looks like."""
SNAPSHOT_TIMEOUT = 60.0
"""Seconds a snapshot transfer may take (a large catalog is megabytes)."""


@timed_methods
class Membership(Service):
    """A replica's part in its group, as the coordinator's views and its lease decide."""

    def __init__(self, settings: Settings, replica_id: int, db: Database) -> None:
        super().__init__(settings, replica_id)
        self.db = db
        self.incarnation = uuid.uuid4().hex
        self._changed = threading.Condition()  # guards the fields below; notified on change
        self.view = View()
        self.uris: dict[int, str] = {}
        self.state = "joining"
        self.lease_until = 0.0
        self.confirmed_epoch = 0  # the epoch in which this replica is level with its primary
        self.committed_seq = 0  # every write up to here is known to be committed
        self.dirty: dict[str, int] = {}  # key -> newest write to it not known to be committed
        self.fence = 0  # the newest epoch any primary or view has shown: older ones are refused
        self._stopping = threading.Event()
        self._joiner: threading.Thread | None = None
        self._peers = ProxyPool(settings)
        self._bulk = ProxyPool(settings, timeout=max(SNAPSHOT_TIMEOUT, settings.call_timeout))
        self._coordinator = ReplicaSet(settings, "coordinator")

    def _on_lead(self, continuing: bool) -> None:
        """Called when this replica starts to serve as primary (``continuing``: it already did,
        in the epoch before)."""

    # -- what a primary calls on its backups ---------------------------------------------

    @Pyro5.api.expose
    def committed(self, epoch: int, seq: int) -> None:
        """The primary of ``epoch`` has committed every write up to ``seq``."""
        with self.db.locked():
            self._accept_from_primary(epoch)
            self._confirm(epoch, seq)

    @Pyro5.api.expose
    def position(self, epoch: int) -> int:
        """This replica's applied position, for a primary levelling its backups."""
        with self.db.locked():
            self._accept_from_primary(epoch)
            return self.db.applied()

    @Pyro5.api.expose
    def install_snapshot(self, epoch: int, snapshot: dict[str, Any]) -> None:
        """Replace this replica's whole state by the primary's, dropping any tail of its own."""
        with self.db.locked():
            self._accept_from_primary(epoch)
            self.db.install(snapshot)
            with self._changed:
                self.dirty.clear()
                self.committed_seq = int(snapshot["applied"])
        log.info("%s installed a snapshot at %d (epoch %d)", self.name, snapshot["applied"],
                 epoch)

    @Pyro5.api.expose
    def join(self, replica_id: int, uri: str) -> dict[str, Any]:
        """A joiner asks to become a backup: snapshot it, then have the coordinator add it."""
        self._await_ready_primary()
        with self.db.locked():
            with self._changed:
                self._check_serving(("primary",))
                epoch = self.view.epoch
            self._bulk.call(uri, "install_snapshot", epoch, self.db.snapshot())
            try:
                answer: dict[str, Any] = self._coordinator.call(
                    "add_member", self.role, epoch, self.replica_id, replica_id, uri,
                    patience=0)
            except StaleEpoch:
                raise
            except PyrostoreError:
                # the coordinator may have added it: writes without it could then be lost
                with self._changed:
                    self._step_down(f"the outcome of adding {replica_id} is unknown")
                raise
            self._adopt(View.from_wire(answer), view_uris(answer))
        return answer
    def _report(self, epoch: int, backup: int) -> None:
        try:
            self._coordinator.call("report_failure", self.role, epoch, self.replica_id, backup,
                                   patience=0)
        except PyrostoreError as exc:
            log.warning("%s could not report backup %d: %s", self.name, backup, exc)

    # -- the view: heartbeats, adopting views, leading and joining -----------------------

    def start(self) -> None:
        threading.Thread(target=self._heartbeats, name="heartbeat", daemon=True).start()

    def close(self) -> None:
        self._stopping.set()
        with self._changed:
            self._changed.notify_all()
        self._peers.close()
        self._bulk.close()
        self._coordinator.close()

    def _heartbeats(self) -> None:
        interval = self.settings.heartbeat_interval
        while not self._stopping.is_set():
            sent = time.monotonic()
            with self._changed:
                epoch, state = self.view.epoch, self.state
            try:
                answer = self._coordinator.call(
                    "heartbeat", self.role, self.replica_id, self.uri, self.incarnation, epoch,
                    self.db.applied(), state, patience=0)
            except (PyrostoreError, sqlite3.Error) as exc:
                log.debug("%s heartbeat failed: %s", self.name, exc)
            else:
                with self._changed:
                    if answer["lease"] > 0:
                        self.lease_until = max(self.lease_until, sent + answer["lease"])
                    self._adopt(View.from_wire(answer["view"]), view_uris(answer["view"]))
                    self._changed.notify_all()
            self._stopping.wait(max(0.0, sent + interval - time.monotonic()))

    def _adopt(self, view: View, uris: dict[int, str]) -> None:
        """Take a newer view from the coordinator (called with ``_changed`` held)."""
        with self._changed:
            self.uris.update(uris)
            if view.epoch <= self.view.epoch:
                return
            continuing = self._leads() and self.confirmed_epoch == self.view.epoch
            self.view = view
            role = view.role_of(self.replica_id)
            log.info("%s: epoch %d, primary %s, backups %s: %s", self.name, view.epoch,
                     view.primary, list(view.backups), role)
            if role == "primary":  # promoted, or leading on in a new epoch: level, then serve
                self.state = "primary"
                self._start(self._lead, view, continuing)
            elif role == "backup" and self.state != "primary":
                self.state = "backup"
            else:
                self._step_down(f"not a backup of epoch {view.epoch}" if role == "backup"
                                else f"outside epoch {view.epoch}")
            self._changed.notify_all()

    def _lead(self, view: View, continuing: bool) -> None:
        """Bring every backup level (or see it dropped), then serve as primary of ``view``."""
        with self.db.locked():
            applied = self.db.applied()
            snapshot: dict[str, Any] | None = None
            for backup in view.backups:
                snapshot = self._level(view, backup, applied, snapshot)
                if snapshot is _GIVE_UP:
                    return
            with self._changed:
                if self.view.epoch == view.epoch and self.state == "primary":
                    self.confirmed_epoch, self.committed_seq = view.epoch, applied
                    self.dirty.clear()
                    self._on_lead(continuing)
                    self._changed.notify_all()
                    log.info("%s leads epoch %d at %d", self.name, view.epoch, applied)

    def _level(self, view: View, backup: int, applied: int,
               snapshot: dict[str, Any] | None) -> dict[str, Any] | None:
        """Make ``backup`` hold exactly this replica's state (same position and last write,
        else a snapshot); a backup that cannot be levelled is reported until the coordinator
        drops it. Returns the snapshot taken, if any, or ``_GIVE_UP`` if this replica no
        longer leads ``view``."""
        deadline = time.monotonic() + self.settings.failover_timeout
        while True:
            with self._changed:
                if self.view.epoch != view.epoch or not self._leads():
                    return _GIVE_UP  # superseded: a newer view has its own _lead
                if backup not in self.view.backups:
                    return snapshot
                if time.monotonic() > deadline:
                    self._step_down(f"could not level backup {backup}")
                    return _GIVE_UP
                uri = self.uris.get(backup, "")
            try:
                position = self._peers.call(uri, "position", view.epoch)
                last = self.db.request_at(applied)
                if position != applied or self._peers.call(uri, "request_at", applied) != last:
                    snapshot = snapshot or self.db.snapshot()
                    self._bulk.call(uri, "install_snapshot", view.epoch, snapshot)
                self._peers.call(uri, "committed", view.epoch, applied)
                return snapshot
            except StaleEpoch:
                with self._changed:
                    self._step_down("a backup is in a newer epoch")
                return _GIVE_UP
            except PEER_FAILURES as exc:
                log.warning("%s could not level backup %d: %s", self.name, backup, exc)
                self._report(view.epoch, backup)
            with self._changed:
                self._changed.wait(self.settings.heartbeat_interval)

    @Pyro5.api.expose
    def request_at(self, seq: int) -> str | None:
        """The request id of this replica's write ``seq`` (levelling compares it)."""
        return self.db.request_at(seq)

    def _join(self) -> None:
        """While outside the view: ask the primary to take this replica in."""
        while not self._stopping.is_set():
            with self._changed:
                if self.state != "joining":
                    return
                primary_uri = self.uris.get(self.view.primary or 0)
            if primary_uri:
                try:
                    answer = self._peers.call(primary_uri, "join", self.replica_id, self.uri)
                    self._adopt(View.from_wire(answer), view_uris(answer))
                except (*PEER_FAILURES, PyrostoreError) as exc:
                    log.debug("%s: join failed: %s", self.name, exc)
            with self._changed:
                self._changed.wait(self.settings.lease / 2)

    def _step_down(self, why: str) -> None:
        """Stop serving and rejoin by snapshot (called with ``_changed`` held)."""
        if self.state != "joining":
            log.warning("%s stops serving: %s", self.name, why)
        self.state, self.confirmed_epoch = "joining", 0
        self._changed.notify_all()
        if self._joiner is None or not self._joiner.is_alive():
            self._joiner = self._start(self._join)

    def _start(self, task: Callable[..., None], *args: Any) -> threading.Thread:
        thread = threading.Thread(target=task, args=args, name=task.__name__, daemon=True)
        thread.start()
        return thread

    # -- checks ----------------------------------------------------------------------------

    def _accept_from_primary(self, epoch: int) -> None:
        """Fencing (called under the write lock): refuse a primary older than any seen."""
        with self._changed:
            newest = max(self.view.epoch, self.fence)
            if epoch < newest:
                raise StaleEpoch(f"{self.name} is at epoch {newest}, not {epoch}")
            if self.state == "primary":
                if epoch > self.view.epoch:
                    self._step_down(f"a primary of epoch {epoch} wrote to it")
                raise NotServing(f"{self.name} is itself the primary of epoch {self.view.epoch}")
            self.fence = epoch

    def _confirm(self, epoch: int, committed: int) -> None:
        with self._changed:
            self.confirmed_epoch = max(self.confirmed_epoch, epoch)
            if committed > self.committed_seq:
                self.committed_seq = committed
                self.dirty = {k: s for k, s in self.dirty.items() if s > committed}
            self._changed.notify_all()

    def _is_dirty(self, keys: list[str]) -> bool:
        if self.committed_seq < self.db.applied() and not self.dirty:
            return True  # restarted with writes whose keys it no longer knows
        return any(key in self.dirty for key in keys)

    def _leads(self) -> bool:
        return self.state == "primary" and self.view.primary == self.replica_id

    def _view(self) -> View:
        with self._changed:
            return self.view

    def _check_serving(self, roles: tuple[str, ...]) -> None:
        """Raise NotServing unless this replica is ready in one of ``roles`` with a lease."""
        if (self.state not in roles or self.confirmed_epoch != self.view.epoch
                or time.monotonic() >= self.lease_until):
            raise NotServing(f"{self.name} is not serving ({self._why_not()})",
                             primary=self.uris.get(self.view.primary or 0, ""))

    def _why_not(self) -> str:
        if time.monotonic() >= self.lease_until:
            return "no lease"
        if self.confirmed_epoch != self.view.epoch:
            return f"{self.state}, not yet level in epoch {self.view.epoch}"
        return f"it is a {self.state}"

    def _await_ready_primary(self) -> None:
        """Wait (up to a lease) for a primary still levelling; refuse if not the primary."""
        deadline = time.monotonic() + self.settings.lease
        with self._changed:
            while True:
                try:
                    self._check_serving(("primary",))
                    return
                except NotServing:
                    if self.state != "primary" or time.monotonic() >= deadline:
                        raise
                self._changed.wait(self.settings.heartbeat_interval)

    def details(self) -> dict[str, Any]:
        with self._changed:
            serving = (self.state in ("primary", "backup")
                       and self.confirmed_epoch == self.view.epoch
                       and time.monotonic() < self.lease_until)
            return {"state": self.state, "serving": serving, "epoch": self.view.epoch,
                    "applied": self.db.applied(), "primary": self.view.primary,
                    "backups": list(self.view.backups), "confirmed_epoch": self.confirmed_epoch,
                    "lease_left": round(max(0.0, self.lease_until - time.monotonic()), 3)}



_GIVE_UP: dict[str, Any] = {}
"""Returned by ``_level`` when this replica no longer leads the view it was levelling."""

