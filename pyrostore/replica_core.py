"""What one replica decides about its place in its group: a plain object fed events and a clock.

:class:`ReplicaCore` holds a replica's view of its group and what follows from it, with no
threads, Pyro5 or SQLite inside (:mod:`pyrostore.membership` is the shell that feeds it and
acts on its answers, holding its lock around every call):

- **the lease**: a renewal the coordinators granted extends it, counted from when the heartbeat
  was *sent*; nothing is served without it;
- **the role**: a newer view makes it primary (level the backups, then serve), backup, or
  joining (outside the view, or not the process the view was made with);
- **fencing**: a message from a primary older than the newest epoch seen is refused;
- **what is committed**: a backup treats a key written by a write not yet known committed as
  dirty, and sends its reads to the primary (CRAQ);
- **levelling**: whether a replica holds exactly the primary's state, can catch up from its
  log, or needs a snapshot;
- **a corrupt file** (:func:`on_open`): rejoin empty from a live primary, or refuse to start.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from pyrostore.errors import NotServing
from pyrostore.models import View


@dataclasses.dataclass(frozen=True)
class Adopted:
    """What a newly adopted view asks of the replica: ``lead``, ``serve`` as a backup, or
    ``join`` (it stepped down: ``why``; ``was_serving``: in some role until now)."""

    action: str
    why: str = ""
    was_serving: bool = False


class ReplicaCore:
    """One replica's view, role, lease, fence and knowledge of what is committed."""

    def __init__(self, replica_id: int, incarnation: str, *, name: str = "") -> None:
        self.replica_id = replica_id
        self.incarnation = incarnation
        self.name = name or f"replica {replica_id}"
        self.view = View()
        self.uris: dict[int, str] = {}
        self.state = "joining"
        self.lease_until = 0.0
        self.confirmed_epoch = 0  # the epoch in which this replica is level with its primary
        self.committed_seq = 0  # every write up to here is known to be committed
        self.dirty: dict[str, int] = {}  # key -> newest write to it not known to be committed
        self.fence = 0  # the newest epoch any primary or view has shown: older ones are refused

    # -- events -----------------------------------------------------------------------------

    def renewed(self, sent: float, lease: float) -> None:
        """A heartbeat sent at ``sent`` was answered with a lease of ``lease`` seconds."""
        if lease > 0:
            self.lease_until = max(self.lease_until, sent + lease)

    def adopt(self, view: View, uris: dict[int, str]) -> Adopted | None:
        """Take ``view`` if it is newer than the one held; what to do about it, if anything."""
        self.uris.update(uris)
        if view.epoch <= self.view.epoch:
            return None
        self.view = view
        role = view.role_of(self.replica_id, self.incarnation)
        if role == "primary":  # promoted, or leading on in a new epoch: level, then serve
            self.state = "primary"
            return Adopted("lead")
        if role == "backup" and self.state != "primary":
            self.state = "backup"
            return Adopted("serve")
        was_serving = self.step_down()
        return Adopted("join", why=(f"not a backup of epoch {view.epoch}" if role == "backup"
                                    else f"outside epoch {view.epoch}"), was_serving=was_serving)

    def step_down(self) -> bool:
        """Stop serving (rejoin by snapshot); whether it was serving in some role."""
        was = self.state != "joining"
        self.state, self.confirmed_epoch = "joining", 0
        return was

    def led(self, epoch: int, applied: int) -> bool:
        """The primary of ``epoch`` has levelled every backup at ``applied``: it serves now
        (unless a newer view or a step-down came meanwhile). Whether it does."""
        if self.view.epoch != epoch or self.state != "primary":
            return False
        self.confirmed_epoch, self.committed_seq = epoch, applied
        self.dirty.clear()
        return True

    def fencing(self, epoch: int) -> str:
        """May a primary of ``epoch`` write here? ``accept`` (the fence rises to it), ``stale``
        (older than an epoch seen), ``primary`` (this replica is a primary itself) or
        ``deposed`` (it is a primary, and the writer's epoch is newer: it has stepped down)."""
        if epoch < max(self.view.epoch, self.fence):
            return "stale"
        if self.state == "primary":
            if epoch > self.view.epoch:
                self.step_down()
                return "deposed"
            return "primary"
        self.fence = epoch
        return "accept"

    def confirm(self, epoch: int, committed: int) -> None:
        """The primary of ``epoch`` says every write up to ``committed`` is committed."""
        self.confirmed_epoch = max(self.confirmed_epoch, epoch)
        if committed > self.committed_seq:
            self.committed_seq = committed
            self.dirty = {k: s for k, s in self.dirty.items() if s > committed}

    def installed(self, applied: int) -> None:
        """A snapshot at ``applied`` replaced this replica's state."""
        self.dirty.clear()
        self.committed_seq = applied

    def applying(self, writes: list[tuple[int, list[str]]]) -> None:
        """Forwarded writes ``(seq, keys)`` are about to be applied: their keys turn dirty."""
        for seq, keys in writes:
            self.dirty.update(dict.fromkeys(keys, seq))

    # -- questions ----------------------------------------------------------------------------

    def leads(self) -> bool:
        """Whether it is the primary of the view it holds."""
        return self.state == "primary" and self.view.primary == self.replica_id

    def is_dirty(self, keys: list[str], applied: int) -> bool:
        """Whether a read of ``keys`` must go to the primary (a backup's CRAQ rule)."""
        if self.committed_seq < applied and not self.dirty:
            return True  # restarted with writes whose keys it no longer knows
        return any(key in self.dirty for key in keys)

    def why_not_serving(self, roles: tuple[str, ...], now: float) -> str | None:
        """None if it may serve in one of ``roles`` now; else why not."""
        if now >= self.lease_until:
            return "no lease"
        if self.state not in roles:
            return f"it is {'a ' + self.state if self.state != 'joining' else 'joining'}"
        if self.confirmed_epoch != self.view.epoch:
            return f"{self.state}, not yet level in epoch {self.view.epoch}"
        return None

    def check_serving(self, roles: tuple[str, ...], now: float) -> None:
        """Raise :class:`NotServing` (naming the primary) unless it may serve in ``roles``."""
        why = self.why_not_serving(roles, now)
        if why is not None:
            raise NotServing(f"{self.name} is not serving ({why})",
                             primary=self.uris.get(self.view.primary or 0, ""))

    def primary_uri(self) -> str:
        """The URI of the view's primary, if known."""
        return self.uris.get(self.view.primary or 0, "")

    def details(self, now: float) -> dict[str, Any]:
        """Its part of ``info()``."""
        return {"state": self.state, "serving": self.why_not_serving(("primary", "backup"),
                                                                       now) is None,
                "epoch": self.view.epoch, "primary": self.view.primary,
                "backups": list(self.view.backups), "confirmed_epoch": self.confirmed_epoch,
                "lease_left": round(max(0.0, self.lease_until - now), 3)}


