"""A replica's peer endpoint: what its fellow replicas (and the coordinators) call on it.

A Pyro5 object of its own, ``<name>.peer``, on the replica's daemon beside the service, so that
the service's own API stays the clients': forwards (``replicate``), levelling (``position``,
``request_at``, ``committed``, ``install_snapshot``), joining (``join``) and the coordinators'
``nudge``. Every argument is checked here; every message is fenced by epoch below it, in
:class:`~pyrostore.replication.ReplicatedGroup` and :class:`~pyrostore.membership.Membership`.
"""

from __future__ import annotations

from typing import Any

import Pyro5.api

from pyrostore.access import NODE, allow
from pyrostore.errors import InvalidRequest
from pyrostore.metrics import MethodStats, timed_methods
from pyrostore.models import check_int, check_request_id
from pyrostore.replication import WRITE_FIELDS, ReplicatedGroup


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
        """Apply the primary's writes ``[{seq, op, request_id, result, keys}, ...]``."""
        self.group.replicate(_epoch(epoch), _writes(writes), _seq(committed))

    @Pyro5.api.expose
    @allow(NODE)
    def committed(self, epoch: int, seq: int) -> None:
        """The primary of ``epoch`` has committed every write up to ``seq``."""
        self.member.committed(_epoch(epoch), _seq(seq))

    @Pyro5.api.expose
    @allow(NODE)
    def position(self, epoch: int) -> int:
        """This replica's applied position, for a primary levelling its backups."""
        return self.member.position(_epoch(epoch))

    @Pyro5.api.expose
    @allow(NODE)
    def install_snapshot(self, epoch: int, snapshot: dict[str, Any]) -> None:
        """Replace this replica's whole state by the primary's."""
        if not isinstance(snapshot, dict):
            raise InvalidRequest("a snapshot is a dict")
        self.member.install_snapshot(_epoch(epoch), snapshot)

    @Pyro5.api.expose
    @allow(NODE)
    def join(self, joiner: dict[str, Any]) -> dict[str, Any]:
        """A joiner (``{replica, uri, incarnation}``) asks the primary to take it in."""
        return self.member.join(joiner)

    @Pyro5.api.expose
    @allow(NODE)
    def request_at(self, seq: int) -> str | None:
        """The request id of this replica's write ``seq`` (levelling compares it)."""
        return self.member.request_at(_seq(seq))

    @Pyro5.api.expose
    @Pyro5.api.oneway
    @allow(NODE)
    def nudge(self) -> None:
        """The coordinators changed this replica's view: heartbeat now to hear of it."""
        self.member.nudge()


def _epoch(value: Any) -> int:
    return check_int(value, "epoch", low=0, high=2**62)


def _seq(value: Any) -> int:
    return check_int(value, "seq", low=0, high=2**62)


def _writes(value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not value:
        raise InvalidRequest("writes must be a non-empty list")
    return [_forwarded(write) for write in value]


def _forwarded(write: Any) -> dict[str, Any]:
    """A forwarded write, checked: ``{seq, op, request_id, result, keys}``."""
    if not isinstance(write, dict) or set(write) != set(WRITE_FIELDS):
        raise InvalidRequest(f"a forwarded write is {{{', '.join(WRITE_FIELDS)}}}")
    if not isinstance(write["op"], dict) or not isinstance(write["keys"], list):
        raise InvalidRequest("a forwarded write's op is a dict and its keys a list")
    return {**write, "seq": _seq(write["seq"]),
            "request_id": check_request_id(write["request_id"])}
