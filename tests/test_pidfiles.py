"""Pid files of a data directory, and stopping the processes they name (real processes)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pyrostore import stopping
from pyrostore.pidfiles import PidDirectory, ProcessRecord, identify, running

WAIT_FOR_STDIN = "import sys; print('ready', flush=True); sys.stdin.read()"
DEAF_TO_SIGTERM = ("import signal, sys; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                   "print('ready', flush=True); sys.stdin.read()")


@pytest.fixture
def spawned() -> Iterator[list[subprocess.Popen[str]]]:
    """Processes a test starts; each is killed and reaped at the end, whatever happened."""
    processes: list[subprocess.Popen[str]] = []
    yield processes
    for process in processes:
        if process.poll() is None:
            process.kill()
        process.wait(10)


def start(spawned: list[subprocess.Popen[str]], argv: list[str]) -> subprocess.Popen[str]:
    """Start ``argv`` and wait until it says it is ready (a python one) or has started."""
    process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    spawned.append(process)
    if argv[0] == sys.executable:
        assert process.stdout is not None and process.stdout.readline() == "ready\n"
    return process


def pyrostore_like(spawned: list[subprocess.Popen[str]], code: str) -> ProcessRecord:
    """A process whose command line names pyrostore (as the store's own do)."""
    process = start(spawned, [sys.executable, "-c", code, "pyrostore"])
    return identify("catalog-7", process.pid)


def test_a_record_names_only_the_process_that_wrote_it(
        spawned: list[subprocess.Popen[str]]) -> None:
    record = pyrostore_like(spawned, WAIT_FOR_STDIN)
    assert running(record)
    assert record.started is not None
    assert not running(ProcessRecord(record.name, record.pid, record.started + 1))  # pid reused
    sleeper = start(spawned, ["sleep", "600"])
    assert not running(identify("catalog-7", sleeper.pid))  # alive, but not pyrostore
    spawned[0].kill()
    spawned[0].wait()
    assert not running(record)


def test_a_zombie_is_not_running(spawned: list[subprocess.Popen[str]]) -> None:
    record = pyrostore_like(spawned, WAIT_FOR_STDIN)
    os.kill(record.pid, signal.SIGKILL)
    os.waitid(os.P_PID, record.pid, os.WEXITED | os.WNOWAIT)  # dead, left unreaped
    assert Path(f"/proc/{record.pid}/stat").read_text().split(") ")[1][0] == "Z"
    assert not running(record)


def test_read_keeps_live_files_and_removes_stale_ones(
        tmp_path: Path, spawned: list[subprocess.Popen[str]]) -> None:
    pids = PidDirectory(tmp_path)
    live = pyrostore_like(spawned, WAIT_FOR_STDIN)
    sleeper = start(spawned, ["sleep", "600"])
    pids.write(live)
    pids.write(identify("order-1", sleeper.pid))
    (tmp_path / "pids" / "garbage.json").write_text("{not json")
    assert [found.process for found in pids.read()] == [live]
    assert [p.name for p in (tmp_path / "pids").iterdir()] == [f"catalog-7.{live.pid}.json"]
    assert sleeper.poll() is None


def test_registered_writes_then_removes_only_its_own_file(tmp_path: Path) -> None:
    pids = PidDirectory(tmp_path)
    mine = tmp_path / "pids" / f"frontend-1.{os.getpid()}.json"
    with pids.registered("frontend-1") as me:
        body = json.loads(mine.read_text())
        assert (body["pid"], body["started"]) == (os.getpid(), me.started)
        assert (tmp_path / "pids").stat().st_mode & 0o077 == 0 and mine.stat().st_mode == 0o100600
        other = ProcessRecord("frontend-1", 1, 0)  # a second one, refused later, say
        pids.write(other)
    assert not mine.exists()
    assert (tmp_path / "pids" / "frontend-1.1.json").exists()
    pids.remove(ProcessRecord("frontend-1", 1, 5))  # the same pid, another process: kept
    assert (tmp_path / "pids" / "frontend-1.1.json").exists()
    pids.remove(other)
    assert not (tmp_path / "pids" / "frontend-1.1.json").exists()


def test_up_lists_its_children(tmp_path: Path) -> None:
    pids = PidDirectory(tmp_path)
    child = ProcessRecord("catalog-1", 12345, 99)
    pids.write(ProcessRecord("up", os.getpid(), 1), [child])
    up_file = PidDirectory._read(tmp_path / "pids" / f"up.{os.getpid()}.json")
    assert up_file is not None and up_file.children == (child,)


def test_stop_terms_then_kills_what_is_left(spawned: list[subprocess.Popen[str]]) -> None:
    polite = pyrostore_like(spawned, WAIT_FOR_STDIN)
    deaf = pyrostore_like(spawned, DEAF_TO_SIGTERM)
    waited = pyrostore_like(spawned, WAIT_FOR_STDIN)  # stopped by another (up, its parent)
    seen: list[list[ProcessRecord]] = []
    assert spawned[2].stdin is not None
    spawned[2].stdin.close()  # so it ends by itself
    outcome = stopping.stop([polite, deaf], also_wait=[waited], grace=1.0,
                            progress=lambda left, _seconds: seen.append(left))
    assert polite in outcome.stopped and deaf not in outcome.stopped
    assert outcome.killed == [deaf] and outcome.left == []
    assert spawned[0].wait(10) == -signal.SIGTERM
    assert spawned[1].wait(10) == -signal.SIGKILL
    assert spawned[2].wait(10) == 0  # waited for, never signalled
    assert seen and deaf in seen[0]


def test_stop_never_signals_a_process_it_cannot_identify(
        spawned: list[subprocess.Popen[str]]) -> None:
    sleeper = start(spawned, ["sleep", "600"])
    outcome = stopping.stop([ProcessRecord("catalog-1", sleeper.pid, 1)], grace=1.0)
    assert outcome == stopping.Outcome()
    assert sleeper.poll() is None
