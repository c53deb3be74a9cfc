"""``pyrostore up``'s supervision, ``pyrostore down``, and services started by hand: each
``up`` a real process on free ports in a temporary directory, its services killed with -9."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import Pyro5.errors
import pytest

from pyrostore.config import Settings
from pyrostore.discovery import name_server_answers, survey
from pyrostore.errors import PyrostoreError
from pyrostore.launcher import Cluster
from pyrostore.pidfiles import identify
from pyrostore.restarts import RestartPlan, RestartPolicy
from pyrostore.supervisor import Supervisor
from tests.conftest import ROOT, make_settings, run_cli, wait_until

pytestmark = pytest.mark.timeout(300)
SERVING = ("serving", "primary", "backup", "leader", "follower")


class Up:
    """A ``pyrostore up`` subprocess, its output collected line by line."""

    def __init__(self, data: Path, *flags: str, columns: int = 300) -> None:
        self.settings = make_settings(data)  # the session's CA: this process can ask directly
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("PYROSTORE_")}
        self.env["PYROSTORE_CERTS_DIR"] = str(self.settings.certificates)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "pyrostore", "up", "--ns-port", str(self.settings.ns_port),
             "--data", str(data), *flags], cwd=ROOT, env={**self.env, "COLUMNS": str(columns)},
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self.by_hand: list[subprocess.Popen[bytes]] = []

    def _read(self) -> None:
        assert self.process.stdout is not None
        self.lines.extend(self.process.stdout)

    def output(self) -> str:
        """Everything it printed so far."""
        return "".join(self.lines)

    def line(self, text: str) -> str | None:
        """The first line it printed that holds ``text``."""
        return next((line for line in list(self.lines) if text in line), None)

    def status(self) -> list[dict[str, Any]]:
        """Every service's ``info()``, as ``status --json`` shows it (empty if unreachable)."""
        try:
            return survey(self.settings)
        except (PyrostoreError, Pyro5.errors.CommunicationError):
            return []

    def status_json(self) -> list[dict[str, Any]]:
        """``pyrostore status --json``, run as a user would."""
        done = run_cli(self.settings, "status", "--json")
        assert done.returncode == 0, done.stderr
        rows = json.loads(done.stdout)
        assert isinstance(rows, list)
        return rows

    def ready(self) -> list[dict[str, Any]]:
        """The status rows, once all 8 services serve."""
        rows = wait_until(lambda: (rows := self.status()) and len(rows) == 8
                          and all(r["state"] in SERVING for r in rows) and rows,
                          timeout=60, what="pyrostore up")
        assert isinstance(rows, list)
        return rows

    def start_by_hand(self, command: str) -> subprocess.Popen[bytes]:
        """Run a ``pyrostore ...`` command line (as a user pastes it), with its output lost."""
        argv = command.split()
        assert argv[0] == "pyrostore"
        process = subprocess.Popen([sys.executable, "-m", "pyrostore", *argv[1:]], cwd=ROOT,
                                   env=self.env, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        self.by_hand.append(process)
        return process

    def close(self) -> None:
        """Stop it and anything started by hand, whatever state the test left them in."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()  # its children get SIGTERM as it dies
                self.process.wait()
        for process in self.by_hand:
            if process.poll() is None:
                process.kill()
            process.wait(10)
        self.reader.join(10)


@contextlib.contextmanager
def up(data: Path, *flags: str, columns: int = 300) -> Iterator[Up]:
    store = Up(data, *flags, columns=columns)
    try:
        yield store
    finally:
        store.close()


def row(rows: list[dict[str, Any]], role: str, replica_id: int) -> dict[str, Any]:
    return next(r for r in rows if (r["role"], r["id"]) == (role, replica_id))


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, dead but not yet reaped, does not)."""
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] not in "ZX"
    return False


def by_hand_command(settings: Settings, role: str, replica_id: int) -> str:
    """The command that starts one more service of the store in ``settings.data_dir``."""
    addresses = (settings.data_dir / "coordinators").read_text().strip()
    return (f"pyrostore {role} --ns-port {settings.ns_port} --data {settings.data_dir} "
            f"--coordinator-addrs {addresses} --id {replica_id}")


def test_a_killed_child_is_restarted_and_down_stops_everything(tmp_path: Path) -> None:
    with up(tmp_path / "data") as store:
        rows = store.ready()
        assert {r["restarts"] for r in rows} == {0}
        victim = row(rows, "catalog", 1)
        os.kill(victim["pid"], signal.SIGKILL)
        back = wait_until(lambda: [r for r in store.status() if (r["role"], r["id"]) ==
                                   ("catalog", 1) and r.get("restarts") == 1
                                   and r["state"] in SERVING], timeout=60,
                          what="catalog 1 restarted")
        assert isinstance(back, list) and back[0]["pid"] != victim["pid"]
        assert row(store.status_json(), "catalog", 1)["restarts"] == 1
        report = store.line("killed by SIGKILL")
        assert report is not None and f"pyrostore.catalog.1 (pid {victim['pid']})" in report
        assert "restarting in 0.5 s" in report
        assert store.line(f"pyrostore.catalog.1 restarted (pid {back[0]['pid']}, restart 1")

        hand = store.start_by_hand(by_hand_command(store.settings, "order", 3))
        wait_until(lambda: any(r["pid"] == hand.pid and r["state"] in SERVING
                               for r in store.status()), timeout=60,
                   what="the order replica started by hand to serve")
        assert (tmp_path / "data" / "pids" / f"order-3.{hand.pid}.json").exists()
        pids = [r["pid"] for r in store.status()] + [hand.pid, store.process.pid]
        assert row(store.status_json(), "order", 3)["restarts"] is None

        done = run_cli(store.settings, "down", "--data", str(tmp_path / "data"))
        assert done.returncode == 0, done.stdout + done.stderr
        assert f"pyrostore up (pid {store.process.pid})" in done.stdout
        assert f"and its 9 children; order-3 (pid {hand.pid}), started by hand" in done.stdout
        assert store.process.wait(60) == 0
        assert hand.wait(30) == 0  # a clean stop: SIGTERM, handled
    assert "stopped every process of the store" in store.output()
    assert not [pid for pid in pids if alive(pid)]
    assert not name_server_answers(store.settings)
    assert list((tmp_path / "data" / "pids").iterdir()) == []
    done = run_cli(store.settings, "down", "--data", str(tmp_path / "data"))
    assert (done.returncode, done.stdout.strip()) == (0, f"no store running in {tmp_path}/data")


