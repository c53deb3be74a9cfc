"""The control plane's decisions: the coordinators' replicated state, and the leader's judgement.

Two plain objects, with no threads, sockets, Pyro5, PySyncObj or SQLite inside:

- :class:`ControlState` is the deterministic state machine the coordinators replicate with Raft:
  each group's view and what each replica last said of itself. Every change is a named command
  (a plain dict) applied in log order; applying the same commands in the same order gives the
  same state on every coordinator. It reads no clock and does no I/O. Every command is safe to
  apply twice, because a Raft command whose outcome was unknown (a timeout, a lost leader) may
  have been applied: a renewal carries its replica's incarnation and sequence number, and a view
  change is a compare-and-set on the epoch.
- :class:`Judge` is what only the Raft leader decides, on its own monotonic clock: whose lease
  is over, and so which view changes to propose. A member's lease is over only once
  ``now > max(when this coordinator applied its last renewal, when it became leader) + lease x
  margin``; a replica counts its lease from when it *sent* the renewal, which is before any
  coordinator applied it, so the leader never thinks a lease over before the replica does.
  A new leader proposes no view change before ``leader_since + lease x margin``: whatever
  renewal its predecessor granted, even one this coordinator never saw, is over by then. (The
  one exception is a group that never had a view: no replica of it holds a role to wait out.)

The coordinator service (:mod:`pyrostore.coordinator`) is the shell: it feeds Raft's applies and
its clock to these objects, and proposes what the judge decides.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from pyrostore.errors import InvalidRequest
from pyrostore.models import (
    View,
    check_count,
    check_fields,
    check_replica_id,
    check_token,
    check_uri,
    service_name,
)

GROUPS = ("catalog", "order")
"""The replica groups the coordinators keep views of."""
REPLICA_STATES = ("primary", "backup", "joining")
EPOCH_LEAD = 1000
"""How far above the current view's epoch a replica's renewal may say it is. A replica only
hears of epochs the coordinators issued; after a coordinator lost the tail of its Raft log
(see docs) it may know a few more than the log does, never a thousand. A higher claim would
push every later epoch out of range (and stall the group) and is refused."""
LEASE_MARGIN = 1.05
"""A lease is judged over only after lease x this: it bounds how much faster the leader's clock
may run than a replica's (monotonic clocks drift by parts per million; NTP bounds it to 500)."""


@dataclasses.dataclass(frozen=True)
class Renewal:
    """A replica's heartbeat: who it is, where, how far it has applied, and what it believes."""

    group: str
    replica: int
    incarnation: str
    seq: int
    uri: str
    applied: int
    epoch: int
    state: str

    @classmethod
    def from_wire(cls, data: Any) -> Renewal:
        """Check a heartbeat from the wire; anything malformed is an InvalidRequest."""
        fields = check_fields(data, "renewal", ("group", "replica", "incarnation", "seq", "uri",
                                                "applied", "epoch", "state"))
        state = fields["state"]
        if not isinstance(state, str) or state not in REPLICA_STATES:
            raise InvalidRequest(f"state must be one of {', '.join(REPLICA_STATES)}")
        group, replica = check_group(fields["group"]), check_replica(fields["replica"])
        return cls(group=group, replica=replica,
                   incarnation=check_token(fields["incarnation"], "incarnation"),
                   seq=check_count(fields["seq"], "seq"),
                   uri=check_uri(fields["uri"], object_name=service_name(group, replica)),
                   applied=check_count(fields["applied"], "applied"),
                   epoch=check_count(fields["epoch"], "epoch"), state=state)

    def to_wire(self) -> dict[str, Any]:
        """The plain dict that crosses the wire (and Raft's log)."""
        return dataclasses.asdict(self)


@dataclasses.dataclass
class Report:
    """What the coordinators last committed of one replica's heartbeats."""

    uri: str
    incarnation: str
    seq: int
    applied: int
    epoch: int
    state: str
    suspended: bool = False
    """Its primary could not reach it: no renewal is granted until it leaves the view."""


