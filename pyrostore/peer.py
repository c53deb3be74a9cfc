"""A replica's peer endpoint: what its fellow replicas (and the coordinators) call on it.

A Pyro5 object of its own, ``<name>.peer``, on the replica's daemon beside the service, so that
the service's own API stays the clients': forwards (``replicate``), levelling (``position``,
``write_at``, ``committed``, ``catch_up``, ``install_snapshot``), joining (``join``) and the
coordinators' ``nudge``. Every argument is checked here, before anything below it runs:
types and ranges, named dicts with exactly their fields, forwarded operations and their
results as the group's state machine makes them, snapshots row by row. A bad one raises
:class:`~pyrostore.errors.InvalidRequest` and changes nothing, not even the epoch fence (a
snapshot that breaks a table's constraints only across parts is found when it is installed,
once the fence has risen: it changes nothing else). Every well-formed message is then fenced
by epoch below, in
:class:`~pyrostore.replication.ReplicatedGroup` and :class:`~pyrostore.membership.Membership`.
"""

from __future__ import annotations

import itertools
from typing import Any

import Pyro5.api

from pyrostore.access import NODE, allow
from pyrostore.errors import InvalidRequest
from pyrostore.metrics import MethodStats, timed_methods
from pyrostore.models import (
    MAX_POSITION,
    check_count,
    check_fields,
    check_int,
    check_read_key,
    check_replica_id,
    check_request_id,
    check_token,
    check_uri,
    service_name,
)
from pyrostore.replication import WRITE_FIELDS, ReplicatedGroup
from pyrostore.snapshots import low_priority
from pyrostore.transfers import MAX_FORWARD


@timed_methods
class PeerEndpoint:
    """What the other replicas of a group (and the coordinators) call on this one: a Pyro5
    object of its own, ``<name>.peer`` on the replica's daemon, timed with the service's own
    figures. Every call is checked here and fenced by epoch below."""

    def __init__(self, group: ReplicatedGroup, metrics: MethodStats) -> None:
        self.group = group
        self.member = group.member
        self.metrics = metrics

    @Pyro5.api.expose
    @allow(NODE)
    def replicate(self, epoch: int, writes: list[dict[str, Any]], committed: int) -> None:
        """Apply the primary's writes ``[{seq, op, request_id, result, keys, epoch}, ...]``."""
        epoch, committed = check_count(epoch, "epoch"), check_count(committed, "committed")
        self.group.replicate(epoch, self._writes(writes, epoch), committed)

    @Pyro5.api.expose
    @allow(NODE)
    def catch_up(self, epoch: int, token: str, writes: list[dict[str, Any]]) -> None:
        """Apply writes the primary of ``epoch`` sends from its log in the transfer ``token``
        (as ``replicate``, but confirming nothing: :mod:`pyrostore.transfers`)."""
        epoch, token = check_count(epoch, "epoch"), check_token(token, "token")
        self.group.replicate(epoch, self._writes(writes, epoch), None, token)

    @Pyro5.api.expose
    @allow(NODE)
    def committed(self, epoch: int, seq: int) -> None:
        """The primary of ``epoch`` has committed every write up to ``seq``."""
        self.member.committed(check_count(epoch, "epoch"), check_count(seq, "seq"))

    @Pyro5.api.expose
    @allow(NODE)
    def position(self, epoch: int) -> int:
        """This replica's applied position, for a primary levelling its backups."""
        return self.member.position(check_count(epoch, "epoch"))

    @Pyro5.api.expose
    @allow(NODE)
    def install_snapshot(self, epoch: int, part: dict[str, Any]) -> None:
        """One part of the primary's snapshot (:mod:`pyrostore.snapshots`); with the last,
        replace this replica's whole state by it."""
        epoch = check_count(epoch, "epoch")
        with low_priority():  # checking and staging a megabyte of rows: after the others
            self.member.install_snapshot(epoch, self.member.staging.check(part))

    @Pyro5.api.expose
    @allow(NODE)
    def write_at(self, seq: int) -> list[Any] | None:
        """``[request_id, epoch]`` of this replica's write ``seq`` (what names it), if any."""
        held = self.member.db.write_at(check_count(seq, "seq"))
        return None if held is None else list(held)

    @Pyro5.api.expose
    @allow(NODE)
    def join(self, joiner: dict[str, Any]) -> dict[str, Any]:
        """A joiner (``{replica, uri, incarnation, position, last_write, token}``: where it is,
        ``[request_id, epoch]`` of its write there or None, and a token naming this request)
        asks the primary to take it in."""
        fields = check_fields(joiner, "join request", ("replica", "uri", "incarnation",
                                                       "position", "last_write", "token"))
        replica_id = check_replica_id(fields["replica"])
        if replica_id == self.member.replica_id:
            raise InvalidRequest(f"replica {replica_id} cannot join itself", field="replica")
        uri = check_uri(fields["uri"], object_name=service_name(self.member.role, replica_id))
        return self.member.join(
            replica_id, uri, check_token(fields["incarnation"], "incarnation"),
            check_int(fields["position"], "position", low=0, high=MAX_POSITION),
            check_write_name(fields["last_write"]), check_token(fields["token"], "token"))

    @Pyro5.api.expose
    @Pyro5.api.oneway
    @allow(NODE)
    def nudge(self) -> None:
        """The coordinators changed this replica's view: heartbeat now to hear of it."""
        self.member.nudge()

    def _writes(self, value: Any, epoch: int) -> list[dict[str, Any]]:
        """Forwarded writes, checked: 1..MAX_FORWARD of them, in sequence, none of an epoch
        after ``epoch`` (the sender's)."""
        if not isinstance(value, list) or not 0 < len(value) <= MAX_FORWARD:
            raise InvalidRequest(f"writes must be a list of 1 to {MAX_FORWARD} writes",
                                 field="writes")
        writes = [self._forwarded(write) for write in value]
        if any(b["seq"] != a["seq"] + 1 for a, b in itertools.pairwise(writes)):
            raise InvalidRequest("forwarded writes must have consecutive seqs", field="writes")
        if any(write["epoch"] > epoch for write in writes):
            raise InvalidRequest("a forwarded write cannot be of a later epoch than its sender",
                                 field="writes")
        return writes

    def _forwarded(self, write: Any) -> dict[str, Any]:
        """A forwarded write ``{seq, op, request_id, result, keys, epoch}``: an operation of
        this group's machine and its result, with the read keys they change."""
        fields = check_fields(write, "forwarded write", WRITE_FIELDS)
        op, result = self.group.machine.check_write(fields["op"], fields["result"])
        keys = fields["keys"]
        if not isinstance(keys, list) or [check_read_key(k) for k in keys] != \
                self.group.machine.keys(op, result):
            raise InvalidRequest("a forwarded write's keys must be those its op changes",
                                 field="keys")
        return {"seq": check_int(fields["seq"], "seq", low=1, high=MAX_POSITION), "op": op,
                "request_id": check_request_id(fields["request_id"]), "result": result,
                "keys": keys, "epoch": check_count(fields["epoch"], "epoch")}


def check_write_name(value: Any) -> tuple[str, int] | None:
    """``[request_id, epoch]`` naming a write, or None (a replica at position 0)."""
    if value is None:
        return None
    if not isinstance(value, list | tuple) or len(value) != 2:
        raise InvalidRequest("a write is named [request_id, epoch]", field="last_write")
    return check_token(value[0], "last_write"), check_count(value[1], "last_write")
