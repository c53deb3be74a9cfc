"""The control plane's decision core, stepped by hand with a fake clock (no threads, no I/O)."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest

from pyrostore.config import Settings
from pyrostore.control import LEASE_MARGIN, ControlState, Judge, Renewal
from pyrostore.discovery import Coordinators
from pyrostore.errors import InvalidRequest, Unavailable
from pyrostore.models import View

LEASE = 1.0
OVER = LEASE * LEASE_MARGIN


def renewal(group: str, replica: int, *, seq: int = 1, incarnation: str = "",
            applied: int = 0, epoch: int = 0, state: str = "joining") -> dict[str, Any]:
    return {"op": "renew", "renewal": Renewal(
        group, replica, incarnation or f"inc-{replica}", seq,
        f"PYRO:pyrostore.{group}.{replica}@h:1", applied, epoch, state).to_wire()}


class Plane:
    """A state machine and a leader's judge, with the commands applied as Raft would."""

    def __init__(self) -> None:
        self.state = ControlState()
        self.judge = Judge(lease=LEASE)
        self.now = 100.0
        self.seq: dict[tuple[str, int], int] = {}

    def renew(self, group: str, replica: int, **fields: Any) -> dict[str, Any]:
        key = (group, replica)
        self.seq[key] = fields.pop("seq", self.seq.get(key, 0) + 1)
        result = self.state.apply(renewal(group, replica, seq=self.seq[key], **fields))
        if result["granted"]:
            self.judge.renewed(group, replica, self.now)
        return result

    def step(self) -> list[dict[str, Any]]:
        """Plan, and apply what was planned (as if committed at once)."""
        commands = self.judge.plan(self.state, self.now)
        for command in commands:
            assert self.state.apply(command)["ok"], command
        return commands

    def view(self, group: str = "catalog") -> View:
        return self.state.groups[group].view

    def start_group(self, *replicas: int) -> None:
        """A group whose first replica leads and the others joined (as after start-up)."""
        self.judge.became_leader(self.now)
        for replica in replicas:
            self.renew("catalog", replica)
        self.now += OVER + 0.01
        for replica in replicas:
            self.renew("catalog", replica)
        self.step()
        primary = self.view().primary
        assert primary is not None
        for joiner in [r for r in replicas if r != primary]:
            view = self.view()
            assert self.state.apply({
                "op": "add_member", "group": "catalog", "epoch": view.epoch,
                "primary": primary, "joiner": joiner, "incarnation": f"inc-{joiner}",
                "new_epoch": view.epoch + 1})["ok"]


def test_a_group_that_never_had_a_view_starts_at_once() -> None:
    plane = Plane()
    plane.judge.became_leader(plane.now)
    plane.renew("order", 2, applied=0)
    plane.renew("order", 1, applied=0)
    [start] = plane.step()
    assert start["view"]["primary"] == 1 and start["view"]["epoch"] == 1
    plane.state.apply(renewal("catalog", 1, epoch=3))  # a replica has seen a view: wait
    assert plane.step() == []


def test_a_lease_is_over_only_after_the_margin() -> None:
    judge = Judge(lease=LEASE)
    judge.became_leader(0.0)
    judge.renewed("catalog", 1, 10.0)
    assert not judge.lease_over("catalog", 1, 10.0 + LEASE)  # the replica's own lease ends here
    assert not judge.lease_over("catalog", 1, 10.0 + OVER)
    assert judge.lease_over("catalog", 1, 10.0 + OVER + 1e-6)


def test_the_judge_looks_again_when_the_next_lease_may_end() -> None:
    judge = Judge(lease=LEASE)
    assert judge.next_deadline(5.0) == 6.0  # not leading: nothing to wait for
    judge.became_leader(10.0)
    judge.renewed("catalog", 1, 10.2)
    judge.renewed("order", 1, 10.5)
    assert judge.next_deadline(10.6) == pytest.approx(10.0 + OVER)
    assert judge.next_deadline(10.0 + OVER + 0.001) == pytest.approx(10.2 + OVER)
    assert judge.next_deadline(12.0) == 13.0


