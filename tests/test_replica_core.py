"""A replica's decision core, stepped by hand with a fake clock (no threads, no I/O)."""

from __future__ import annotations

import pytest

from pyrostore.errors import NotServing
from pyrostore.models import View
from pyrostore.replica_core import ReplicaCore, transfer_plan

URIS = {1: "PYRO:r1@h:1", 2: "PYRO:r2@h:2", 3: "PYRO:r3@h:3"}


def core(replica_id: int = 2, incarnation: str = "me") -> ReplicaCore:
    return ReplicaCore(replica_id, incarnation)


def test_the_lease_counts_from_the_heartbeat_sent_and_never_shrinks() -> None:
    replica = core()
    replica.renewed(sent=10.0, lease=1.0)
    replica.renewed(sent=9.5, lease=1.0)  # a late answer to an older heartbeat
    assert replica.lease_until == 11.0
    replica.renewed(sent=10.5, lease=0.0)  # not granted: nothing
    assert replica.lease_until == 11.0


def test_a_backup_serves_only_with_a_lease_and_once_confirmed_level() -> None:
    replica = core()
    adopted = replica.adopt(View(4, 1, (2,), {1: "p", 2: "me"}), URIS)
    assert adopted is not None and adopted.action == "serve"
    replica.renewed(sent=0.0, lease=1.0)
    assert replica.why_not_serving(("primary", "backup"), 0.5) == \
        "backup, not yet level in epoch 4"
    replica.confirm(4, 0)
    assert replica.why_not_serving(("primary", "backup"), 0.5) is None
    assert replica.why_not_serving(("primary", "backup"), 1.0) == "no lease"
    with pytest.raises(NotServing) as refused:
        replica.check_serving(("primary",), 0.5)
    assert refused.value.details["primary"] == URIS[1]


def test_a_view_made_with_another_process_of_this_replica_makes_it_join() -> None:
    replica = core(incarnation="restarted")
    adopted = replica.adopt(View(4, 2, (1,), {2: "before-the-crash", 1: "p"}), URIS)
    assert adopted is not None and adopted.action == "join" and not adopted.was_serving
    assert replica.state == "joining"


def test_a_promotion_leads_and_serves_only_once_levelled() -> None:
    replica = core()
    replica.adopt(View(4, 1, (2,), {1: "p", 2: "me"}), URIS)
    replica.confirm(4, 7)
    adopted = replica.adopt(View(5, 2, (3,), {2: "me", 3: "b"}), URIS)
    assert adopted is not None and adopted.action == "lead"
    replica.renewed(sent=0.0, lease=1.0)
    assert replica.why_not_serving(("primary",), 0.1) is not None
    assert replica.led(5, 9)
    assert replica.why_not_serving(("primary",), 0.1) is None and replica.committed_seq == 9
    again = replica.adopt(View(6, 2, (), {2: "me"}), URIS)
    assert again is not None and again.action == "lead"
    assert not replica.led(5, 9)  # levelling for an older view: superseded


def test_an_old_view_changes_nothing() -> None:
    replica = core()
    replica.adopt(View(4, 1, (2,), {1: "p", 2: "me"}), URIS)
    assert replica.adopt(View(3, 2, (), {2: "me"}), URIS) is None
    assert replica.state == "backup"


def test_fencing_refuses_older_primaries_and_deposes_this_one_for_a_newer() -> None:
    replica = core()
    replica.adopt(View(4, 1, (2,), {1: "p", 2: "me"}), URIS)
    assert replica.fencing(4) == "accept"
    assert replica.fencing(6) == "accept"  # a newer primary spoke: the fence rises
    assert replica.fencing(5) == "stale"
    leader = core(1, "p")
    leader.adopt(View(4, 1, (2,), {1: "p", 2: "me"}), URIS)
    assert leader.fencing(4) == "primary"
    assert leader.state == "primary"
    assert leader.fencing(5) == "deposed"
    assert leader.state == "joining"


