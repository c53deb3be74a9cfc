"""Primary-backup replication of a group's state machine: the same for catalog and order.

A :class:`ReplicatedGroup` is one replica's share of its group, composed into the catalog or
order service with the group's state machine (:class:`StateMachine`); its place in the group
(lease, view, primary, backup or joining) is its :class:`~pyrostore.membership.Membership`'s.
On top of that:

- **writes** (primary only): writes queue up and go in batches (group commit), one batch at a
  time under the database's write lock; each write gets the next sequence number and is
  applied in the batch's open transaction. Then three things run at once: it commits
  here, it is forwarded to every backup (each applies it durably and acks), and the caches
  are told (``publish``). It is acknowledged once all three are done, and only while this
  replica still leads; until then reads of the keys it changed wait at the primary (it may
  be on this disk and no other). A backup that does not ack is reported; the write waits
  until the coordinator has dropped it (after its lease), so an acknowledged write is on
  every member of the view. A failure once the write is under way makes the primary step
  down: it may hold a write its backups do not, or they one that it does not.
- **backups** apply forwarded writes in order, durably, refusing older epochs and foreign
  writes. An item written by a write not yet known to be committed is *dirty*: its reads are
  asked of the primary (CRAQ), so reads spread over all replicas stay linearizable.
- **reads** are served only with a valid lease, checked again after reading.

What the other replicas call (forwards, levelling, joining) arrives at the
:class:`~pyrostore.peer.PeerEndpoint`, a Pyro5 object of its own beside the service on the
same daemon (``<name>.peer``): the service's API stays the clients' only.

Threads: callers' threads run the write and read paths; the batch that a caller's thread
takes runs on it, under the database's write lock; ``_aside`` tells the caches; the commit
notifier tells idle backups how far writes are committed. ``_queue`` and ``_batching`` belong
to whoever holds ``_queue_changed``; ``_in_flight`` to whoever holds the membership's
``changed``.
"""

from __future__ import annotations

import functools
import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Protocol, TypeVar

from pyrostore.config import Settings
from pyrostore.discovery import peer_uri
from pyrostore.errors import (
    NotServing,
    OutcomeUnknown,
    ProtocolVersionError,
    PyrostoreError,
    StaleEpoch,
)
from pyrostore.hooks import Hooks
from pyrostore.membership import PEER_FAILURES, Membership
from pyrostore.store import Database, Write
from pyrostore.transport import TRANSPORT_FAILURES

log = logging.getLogger(__name__)
T = TypeVar("T")
NOTICE_DELAY = 0.05
"""Seconds a commit notice waits for the next forward to carry it instead."""
MAX_BATCH = 64
"""The most writes one batch (one transaction, one forward, one fsync) carries."""
_NOTHING_TO_PUBLISH: Future[None] = Future()
_NOTHING_TO_PUBLISH.set_result(None)
Changes = list[tuple[list[str], int]]
"""What a batch changes: for each write, the read keys and its sequence number."""
WRITE_FIELDS = ("seq", "op", "request_id", "result", "keys", "epoch")
"""A forwarded write, as a named plain dict (``epoch``: that of the primary that numbered it)."""


class StateMachine(Protocol):
    """What a group's state machine gives replication (the catalog's, the order log's)."""

    def apply(self, op: dict[str, Any], request_id: str, conn: sqlite3.Connection,
              seq: int) -> Any:
        """Apply ``op`` as write ``seq`` in the open transaction; its plain-dict result."""

    def keys(self, op: dict[str, Any], result: Any) -> list[str]:
        """The read keys a write changes (``item:1``, ``topic:…``): what turns dirty."""

    def check_write(self, op: Any, result: Any) -> tuple[dict[str, Any], Any]:
        """A forwarded write's operation and result, checked: InvalidRequest unless ``op`` is
        one this machine's primary makes, and ``result`` one its ``apply`` returns."""

    def check_snapshot_rows(self, name: Any, rows: Any, applied: int) -> list[list[Any]]:
        """Rows of table ``name`` of a snapshot at ``applied`` of this machine's database (one
        part of it), checked row by row."""


