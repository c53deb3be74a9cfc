"""Primary-backup replication of a group's state machine: the same for catalog and order.

A :class:`ReplicatedService` is one replica. Its heartbeat thread renews its lease with the
coordinator and learns the group's view; everything else follows from the view:

- **primary**: once it has brought every backup level (same applied position, else a full
  snapshot) it serves. A write, under the database's write lock, gets the next sequence
  number, is applied in an open transaction, forwarded to every backup (each applies it
  durably and acks), and commits here only then, and only while this replica still leads.
  A backup that does not ack is reported; the write waits until the coordinator has
  dropped it (after its lease), so an acknowledged write is on every member of the view.
- **backup**: applies forwarded writes in order, refuses writes from an older epoch, and
  serves reads once the primary of its epoch has confirmed it. An item written by a write
  not yet known to be committed is *dirty*: its reads are asked of the primary (CRAQ).
- **joining** (new, restarted, dropped or deposed): serves nothing; asks the primary to join,
  receives a snapshot under the primary's write lock, and becomes a backup in the next epoch.

No replica serves anything, reads included, without a valid lease, counted from when it
sent the heartbeat that was answered, and a value read is returned only if the lease was
still valid after reading it.
"""

from __future__ import annotations

import functools
import logging
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import Pyro5.api
import Pyro5.errors

from pyrostore.config import Settings
from pyrostore.discovery import NotSent, ProxyPool, ReplicaSet
from pyrostore.errors import (
    NotServing,
    OutcomeUnknown,
    PyrostoreError,
    StaleEpoch,
)
from pyrostore.metrics import timed_methods
from pyrostore.models import View, view_uris
from pyrostore.serving import Service
from pyrostore.store import Database

log = logging.getLogger(__name__)
T = TypeVar("T")
PEER_FAILURES = (NotSent, NotServing, Pyro5.errors.CommunicationError)
"""What a backup's failure to take a forwarded message looks like to the primary."""
SNAPSHOT_TIMEOUT = 60.0
"""Seconds a snapshot transfer may take (a large catalog is megabytes)."""


