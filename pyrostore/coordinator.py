"""A coordinator: one member of the control plane's Raft group, ``pyrostore.coordinator.<id>``.

The group (3 by default, 1 allowed) decides every replica group's view (epoch, primary,
backups) and grants the replicas' leases. Its state is :class:`~pyrostore.control.ControlState`,
replicated with PySyncObj; what the leader judges on its clock is
:class:`~pyrostore.control.Judge`. This module is the shell around them:

- **Pyro5 calls** (the daemon's threads): a renewal, a failure report or a new member is proposed
  as a Raft command and answered only once it is committed and applied; anything else (a
  timeout, a lost leadership, a discarded entry) grants nothing and raises ``NotServing``. A
  follower refuses such calls with :class:`~pyrostore.errors.NotLeader`, naming the leader. Any
  coordinator answers ``view`` and ``views`` from its own applied state.
- **Raft's tick thread** (PySyncObj's) applies committed commands to the state, under
  ``_lock``, and tells the judge when a renewal was applied and when leadership changed.
- **The judge thread** (``_judge_views``), on the leader only, proposes the view changes the
  judge plans, and compacts the Raft log when that is safe.
- **SQLite**: every applied view is written to ``<data>/coordinator-<id>.sqlite3``
  (``synchronous=FULL``) before any caller hears of it, and a new epoch is always above every
  epoch in that file, so a Raft node that forgot entries (see docs) never reissues an epoch.

What PySyncObj is trusted with, and how it is configured, is in :func:`raft_config` and the
architecture document.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import Pyro5.api
from pysyncobj import SyncObj, SyncObjConf, SyncObjConsumer, replicated
from pysyncobj.syncobj import SyncObjException

from pyrostore.access import NODE, OPERATORS, allow
from pyrostore.config import CoordinatorAddress, Settings
from pyrostore.control import (
    GROUPS,
    ControlState,
    Judge,
    Renewal,
    check_group,
    check_replica,
)
from pyrostore.datadir import make_private, private_dir, write_private
from pyrostore.discovery import peer_uri
from pyrostore.errors import ConfigError, InvalidRequest, NotLeader, NotServing, StaleEpoch
from pyrostore.metrics import timed_methods
from pyrostore.models import View, check_count, check_fields, check_token
from pyrostore.schemas import ViewStore
from pyrostore.serving import Service, fixed_port
from pyrostore.transport import TRANSPORT_FAILURES, ProxyPool

log = logging.getLogger(__name__)
RAFT_STATES = {0: "follower", 1: "candidate", 2: "leader"}
COMPACT_AFTER = 200_000
"""Raft log entries after which the log is compacted, once every node is up and level (about
an hour of heartbeats from 4 replicas)."""
CAUGHT_UP = 5
"""Log entries a node may trail the leader's commit index by and still count as caught up
(entries commit continually; a node catching up after a restart trails by thousands)."""
JUDGE_INTERVAL = 1.0
"""Most seconds between the judge's looks at the groups; it also looks when a lease may have
ended and whenever a view, a replica's report or the Raft leadership changed."""
_NEVER = 10**9


def raft_config(settings: Settings, replica_id: int, *, secret: str,
                on_state_changed: Any) -> SyncObjConf:
    """PySyncObj's settings, and why (each was measured: see docs/architecture.md).

    Batching off (else every commit waits ~100 ms); elections after 0.3-0.9 s of silence, with
    heartbeats (append entries) every 0.05 s, a third of the shortest timeout; a leader that has
    lost its followers for as long steps down. Compaction runs only when :meth:`Coordinator.
    _compact` asks, in-process (no fork): PySyncObj's forked compaction can lose entries a node
    had accepted if it dies at the wrong moment. The transport is pickle over TCP, so it binds
    to the node's own address and encrypts with the group's secret.
    """
    data = settings.data_dir
    return SyncObjConf(
        appendEntriesUseBatch=False, appendEntriesPeriod=0.05,
        raftMinTimeout=0.3, raftMaxTimeout=0.9, leaderFallbackTimeout=0.9,
        connectionTimeout=0.9, connectionRetryTime=0.5, commandsWaitLeader=False,
        journalFile=str(data / f"coordinator-{replica_id}.raft-journal"),
        fullDumpFile=str(data / f"coordinator-{replica_id}.raft-dump"), useFork=False,
        logCompactionMinEntries=_NEVER, logCompactionMinTime=_NEVER,
        password=secret, onStateChanged=on_state_changed, maxBindRetries=20)