class _Request(Write):
    """A write waiting at the primary: the batch that takes it sets its outcome and ``done``."""

    def __init__(self, op: dict[str, Any], request_id: str,
                 apply: Callable[[_Request, sqlite3.Connection, int], Any]) -> None:
        super().__init__(op, request_id, functools.partial(apply, self))
        self.keys: list[str] = []  # the read keys it changes, once it applied
        self.done = False


class ReplicatedGroup:
    """One replica's share of its group: its membership, and the write and read paths."""

    def __init__(self, settings: Settings, role: str, replica_id: int, db: Database,
                 machine: StateMachine, *, hooks: Hooks,
                 publish: Callable[[int, Changes], None] | None = None,
                 on_refused: Callable[[ProtocolVersionError], None] | None = None) -> None:
        self.settings = settings
        self.db = db
        self.machine = machine
        self.hooks = hooks
        self.member = Membership(settings, role, replica_id, db, keys=machine.keys,
                                 check_rows=machine.check_snapshot_rows, hooks=hooks,
                                 on_refused=on_refused)
        self.name = self.member.name
        self._publish = publish
        """Called once per batch, while it is forwarded and before it is acknowledged, with
        each write's keys and seq (the catalog tells the frontends' caches)."""
        self._aside = ThreadPoolExecutor(max_workers=1, thread_name_prefix="publish")
        self._queue: list[_Request] = []  # writes waiting for the next batch
        self._batching = False  # a thread is running a batch
        self._queue_changed = threading.Condition()  # guards both; notified when a batch ends
        self._notifier = _CommitNotifier(self.member)
        self._compactor = _Compactor(db, interval=max(settings.lease,
                                                      min(settings.request_retention / 8, 300)))
        self._in_flight: dict[str, int] = {}  # primary: key -> its write not yet acknowledged

    # -- the service's own calls ---------------------------------------------------------

    def write(self, op: dict[str, Any], request_id: str) -> Any:
        """The one path of every write: at the primary, replicated, at most once per id.

        Writes that arrive while a batch is under way queue up; when it ends, one of the
        waiting threads takes the queue as the next batch (group commit): one transaction, one
        forward to each backup, one invalidation, one fsync on each replica, however many
        writes it holds. The others return as soon as the batch that took theirs ends.
        """
        [request] = self.write_all([(op, request_id)])
        return request.outcome()

    def write_all(self, writes: list[tuple[dict[str, Any], str]]) -> list[Write]:
        """:meth:`write` for several ``(op, request_id)`` at once, in as few batches as they
        fit; each comes back done, with its result or its error (see :meth:`Write.outcome`)."""
        self.member.await_ready_primary()
        requests = [_Request(op, request_id, self._apply_request)
                    for op, request_id in writes]
        with self._queue_changed:
            self._queue.extend(requests)
        while True:
            with self._queue_changed:
                self._queue_changed.wait_for(
                    lambda: all(r.done for r in requests) or not self._batching)
                if all(r.done for r in requests):
                    return list(requests)
                self._batching = True
                batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
            try:
                with self.db.locked():
                    self._write_batch(batch)
            finally:
                with self._queue_changed:
                    self._batching = False
                    self._queue_changed.notify_all()

    def _apply_request(self, request: _Request, conn: sqlite3.Connection, seq: int) -> Any:
        result = self.machine.apply(request.op, request.request_id, conn, seq)
        request.keys = self.machine.keys(request.op, result)
        with self.member.changed:  # committed here before the backups hold it: hide it till then
            self._in_flight.update(dict.fromkeys(request.keys, seq))
        return result

    def _write_batch(self, batch: list[_Request]) -> None:
        """Apply, replicate and commit ``batch``; every request in it ends ``done``.

        The whole batch runs only while this replica is the ready primary: a batch taken after
        an earlier one failed (and this replica stepped down) is refused, unrun, so that no
        answer comes from a write that may be lost. A batch that fails fails every request in
        it: a refusal or a repeat may rest on a write of the same batch.
        """
        under_way: list[_Request] = []  # the writes that may be here, there, or both
        acknowledged = False

        def replicate(writes: list[Write]) -> None:
            under_way.extend(request for request in batch if request.seq)  # = writes
            self._replicate(under_way)

        try:
            with self.member.changed:
                self.member.check_serving(("primary",))
                for request in batch:
                    request.epoch = self.member.core.view.epoch
            self.db.execute_many(list(batch), alongside=replicate)
            acknowledged = bool(under_way)
        except BaseException as exc:
            if under_way and not isinstance(exc, OutcomeUnknown):
                with self.member.changed:  # it may be here and not there, or there and not here
                    self.member.step_down(f"writes {under_way[0].seq}-{under_way[-1].seq} failed "
                                    f"once under way: {exc}")
            for request in batch:
                request.result, request.error = None, self._failure(exc, bool(under_way))
        finally:
            with self.member.changed:
                for request in batch:
                    request.done = True
                    for key in request.keys:
                        self._in_flight.pop(key, None)
                self.member.changed.notify_all()
        if acknowledged:  # not a failed batch's: this replica has stepped down
            self._notifier.committed(self.member.view().epoch, under_way[-1].seq)

    def _failure(self, exc: BaseException, under_way: bool) -> BaseException:
        """What a request of a failed batch is told (an error of its own: callers' threads
        annotate what they raise)."""
        if not under_way:
            return exc  # nothing ran: NotServing, or a local error before any commit
        failure = OutcomeUnknown(f"{self.name} failed during a write ({exc}); "
                                 "retry with the same request id")
        failure.__cause__ = exc
        return failure

    def read(self, keys: list[str], local: Callable[[], T], method: str, *args: Any) -> T:
        """A read served here if this replica may, else refused; dirty keys go to the primary."""
        with self.member.changed:
            self.member.check_serving(("primary", "backup"))
            self._await_acknowledged(keys)
            dirty = self._ask_primary(keys)
            primary_uri = self.member.core.primary_uri()
        if dirty:
            try:
                answer: T = self.member.peers.call(primary_uri, method, *args)
                return answer
            except TRANSPORT_FAILURES as exc:
                raise NotServing(f"{self.name} cannot reach its primary",
                                 primary=primary_uri) from exc
        value = local()
        with self.member.changed:
            self.member.check_serving(("primary", "backup"))  # the lease held while reading
            self._await_acknowledged(keys)  # a write committed here while we read: wait it out
            dirty = self._ask_primary(keys)  # a write landed meanwhile
        if dirty:
            return self.read(keys, local, method, *args)
        return value

    def read_acknowledged(self, keys: list[str], local: Callable[[], T]) -> T:
        """``local()`` at the primary, seeing of the writes to ``keys`` only those every
        backup has acknowledged (a write it could see is waited out); ``NotServing`` at any
        replica that is not the serving primary."""
        with self.member.changed:
            self.member.check_serving(("primary",))
            self._await_acknowledged(keys)
        value = local()
        with self.member.changed:  # a write committed here while we read: wait it out
            self.member.check_serving(("primary",))
            self._await_acknowledged(keys)
        return value

    def _ask_primary(self, keys: list[str]) -> bool:
        """(Holding ``changed``.) A backup's read of a dirty key goes to the primary (CRAQ)."""
        return self.member.core.state == "backup" and self.member.is_dirty(keys)

    def _await_acknowledged(self, keys: list[str]) -> None:
        """(Holding ``_changed``.) Wait until the writes to ``keys`` in flight here are over.

        A primary commits a write while its backups apply it, so its own state may show a
        write that is not yet on every backup, and would be lost if this primary failed now.
        A read of such a key waits until the write is over: acknowledged, or failed, when this
        replica no longer serves. Writes that begin meanwhile are not waited for (a hot key
        would starve its readers); the check after the read catches one the read saw.
        """
        awaited = {key: self._in_flight[key] for key in keys if key in self._in_flight}
        if not awaited:
            return
        deadline = time.monotonic() + self.settings.lease
        # only the writes in flight now: later ones to the same keys began after this read
        while any(self._in_flight.get(key) == seq for key, seq in awaited.items()):
            left = deadline - time.monotonic()
            if left <= 0:
                raise NotServing(f"{self.name} has a write to {keys} in flight",
                                 primary=self.member.core.primary_uri())
            self.member.changed.wait(left)
        self.member.check_serving(("primary", "backup"))

    # -- what the primary calls on backups (through the peer endpoint) -------------------

    def replicate(self, epoch: int, writes: list[dict[str, Any]], committed: int | None,
                  token: str = "") -> None:
        """Apply the primary's writes (``{seq, op, request_id, result, keys, epoch}`` each,
        checked by the peer endpoint) durably, in one transaction (a repeat is acknowledged
        again). ``committed``: how far the primary of ``epoch`` has committed, which also
        confirms this replica level in that epoch; None for writes of a catch-up
        (:mod:`pyrostore.transfers`, ``token`` naming it), which confirm nothing."""
        with self.db.locked():
            if committed is None:
                self.member.check_transfer(epoch, token)
            else:
                self.member.check_forward(epoch)
            self.member.accept_from_primary(epoch)
            applied = self.db.applied()
            fresh: list[tuple[Write, list[str]]] = []
            for write in writes:
                seq, request_id = write["seq"], write["request_id"]
                if seq <= applied:
                    if self.db.write_at(seq) != (request_id, write["epoch"]):
                        with self.member.changed:
                            self.member.step_down(f"write {seq} here is not the primary's")
                        raise NotServing(f"{self.name} holds another write {seq}; it rejoins")
                    continue
                if seq != applied + len(fresh) + 1:
                    raise NotServing(f"{self.name} is at {applied}, cannot apply {seq}")
                apply = functools.partial(self.machine.apply, write["op"], request_id)
                fresh.append((Write(write["op"], request_id, apply, seq=seq,
                                    result=write["result"], epoch=write["epoch"]),
                               write["keys"]))
            if fresh:
                with self.member.changed:  # dirty before it is applied: no read sees it early
                    self.member.core.applying([(w.seq, keys) for w, keys in fresh])
                self.db.apply_replicated([w for w, _ in fresh])
                if committed is None:
                    self.member.caught_up(len(fresh))
        if committed is not None:
            self.member.confirm(epoch, committed)

    # -- the primary's side of a write ---------------------------------------------------

    def _replicate(self, writes: list[_Request]) -> None:
        """Forward ``writes`` to every backup; return once this replica may acknowledge them."""
        # telling the caches does not depend on the backups: do both at once
        view = self.member.view()
        changes = [(request.keys, request.seq) for request in writes]
        published = (self._aside.submit(self._publish, view.epoch, changes)
                     if self._publish is not None else _NOTHING_TO_PUBLISH)
        message = [{"seq": r.seq, "op": r.op, "request_id": r.request_id, "result": r.result,
                    "keys": r.keys, "epoch": r.epoch} for r in writes]
        for backup in view.backups:
            self._forward(backup, message)
        self._notifier.carried(view.epoch, writes[0].seq - 1)
        published.result()
        self.hooks.point("hold_before_ack")  # tests: a primary stopped before it answers
        with self.member.changed:
            # every backup holds these writes: this replica may lead on if its lease is
            # renewed in this epoch (a coordinator election), but it may not answer now
            if not self.member.core.leads() or time.monotonic() >= self.member.core.lease_until:
                raise OutcomeUnknown(f"{self.name} lost its lease during a write; "
                                     "retry with the same request id")

    def _forward(self, backup: int, message: list[dict[str, Any]]) -> None:
        deadline = time.monotonic() + self.settings.failover_timeout
        reported = False
        while True:
            with self.member.changed:
                if backup not in self.member.core.view.backups:
                    return  # dropped from the view: these writes no longer need it
                if not self.member.core.leads() or time.monotonic() > deadline:
                    self.member.step_down("deposed during a write")
                    raise OutcomeUnknown(f"{self.name} stopped leading during a write; "
                                         "retry with the same request id")
                epoch, uri = self.member.core.view.epoch, self.member.core.uris.get(backup, "")
            try:
                self.member.peers.call(peer_uri(uri), "replicate", epoch, message,
                                       message[0]["seq"] - 1)
                return
            except StaleEpoch:
                with self.member.changed:
                    self.member.step_down("a backup is in a newer epoch")
                raise OutcomeUnknown(f"{self.name} was deposed during a write") from None
            except PEER_FAILURES as exc:
                if not reported:
                    log.warning("%s: backup %d failed (%s); reporting it", self.name, backup,
                                exc)
                    reported = True
                self.member.report(epoch, backup)  # every round: a report can be lost
            with self.member.changed:  # wait for the coordinator to drop it (after its lease)
                self.member.changed.wait(self.settings.heartbeat_interval)

    def details(self) -> dict[str, Any]:
        """The replica's part of ``info()``: its membership, and the writes queued."""
        with self._queue_changed:
            queued = len(self._queue)
        return {**self.member.details(), "queued_writes": queued,
                "forgotten_request_ids": self._compactor.forgotten}

    def start(self, uri: str) -> None:
        """Join the group as the replica serving at ``uri``."""
        self.member.start(uri)
        self._notifier.start()
        self._compactor.start()

    def close(self) -> None:
        """Stop every thread and close every connection."""
        self._notifier.stop()
        self._compactor.stop()
        self._aside.shutdown(wait=False, cancel_futures=True)
        self.member.close()