def test_a_backup_sends_reads_of_uncommitted_writes_to_the_primary() -> None:
    replica = core()
    replica.adopt(View(4, 1, (2,), {1: "p", 2: "me"}), URIS)
    replica.confirm(4, 10)
    replica.applying([(11, ["item:1"]), (12, ["item:2", "topic:x"])])
    assert replica.is_dirty(["item:1"], 12) and replica.is_dirty(["topic:x"], 12)
    assert not replica.is_dirty(["item:3"], 12)
    replica.confirm(4, 11)
    assert not replica.is_dirty(["item:1"], 12) and replica.is_dirty(["item:2"], 12)
    restarted = core()
    assert restarted.is_dirty(["item:3"], 5)  # writes on disk whose keys it no longer knows


R5 = ("r5", 3)
R9 = ("r9", 4)


@pytest.mark.parametrize(("position", "theirs", "ours", "log_holds", "how"), [
    (9, R9, R9, True, "level"),  # the same write at the same position
    (9, ("other", 4), R9, True, "snapshot"),  # a write the primary never made
    (5, R5, R5, True, "catch-up"),  # a prefix of the primary's history
    (5, R5, R5, False, "snapshot"),  # the log lost some of what it missed
    (5, ("other", 3), R5, True, "snapshot"),  # a tail of its own
    (5, ("r5", 2), R5, True, "snapshot"),  # the same request, numbered by another primary
    (5, ("r5", 0), ("r5", 0), True, "snapshot"),  # written before writes carried an epoch
    (9, ("r9", 0), ("r9", 0), True, "snapshot"),
    (5, R5, None, True, "snapshot"),  # the primary forgot that write: no proof of a prefix
    (1, ("r1", 1), ("r1", 1), True, "snapshot"),  # more than the limit behind
    (0, None, None, True, "snapshot"),  # the seed is not in the log, and may differ
    (10, ("r10", 4), None, True, "snapshot"),  # ahead: a tail the primary never acknowledged
])
def test_a_replica_is_brought_level_by_the_cheapest_way_that_is_right(
        position: int, theirs: tuple[str, int] | None, ours: tuple[str, int] | None,
        log_holds: bool, how: str) -> None:
    asked: list[bool] = []

    def holds() -> bool:
        asked.append(True)
        return log_holds

    assert transfer_plan(applied=9, ours=ours, position=position, theirs=theirs,
                         behind_limit=6, log_holds=holds) == how
    assert len(asked) <= 1


def test_a_divergent_tail_with_the_same_last_request_is_not_taken_for_a_prefix() -> None:
    """A primary of epoch 3 commits r1 at 101 and r2 at 102 and dies before its backups hold
    them; the primary of epoch 4 writes r3 at 101, then the retried r2 at 102. The old
    primary, back, holds r2 at 102 too: the epoch tells the two writes apart."""
    assert transfer_plan(applied=102, ours=("r2", 4), position=102, theirs=("r2", 3),
                         behind_limit=100, log_holds=lambda: True) == "snapshot"
    assert transfer_plan(applied=110, ours=("r2", 4), position=102, theirs=("r2", 3),
                         behind_limit=100, log_holds=lambda: True) == "snapshot"


def test_a_member_of_the_last_view_holds_a_prefix_whatever_its_writes_are_named() -> None:
    """A new primary levelling its backups (members of the last view, as it was): after an
    upgrade their writes have no epoch, and at position 0 both hold the first primary's
    seed; neither is a reason for a snapshot."""
    for position, how in ((9, "level"), (0, "catch-up"), (5, "catch-up"), (10, "snapshot")):
        assert transfer_plan(applied=9, ours=("r", 0), position=position, theirs=("r", 0),
                             behind_limit=100, log_holds=lambda: True, member=True) == how


def test_with_a_limit_of_zero_every_transfer_is_a_snapshot() -> None:
    assert transfer_plan(applied=9, ours=("r8", 2), position=8, theirs=("r8", 2),
                         behind_limit=0, log_holds=lambda: True) == "snapshot"
