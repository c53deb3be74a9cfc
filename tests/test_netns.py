"""Hosts on one machine (verifier.netns) and partitions between them (verifier.partition).

The decision tests need nothing; the rest need root and ``ip netns`` and skip with the reason
otherwise. Those run a TCP server (tests/netns_peer.py) in every host and probe from one host
to another: a cut must make a connect time out, never fail fast.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT, wait_until
from verifier.netns import Host, Hosts, describe, ensure_nftables, main, plan_addresses, sweep
from verifier.partition import LinkChange, Partition, Ruleset, nft_script

PEER = Path(__file__).with_name("netns_peer.py")
PORT = 7000
CUT = 1.0
"""Seconds a probe across a cut waits before it counts as a timeout."""

ADDRESSES = {"a": "10.0.0.10", "b": "10.0.0.11", "c": "10.0.0.12"}


# --- decisions, no root needed ---------------------------------------------------------------

def test_isolate_takes_the_port_down_once_and_rejoin_brings_it_up() -> None:
    partition = Partition(ADDRESSES)
    assert partition.isolate("b") == [LinkChange("b", up=False)]
    assert partition.isolate("b") == []
    assert partition.status() == {"isolated": ["b"], "blocked": []}
    assert partition.rejoin("b") == [LinkChange("b", up=True)]
    assert partition.rejoin("b") == []


def test_one_way_block_filters_at_the_receiver_only() -> None:
    partition = Partition(ADDRESSES)
    assert partition.block("a", "b") == [Ruleset("b", ("10.0.0.10",))]
    assert partition.block("a", "b") == []
    assert partition.block("c", "b") == [Ruleset("b", ("10.0.0.10", "10.0.0.12"))]
    assert partition.unblock("a", "b") == [Ruleset("b", ("10.0.0.12",))]
    assert partition.status()["blocked"] == ["c->b"]


def test_both_ways_block_filters_at_both_ends() -> None:
    partition = Partition(ADDRESSES)
    partition.block("a", "b")
    assert partition.block("a", "b", both_ways=True) == [Ruleset("a", ("10.0.0.11",))]
    assert partition.unblock("a", "b", both_ways=True) == [Ruleset("a", ()), Ruleset("b", ())]


def test_heal_reopens_everything_ever_touched() -> None:
    partition = Partition(ADDRESSES)
    partition.isolate("c")
    partition.block("a", "b")
    partition.unblock("a", "b")
    assert partition.heal() == [LinkChange("c", up=True), Ruleset("b", ())]
    assert partition.status() == {"isolated": [], "blocked": []}


def test_unknown_hosts_and_blocking_a_host_from_itself_are_refused() -> None:
    partition = Partition(ADDRESSES)
    with pytest.raises(ValueError, match="unknown host 'd'"):
        partition.isolate("d")
    with pytest.raises(ValueError, match="from itself"):
        partition.block("a", "a")


def test_nft_script_replaces_the_table_or_removes_it() -> None:
    dropping = nft_script(Ruleset("b", ("10.0.0.10", "10.0.0.12")))
    assert dropping.startswith("table inet pyrostore\ndelete table inet pyrostore\n")
    assert "hook input" in dropping
    assert "ip saddr { 10.0.0.10, 10.0.0.12 } drop" in dropping
    assert nft_script(Ruleset("b", ())) == "table inet pyrostore\ndelete table inet pyrostore\n"


def test_addresses_start_at_the_tenth_of_a_private_subnet() -> None:
    assert plan_addresses(["a", "b"], "10.213.0.0/24") == {"a": "10.213.0.10", "b": "10.213.0.11"}
    for names, subnet, error in [(["a"], "8.8.8.0/24", "not a private range"),
                                 (["a", "a"], "10.0.0.0/24", "repeat"),
                                 (["Web"], "10.0.0.0/24", "host name 'Web'"),
                                 (["sw"], "10.0.0.0/24", "host name 'sw'"),
                                 ([f"h{i}" for i in range(5)], "10.0.0.0/28", "do not fit")]:
        with pytest.raises(ValueError, match=error):
            plan_addresses(names, subnet)


def test_describe_shows_how_to_run_inside_each_host() -> None:
    table = describe([Host("a", "10.0.0.10", "pyrostore-abc123-a", "vabc123-0")])
    header, row = table.splitlines()
    assert header.split()[:3] == ["host", "namespace", "address"]
    assert row == "a     pyrostore-abc123-a  10.0.0.10  ip netns exec pyrostore-abc123-a <command>"


def test_cli_errors_are_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["up", "--hosts", "a,a"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: host names repeat") and err.count("\n") == 1


# --- real namespaces, root needed ------------------------------------------------------------

def probe(src: Host, dst: Host, timeout: float = 5.0) -> str:
    """Connect from ``src`` to the server in ``dst``: ``ok``, ``timeout`` or an errno name."""
    command = [sys.executable, str(PEER), "connect", dst.address, str(PORT), str(timeout)]
    return src.check_output(command, timeout=timeout + 30).strip()


def reaches(src: Host, dst: Host) -> None:
    """Wait until ``src`` connects to ``dst`` again."""
    wait_until(lambda: probe(src, dst, timeout=2.0) == "ok", timeout=20,
               what=f"{src.name} reaching {dst.name}")


def read_line(proc: subprocess.Popen[str], *, timeout: float = 20.0) -> str:
    """The next line ``proc`` prints, waiting at most ``timeout`` s."""
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    assert ready, f"no line from {proc.args!r} within {timeout} s"
    return proc.stdout.readline().strip()


def gone(pid: int) -> bool:
    """True once ``pid`` no longer runs (a zombie waiting for its reaper counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def namespaces_with(tag: str) -> list[str]:
    """The lines of ``ip netns list`` that carry ``tag``."""
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return [line for line in listed.splitlines() if tag in line]


def links_with(tag: str) -> list[str]:
    """The lines of ``ip link`` (root namespace) that carry ``tag``."""
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    return [line for line in links.splitlines() if tag in line]


@pytest.fixture(scope="module")
def hosts() -> Iterator[Hosts]:
    """Hosts a, b, c, each running the TCP server on :data:`PORT`."""
    reason = Hosts.available()
    if reason:
        pytest.skip(reason)
    with Hosts(["a", "b", "c"]) as made:
        for host in made:
            server = host.run([sys.executable, str(PEER), "serve", str(PORT)],
                              stdout=subprocess.PIPE, text=True)
            assert read_line(server) == "listening"
        yield made


@pytest.fixture
def net(hosts: Hosts) -> Iterator[Hosts]:
    """The module's hosts, healed after the test whatever it did."""
    yield hosts
    hosts.heal()


@pytest.fixture(scope="module")
def nftables(hosts: Hosts) -> str:
    """``nft``, installed if missing (blocks need it); after ``hosts``, so it skips unless root."""
    return ensure_nftables()


def test_hosts_reach_each_other_and_nothing_is_added_to_the_root_namespace(net: Hosts) -> None:
    a, b, c = net["a"], net["b"], net["c"]
    assert (probe(a, b), probe(b, c), probe(c, a)) == ("ok", "ok", "ok")
    assert a.check_output(["ip", "-br", "-4", "addr", "show", "eth0"]).split()[2] == \
        f"{a.address}/24"
    assert len(namespaces_with(net.tag)) == 4
    assert links_with(net.tag) == []


def test_an_isolated_host_times_out_and_answers_once_it_rejoins(net: Hosts) -> None:
    a, b, c = net["a"], net["b"], net["c"]
    net.isolate(b)
    assert probe(a, b, CUT) == "timeout"
    assert probe(b, c, CUT) == "timeout"
    assert probe(a, c) == "ok"
    net.rejoin(b)
    reaches(a, b)
    reaches(b, c)


def test_a_one_way_block_drops_only_what_the_blocked_host_sends(net: Hosts,
                                                                nftables: str) -> None:
    a, b, c = net["a"], net["b"], net["c"]
    net.block(a, b)
    assert probe(a, b, CUT) == "timeout"
    assert probe(c, b) == "ok"
    assert probe(a, c) == "ok"
    assert b.address not in a.check_output([nftables, "list", "ruleset"])

    net.block(a, b, both_ways=True)
    assert b.address in a.check_output([nftables, "list", "ruleset"])
    assert (probe(a, b, CUT), probe(b, a, CUT)) == ("timeout", "timeout")
    assert (probe(c, a), probe(c, b)) == ("ok", "ok")

    net.heal()
    reaches(a, b)
    reaches(b, a)
    assert a.check_output([nftables, "list", "ruleset"]).strip() == ""


def test_closing_removes_every_namespace_link_and_process_even_after_an_error() -> None:
    reason = Hosts.available()
    if reason:
        pytest.skip(reason)
    made = Hosts(["x", "y"])
    with pytest.raises(RuntimeError, match="the body failed"), made:
        shell = made["x"].run(["sh", "-c", "sleep 300 & echo $!; wait"],
                              stdout=subprocess.PIPE, text=True)
        sleeper = int(read_line(shell))
        assert len(namespaces_with(made.tag)) == 3
        raise RuntimeError("the body failed")
    assert (namespaces_with(made.tag), links_with(made.tag)) == ([], [])
    assert shell.returncode == -signal.SIGKILL
    assert gone(sleeper)
    made.close()  # idempotent


def test_sweep_removes_what_a_killed_run_left_and_spares_live_runs(hosts: Hosts) -> None:
    crashing = ("import json, sys\n"
                "from verifier.netns import Hosts\n"
                "hosts = Hosts(['x', 'y'])\n"
                "hosts.start()\n"
                "sleeper = hosts['x'].run(['sleep', '300'])\n"
                "print(json.dumps({'tag': hosts.tag, 'sleeper': sleeper.pid}), flush=True)\n"
                "sys.stdin.read()\n")
    owner = subprocess.Popen([sys.executable, "-c", crashing], cwd=ROOT, text=True,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        run = json.loads(read_line(owner))
        os.kill(owner.pid, signal.SIGKILL)
        owner.wait(timeout=20)
        assert len(namespaces_with(run["tag"])) == 3
        removed = sweep()
        assert sorted(removed) == sorted(f"pyrostore-{run['tag']}-{name}"
                                         for name in ("x", "y", "sw"))
        assert (namespaces_with(run["tag"]), links_with(run["tag"])) == ([], [])
        wait_until(lambda: gone(run["sleeper"]), timeout=10, what="the orphan killed")
        assert len(namespaces_with(hosts.tag)) == 4
        assert probe(hosts["a"], hosts["b"]) == "ok"
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait()
        sweep()