@timed_methods
class ReplicatedService(Service):
    """One replica of a group; subclasses give the state machine (``_apply``, ``_keys``)."""

    hook_names = ("hold_before_commit",)

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
        self._aside = ThreadPoolExecutor(max_workers=1, thread_name_prefix="publish")
        self._coordinator = ReplicaSet(settings, "coordinator")
        self._notifier = _CommitNotifier(self)

    # -- what a group's state machine provides -----------------------------------------

    def _apply(self, op: dict[str, Any], request_id: str, conn: sqlite3.Connection,
               seq: int) -> Any:
        """Apply ``op`` as write ``seq`` in the open transaction; its plain-dict result."""
        raise NotImplementedError

    def _keys(self, op: dict[str, Any], result: Any) -> list[str]:
        """The read keys a write changes (``item:1``, ``topic:…``): what turns dirty."""
        raise NotImplementedError

    def _publish(self, epoch: int, seq: int, keys: list[str]) -> None:
        """Called once every backup holds write ``seq``, before it commits (caches hook here)."""

    def _on_lead(self, continuing: bool) -> None:
        """Called when this replica starts to serve as primary (``continuing``: it already did,
        in the epoch before)."""

    # -- the service's own calls ---------------------------------------------------------

    def _write(self, op: dict[str, Any], request_id: str) -> Any:
        """The one path of every write: at the primary, replicated, at most once per id."""
        self._await_ready_primary()
        forwarding: list[int] = []  # the seq, once forwarding began: backups may hold it

        def replicate(seq: int, result: Any) -> None:
            forwarding.append(seq)
            self._replicate(seq, op, request_id, result)

        try:
            result = self.db.execute(op, request_id,
                                     functools.partial(self._apply, op, request_id),
                                     before_commit=replicate)
        except OutcomeUnknown:
            raise
        except BaseException as exc:
            if not forwarding:
                raise  # refused before anyone saw it (OutOfStock, ...): nothing happened
            with self._changed:  # backups may hold a write we did not commit: rejoin level
                self._step_down(f"write {forwarding[0]} failed after forwarding: {exc}")
            raise OutcomeUnknown(f"{self.name} failed during a write ({exc}); "
                                 "retry with the same request id") from exc
        if forwarding:
            self._notifier.committed(self._view().epoch, forwarding[0])
        return result

    def _read(self, keys: list[str], local: Callable[[], T], method: str, *args: Any) -> T:
        """A read served here if this replica may, else refused; dirty keys go to the primary."""
        with self._changed:
            self._check_serving(("primary", "backup"))
            dirty = self.state == "backup" and self._is_dirty(keys)
            primary_uri = self.uris.get(self.view.primary or 0, "")
        if dirty:
            try:
                answer: T = self._peers.call(primary_uri, method, *args)
                return answer
            except (NotSent, Pyro5.errors.CommunicationError) as exc:
                raise NotServing(f"{self.name} cannot reach its primary",
                                 primary=primary_uri) from exc
        value = local()
        with self._changed:
            self._check_serving(("primary", "backup"))  # the lease held while reading
            dirty = self.state == "backup" and self._is_dirty(keys)  # a write landed meanwhile
        if dirty:
            return self._read(keys, local, method, *args)
        return value

    # -- what the primary calls on backups -----------------------------------------------

    @Pyro5.api.expose
    def replicate(self, epoch: int, seq: int, op: dict[str, Any], request_id: str,
                  result: Any, keys: list[str], committed: int) -> None:
        """Apply the primary's write ``seq`` durably (a repeat is acknowledged again)."""
        with self.db.locked():
            self._accept_from_primary(epoch)
            applied = self.db.applied()
            if seq > applied + 1:
                raise NotServing(f"{self.name} is at {applied}, cannot apply {seq}")
            if seq <= applied and self.db.request_at(seq) != request_id:
                with self._changed:
                    self._step_down(f"write {seq} here is not the primary's")
                raise NotServing(f"{self.name} holds another write {seq}; it rejoins")
            if seq == applied + 1:
                with self._changed:  # dirty before it is applied: no read sees it early
                    for key in keys:
                        self.dirty[key] = seq
                self.db.apply_replicated(seq, op, request_id, result,
                                         functools.partial(self._apply, op, request_id))
        self._confirm(epoch, committed)

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

    # -- the primary's side of a write ---------------------------------------------------

    def _replicate(self, seq: int, op: dict[str, Any], request_id: str, result: Any) -> None:
        """Forward write ``seq`` to every backup; return once this replica may commit it."""
        keys = self._keys(op, result)
        # telling the caches does not depend on the backups: do both at once
        published = self._aside.submit(self._publish, self._view().epoch, seq, keys)
        for backup in self._view().backups:
            self._forward(backup, seq, op, request_id, result, keys)
        published.result()
        self.hooks.point("hold_before_commit")  # tests: a primary stopped before it commits
        with self._changed:
            if not self._leads() or time.monotonic() >= self.lease_until:
                self._step_down("lease lost before commit")
                raise OutcomeUnknown(f"{self.name} lost its lease during a write; "
                                     "retry with the same request id")

    def _forward(self, backup: int, seq: int, op: dict[str, Any], request_id: str,
                 result: Any, keys: list[str]) -> None:
        deadline = time.monotonic() + self.settings.failover_timeout
        reported = False
        while True:
            with self._changed:
                if backup not in self.view.backups:
                    return  # dropped from the view: this write no longer needs it
                if not self._leads() or time.monotonic() > deadline:
                    self._step_down("deposed during a write")
                    raise OutcomeUnknown(f"{self.name} stopped leading during a write; "
                                         "retry with the same request id")
                epoch, uri = self.view.epoch, self.uris.get(backup, "")
            try:
                self._peers.call(uri, "replicate", epoch, seq, op, request_id, result, keys,
                                 seq - 1)
                return
            except StaleEpoch:
                with self._changed:
                    self._step_down("a backup is in a newer epoch")
                raise OutcomeUnknown(f"{self.name} was deposed during a write") from None
            except PEER_FAILURES as exc:
                if not reported:
                    log.warning("%s: backup %d failed (%s); reporting it", self.name, backup,
                                exc)
                    reported = True
                self._report(epoch, backup)  # every round: a report can be lost
            with self._changed:  # wait for the coordinator to drop it (after its lease)
                self._changed.wait(self.settings.heartbeat_interval)

    def _report(self, epoch: int, backup: int) -> None:
        try:
            self._coordinator.call("report_failure", self.role, epoch, self.replica_id, backup,
                                   patience=0)
        except PyrostoreError as exc:
            log.warning("%s could not report backup %d: %s", self.name, backup, exc)

    # -- the view: heartbeats, adopting views, leading and joining -----------------------

    def start(self) -> None:
        threading.Thread(target=self._heartbeats, name="heartbeat", daemon=True).start()
        self._notifier.start()

    def close(self) -> None:
        self._stopping.set()
        with self._changed:
            self._changed.notify_all()
        self._notifier.stop()
        self._aside.shutdown(wait=False, cancel_futures=True)
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


class _CommitNotifier:
    """Tells the backups, off the write path, how far the primary has committed."""

    def __init__(self, replica: ReplicatedService) -> None:
        self.replica = replica
        self._latest = (0, 0)  # (epoch, seq) of the newest commit
        self._sent = (0, 0)
        self._wake = threading.Condition()
        self._stopping = False

    def committed(self, epoch: int, seq: int) -> None:
        """Write ``seq`` committed while this replica led ``epoch``."""
        with self._wake:
            self._latest = max(self._latest, (epoch, seq))
            self._wake.notify()

    def start(self) -> None:
        threading.Thread(target=self._run, name="commit-notifier", daemon=True).start()

    def stop(self) -> None:
        with self._wake:
            self._stopping = True
            self._wake.notify()

    def _run(self) -> None:
        replica = self.replica
        while True:
            with self._wake:
                self._wake.wait_for(lambda: self._stopping or self._latest > self._sent)
                if self._stopping:
                    return
                epoch, seq = self._sent = self._latest
            with replica._changed:
                view, leads = replica.view, replica._leads()
            if not leads or view.epoch != epoch:
                continue  # a newer epoch confirms its backups itself (_lead)
            for backup in view.backups:
                try:
                    replica._peers.call(replica.uris.get(backup, ""), "committed", epoch, seq)
                except (*PEER_FAILURES, PyrostoreError) as exc:
                    log.debug("commit notice to %d failed: %s", backup, exc)