@dataclasses.dataclass
class GroupState:
    """One group's view, its members' reports, and the highest epoch anyone has shown."""

    view: View = dataclasses.field(default_factory=View)
    reports: dict[int, Report] = dataclasses.field(default_factory=dict)
    highest_epoch: int = 0
    """Above every epoch a replica reported and every view: a new epoch must exceed it."""

    def uris(self) -> dict[int, str]:
        """Every replica's last reported URI."""
        return {i: report.uri for i, report in self.reports.items()}


class ControlState:
    """The coordinators' replicated state machine (see the module's docstring)."""

    def __init__(self) -> None:
        self.groups: dict[str, GroupState] = {group: GroupState() for group in GROUPS}

    def apply(self, command: dict[str, Any]) -> dict[str, Any]:
        """Apply one committed command; its result, a plain dict."""
        handler = {"renew": self._renew, "suspend": self._suspend,
                   "change_view": self._change_view, "add_member": self._add_member}.get(
                       command.get("op", ""))
        if handler is None:
            return {"ok": False, "why": f"unknown command {command.get('op')!r}"}
        try:
            return handler(command)
        except InvalidRequest as exc:  # a command logged by an older, laxer coordinator
            return {"ok": False, "why": str(exc)}

    def _renew(self, command: dict[str, Any]) -> dict[str, Any]:
        renewal = Renewal.from_wire(command["renewal"])
        group = self.groups[renewal.group]
        if group.view.epoch and renewal.epoch > group.view.epoch + EPOCH_LEAD:
            return {"ok": False, "granted": False, "why": f"epoch {renewal.epoch} is far above "
                    f"the {renewal.group} group's epoch {group.view.epoch}"}
        report = group.reports.get(renewal.replica)
        repeat = (report is not None and report.incarnation == renewal.incarnation
                  and report.seq >= renewal.seq)
        changed = report is None or (not repeat and (
            report.incarnation, report.state, report.epoch) != (
            renewal.incarnation, renewal.state, renewal.epoch))
        if report is None or not repeat:
            suspended = report is not None and report.suspended
            group.reports[renewal.replica] = Report(
                renewal.uri, renewal.incarnation, renewal.seq, renewal.applied, renewal.epoch,
                renewal.state, suspended=suspended)
            group.highest_epoch = max(group.highest_epoch, renewal.epoch)
        granted = not group.reports[renewal.replica].suspended
        return {"ok": True, "granted": granted, "repeat": repeat, "changed": changed}

    def _suspend(self, command: dict[str, Any]) -> dict[str, Any]:
        group = self.groups[command["group"]]
        view, failed = group.view, command["failed"]
        report = group.reports.get(failed)
        if (command["epoch"] != view.epoch or command["reporter"] != view.primary
                or failed not in view.backups or report is None):
            return {"ok": False, "why": "stale report"}
        report.suspended = True
        return {"ok": True}

    def _change_view(self, command: dict[str, Any]) -> dict[str, Any]:
        group = self.groups[command["group"]]
        proposed = View.from_wire(command["view"])
        if group.view.epoch != command["expected_epoch"]:
            return {"ok": False, "why": f"the view is at epoch {group.view.epoch}"}
        return self._install(group, proposed)

    def _add_member(self, command: dict[str, Any]) -> dict[str, Any]:
        """A primary has levelled a joiner by snapshot: make it a backup in a new epoch."""
        group = self.groups[command["group"]]
        view, joiner = group.view, command["joiner"]
        if view.epoch != command["epoch"] or view.primary != command["primary"]:
            return {"ok": False, "why": f"the view is at epoch {view.epoch}, "
                                        f"primary {view.primary}"}
        report = group.reports.get(joiner)
        if report is None or report.incarnation != command["incarnation"]:
            return {"ok": False, "why": f"replica {joiner} has restarted since it asked"}
        backups = tuple(sorted({*view.backups, joiner} - {view.primary}))
        incarnations = {**view.incarnations, joiner: command["incarnation"]}
        return self._install(group, View(command["new_epoch"], view.primary, backups,
                                         incarnations))

    @staticmethod
    def _install(group: GroupState, view: View) -> dict[str, Any]:
        if view.epoch <= max(group.view.epoch, group.highest_epoch):
            return {"ok": False, "why": f"epoch {view.epoch} is not above "
                                        f"{max(group.view.epoch, group.highest_epoch)}"}
        for replica_id, report in group.reports.items():
            # outside the view it may rejoin and be renewed; with no primary, no write is
            # acknowledged without the members, and the group needs one of them back
            if replica_id not in view.members or view.primary is None:
                report.suspended = False
        group.view, group.highest_epoch = view, view.epoch
        return {"ok": True, "view": view.to_wire()}