def test_a_renewal_says_when_a_report_changed() -> None:
    state = ControlState()
    assert state.apply(renewal("order", 1, seq=1))["changed"]  # a new replica
    assert not state.apply(renewal("order", 1, seq=2))["changed"]
    assert state.apply(renewal("order", 1, seq=3, state="backup", epoch=2))["changed"]
    assert state.apply(renewal("order", 1, seq=1, incarnation="again"))["changed"]


def test_a_follower_judges_no_lease_over() -> None:
    judge = Judge(lease=LEASE)
    judge.renewed("catalog", 1, 0.0)
    assert not judge.lease_over("catalog", 1, 1000.0)
    judge.became_leader(1.0)
    judge.lost_leadership()
    assert judge.plan(ControlState(), 1000.0) == []


def test_a_new_leader_changes_no_view_before_its_leadership_is_a_lease_old() -> None:
    plane = Plane()
    plane.start_group(1, 2)
    assert plane.view().primary == 1
    # leadership moves to another coordinator that never applied a renewal of replica 1
    plane.judge = Judge(lease=LEASE)
    plane.now += 50.0  # long after replica 1's last renewal (it died)
    plane.judge.became_leader(plane.now)
    plane.renew("catalog", 2)
    plane.now += OVER - 0.01
    plane.renew("catalog", 2)
    assert plane.step() == []  # 1 may hold a lease its predecessor granted
    plane.now += 0.02
    [change] = plane.step()
    assert plane.view().primary == 2 and "replaces 1" in change["why"]


def test_a_renewal_that_was_never_applied_does_not_extend_a_lease() -> None:
    """What grants a lease is a committed renewal: one never applied renews nothing."""
    plane = Plane()
    plane.start_group(1, 2)
    epoch = plane.view().epoch
    plane.now += 0.5
    plane.renew("catalog", 2)
    # replica 1's renewal times out before it is committed: nothing is applied for it
    plane.now += OVER - 0.4
    [change] = plane.step()
    assert plane.view().epoch == epoch + 1 and plane.view().primary == 2, change


def test_promotion_only_of_a_member_of_the_last_view_that_applied_most() -> None:
    plane = Plane()
    plane.start_group(1, 2, 3)
    assert plane.view() == View(3, 1, (2, 3))
    plane.renew("catalog", 4, applied=99)  # a joiner with more writes: never promoted
    for _ in range(12):
        plane.now += 0.1
        plane.renew("catalog", 2, applied=5, epoch=3, state="backup")
        plane.renew("catalog", 3, applied=7, epoch=3, state="backup")
        plane.renew("catalog", 4, applied=99)
    plane.step()
    assert plane.view().primary == 3 and plane.view().backups == (2,)
    assert plane.view().incarnations == {3: "inc-3", 2: "inc-2"}


def test_a_group_with_no_member_alive_waits_for_one_of_them() -> None:
    plane = Plane()
    plane.start_group(1, 2)
    plane.renew("catalog", 3, applied=50)  # outside the view: it may lack acknowledged writes
    plane.now += OVER + 0.01
    plane.renew("catalog", 3, applied=50)
    plane.step()
    assert plane.view().primary is None and set(plane.view().backups) == {1, 2}
    plane.renew("catalog", 3, applied=50)
    plane.now += 0.1
    assert plane.step() == []
    plane.renew("catalog", 2, incarnation="restarted", applied=3)
    plane.step()
    assert plane.view().primary == 2
    assert plane.view().incarnations[2] == "restarted"


def test_a_restarted_or_resigned_primary_is_replaced_at_once() -> None:
    plane = Plane()
    plane.start_group(1, 2)
    epoch = plane.view().epoch
    plane.renew("catalog", 2, epoch=epoch, state="backup", applied=3)
    plane.renew("catalog", 1, incarnation="new-process", applied=2)
    plane.step()  # its old process is gone: a new epoch, whoever leads it
    assert plane.view().primary == 2 and plane.view().epoch == epoch + 1
    assert plane.view().incarnations == {2: "inc-2", 1: "new-process"}
    plane.renew("catalog", 2, epoch=epoch + 1, state="joining")  # it resigned
    plane.renew("catalog", 1, incarnation="new-process")
    plane.step()
    assert plane.view().primary == 1  # the only other live member of the last view