def group_secret(settings: Settings) -> str:
    """The secret the coordinators' Raft traffic is encrypted and authenticated with:
    ``raft.secret`` beside the certificates (copied to every host with them), made (readable
    by its owner only) if missing."""
    path = settings.certificates / "raft.secret"
    try:
        if not path.exists():
            private_dir(path.parent)
            write_private(path, secrets.token_hex(32))
        return path.read_text().strip()
    except OSError as exc:
        raise ConfigError(f"cannot read or make the coordinators' secret {path}: "
                          f"{exc.strerror or exc}") from exc


class _ReplicatedState(SyncObjConsumer):
    """The :class:`ControlState` as PySyncObj's consumer: ``execute`` is the one command."""

    def __init__(self, on_applied: Any) -> None:
        self.lock = threading.Lock()  # set before the consumer's __init__: not serialized
        self.on_applied = on_applied
        super().__init__()
        self.state = ControlState()

    @replicated
    def execute(self, command: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            result = self.state.apply(command)
        self.on_applied(command, result)
        return result


@timed_methods
class Coordinator(Service):
    """One coordinator as a Pyro5 object and a PySyncObj node."""

    role = "coordinator"

    def __init__(self, settings: Settings, replica_id: int = 1) -> None:
        super().__init__(settings, replica_id)
        self.peers = (settings.coordinator_addresses()
                      or [CoordinatorAddress(settings.host, 0, fixed_port(settings.host))])
        if not 1 <= replica_id <= len(self.peers):
            raise InvalidRequest(f"coordinator {replica_id} is not among the "
                                 f"{len(self.peers)} in PYROSTORE_COORDINATORS")
        me = self.peers[replica_id - 1]
        self.host, self.port = me.host, me.port
        self._views = ViewStore(settings.data_dir / f"coordinator-{replica_id}.sqlite3")
        self._saved = self._views.load()
        self._saved_lock = threading.Lock()
        self._judge = Judge(lease=settings.lease)
        self._judge_lock = threading.Lock()
        self._machine = _ReplicatedState(self._on_applied)
        self._raft: SyncObj | None = None
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._peers = ProxyPool(settings, timeout=settings.lease / 4)  # nudges only
        self._nudger = ThreadPoolExecutor(max_workers=2, thread_name_prefix="nudge")
        self.incidents: dict[str, int] = {}

    # -- what replicas call -----------------------------------------------------------------

    @Pyro5.api.expose
    @allow(NODE)
    def renew(self, renewal: dict[str, Any]) -> dict[str, Any]:
        """A replica's heartbeat: ``{view, lease, leader}``. The lease (seconds, counted by the
        replica from when it sent this) is granted only once the renewal is committed."""
        checked = Renewal.from_wire(renewal)
        result = self._commit({"op": "renew", "renewal": checked.to_wire()})
        if not result["ok"]:
            raise InvalidRequest(f"renewal refused: {result['why']}")
        lease = self.settings.lease if result["granted"] else 0.0
        return {"view": self.view(checked.group), "lease": lease, "leader": self.uri}

    @Pyro5.api.expose
    @allow(NODE)
    def report_failure(self, report: dict[str, Any]) -> None:
        """A primary could not reach a backup: renew it no more; it goes once its lease has.
        ``report``: ``{group, epoch, reporter, failed}``."""
        fields = check_fields(report, "failure report", ("group", "epoch", "reporter", "failed"))
        group, reporter, failed = (check_group(fields["group"]), check_replica(fields["reporter"]),
                                   check_replica(fields["failed"]))
        outcome = self._commit({"op": "suspend", "group": group,
                                "epoch": check_count(fields["epoch"], "epoch"),
                                "reporter": reporter, "failed": failed})
        if outcome["ok"]:
            log.warning("%s primary %s reports backup %s failed", group, reporter, failed)

    @Pyro5.api.expose
    @allow(NODE)
    def add_member(self, request: dict[str, Any]) -> dict[str, Any]:
        """The primary has given a joiner a snapshot: make it a backup in a new epoch.
        ``request``: ``{group, epoch, primary, joiner, incarnation}``; the new view."""
        fields = check_fields(request, "new member", ("group", "epoch", "primary", "joiner",
                                                      "incarnation"))
        group = check_group(fields["group"])
        outcome = self._commit({
            "op": "add_member", "group": group, "epoch": check_count(fields["epoch"], "epoch"),
            "primary": check_replica(fields["primary"]), "joiner": check_replica(fields["joiner"]),
            "incarnation": check_token(fields["incarnation"], "incarnation"),
            "new_epoch": self._next_epoch(group)})
        if not outcome["ok"]:
            raise StaleEpoch(f"{group}: {outcome['why']}")
        return self.view(group)

    @Pyro5.api.expose
    @allow(*OPERATORS)
    def view(self, group: str) -> dict[str, Any]:
        """The group's view as this coordinator has applied it, with the members' URIs."""
        with self._machine.lock:
            state = self._machine.state.groups[check_group(group)]
            view, uris = state.view, state.uris()
        self._persist(group, view)
        return view.to_wire(uris)

    @Pyro5.api.expose
    @allow(*OPERATORS)
    def views(self) -> dict[str, Any]:
        """Every group's view and what each replica last said of itself (for ``status``)."""
        now = time.monotonic()
        answer = {}
        for group in GROUPS:
            answer[group] = self.view(group)
            with self._machine.lock:
                reports = dict(self._machine.state.groups[group].reports)
            with self._judge_lock:
                answer[group]["replicas"] = {str(i): {
                    "uri": r.uri, "applied": r.applied, "epoch": r.epoch, "state": r.state,
                    "suspended": r.suspended,
                    "lease_left": round(self._judge.lease_left(group, i, now), 3)}
                    for i, r in sorted(reports.items())}
        return answer

    def details(self) -> dict[str, Any]:
        """The Raft state as the service's ``state``, and the groups as this node sees them."""
        raft = self.raft_status()
        return {"state": raft["state"], "raft": raft, "groups": self.views(),
                "incidents": dict(self.incidents)}

    def raft_status(self) -> dict[str, Any]:
        """This node's Raft state, term, commit index and leader (for ``status``)."""
        if self._raft is None:
            return {"state": "starting"}
        status = _status(self._raft)
        leader = status.get("leader")
        applied, leader_commit = status.get("last_applied", 0), status.get("leader_commit_idx")
        return {"state": RAFT_STATES.get(status.get("state", -1), "?"),
                "term": status.get("raft_term"), "commit": status.get("commit_idx"),
                "applied": applied, "log": status.get("log_len"),
                "leader": self._coordinator_id(str(leader)) if leader is not None else None,
                # level with what the leader last said it committed (a restarted node is not
                # until it has caught up: killing another node meanwhile would stall commits)
                "caught_up": leader_commit is not None and applied >= leader_commit - CAUGHT_UP}

    # -- life ---------------------------------------------------------------------------------

    def start(self) -> None:
        _watch_pysyncobj_log(self.incidents)
        me = self.peers[self.replica_id - 1]
        conf = raft_config(self.settings, self.replica_id,
                           secret=group_secret(self.settings),
                           on_state_changed=self._on_state_changed)
        conf.bindAddress = me.raft
        others = [p.raft for p in self.peers if p is not me]
        self._raft = SyncObj(me.raft, others, conf, consumers=[self._machine])
        make_private(Path(conf.journalFile), Path(conf.fullDumpFile))  # PySyncObj's own files
        threading.Thread(target=self._judge_views, name="judge", daemon=True).start()

    def close(self) -> None:
        self._stopping.set()
        self._wake.set()
        if self._raft is not None:
            self._raft.destroy()
        self._nudger.shutdown(wait=False, cancel_futures=True)
        self._peers.close()
        self._views.close()

    # -- the shell around the state machine and the judge -----------------------------------

    def _commit(self, command: dict[str, Any]) -> dict[str, Any]:
        """Propose ``command`` and wait until it is applied here; refuse unless leading."""
        raft = self._raft
        if raft is None or not raft._isLeader():
            raise NotLeader(f"{self.name} is not the leader", leader=self._leader_uri())
        try:
            result: dict[str, Any] = self._machine.execute(
                command, sync=True, timeout=self.settings.lease / 2)
        except SyncObjException as exc:
            raise NotServing(f"{self.name} could not commit {command['op']} "
                             f"({exc.errorCode})", leader=self._leader_uri()) from None
        return result

    def _on_applied(self, command: dict[str, Any], result: dict[str, Any]) -> None:
        """(Raft's tick thread.) Note the local time of each granted renewal."""
        if command["op"] == "renew":
            renewal = command["renewal"]
            if result.get("granted"):
                with self._judge_lock:
                    self._judge.renewed(renewal["group"], renewal["replica"], time.monotonic())
            if result.get("changed"):
                self._wake.set()  # a new replica, a restart, a resignation: judge now
        elif result.get("ok") and "view" in result:
            log.info("%s epoch %d: primary %s, backups %s (%s)", command["group"],
                     result["view"]["epoch"], result["view"]["primary"],
                     result["view"]["backups"], command.get("why", "joined"))
            self._wake.set()

    def _on_state_changed(self, old: int, new: int) -> None:
        """(Raft's tick thread.) Leading starts the judge's clock; anything else stops it."""
        with self._judge_lock:
            if new == 2:
                self._judge.became_leader(time.monotonic())
            else:
                self._judge.lost_leadership()
        log.info("%s: raft %s -> %s", self.name, RAFT_STATES.get(old), RAFT_STATES.get(new))
        self._wake.set()

    def _judge_views(self) -> None:
        """While leading: propose what the judge plans; now and then compact the log."""
        compacted_at = time.monotonic()
        while not self._stopping.is_set():
            with self._judge_lock:
                deadline = self._judge.next_deadline(time.monotonic())
            # just past the next lease that may end, or sooner if something changed
            self._wake.wait(min(JUDGE_INTERVAL, max(0.0, deadline - time.monotonic()) + 0.001))
            self._wake.clear()
            for group in GROUPS:
                self.view(group)  # every applied view goes to the file, leader or not
            raft = self._raft
            if raft is None or not raft._isLeader():
                continue
            for command in self._plan():
                try:
                    result = self._commit(command)
                except NotServing as exc:
                    log.debug("%s: view change not committed: %s", self.name, exc)
                    continue
                if result["ok"]:
                    self._nudge(command["group"])
            if time.monotonic() > compacted_at + 5:
                compacted_at = time.monotonic()
                self._compact(raft)

    def _nudge(self, group: str) -> None:
        """Tell a new view's members to heartbeat now rather than within the next interval:
        a promoted backup starts to lead at once."""
        view = self.view(group)
        for uri in view.get("uris", {}).values():
            self._nudger.submit(self._send_nudge, uri)

    def _send_nudge(self, uri: str) -> None:
        with contextlib.suppress(*TRANSPORT_FAILURES):
            self._peers.call(peer_uri(uri), "nudge")

    def _plan(self) -> list[dict[str, Any]]:
        with self._saved_lock:
            saved = dict(self._saved)
        floors = {group: view.epoch for group, view in saved.items()}
        with self._machine.lock, self._judge_lock:
            return self._judge.plan(self._machine.state, time.monotonic(), floors=floors,
                                    saved=saved)

    def _next_epoch(self, group: str) -> int:
        with self._saved_lock:
            floor = self._saved.get(group, View()).epoch
        with self._machine.lock:
            state = self._machine.state.groups[group]
            return max(state.view.epoch, state.highest_epoch, floor) + 1

    def _persist(self, group: str, view: View) -> None:
        """Write ``view`` to this coordinator's file unless it holds that epoch or a newer."""
        with self._saved_lock:
            if view.epoch > self._saved.get(group, View()).epoch:
                self._views.save(group, view)
                self._saved[group] = view

    def _compact(self, raft: SyncObj) -> None:
        """Compact the Raft log once it is long, and only while every node is up and level."""
        status = _status(raft)
        if status.get("log_len", 0) < COMPACT_AFTER:
            return
        partners = [v for k, v in status.items() if k.startswith("partner_node_status_server_")]
        matched = [v for k, v in status.items() if k.startswith("match_idx_server_")]
        commit = status.get("commit_idx", 0)
        if all(p == 2 for p in partners) and all(m >= commit for m in matched):
            log.info("%s compacts its Raft log (%d entries)", self.name, status["log_len"])
            raft.forceLogCompaction()

    def _leader_uri(self) -> str:
        raft = self._raft
        leader = raft._getLeader() if raft is not None else None
        if leader is None:
            return ""
        replica_id = self._coordinator_id(str(leader))
        if replica_id == self.replica_id:
            return self.uri
        return self.peers[replica_id - 1].uri(replica_id) if replica_id else ""

    def _coordinator_id(self, raft_address: str) -> int | None:
        for replica_id, peer in enumerate(self.peers, start=1):
            if peer.raft == raft_address:
                return replica_id
        return None


def _status(raft: SyncObj) -> dict[str, Any]:
    """PySyncObj's status (read from its tick thread's fields: retry if one changed)."""
    for _ in range(3):
        try:
            return dict(raft.getStatus())
        except RuntimeError:
            continue
    return {}


class _PySyncObjLog(logging.Filter):
    """PySyncObj's log, read for what matters: a node that forgot entries is an incident (it
    is logged as an error and counted in ``status``); "truncating already-applied log entries"
    fires thousands of times a minute with no fault and is dropped."""

    def __init__(self, incidents: dict[str, int]) -> None:
        super().__init__()
        self.incidents = incidents

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "truncating already-applied" in message:
            return False
        if "exceeds journal end" in message:
            self.incidents["raft_journal_lost_entries"] = (
                self.incidents.get("raft_journal_lost_entries", 0) + 1)
            log.error("INCIDENT: this coordinator's Raft journal lost entries it had accepted "
                      "(%s); epochs stay above its SQLite file's, leases are judged from its "
                      "leadership start", message)
            return False
        return True


def _watch_pysyncobj_log(incidents: dict[str, int]) -> None:
    logging.getLogger("pysyncobj.syncobj").addFilter(_PySyncObjLog(incidents))