class Judge:
    """The Raft leader's decisions on its own clock: leases over, and the views that follow.

    Fed events by the shell (:meth:`renewed` for every renewal this coordinator applied,
    :meth:`became_leader` and :meth:`lost_leadership`); asked :meth:`plan` for the view changes
    to propose. It proposes; only a committed command changes anything.
    """

    def __init__(self, *, lease: float, margin: float = LEASE_MARGIN) -> None:
        self.lease = lease
        self.lease_over_after = lease * margin
        self.leader_since: float | None = None
        self._renewed_at: dict[tuple[str, int], float] = {}

    def renewed(self, group: str, replica_id: int, now: float) -> None:
        """This coordinator applied a granted renewal of that replica at ``now``."""
        self._renewed_at[(group, replica_id)] = now

    def became_leader(self, now: float) -> None:
        """This coordinator became the Raft leader at ``now``."""
        self.leader_since = now

    def lost_leadership(self) -> None:
        """This coordinator is no longer the Raft leader: it judges nothing."""
        self.leader_since = None

    def lease_over(self, group: str, replica_id: int, now: float) -> bool:
        """Whether that replica's lease is certainly over (only meaningful while leading)."""
        if self.leader_since is None:
            return False
        since = max(self._renewed_at.get((group, replica_id), self.leader_since),
                    self.leader_since)
        return now > since + self.lease_over_after

    def lease_left(self, group: str, replica_id: int, now: float) -> float:
        """Seconds left of that replica's last renewal this coordinator applied, counted from
        when it applied it (for ``status``: the replica's own count ends a little sooner)."""
        renewed = self._renewed_at.get((group, replica_id))
        return 0.0 if renewed is None else max(0.0, renewed + self.lease - now)

    def next_deadline(self, now: float) -> float:
        """When the next lease this judge knows of may be judged over (or leading becomes a
        lease old): the time to look again; ``now + 1`` if there is nothing to wait for."""
        if self.leader_since is None:
            return now + 1.0
        times = [t + self.lease_over_after for t in self._renewed_at.values()]
        times.append(self.leader_since + self.lease_over_after)
        return min((t for t in times if t > now), default=now + 1.0)

    def may_change_views(self, now: float) -> bool:
        """Leading for long enough that every lease a predecessor granted is over."""
        return self.leader_since is not None and now > self.leader_since + self.lease_over_after

    def plan(self, state: ControlState, now: float, *,
             floors: dict[str, int] | None = None,
             saved: dict[str, View] | None = None) -> list[dict[str, Any]]:
        """The view changes to propose now: at most one per group, each a compare-and-set.

        ``floors``: per group, the highest epoch this coordinator's own file holds (a new epoch
        goes above it even if the Raft log forgot it); ``saved``: the views in that file, used
        to restore a group whose Raft state was lost rather than start it anew.
        """
        if self.leader_since is None:
            return []
        commands = []
        for name in GROUPS:
            group = state.groups[name]
            floor = (floors or {}).get(name, 0)
            if not (self.may_change_views(now) or _never_served(group, floor)):
                continue
            planner = _GroupPlanner(self, name, group, now,
                                    max(group.view.epoch, group.highest_epoch, floor) + 1)
            change = planner.plan((saved or {}).get(name))
            if change is not None:
                view, why = change
                commands.append({"op": "change_view", "group": name,
                                 "expected_epoch": group.view.epoch, "view": view.to_wire(),
                                 "why": why})
        return commands


