"""Which processes run a data directory: their pid files in ``<data>/pids``.

Every process of a store writes its own pid file there, ``<name>.<pid>.json``, a small JSON
object written atomically: ``pyrostore up`` writes ``up.<pid>.json`` (``{"name", "pid",
"started", "children": [...]}``, its children listed the same way and kept current when it
restarts one); a service writes ``<role>-<id>.<pid>.json`` as it starts, whoever started it.
The pid in the name keeps two processes from ever writing one file (a second replica of the same
id, refused a moment later, must not hide the first). Each removes its file when it ends
cleanly; a file left by a process that was killed is stale.

A record carries the process's start time (``started``: clock ticks since boot, from
``/proc/PID/stat``), so a pid that the kernel has since given to another process is told apart
from the process that wrote it: :func:`running` is true only for that very process, and only
if it is a ``pyrostore`` process. Nothing here ever signals a process it cannot identify so;
where ``/proc`` is missing, nothing is identified. Stopping them is :mod:`pyrostore.stopping`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from pyrostore.datadir import private_dir, write_private

UP = "up"
"""The name of ``pyrostore up``'s own record."""


@dataclasses.dataclass(frozen=True)
class ProcessRecord:
    """One process as a pid file names it: ``name`` (``up``, ``catalog-2``), pid and start time."""

    name: str
    pid: int
    started: int | None

    def as_dict(self) -> dict[str, Any]:
        """The record as plain values (what the file holds)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, value: dict[str, Any]) -> ProcessRecord:
        """The record from :meth:`as_dict`'s form; ValueError, KeyError or TypeError if bad."""
        started = value.get("started")
        return cls(str(value["name"]), int(value["pid"]),
                   None if started is None else int(started))

    def __str__(self) -> str:
        return f"{self.name} (pid {self.pid})"


@dataclasses.dataclass(frozen=True)
class PidFile:
    """What one pid file says: the process that wrote it, and the children it started."""

    process: ProcessRecord
    children: tuple[ProcessRecord, ...] = ()


def identify(name: str, pid: int) -> ProcessRecord:
    """The record of the process ``pid`` as it is now (its start time read from ``/proc``)."""
    return ProcessRecord(name, pid, _stat(pid)[1])


def running(record: ProcessRecord) -> bool:
    """Whether the process ``record`` names still runs: the same pid started at the same time,
    not a zombie, and a ``pyrostore`` process. False whenever it cannot be told."""
    state, started = _stat(record.pid)
    if started is None or started != record.started or state in ("Z", "X"):
        return False
    with contextlib.suppress(OSError):
        return b"pyrostore" in Path(f"/proc/{record.pid}/cmdline").read_bytes()
    return False


class PidDirectory:
    """The pid files of data directory ``data_dir``, in ``<data_dir>/pids``."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.path = data_dir / "pids"

    def write(self, process: ProcessRecord, children: Sequence[ProcessRecord] = ()) -> None:
        """Write (or replace) the pid file of ``process``."""
        private_dir(self.path)
        body = {**process.as_dict(), "children": [child.as_dict() for child in children]}
        write_private(self._file(process), json.dumps(body) + "\n")

    def remove(self, process: ProcessRecord) -> None:
        """Remove the pid file of ``process``, if it still names that process (not a later
        one that was given the same pid)."""
        path = self._file(process)
        current = self._read(path)
        if current is not None and current.process == process:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def read(self) -> list[PidFile]:
        """Every pid file whose process still runs; stale and unreadable ones are removed."""
        found = []
        for path in sorted(self.path.glob("*.json")) if self.path.is_dir() else []:
            pid_file = self._read(path)
            if pid_file is not None and running(pid_file.process):
                found.append(pid_file)
            else:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
        return found

    @contextlib.contextmanager
    def registered(self, name: str) -> Iterator[ProcessRecord]:
        """This process's pid file under ``name`` for the length of the ``with``."""
        me = identify(name, os.getpid())
        self.write(me)
        try:
            yield me
        finally:
            self.remove(me)

    def _file(self, process: ProcessRecord) -> Path:
        return self.path / f"{process.name}.{process.pid}.json"

    @staticmethod
    def _read(path: Path) -> PidFile | None:
        try:
            body = json.loads(path.read_text(encoding="utf-8"))
            return PidFile(ProcessRecord.from_dict(body), tuple(
                ProcessRecord.from_dict(child) for child in body.get("children", [])))
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None


def _stat(pid: int) -> tuple[str | None, int | None]:
    """The state letter and start time (ticks since boot) of ``pid``, or Nones."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
        fields = text[text.rindex(")") + 2:].split()  # the name in () may hold spaces
        return fields[0], int(fields[19])  # fields 3 and 22 of proc(5)
    except (OSError, ValueError, IndexError):
        return None, None