class _Compactor:
    """Forgets expired request ids (:meth:`Database.compact`) every ``interval`` seconds, in
    the background, at every replica on its own: a chunk at a time, so a write waits for one
    chunk's transaction at most."""

    def __init__(self, db: Database, interval: float) -> None:
        self.db = db
        self.interval = interval
        self.forgotten = 0
        """Request ids forgotten since this replica started."""
        self._stopping = threading.Event()

    def start(self) -> None:
        threading.Thread(target=self._run, name="compactor", daemon=True).start()

    def stop(self) -> None:
        self._stopping.set()

    def _run(self) -> None:
        while not self._stopping.wait(self.interval):
            try:
                forgotten = self.db.compact()
            except Exception:  # a full disk: say so, and try again later
                if not self._stopping.is_set():  # not a file closing under it
                    log.exception("compacting request ids failed")
                continue
            self.forgotten += forgotten
            if forgotten:
                log.info("forgot %d request id(s) older than the retention", forgotten)


class _CommitNotifier:
    """Tells the backups, off the write path, how far the primary has committed.

    The next write's forward carries the same news (``replicate``'s ``committed``), so a
    notice waits :data:`NOTICE_DELAY` and is sent only if no forward has carried it by then:
    under load notices cost nothing, and when writes are sparse a backup still learns within
    milliseconds (until then, its reads of the written keys go to the primary).
    """

    def __init__(self, member: Membership) -> None:
        self.member = member
        self._latest = (0, 0)  # (epoch, seq) of the newest commit
        self._sent = (0, 0)
        self._carried = (0, 0)  # the newest commit forwards told every backup of
        self._wake = threading.Condition()
        self._stopping = False

    def committed(self, epoch: int, seq: int) -> None:
        """Write ``seq`` committed while this replica led ``epoch``."""
        with self._wake:
            self._latest = max(self._latest, (epoch, seq))
            self._wake.notify()

    def carried(self, epoch: int, seq: int) -> None:
        """Every backup of ``epoch`` was told by a forward that writes up to ``seq`` are
        committed."""
        with self._wake:
            self._carried = max(self._carried, (epoch, seq))

    def start(self) -> None:
        threading.Thread(target=self._run, name="commit-notifier", daemon=True).start()

    def stop(self) -> None:
        with self._wake:
            self._stopping = True
            self._wake.notify()

    def _run(self) -> None:
        member = self.member
        while True:
            with self._wake:
                self._wake.wait_for(lambda: self._stopping or self._latest > self._sent)
                self._wake.wait_for(lambda: self._stopping, NOTICE_DELAY)
                if self._stopping:
                    return
                epoch, seq = self._sent = self._latest
                if self._carried >= self._latest:
                    continue  # a later forward told them
            with member.changed:
                view, leads, uris = member.core.view, member.core.leads(), dict(member.core.uris)
            if not leads or view.epoch != epoch:
                continue  # a newer epoch confirms its backups itself (_lead)
            for backup in view.backups:
                try:
                    member.peers.call(peer_uri(uris.get(backup, "")), "committed", epoch, seq)
                except (*PEER_FAILURES, PyrostoreError) as exc:
                    log.debug("commit notice to %d failed: %s", backup, exc)
