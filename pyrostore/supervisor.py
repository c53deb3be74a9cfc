"""``pyrostore up``'s watch over its children: restart those that fail, keep its pid file.

A :class:`Supervisor` is the thin shell around a :class:`~pyrostore.restarts.RestartPlan`:
each :meth:`~Supervisor.step` reaps the cluster's dead children, asks the plan what to do
about each, starts again those whose backoff is over, and reports every event in one line. It
keeps its pid file in ``<data>/pids`` (``up``'s pid and its children's) current, and its
:meth:`~Supervisor.stop` also stops the services started by hand with the same data directory,
so that none outlives the store.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from pyrostore import stopping
from pyrostore.errors import PyrostoreError
from pyrostore.launcher import Child, Cluster
from pyrostore.pidfiles import UP, PidDirectory, identify
from pyrostore.restarts import RestartPlan

POLL = 0.5
"""Seconds between looks for dead children."""
Report = Callable[[str, bool], None]
"""Where events go: a line, and whether it is loud (a service left down)."""


class Supervisor:
    """Restarts the failed children of ``cluster`` as ``plan`` decides; see the module."""

    def __init__(self, cluster: Cluster, plan: RestartPlan, *, report: Report,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.cluster = cluster
        self.plan = plan
        self.report = report
        self.clock = clock
        self.pids = PidDirectory(cluster.settings.data_dir)
        self.me = identify(UP, os.getpid())
        self.record()

    def record(self) -> None:
        """Write the pid file: this process and its live children."""
        self.pids.write(self.me, [identify(f"{child.role}-{child.replica_id}", child.pid)
                                  for child in self.cluster.children
                                  if child.pid is not None and child.alive()])

    def step(self) -> float:
        """Handle deaths and due restarts; the seconds until the next step is needed."""
        now = self.clock()
        for child in self.cluster.reap():
            self._died(child, now)
        for name in self.plan.due(now):
            self._restart(name, now)
        due = self.plan.next_due()
        return POLL if due is None else max(0.0, min(POLL, due - self.clock()))

    def stop(self, *, grace: float = 20.0) -> stopping.Outcome:
        """Stop the services started by hand with this data directory (while the name server
        still answers their goodbye), then every child; remove the pid file."""
        ours = {child.pid for child in self.cluster.children}
        by_hand = [found.process for found in self.pids.read()
                   if found.process != self.me and found.process.pid not in ours]
        try:
            return stopping.stop(by_hand, grace=grace)
        finally:
            self.cluster.stop()
            self.pids.remove(self.me)

    def _died(self, child: Child, now: float) -> None:
        code = child.process.returncode if child.process is not None else None
        if code is None:
            return
        decision = self.plan.died(child.name, code, now)
        line = f"{child.name} (pid {child.pid}) {decision.why}"
        if decision.restart:
            self.report(line, False)
        else:
            self.report(f"{line}; restart it with: {child.command()}", True)

    def _restart(self, name: str, now: float) -> None:
        child = next(c for c in self.cluster.children if c.name == name)
        child.restarts = self.plan.restarted(name, now)
        try:
            self.cluster.spawn(child.role, child.replica_id)
        except (OSError, PyrostoreError) as exc:
            self.report(f"{name} could not be restarted ({exc}); it stays down; restart it "
                        f"with: {child.command()}", True)
            return
        self.report(f"{name} restarted (pid {child.pid}, restart {child.restarts}; log "
                    f"{child.log_path})", False)
        self.record()