def test_a_backup_is_dropped_once_its_lease_is_over_or_it_restarted() -> None:
    plane = Plane()
    plane.start_group(1, 2, 3)
    plane.renew("catalog", 3, incarnation="again")
    plane.step()
    assert plane.view().backups == (2,)
    assert plane.state.apply({"op": "suspend", "group": "catalog", "epoch": plane.view().epoch,
                              "reporter": 1, "failed": 2})["ok"]
    assert not plane.renew("catalog", 2)["granted"]  # reported: renewed no more
    plane.now += OVER - 0.01
    plane.renew("catalog", 1)
    assert plane.step() == []  # its last lease may still run
    plane.now += 0.02
    plane.renew("catalog", 1)
    plane.step()
    assert plane.view().backups == ()
    assert plane.renew("catalog", 2)["granted"]  # outside the view it may rejoin


def test_an_epoch_is_never_reused() -> None:
    state = ControlState()
    wire = View(5, 1, ()).to_wire()
    assert state.apply({"op": "change_view", "group": "order", "expected_epoch": 0,
                        "view": wire})["ok"]
    replay = state.apply({"op": "change_view", "group": "order", "expected_epoch": 0,
                          "view": wire})
    assert not replay["ok"]  # a command applied twice changes nothing the second time
    lower = View(5, 2, ()).to_wire()
    assert not state.apply({"op": "change_view", "group": "order", "expected_epoch": 5,
                            "view": lower})["ok"]
    state.apply(renewal("order", 2, epoch=9))  # a replica has seen epoch 9 (a forgotten log)
    judge = Judge(lease=LEASE)
    judge.became_leader(0.0)
    judge.renewed("order", 2, 10.0)
    [change] = judge.plan(state, 10.5, floors={"order": 12})
    assert change["view"]["epoch"] == 13  # above the view, the reports and the file


def test_a_renewal_applied_twice_counts_once() -> None:
    state = ControlState()
    first = renewal("order", 1, seq=4, applied=10)
    assert not state.apply(first)["repeat"]
    assert state.apply(first)["repeat"]
    older = renewal("order", 1, seq=3, applied=2)
    assert state.apply(older)["repeat"]
    assert state.groups["order"].reports[1].applied == 10


def test_a_lost_raft_state_restores_the_saved_view_rather_than_start_anew() -> None:
    state = ControlState()
    state.apply(renewal("catalog", 3, applied=100))  # an outsider with the most writes
    state.apply(renewal("catalog", 1, applied=4))
    judge = Judge(lease=LEASE)
    judge.became_leader(0.0)
    saved = {"catalog": View(7, 1, (2,))}
    [change] = judge.plan(state, OVER + 0.01, floors={"catalog": 7}, saved=saved)
    assert change["view"] == View(8, None, (1, 2)).to_wire()


@pytest.mark.parametrize("bad", [None, [], {"group": "catalog"},
                                 {**renewal("catalog", 1)["renewal"], "state": "boss"},
                                 {**renewal("catalog", 1)["renewal"], "group": "stock"},
                                 {**renewal("catalog", 1)["renewal"], "seq": -1},
                                 {**renewal("catalog", 1)["renewal"], "extra": 1}])
def test_a_malformed_renewal_is_refused(bad: Any) -> None:
    with pytest.raises(InvalidRequest):
        Renewal.from_wire(bad)


def test_a_call_no_coordinator_takes_is_unavailable(tmp_path: Path) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    settings = Settings.from_env(environ={}, data_dir=tmp_path,
                                 coordinators=f"127.0.0.1:{port}:{port}")
    group = Coordinators(settings)
    try:
        with pytest.raises(Unavailable) as refused:
            group.command("renew", {})
        assert "no coordinator could take renew" in str(refused.value)
    finally:
        group.close()
