"""The verifier's runner parts that decide without a store: outages, the nemesis schedule, the
layouts' cluster files, and the merging of client histories."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from pyrostore.clusterfile import ClusterSpec
from verifier import layouts
from verifier.availability import longest_gap, outages
from verifier.history import operations
from verifier.nemesis import KINDS, Schedule
from verifier.run import _merged


def test_longest_gap_counts_the_edges_of_the_window() -> None:
    assert longest_gap([2.0, 3.0, 3.5], 1.0, 10.0) == 6.5  # the last success, then nothing
    assert longest_gap([2.0, 9.0], 0.0, 10.0) == 7.0
    assert longest_gap([], 4.0, 5.5) == 1.5
    assert longest_gap([1.0], 5.0, 5.0) == 0.0


def test_each_kind_keeps_its_worst_episode_until_the_next_began() -> None:
    episodes = [{"kind": "kill", "start": 10.0}, {"kind": "pause", "start": 20.0},
                {"kind": "kill", "start": 30.0}]
    buys = [10.1, 12.5, 20.2, 20.4, 24.5, 30.1, 30.2, 31.0]
    worst = outages(episodes, {"buy": buys, "lookup": [11.0]}, end=40.0)
    assert worst["kill"]["buy"] == pytest.approx(9.0)  # 31.0 .. 40.0, the second kill
    assert worst["pause"]["buy"] == pytest.approx(5.5)  # 24.5 .. 30.0, when the kill began
    assert worst["pause"]["lookup"] == pytest.approx(10.0)  # none between 20 and 30


def test_the_schedule_applies_every_kind_each_round() -> None:
    schedule = Schedule(["kill", "pause", "clients"], random.Random(3))
    rounds = [sorted(schedule.next_kind() for _ in range(3)) for _ in range(4)]
    assert all(r == ["clients", "kill", "pause"] for r in rounds)
    picks = {schedule.replica(2, [1, 2]) for _ in range(50)}
    assert picks == {1, 2}
    assert {schedule.replica(None, [1, 2]) for _ in range(50)} == {1, 2}
    with pytest.raises(ValueError, match="nemesis kinds are"):
        Schedule(["kill", "flood"], random.Random(1))
    assert set(KINDS) >= {"kill", "pause", "partition", "split", "nameserver", "coordinator"}


@pytest.mark.parametrize("ports", [None, {"ns_port": 21000, "coordinator_port": 21004,
                                          "raft_port": 21008}])
def test_the_standard_layout_is_a_valid_cluster_file(ports: dict[str, int] | None) -> None:
    addresses = {host: f"10.213.0.{10 + n}" for n, host in enumerate(layouts.HOSTS)}
    spec = ClusterSpec.parse(layouts.cluster_file(addresses, ports=ports,
                                                  settings={"lease": 1.0, "cache": True}))
    assert spec.nameserver_host.name == "ns"
    assert {h.name: h.address for h in spec.hosts} == addresses
    assert spec.settings == {"lease": 1.0, "cache": True}
    placed = {(role, i): host.name for host, role, i in spec.placement()}
    assert placed[("catalog", 1)] != placed[("catalog", 2)]  # a cut host leaves a replica
    assert placed[("frontend", 1)] not in {placed[("catalog", 1)], placed[("catalog", 2)]}


def test_loopback_ports_are_free_and_do_not_overlap() -> None:
    ports = layouts.loopback_ports()
    taken = [ports["ns_port"], *range(ports["coordinator_port"], ports["coordinator_port"] + 3),
             *range(ports["raft_port"], ports["raft_port"] + 3)]
    assert len(set(taken)) == 7


class _Pool:
    def __init__(self, files: list[Path]) -> None:
        self.files = files

    def histories(self) -> list[Path]:
        return self.files


def test_client_histories_merge_in_time_order_and_a_killed_call_is_unknown(
        tmp_path: Path) -> None:
    def line(process: int, kind: str, t: float, **more: object) -> str:
        return json.dumps({"process": process, "type": kind, "f": "buy", "item": 1,
                           "value": 1, "time": t, "request_id": f"r{process}-{t}", **more})
    one = tmp_path / "history-0.jsonl"
    one.write_text("\n".join([line(0, "invoke", 1.0), line(0, "ok", 2.0, order_id=5),
                              line(0, "invoke", 3.0)]) + "\n" + '{"process": 0, "ty')
    two = tmp_path / "history-1.jsonl"
    two.write_text(line(1, "invoke", 1.5) + "\n" + line(1, "ok", 2.5, order_id=6) + "\n")
    events = _merged(_Pool([one, two]))  # type: ignore[arg-type]
    assert [(e.process, e.type) for e in events] == [
        (0, "invoke"), (1, "invoke"), (0, "ok"), (1, "ok"), (0, "invoke"), (0, "info")]
    assert [e.index for e in events] == list(range(6))
    ops = operations(events)
    assert [(op.process, op.status, op.order_id) for op in ops] == [
        (0, "ok", 5), (1, "ok", 6), (0, "info", None)]