def test_restart_never_reports_and_ctrl_c_stops_a_service_started_by_hand(
        tmp_path: Path) -> None:
    with up(tmp_path, "--restart", "never", columns=80) as store:
        victim = row(store.ready(), "catalog", 2)
        os.kill(victim["pid"], signal.SIGKILL)
        report = wait_until(lambda: store.line("restart it with"), what="the dead catalog")
        assert isinstance(report, str)
        assert f"pyrostore.catalog.2 (pid {victim['pid']}) killed by SIGKILL; not restarted " \
               "(--restart never); restart it with: pyrostore catalog --ns-host 127.0.0.1" \
               in report  # one line, though the terminal is 80 columns wide
        assert row(store.status(), "catalog", 2)["state"] == "down"

        hand = store.start_by_hand(report.split("restart it with: ")[1].strip())
        wait_until(lambda: (r := row(store.status(), "catalog", 2))["pid"] == hand.pid
                   and r["state"] in SERVING, timeout=60, what="catalog 2 back, by hand")
        store.process.send_signal(signal.SIGINT)
        assert store.process.wait(60) == 0
        assert hand.wait(30) == 0
    assert f"stopped catalog-2 (pid {hand.pid}), started by hand" in store.output()
    assert "stopped every process of the store" in store.output()


def test_down_never_signals_a_stale_pid_that_another_process_took(tmp_path: Path) -> None:
    sleeper = subprocess.Popen(["sleep", "600"])
    try:
        stale = identify("up", sleeper.pid)  # as if the kernel gave up's old pid to sleep
        (tmp_path / "pids").mkdir(mode=0o700)
        (tmp_path / "pids" / f"up.{sleeper.pid}.json").write_text(json.dumps(
            {**stale.as_dict(), "children": [{"name": "catalog-1", "pid": sleeper.pid,
                                              "started": stale.started}]}))
        done = run_cli(make_settings(tmp_path), "down", "--data", str(tmp_path))
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == f"no store running in {tmp_path}"
        assert sleeper.poll() is None
        assert list((tmp_path / "pids").iterdir()) == []  # the stale file is gone
    finally:
        sleeper.kill()
        sleeper.wait()


def test_help_says_how_up_supervises_and_what_down_stops(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    text = run_cli(settings, "up", "--help").stdout
    assert "--restart {on-failure,never}" in text and "Restart=on-failure" in text
    assert "after 0.5 s, doubling to 8 s" in text and "past 5 restarts within 60 s" in text
    text = run_cli(settings, "down", "--help").stdout
    assert "SIGTERM" in text and "--timeout" in text and "never signalled" in text


def test_a_service_that_keeps_failing_is_restarted_then_left_down_loudly(tmp_path: Path) -> None:
    """The supervisor's shell around its plan, with real children that fail at once."""
    refused = {"frontend": ["--id", "0"]}  # after the launcher's own --id: exit 2 at once
    cluster = Cluster(make_settings(tmp_path), extra_args=refused)
    reports: list[tuple[str, bool]] = []
    policy = RestartPolicy(first_delay=0.01, max_delay=0.02, burst=2, interval=600.0)
    supervisor = Supervisor(cluster, RestartPlan(policy),
                            report=lambda line, loud: reports.append((line, loud)))
    try:
        pids = [cluster.spawn("frontend", 1).pid]

        def given_up() -> bool:
            supervisor.step()
            child = cluster.child("frontend", 1)
            if child is not None and child.pid not in pids:
                pids.append(child.pid)
            return any(loud for _, loud in reports)

        wait_until(given_up, timeout=60, what="the supervisor to give up")
    finally:
        supervisor.stop()
    assert [loud for _, loud in reports] == [False, False, False, False, True]
    lines = [line for line, _ in reports]
    assert lines[0] == (f"pyrostore.frontend.1 (pid {pids[0]}) exited with code 2; restarting "
                        "in 0.01 s (restart 1 of at most 2 within 600 s)")
    assert lines[1].startswith(f"pyrostore.frontend.1 restarted (pid {pids[1]}, restart 1;")
    assert "restarting in 0.02 s (restart 2 of at most 2" in lines[2]
    assert lines[4].startswith(f"pyrostore.frontend.1 (pid {pids[2]}) exited with code 2; NOT "
                               "restarted: 2 restarts within 600 s, the limit; it stays down; "
                               "restart it with: pyrostore frontend --ns-host")
    child = cluster.child("frontend", 1)
    assert child is not None and child.restarts == 2
    log = (tmp_path / "logs" / "frontend-1.log").read_text()
    assert log.count("--id must be 1..9999") == 3
