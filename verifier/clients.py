"""The verifier's client processes: started, killed mid-call by a nemesis, replaced, stopped.

Each client is a process of its own (:mod:`verifier.workload`) with its own history file, so
that ``kill -9`` really cuts a call in half. A replacement gets a new process number, as in
Jepsen: a process is a single thread of calls, and a killed one never completes anything.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from pyrostore.config import Settings

STOP_GRACE = 15.0
"""Seconds a client has, after SIGTERM, to finish its call (it may be riding out a failover)."""


class ClientPool:
    """``count`` clients shopping ``items`` with ``settings``; histories in ``directory``."""

    def __init__(self, settings: Settings, directory: Path, items: list[int], *, count: int,
                 seed: int) -> None:
        self.directory, self.items, self.count = directory, items, count
        self.rng = random.Random(seed)
        self.settings_file = directory / "client-settings.json"
        directory.mkdir(parents=True, exist_ok=True)
        self.settings_file.write_text(json.dumps(settings.dump()))
        self.lock = threading.Lock()
        self.running: dict[int, subprocess.Popen[bytes]] = {}
        self.next_process = 0
        self.killed = 0

    def start(self) -> None:
        """Start every client."""
        for _ in range(self.count):
            self._spawn()

    def wait_shopping(self, *, timeout: float = 60.0) -> None:
        """Wait until every client has had an answer (so that a fault's outage is not the
        clients' own start-up)."""
        deadline = time.monotonic() + timeout
        while not all('"type": "ok"' in self.history(p).read_text()
                      for p in list(self.running) if self.history(p).exists()) \
                or len([p for p in self.running if self.history(p).exists()]) < self.count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the clients had no answer within {timeout:.0f} s "
                                   f"(their logs are in {self.directory})")
            time.sleep(0.1)  # polling files the clients write; nothing to wait on

    def _spawn(self) -> None:
        with self.lock:
            process = self.next_process
            self.next_process += 1
            argv = [sys.executable, "-m", "verifier.workload", str(self.settings_file),
                    str(self.history(process)), "--process", str(process),
                    "--items", ",".join(map(str, self.items)),
                    "--seed", str(self.rng.randrange(2**32))]
            log = (self.directory / f"client-{process}.log").open("ab")
            with log:
                self.running[process] = subprocess.Popen(
                    argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                    start_new_session=True)

    def history(self, process: int) -> Path:
        """The history file of client ``process``."""
        return self.directory / f"history-{process}.jsonl"

    def histories(self) -> list[Path]:
        """Every client's history file, in process order."""
        return [self.history(p) for p in range(self.next_process) if self.history(p).exists()]

    def kill_one(self) -> int:
        """``kill -9`` a random client (likely mid-call) and start a new one; its number."""
        with self.lock:
            process = self.rng.choice(sorted(self.running))
            victim = self.running.pop(process)
            self.killed += 1
        victim.kill()
        victim.wait()
        self._spawn()
        return process

    def stop(self) -> list[int]:
        """Ask every client to stop after its call; kill those that do not in time. The
        numbers of the clients that exited with an error."""
        with self.lock:
            running, self.running = self.running, {}
        for process in running.values():
            process.send_signal(signal.SIGTERM)
        failed = []
        for number, process in running.items():
            try:
                code = process.wait(STOP_GRACE)
            except subprocess.TimeoutExpired:
                process.kill()
                code = process.wait()
            if code != 0:
                failed.append(number)
        return failed

    def log_tail(self, process: int, lines: int = 5) -> str:
        """The end of a client's output (where its traceback would be)."""
        path = self.directory / f"client-{process}.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])
