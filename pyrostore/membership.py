"""A replica's place in its group: heartbeats, leases, views, leading, levelling, joining.

A :class:`Membership` heartbeats the coordinator leader every interval (0.25 s), holds the
lease each answer grants (counted from when the heartbeat was *sent*), and follows the
group's view:

- named **primary**: it brings every backup level (:mod:`pyrostore.transfers`: nothing to do,
  the writes it missed from the log, or a snapshot) or sees it dropped, and only then serves;
- named **backup**: it serves reads once the primary of its epoch has confirmed it level;
- outside the view (new, restarted, dropped or deposed), **joining**: it serves nothing and asks
  the primary to take it in, saying where it is. The primary brings it up while writes go on
  (from the log, or by a snapshot streamed from one read transaction, then the log); only the
  last step takes the write lock: the few writes made since, a check that the joiner is level,
  and the coordinators adding it in the next epoch.

It refuses any message from a primary older than the newest epoch it has seen (fencing), and
nothing is served, reads included, without a valid lease. What it decides is
:class:`~pyrostore.replica_core.ReplicaCore`'s (a plain object); this is the shell that feeds
it (heartbeats, the primary's messages) and acts on its answers (levelling, joining).
:mod:`pyrostore.replication` builds the write and read paths on top of it.

Threads: the daemon's threads serve calls; ``heartbeat`` renews the lease (and hears of views);
``_lead`` levels the backups of a new view; ``_join`` asks the primary to take this replica in.
``core`` belongs to whoever holds ``changed`` (a condition, notified on every change); the
database's write lock (``db.locked()``) is taken before ``changed`` when both are needed.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from pyrostore.config import Settings
from pyrostore.discovery import Coordinators, peer_uri, service_name
from pyrostore.errors import (
    InvalidRequest,
    NotServing,
    ProtocolVersionError,
    PyrostoreError,
    StaleEpoch,
    Unavailable,
)
from pyrostore.hooks import Hooks
from pyrostore.models import View, view_uris
from pyrostore.replica_core import ReplicaCore, WriteName
from pyrostore.snapshots import CheckRows, Staging
from pyrostore.store import Database
from pyrostore.transfers import MAX_FORWARD, Keys, Sender
from pyrostore.transport import TRANSPORT_FAILURES, ProxyPool

log = logging.getLogger(__name__)
PEER_FAILURES = (*TRANSPORT_FAILURES, NotServing)
"""What a peer's failure to take a message looks like."""
RETRY_RENEWAL = 0.05
"""Seconds before a failed heartbeat is tried again (at most; the interval if shorter)."""
PART_TIMEOUT = 60.0
"""Seconds one part of a snapshot, or one forward of a catch-up, may take to arrive and be
stored (a part is a megabyte)."""
JOIN_TIMEOUT = 600.0
"""Seconds a joiner waits for the primary to bring it up and add it (a million books take
seconds; a primary that dies closes the connection at once). A snapshot that arrived whole
stays installed even if the wait ran out: the next request catches up from there; one still
under way is given up, and the next request starts over."""


