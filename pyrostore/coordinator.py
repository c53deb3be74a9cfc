"""The coordinator: the one place where "who is primary" is decided (``pyrostore.coordinator``).

For each replica group (catalog, order) it keeps the view ``(epoch, primary, backups)`` in
SQLite and changes it only by making a new epoch, saved before anyone hears of it:

- every replica heartbeats about every 100 ms; each answer grants a lease that the replica
  counts from when it *sent* the heartbeat, so the coordinator, counting from when it
  *received* it, never thinks a lease over before the replica does;
- a member is removed only once its lease is certainly over (its heartbeats stopped, or the
  primary reported it and the coordinator stopped renewing it);
- a dead primary is replaced by the live member of the last view with the highest applied
  position: every member of a view holds every acknowledged write; nobody else is promoted;
- a joiner becomes a backup when the primary, having given it a snapshot under its write
  lock, asks for it (:meth:`Coordinator.add_member`).

After a restart the coordinator cannot know which leases are still running, so it treats
every lease as renewed at start-up and changes nothing for one lease.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from typing import Any

import Pyro5.api

from pyrostore.config import Settings
from pyrostore.errors import InvalidRequest, StaleEpoch
from pyrostore.metrics import timed_methods
from pyrostore.models import View
from pyrostore.schemas import ViewStore
from pyrostore.serving import Service

log = logging.getLogger(__name__)

GROUPS = ("catalog", "order")
CLOCK_MARGIN = 1.1
"""Leases are counted over by the coordinator only after lease x this (clock rate drift)."""


@dataclasses.dataclass
class Member:
    """What the coordinator knows of one replica from its heartbeats."""

    uri: str
    incarnation: str = ""
    applied: int = 0
    epoch: int = 0
    state: str = "joining"
    granted_at: float = 0.0
    suspended: bool = False


@timed_methods
class Coordinator(Service):
    """The view service as a Pyro5 object."""

    role = "coordinator"

    def __init__(self, settings: Settings, replica_id: int = 1) -> None:
        super().__init__(settings, replica_id)
        self._store = ViewStore(settings.data_dir / "coordinator.sqlite3")
        self._views: dict[str, View] = {g: View() for g in GROUPS} | self._store.load()
        self._members: dict[str, dict[int, Member]] = {g: {} for g in GROUPS}
        self._leader_incarnation: dict[str, str | None] = {g: None for g in GROUPS}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._started = time.monotonic()

    @Pyro5.api.expose
    def heartbeat(self, group: str, replica_id: int, uri: str, incarnation: str, epoch: int,
                  applied: int, state: str) -> dict[str, Any]:
        """Renew a replica's lease; answer the group's view and the lease in seconds.

        ``incarnation`` is new each time the replica's process starts, so that a primary that
        restarted (and so forgot that it leads) is told apart from one that goes on.
        """
        now = time.monotonic()
        with self._lock:
            members = self._group_members(group)
            member = members.setdefault(replica_id, Member(uri))
            restarted = member.incarnation not in ("", incarnation)
            member.uri, member.incarnation = uri, incarnation
            member.applied, member.epoch, member.state = applied, epoch, state
            if not member.suspended:
                member.granted_at = now
            view = self._views[group]
            if view.primary == replica_id and not self._leads(group, member):
                self._replace_primary(group, now)
            elif restarted and replica_id in view.backups and view.primary is not None:
                # its old process is gone; it must rejoin (unless the group waits for it)
                backups = tuple(b for b in view.backups if b != replica_id)
                self._install(group, View(view.epoch + 1, view.primary, backups),
                              f"backup {replica_id} restarted; it must join again")
            lease = 0.0 if member.suspended else self.settings.lease
            return {"view": self._wire(group), "lease": lease}

    def _leads(self, group: str, member: Member) -> bool:
        """Whether the view's primary, heartbeating as ``member``, still leads the group."""
        view, known = self._views[group], self._leader_incarnation[group]
        if known is None:  # the coordinator restarted: believe a primary that says it leads
            if member.state == "primary" and member.epoch == view.epoch:
                self._leader_incarnation[group] = member.incarnation
                return True
            return member.epoch < view.epoch and member.state != "joining"
        if member.incarnation != known:
            return False  # restarted: it must lead anew, in a new epoch
        return not (member.state == "joining" and member.epoch == view.epoch)  # it resigned

    @Pyro5.api.expose
    def report_failure(self, group: str, epoch: int, reporter: int, failed: int) -> None:
        """The primary could not reach a backup: stop renewing it; it goes once its lease has."""
        with self._lock:
            view = self._views[self._checked(group)]
            if epoch != view.epoch or reporter != view.primary or failed not in view.backups:
                return
            member = self._members[group].get(failed)
            if member is not None and not member.suspended:
                log.warning("%s primary %d reports backup %d failed", group, reporter, failed)
                member.suspended = True

    @Pyro5.api.expose
    def add_member(self, group: str, epoch: int, primary: int, joiner: int,
                   joiner_uri: str) -> dict[str, Any]:
        """The primary has given ``joiner`` a snapshot: make it a backup in a new epoch."""
        with self._lock:
            view = self._views[self._checked(group)]
            if epoch != view.epoch or primary != view.primary:
                raise StaleEpoch(f"{group} view is at epoch {view.epoch}, primary {view.primary}")
            member = self._members[group].setdefault(joiner, Member(joiner_uri))
            member.suspended, member.granted_at = False, time.monotonic()
            backups = tuple(sorted({*view.backups, joiner} - {primary}))
            self._install(group, View(view.epoch + 1, primary, backups), f"{joiner} joined")
            return self._wire(group)

    @Pyro5.api.expose
    def view(self, group: str) -> dict[str, Any]:
        """The group's current view, with the members' URIs."""
        with self._lock:
            return self._wire(self._checked(group))

    @Pyro5.api.expose
    def views(self) -> dict[str, Any]:
        """Every group's view and what each replica last said of itself (for ``status``)."""
        now = time.monotonic()
        with self._lock:
            return {group: {**self._wire(group), "replicas": {
                str(i): {"uri": m.uri, "applied": m.applied, "epoch": m.epoch, "state": m.state,
                         "lease_left": round(max(0.0, m.granted_at + self.settings.lease - now),
                                             3),
                         "suspended": m.suspended}
                for i, m in sorted(self._members[group].items())}} for group in GROUPS}

    def details(self) -> dict[str, Any]:
        return {"groups": self.views()}

    def start(self) -> None:
        threading.Thread(target=self._watch, name="watch", daemon=True).start()

    def close(self) -> None:
        self._stopping.set()
        self._store.close()

    def _watch(self) -> None:
        """Every half heartbeat: replace dead primaries, drop dead backups, start groups."""
        while not self._stopping.wait(self.settings.heartbeat_interval / 2):
            now = time.monotonic()
            with self._lock:
                for group in GROUPS:
                    self._check(group, now)

    def _check(self, group: str, now: float) -> None:
        view = self._views[group]
        if view.epoch == 0:
            self._bootstrap(group, now)
            return
        if now < self._started + self._lease_over:
            return  # leases granted before a restart may still run
        if view.primary is None or self._expired(group, view.primary, now):
            self._replace_primary(group, now)
            return
        gone = [b for b in view.backups if self._expired(group, b, now)]
        if gone:
            backups = tuple(b for b in view.backups if b not in gone)
            self._install(group, View(view.epoch + 1, view.primary, backups),
                          f"backup(s) {gone} gone")

    def _bootstrap(self, group: str, now: float) -> None:
        """A group that never had a view: the first live replica leads, others join."""
        live = [(m.applied, -i, i) for i, m in self._members[group].items()
                if not self._expired(group, i, now)]
        if live:
            self._promote(group, View(), max(live)[2], (), "starts the group")

    def _replace_primary(self, group: str, now: float) -> None:
        """Promote the live member of the last view that applied most; none: wait for one."""
        view = self._views[group]
        candidates = [(m.applied, -i, i) for i, m in self._members[group].items()
                      if i in view.members and not m.suspended and m.incarnation
                      and not self._expired(group, i, now)]
        if not candidates:
            if view.primary is not None:
                log.warning("%s: primary %s gone and no member of epoch %d is alive; waiting",
                            group, view.primary, view.epoch)
                for member_id in view.members:  # no primary commits without them now
                    if member_id in self._members[group]:
                        self._members[group][member_id].suspended = False
                self._install(group, View(view.epoch + 1, None, view.members), "no primary")
            return
        chosen = max(candidates)[2]
        backups = tuple(i for _, _, i in sorted(candidates) if i != chosen)
        leased = [i for i in view.backups
                  if i not in backups and i != chosen and not self._expired(group, i, now)]
        if leased:
            return  # a backup left out may still serve reads on its lease: wait it out
        self._promote(group, view, chosen, backups, f"replaces {view.primary}")

    def _promote(self, group: str, view: View, chosen: int, backups: tuple[int, ...],
                 why: str) -> None:
        self._leader_incarnation[group] = self._members[group][chosen].incarnation
        self._install(group, View(view.epoch + 1, chosen, backups), f"{chosen} {why}")

    def _expired(self, group: str, replica_id: int, now: float) -> bool:
        member = self._members[group].get(replica_id)
        granted_at = self._started if member is None else max(member.granted_at, self._started)
        return now > granted_at + self._lease_over

    @property
    def _lease_over(self) -> float:
        return self.settings.lease * CLOCK_MARGIN

    def _install(self, group: str, view: View, why: str) -> None:
        self._store.save(group, view)
        self._views[group] = view
        for replica_id in set(self._members[group]) - set(view.members):
            self._members[group][replica_id].suspended = False
        log.info("%s epoch %d: primary %s, backups %s (%s)", group, view.epoch, view.primary,
                 list(view.backups), why)

    def _wire(self, group: str) -> dict[str, Any]:
        uris = {i: m.uri for i, m in self._members[group].items()}
        return self._views[group].to_wire(uris)

    def _group_members(self, group: str) -> dict[int, Member]:
        return self._members[self._checked(group)]

    @staticmethod
    def _checked(group: str) -> str:
        if group not in GROUPS:
            raise InvalidRequest(f"unknown group {group!r}; groups are {', '.join(GROUPS)}")
        return group
