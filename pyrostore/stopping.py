"""Stopping processes that are not our children, as ``pyrostore down`` and ``up`` do.

:func:`stop` sends SIGTERM to each process of a list that still runs, waits until they and
any others named (``up``'s children, which ``up`` stops itself) have exited, and sends SIGKILL
to what is left once the deadline is past. Each signal goes only to a process that
:func:`~pyrostore.pidfiles.running` identifies as the very one its pid file named, checked just
before it is sent.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import time
from collections.abc import Callable, Sequence

from pyrostore.pidfiles import ProcessRecord, running

POLL = 0.05
"""Seconds between looks at whether the processes are gone (they are not our children, so
there is nothing to wait on)."""
KILL_WAIT = 5.0
"""Seconds to wait for processes to vanish after SIGKILL."""


@dataclasses.dataclass
class Outcome:
    """What :func:`stop` did: the processes that exited after SIGTERM, those it had to kill,
    and any that outlived even SIGKILL (stuck in the kernel)."""

    stopped: list[ProcessRecord] = dataclasses.field(default_factory=list)
    killed: list[ProcessRecord] = dataclasses.field(default_factory=list)
    left: list[ProcessRecord] = dataclasses.field(default_factory=list)


def stop(
    targets: Sequence[ProcessRecord],
    *,
    also_wait: Sequence[ProcessRecord] = (),
    grace: float = 20.0,
    progress: Callable[[list[ProcessRecord], float], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> Outcome:
    """SIGTERM ``targets``; wait up to ``grace`` seconds for them and ``also_wait`` to exit,
    telling ``progress`` (what is left, seconds left) as the set shrinks; then SIGKILL them."""
    watched = [r for r in targets if _send(r, signal.SIGTERM)]
    watched += [r for r in also_wait if running(r) and r not in watched]
    left = _wait(watched, clock() + grace, progress, clock)
    killed = [r for r in left if _send(r, signal.SIGKILL)]
    stuck = _wait(killed, clock() + KILL_WAIT, None, clock)
    return Outcome(stopped=[r for r in watched if r not in left], killed=killed, left=stuck)


def _wait(watched: list[ProcessRecord], deadline: float,
          progress: Callable[[list[ProcessRecord], float], None] | None,
          clock: Callable[[], float]) -> list[ProcessRecord]:
    """Those of ``watched`` still running at ``deadline``, or none as soon as all are gone."""
    told: list[ProcessRecord] | None = None
    while True:
        left = [r for r in watched if running(r)]
        if not left or clock() >= deadline:
            return left
        if progress is not None and left != told:
            progress(left, deadline - clock())
            told = left
        time.sleep(POLL)


def _send(record: ProcessRecord, sig: signal.Signals) -> bool:
    """Send ``sig`` to the process ``record`` names, if it is still that process."""
    if not running(record):
        return False
    try:
        os.kill(record.pid, sig)
    except ProcessLookupError:
        return False
    return True