@dataclasses.dataclass
class _GroupPlanner:
    """One group's next view, if it needs one (docs/architecture.md, "Replication": failover)."""

    judge: Judge
    name: str
    group: GroupState
    now: float
    next_epoch: int

    def plan(self, saved: View | None) -> tuple[View, str] | None:
        view = self.group.view
        if view.epoch == 0:
            return self._start(saved)
        if view.primary is None or self._gone(view.primary, primary=True):
            return self._replace_primary()
        gone = [b for b in view.backups if self._gone(b)]
        if gone:
            return (self._view(view.primary, [b for b in view.backups if b not in gone]),
                    f"backup(s) {gone} gone")
        return None

    def _start(self, saved: View | None) -> tuple[View, str] | None:
        if saved is not None and saved.epoch > 0:
            # the Raft state was lost, not the group: its last members decide, as after a crash
            return View(self.next_epoch, None, saved.members), "restored from the file"
        live = [(r.applied, -i, i) for i, r in self.group.reports.items() if self._alive(i)]
        if not live:
            return None
        return self._view(max(live)[2], []), f"{max(live)[2]} starts the group"

    def _replace_primary(self) -> tuple[View, str] | None:
        """Promote the live member of the last view that applied most; none alive: wait."""
        view = self.group.view
        candidates = sorted((self.group.reports[i].applied, -i, i) for i in view.members
                            if self._alive(i) and not self.group.reports[i].suspended)
        if not candidates:
            if view.primary is None:
                return None
            return (View(self.next_epoch, None, view.members),
                    f"primary {view.primary} gone and no member of epoch {view.epoch} alive")
        chosen = candidates[-1][2]
        backups = [i for _, _, i in candidates if i != chosen]
        waiting = [i for i in view.backups
                   if i not in backups and i != chosen and not self._lease_over(i)]
        if waiting:
            return None  # a backup left out may still serve reads on its lease: wait it out
        return self._view(chosen, backups), f"{chosen} replaces {view.primary}"

    def _view(self, primary: int, backups: list[int]) -> View:
        reports = self.group.reports
        members = [primary, *backups]
        return View(self.next_epoch, primary, tuple(sorted(backups)),
                    {i: reports[i].incarnation for i in members})

    def _gone(self, replica_id: int, *, primary: bool = False) -> bool:
        """Its lease is over, or its process is not the one the view was made with (it
        restarted; the old one is dead), or, as primary, it resigned."""
        report = self.group.reports.get(replica_id)
        if report is None:
            return self._lease_over(replica_id)
        view = self.group.view
        known = view.incarnations.get(replica_id, "")
        if known and report.incarnation != known:
            return True
        resigned = primary and report.state == "joining" and report.epoch == view.epoch
        return resigned or self._lease_over(replica_id)

    def _alive(self, replica_id: int) -> bool:
        report = self.group.reports.get(replica_id)
        return report is not None and not self._lease_over(replica_id)

    def _lease_over(self, replica_id: int) -> bool:
        return self.judge.lease_over(self.name, replica_id, self.now)


def _never_served(group: GroupState, floor: int) -> bool:
    """No replica of the group ever held a role: nobody's lease needs waiting out to start it
    (a replica serves only in a view, and every view's epoch is above zero)."""
    return group.view.epoch == 0 and group.highest_epoch == 0 and floor == 0


def check_group(value: Any) -> str:
    """A replica group's name."""
    if not isinstance(value, str) or value not in GROUPS:
        raise InvalidRequest(f"unknown group {str(value)[:40]!r}; groups are "
                             f"{', '.join(GROUPS)}", field="group")
    return value


check_replica = check_replica_id
"""A replica id: 1..9999."""