WriteName = tuple[str, int]
"""What names a write: its request id and the epoch of the primary that numbered it."""


def transfer_plan(*, applied: int, ours: WriteName | None, position: int,
                  theirs: WriteName | None, behind_limit: int,
                  log_holds: Callable[[], bool], member: bool = False) -> str:
    """How a primary at ``applied`` brings level a replica at ``position``, ``theirs`` the
    write it holds there and ``ours`` the primary's write at that position (if it has one):

    - ``level``: it already is: the same write at the same position;
    - ``catch-up``: it is behind, at most ``behind_limit`` writes, with the same write at its
      position, and the log still holds every write it lacks (``log_holds()``, asked last:
      it reads the database): it is sent those;
    - ``snapshot``: anything else: too far behind, ahead, or with another write at its
      position (a tail the primary never acknowledged); at position 0 (a store's seed, which
      is not in the log and may differ); or where the write's epoch is unknown (0: written
      before writes carried it), since only an epoch proves a history.

    Why one write proves a whole history: one primary numbers the writes of an epoch, each
    once, on top of the history it was brought level with; a replica takes a write only on
    top of that same history (forwards go to levelled backups, and these transfers check
    first). So two replicas with the same write (same request id and epoch) at a position
    hold the same writes up to it, as in Raft's log matching.

    A ``member`` of the last view (a new primary levelling its backups) holds a prefix of the
    history of that view's primary, as the new primary does: at the same position it is
    level whatever its write's name, and behind it holds a prefix of the primary's history.
    """
    same = member or (position > 0 and ours is not None and ours == theirs and ours[1] > 0)
    if same and position == applied:
        return "level"
    if same and position < applied and applied - position <= behind_limit and log_holds():
        return "catch-up"
    return "snapshot"


def on_open(*, corrupt: bool, live_primary: bool) -> str:
    """What a replica starting on its file does: ``open`` it (it passed its check); ``rejoin``
    (it was corrupt and is set aside: start empty, and take a snapshot from the group's live
    primary, which holds every acknowledged write); or ``refuse`` (corrupt, and no live primary
    to copy from: an empty replica must not be a candidate to lead)."""
    if not corrupt:
        return "open"
    return "rejoin" if live_primary else "refuse"
