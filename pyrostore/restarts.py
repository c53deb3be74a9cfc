"""When ``pyrostore up`` restarts a service that died: systemd's ``Restart=on-failure``.

A :class:`RestartPlan` is fed deaths (:meth:`~RestartPlan.died`) and restarts
(:meth:`~RestartPlan.restarted`) with the time they happened, and says what to do: restart after
a backoff, leave the service down because it ended cleanly, or give up because it failed too
often. It holds no processes, threads or clock of its own, so a test steps it with made-up
times; the launcher's supervisor is the shell that acts on what it decides.

- **On failure only.** A non-zero exit, or death by a signal other than the clean ones
  (SIGHUP, SIGINT, SIGTERM, SIGPIPE, as systemd counts them), is a failure. Exit 0 is a
  service that was asked to stop: it stays down.
- **Backoff.** The k-th restart within the last ``interval`` seconds waits
  ``first_delay * 2**k``, capped at ``max_delay``: a quiet minute brings the delay back down.
- **Limit.** At most ``burst`` restarts within ``interval`` seconds (systemd's
  ``StartLimitBurst`` and ``StartLimitIntervalSec``); a death past it leaves the service down
  until the store is started again.
"""

from __future__ import annotations

import dataclasses
import signal
from collections import deque

from pyrostore.errors import ConfigError

CLEAN_SIGNALS = frozenset({signal.SIGHUP, signal.SIGINT, signal.SIGTERM, signal.SIGPIPE})
"""Deaths by these signals are a stop someone asked for, not a failure (as systemd says)."""


def describe_exit(returncode: int) -> str:
    """How a process ended, from its ``Popen.returncode``: ``killed by SIGKILL``,
    ``exited with code 2``."""
    if returncode >= 0:
        return f"exited with code {returncode}"
    try:
        return f"killed by {signal.Signals(-returncode).name}"
    except ValueError:
        return f"killed by signal {-returncode}"


def failed(returncode: int) -> bool:
    """Whether an exit with ``returncode`` is a failure (see the module's docstring)."""
    if returncode >= 0:
        return returncode != 0
    return -returncode not in {int(sig) for sig in CLEAN_SIGNALS}


@dataclasses.dataclass(frozen=True)
class RestartPolicy:
    """How eagerly services are restarted.

    ``first_delay`` (seconds) is the wait before the first restart; it doubles with each
    restart within ``interval`` (seconds) up to ``max_delay`` (seconds, at least
    ``first_delay``). ``burst`` restarts within ``interval`` are allowed; 0 restarts nothing
    (``--restart never``).
    """

    first_delay: float = 0.5
    max_delay: float = 8.0
    burst: int = 5
    interval: float = 60.0

    def __post_init__(self) -> None:
        if not 0 < self.first_delay <= self.max_delay:
            raise ConfigError("restart delays must satisfy 0 < first_delay <= max_delay")
        if self.burst < 0 or self.interval <= 0:
            raise ConfigError("restart burst must be >= 0 and interval > 0 seconds")


NEVER = RestartPolicy(burst=0)
"""Restart nothing: a death is reported and the service stays down."""


@dataclasses.dataclass(frozen=True)
class Decision:
    """What to do about one death: restart at ``at`` (monotonic seconds), or not (``at`` None),
    and why, in words for the log."""

    at: float | None
    why: str

    @property
    def restart(self) -> bool:
        """Whether the service is to be restarted."""
        return self.at is not None


class RestartPlan:
    """The restart decisions for the services of one store, by name."""

    def __init__(self, policy: RestartPolicy) -> None:
        self.policy = policy
        self._recent: dict[str, deque[float]] = {}
        self._counts: dict[str, int] = {}
        self._due: dict[str, float] = {}

    def restarts(self, name: str) -> int:
        """How many times ``name`` was restarted since the store started."""
        return self._counts.get(name, 0)

    def died(self, name: str, returncode: int, now: float) -> Decision:
        """``name`` ended with ``returncode`` at ``now``: restart it, and when, or not."""
        how = describe_exit(returncode)
        if not failed(returncode):
            return Decision(None, f"{how}; not restarted (a clean stop)")
        if self.policy.burst == 0:
            return Decision(None, f"{how}; not restarted (--restart never)")
        recent = self._window(name, now)
        if len(recent) >= self.policy.burst:
            return Decision(None, f"{how}; NOT restarted: {len(recent)} restarts within "
                                  f"{self.policy.interval:g} s, the limit; it stays down")
        delay = min(self.policy.first_delay * 2 ** len(recent), self.policy.max_delay)
        self._due[name] = now + delay
        return Decision(now + delay, f"{how}; restarting in {delay:g} s "
                                     f"(restart {len(recent) + 1} of at most "
                                     f"{self.policy.burst} within {self.policy.interval:g} s)")

    def due(self, now: float) -> list[str]:
        """The services whose restart time has come, soonest first."""
        return sorted((n for n, at in self._due.items() if at <= now), key=self._due.__getitem__)

    def next_due(self) -> float | None:
        """When the next restart is due (monotonic seconds), or None."""
        return min(self._due.values(), default=None)

    def restarted(self, name: str, now: float) -> int:
        """``name`` was started again at ``now``; its restart count so far."""
        self._due.pop(name, None)
        self._window(name, now).append(now)
        self._counts[name] = self.restarts(name) + 1
        return self._counts[name]

    def _window(self, name: str, now: float) -> deque[float]:
        """The times ``name`` was restarted within the last ``interval`` seconds."""
        recent = self._recent.setdefault(name, deque())
        while recent and recent[0] <= now - self.policy.interval:
            recent.popleft()
        return recent