class Membership:
    """A replica's part in its group, as the coordinators' views and its lease decide.

    Composed into a :class:`~pyrostore.replication.ReplicatedGroup`; what peers call on it
    arrives through that group's :class:`~pyrostore.replication.PeerEndpoint`.
    """

    def __init__(self, settings: Settings, role: str, replica_id: int, db: Database, *,
                 keys: Keys, check_rows: CheckRows, hooks: Hooks,
                 on_refused: Callable[[ProtocolVersionError], None] | None = None) -> None:
        """``keys`` and ``check_rows``: the group's state machine's read keys of a write and
        its check of a snapshot's rows. ``on_refused``: told when the group refuses this
        replica's protocol version (a process of another release): the replica cannot join,
        and should stop."""
        self.settings = settings
        self.on_refused = on_refused
        self.role = role
        self.replica_id = replica_id
        self.name = service_name(role, replica_id)
        self.uri = ""  # the replica's service URI, once it serves (start)
        self.db = db
        self.incarnation = uuid.uuid4().hex
        self.changed = threading.Condition()  # guards core; notified on every change
        self.core = ReplicaCore(replica_id, self.incarnation, name=self.name)
        self.stopping = threading.Event()
        self._nudged = threading.Event()  # set to heartbeat at once (and on stopping)
        self._joiner: threading.Thread | None = None
        self.peers = ProxyPool(settings)
        self._bulk = ProxyPool(settings, timeout=max(PART_TIMEOUT, settings.call_timeout))
        self._joining = ProxyPool(settings, timeout=max(JOIN_TIMEOUT, settings.call_timeout))
        self.sender = Sender(db, keys, self._bulk, hooks=hooks,
                             behind_limit=lambda: settings.catch_up_limit)
        self.staging = Staging(db, check_rows)
        self.rejoined: dict[str, Any] = {}
        """How this replica last joined: by what, from and to which position, seconds."""
        self.installed = 0
        """Snapshots installed since it started."""
        self._caught_up = 0  # writes received while joining
        self._attempts: dict[int, str] = {}  # primary: joiner -> its latest request's token
        self._attempt: str | None = None  # joiner: its request to join under way (write lock)
        # a renewal must fail fast: a dead coordinator leader is replaced within the lease
        self._coordinators = Coordinators(settings, timeout=min(settings.call_timeout,
                                                                settings.lease / 3))
        self._heartbeat_seq = 0

    # -- what a primary calls on its backups ---------------------------------------------

    def committed(self, epoch: int, seq: int) -> None:
        """The primary of ``epoch`` has committed every write up to ``seq``."""
        with self.db.locked():
            self.accept_from_primary(epoch)
            self.confirm(epoch, seq)

    def position(self, epoch: int) -> int:
        """This replica's applied position, for a primary levelling its backups."""
        with self.db.locked():
            self.accept_from_primary(epoch)
            return self.db.applied()

    def install_snapshot(self, epoch: int, part: dict[str, Any]) -> None:
        """One part (:meth:`Staging.check` ed) of the primary's snapshot; with the last,
        replace this replica's whole state by it, dropping any tail of its own."""
        with self.db.locked():
            self.check_transfer(epoch, part["transfer"])  # refused before the fence moves
            self.staging.expect(part)
            self.accept_from_primary(epoch)
            applied = self.staging.add(part)
            if applied is None:
                return
            with self.changed:
                self.core.installed(applied)
                self.installed += 1
        log.info("%s installed a snapshot at %d (epoch %d)", self.name, applied, epoch)

    def check_transfer(self, epoch: int, token: str) -> None:
        """(Holding the write lock.) Refuse a transfer (a snapshot's part, writes of a
        catch-up) unless it is of this replica's request to join under way, if it is
        joining, and of an epoch in which it is not yet level: a transfer of an earlier
        request, or one that arrives once the primary has found it level, would take it
        back."""
        with self.changed:
            if epoch <= self.core.confirmed_epoch:
                raise NotServing(f"{self.name} is level in epoch {self.core.confirmed_epoch}: "
                                 f"a transfer of epoch {epoch} would take it back")
            if self.core.state == "joining" and token != self._attempt:
                raise InvalidRequest(f"{self.name} is not asking to join with {token[:12]} "
                                     "(an earlier request's transfer)")

    def check_forward(self, epoch: int) -> None:
        """(Holding the write lock.) A joining replica takes a primary's forwards only once
        that primary has found it level in their epoch (the view that adds it); before, an
        acknowledgement from it could be undone by the transfer under way."""
        with self.changed:
            if self.core.state == "joining" and self.core.confirmed_epoch != epoch:
                raise NotServing(f"{self.name} is joining: it takes no forwards of epoch "
                                 f"{epoch} before it is level in it")

    def caught_up(self, writes: int) -> None:
        """(Holding the write lock.) ``writes`` forwarded writes applied; counted while joining."""
        with self.changed:
            if self.core.state == "joining":
                self._caught_up += writes

    def join(self, replica_id: int, uri: str, incarnation: str, position: int,
             last_write: WriteName | None, token: str) -> dict[str, Any]:
        """A joiner (checked by the peer endpoint) at ``position``, ``last_write`` its write
        there, asks to become a backup, ``token`` naming this request: bring it up while
        writes go on, then (under the write lock) send it the last few, check it is level,
        and have the coordinators add it. A newer request from the same joiner supersedes
        this one (it gave up waiting)."""
        started = time.monotonic()
        self.await_ready_primary()
        with self.changed:
            self.check_serving(("primary",))
            self._attempts[replica_id] = token

        def wanted() -> int:
            with self.changed:
                if self._attempts.get(replica_id) != token:
                    raise Unavailable(f"a newer request of replica {replica_id} to join took "
                                      "over")
                if not self.core.leads() or self.stopping.is_set():
                    raise NotServing(f"{self.name} no longer leads")
                return self.core.view.epoch

        peer, figures = peer_uri(uri), {"rows": 0, "writes": 0}
        reached = self.sender.bring_up(peer, token, position, last_write, wanted)
        while self.db.applied() - reached > MAX_FORWARD and \
                time.monotonic() < started + JOIN_TIMEOUT / 2:
            # writes went on meanwhile: catch up with them too, so little is left to do locked
            reached = self.sender.send_log(peer, token, reached, self.db.applied(), figures,
                                           wanted)
        self.await_ready_primary()
        with self.db.locked():
            epoch = wanted()
            with self.changed:
                self.check_serving(("primary",))
            applied = self.db.applied()
            if applied - reached > MAX_FORWARD:  # it cannot keep up: never a long wait locked
                raise Unavailable(f"replica {replica_id} is {applied - reached} writes behind "
                                  "after its transfer; it must ask again")
            self.sender.send_log(peer, token, reached, applied, figures, wanted,
                                 via=self.peers)
            held = self.peers.call(peer, "write_at", applied) if applied else None
            if self.peers.call(peer, "position", epoch) != applied or \
                    (tuple(held) if held else None) != (self.db.write_at(applied)
                                                        if applied else None):
                raise Unavailable(f"replica {replica_id} is not level at {applied} after its "
                                  "transfer; it must ask again")
            try:
                answer: dict[str, Any] = self._coordinators.command("add_member", {
                    "group": self.role, "epoch": epoch, "primary": self.replica_id,
                    "joiner": replica_id, "incarnation": incarnation})
            except StaleEpoch:
                raise
            except PyrostoreError:
                # the coordinator may have added it: writes without it could then be lost
                with self.changed:
                    self.step_down(f"the outcome of adding {replica_id} is unknown")
                raise
            self._adopt(View.from_wire(answer), view_uris(answer))
        return answer

    def nudge(self) -> None:
        """The coordinators changed this replica's view: heartbeat now to hear of it."""
        self._nudged.set()

    def report(self, epoch: int, backup: int) -> None:
        """As primary of ``epoch``: ``backup`` did not take a message (the coordinators renew it
        no more, and drop it once its lease is over)."""
        try:
            self._coordinators.command("report_failure", {
                "group": self.role, "epoch": epoch, "reporter": self.replica_id,
                "failed": backup})
        except PyrostoreError as exc:
            log.warning("%s could not report backup %d: %s", self.name, backup, exc)

    # -- the view: heartbeats, adopting views, leading and joining -----------------------

    def start(self, uri: str) -> None:
        """Heartbeat (and so join the group) as the replica serving at ``uri``."""
        self.uri = uri
        threading.Thread(target=self._heartbeats, name="heartbeat", daemon=True).start()

    def close(self) -> None:
        """Stop every thread and close every connection."""
        self.stopping.set()
        self._nudged.set()
        with self.changed:
            self.changed.notify_all()
        self.peers.close()
        self._bulk.close()
        self._joining.close()
        self._coordinators.close()

    def _heartbeats(self) -> None:
        """Renew the lease every interval; after a failure (a coordinator election, most
        likely) try again sooner, so that the new leader is found within the lease."""
        while not self.stopping.is_set():
            interval = self.settings.heartbeat_interval
            sent = time.monotonic()
            with self.changed:
                epoch, state = self.core.view.epoch, self.core.state
            self._heartbeat_seq += 1
            try:
                answer = self._coordinators.command("renew", {
                    "group": self.role, "replica": self.replica_id,
                    "incarnation": self.incarnation, "seq": self._heartbeat_seq,
                    "uri": self.uri, "applied": self.db.applied(), "epoch": epoch,
                    "state": state})
            except ProtocolVersionError as exc:
                self._refused(exc)
                return
            except (PyrostoreError, sqlite3.Error) as exc:
                log.debug("%s heartbeat failed: %s", self.name, exc)
                interval = min(interval, RETRY_RENEWAL)
            else:
                with self.changed:
                    self.core.renewed(sent, answer["lease"])
                    self._adopt(View.from_wire(answer["view"]), view_uris(answer["view"]))
                    self.changed.notify_all()
            self._nudged.wait(max(0.0, sent + interval - time.monotonic()))
            self._nudged.clear()

    def _adopt(self, view: View, uris: dict[int, str]) -> None:
        """Take a newer view from the coordinators, and act on it."""
        with self.changed:
            adopted = self.core.adopt(view, uris)
            if adopted is None:
                return
            log.info("%s: epoch %d, primary %s, backups %s: %s", self.name, view.epoch,
                     view.primary, list(view.backups), self.core.state)
            if adopted.action == "lead":
                self._start(self._lead, view)
            elif adopted.action == "join":
                self._stepped_down(adopted.why, was_serving=adopted.was_serving)
            self.changed.notify_all()

    def _lead(self, view: View) -> None:
        """Bring every backup level (or see it dropped), then serve as primary of ``view``."""
        with self.db.locked():
            applied = self.db.applied()
            for backup in view.backups:
                if not self._level(view, backup, applied):
                    return
            with self.changed:
                if self.core.led(view.epoch, applied):
                    self.changed.notify_all()
                    log.info("%s leads epoch %d at %d", self.name, view.epoch, applied)

    def _level(self, view: View, backup: int, applied: int) -> bool:
        """Make ``backup`` hold exactly this replica's state (:mod:`pyrostore.transfers`); a
        backup that cannot be levelled is reported until the coordinator drops it. Whether
        this replica still leads ``view``."""
        deadline = time.monotonic() + self.settings.failover_timeout
        while True:
            with self.changed:
                if self.core.view.epoch != view.epoch or not self.core.leads() \
                        or self.stopping.is_set():
                    return False  # superseded (a newer view has its own _lead), or stopping
                if backup not in self.core.view.backups:
                    return True
                if time.monotonic() > deadline:
                    self.step_down(f"could not level backup {backup}")
                    return False
                uri = peer_uri(self.core.uris.get(backup, ""))
            try:
                position = self.peers.call(uri, "position", view.epoch)
                held = self.peers.call(uri, "write_at", position) if position else None
                self.sender.bring_up(uri, uuid.uuid4().hex, position,
                                     None if held is None else (held[0], held[1]),
                                     lambda: view.epoch, member=True)
                self.peers.call(uri, "committed", view.epoch, applied)
                return True
            except StaleEpoch:
                with self.changed:
                    self.step_down("a backup is in a newer epoch")
                return False
            except Exception as exc:  # a refusal or a local error: report it, retry
                log.warning("%s could not level backup %d: %s", self.name, backup, exc)
                self.report(view.epoch, backup)
            with self.changed:
                self.changed.wait(self.settings.heartbeat_interval)

    def _join(self) -> None:
        """While outside the view: ask the primary to take this replica in."""
        said = ""
        while not self.stopping.is_set():
            with self.changed:
                if self.core.state != "joining":
                    return
                primary_uri = self.core.primary_uri()
            if primary_uri:
                try:
                    self._ask_to_join(primary_uri)
                except ProtocolVersionError as exc:
                    self._refused(exc)
                    return
                except (*PEER_FAILURES, Unavailable, StaleEpoch) as exc:  # a failover: wait
                    log.debug("%s: join failed: %s", self.name, exc)
                except Exception as exc:  # will not pass by waiting: an operator's news
                    if str(exc) != said:
                        log.warning("%s: join failed: %s", self.name, exc)
                        said = str(exc)
            with self.changed:
                self.changed.wait(self.settings.lease / 2)

    def _ask_to_join(self, primary_uri: str) -> None:
        """Ask the primary to take this replica in; note how it came level. Each request has
        a token of its own, and only its transfer is taken (an earlier one's may still be on
        its way)."""
        started, token = time.monotonic(), uuid.uuid4().hex
        with self.db.locked():
            with self.changed:
                if self.core.state != "joining":
                    return
                self._caught_up = 0
            self._attempt = token
            self.db.unstage()  # an earlier transfer's rows, if one was given up
            position = self.db.applied()
            held = self.db.write_at(position) if position else None
            installed = self.installed
        try:
            answer = self._joining.call(peer_uri(primary_uri), "join", {
                "replica": self.replica_id, "uri": self.uri, "incarnation": self.incarnation,
                "position": position, "last_write": None if held is None else list(held),
                "token": token})
        finally:
            with self.db.locked():
                if self._attempt == token:
                    self._attempt = None
        with self.changed:
            how = ("snapshot" if self.installed > installed
                   else "catch-up" if self._caught_up else "level")
            self.rejoined = {"by": how, "from": position, "to": self.db.applied(),
                             "writes": self._caught_up,
                             "seconds": round(time.monotonic() - started, 3)}
        log.info("%s joined: %s", self.name, self.rejoined)
        self._adopt(View.from_wire(answer), view_uris(answer))

    def _refused(self, error: ProtocolVersionError) -> None:
        """The group refused this replica's protocol version: it will never join."""
        if self.on_refused is None:
            log.error("%s: %s", self.name, error)
        else:
            self.on_refused(error)

    def step_down(self, why: str) -> None:
        """Stop serving and rejoin by snapshot (called with ``changed`` held)."""
        self._stepped_down(why, was_serving=self.core.step_down())

    def _stepped_down(self, why: str, *, was_serving: bool) -> None:
        """The core has stepped down: say why, and ask to join again."""
        if was_serving:
            log.warning("%s stops serving: %s", self.name, why)
        self.changed.notify_all()
        if self._joiner is None or not self._joiner.is_alive():
            self._joiner = self._start(self._join)

    def _start(self, task: Callable[..., None], *args: Any) -> threading.Thread:
        thread = threading.Thread(target=task, args=args, name=task.__name__, daemon=True)
        thread.start()
        return thread

    # -- checks ----------------------------------------------------------------------------

    def accept_from_primary(self, epoch: int) -> None:
        """Fencing (called under the write lock): refuse a primary older than any seen."""
        with self.changed:
            verdict = self.core.fencing(epoch)
            if verdict == "stale":
                raise StaleEpoch(f"{self.name} is at epoch "
                                 f"{max(self.core.view.epoch, self.core.fence)}, not {epoch}")
            if verdict == "deposed":
                self._stepped_down(f"a primary of epoch {epoch} wrote to it", was_serving=True)
            if verdict != "accept":
                raise NotServing(f"{self.name} is itself a primary (epoch "
                                 f"{self.core.view.epoch})")

    def confirm(self, epoch: int, committed: int) -> None:
        """The primary of ``epoch`` says writes up to ``committed`` are committed."""
        with self.changed:
            self.core.confirm(epoch, committed)
            self.changed.notify_all()

    def is_dirty(self, keys: list[str]) -> bool:
        """(Holding ``changed``.) Whether a read of ``keys`` must go to the primary."""
        return self.core.is_dirty(keys, self.db.applied())

    def view(self) -> View:
        """The view held now."""
        with self.changed:
            return self.core.view

    def check_serving(self, roles: tuple[str, ...]) -> None:
        """Raise NotServing unless this replica is ready in one of ``roles`` with a lease."""
        self.core.check_serving(roles, time.monotonic())

    def await_ready_primary(self) -> None:
        """Wait (up to a lease) for a primary still levelling; refuse if not the primary."""
        deadline = time.monotonic() + self.settings.lease
        with self.changed:
            while True:
                try:
                    self.check_serving(("primary",))
                    return
                except NotServing:
                    if self.core.state != "primary" or time.monotonic() >= deadline:
                        raise
                self.changed.wait(self.settings.heartbeat_interval)

    def details(self) -> dict[str, Any]:
        """Its part of the replica's ``info()``."""
        with self.changed:
            return {**self.core.details(time.monotonic()), "applied": self.db.applied(),
                    "rejoin": dict(self.rejoined), "snapshots_installed": self.installed,
                    "brought_up": dict(self.sender.sent)}

