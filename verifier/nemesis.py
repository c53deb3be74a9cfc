"""The verifier's nemeses: faults applied to a running store, each held a while, then healed.

    ===========  ==========================================================================
    kind         what it does
    ===========  ==========================================================================
    kill         ``kill -9`` a catalog or order replica (the primary half the time); restart
    pause        SIGSTOP a catalog or order replica (the primary half the time); SIGCONT
    coordinator  ``kill -9`` the coordinators' Raft leader; restart it
    nameserver   ``kill -9`` the name server; restart it (its registrations are on disk)
    clients      ``kill -9`` a client process, likely mid-buy; a new client takes its place
    partition    cut one host off from every other (its link down: packets vanish)
    split        drop the packets between two hosts, both ways or one way only
    ===========  ==========================================================================

The last two need namespace hosts (:mod:`verifier.netns`). Which kind comes next and whom it
hits is :class:`Schedule`'s choice, a plain object fed a seed; :class:`Nemesis` carries it out.
"""

from __future__ import annotations

import dataclasses
import random
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from verifier.clients import ClientPool
from verifier.deployment import Deployment

KINDS = ("kill", "pause", "coordinator", "nameserver", "clients", "partition", "split")
NETWORK_KINDS = frozenset({"partition", "split"})
REPLICA_GROUPS = ("catalog", "order")
CUTTABLE = ("ns", "a", "b", "fe")
"""Hosts a network nemesis may cut off (not ``ctl``, where the driver and clients are)."""


Fault = tuple[str, Callable[[], None]]
"""What applying a fault returns: whom it hit, and how to heal it."""


class Network(Protocol):
    """What the network nemeses need of the hosts (:class:`verifier.netns.Hosts`)."""

    def isolate(self, host: Any) -> None: ...
    def rejoin(self, host: Any) -> None: ...
    def block(self, src: Any, dst: Any, *, both_ways: bool = False) -> None: ...
    def heal(self) -> None: ...
    def __getitem__(self, name: str) -> Any: ...


@dataclasses.dataclass
class Episode:
    """One fault: what, whom, when it began, when it was healed, when the store served again."""

    kind: str
    target: str
    start: float
    healed: float = 0.0
    recovered: float = 0.0

    def to_json(self) -> dict[str, Any]:
        """A plain dict for the nemesis log."""
        return dataclasses.asdict(self)


class Schedule:
    """The order of the nemeses: each kind in turn, shuffled anew every round."""

    def __init__(self, kinds: Sequence[str], rng: random.Random) -> None:
        unknown = set(kinds) - set(KINDS)
        if unknown or not kinds:
            raise ValueError(f"nemesis kinds are {', '.join(KINDS)}, not "
                             f"{', '.join(sorted(unknown)) or 'none'}")
        self.kinds, self.rng, self.queue = list(kinds), rng, list[str]()

    def next_kind(self) -> str:
        """The next kind to apply."""
        if not self.queue:
            self.queue = self.rng.sample(self.kinds, len(self.kinds))
        return self.queue.pop()

    def replica(self, primary: int | None, ids: Sequence[int]) -> int:
        """The primary half the time (when there is one), else any replica."""
        if primary is not None and self.rng.random() < 0.5:
            return primary
        return self.rng.choice(list(ids))


class Nemesis:
    """Applies a :class:`Schedule` to a deployment; each episode is logged."""

    def __init__(self, deployment: Deployment, clients: ClientPool, schedule: Schedule, *,
                 network: Network | None = None, hold: tuple[float, float] = (1.5, 3.0),
                 healthy: Callable[[], bool] | None = None) -> None:
        self.deployment, self.clients, self.schedule = deployment, clients, schedule
        self.network, self.hold = network, hold
        self.healthy = healthy or (lambda: True)
        self.episodes: list[Episode] = []

    def run(self, until: float, stop: threading.Event, *,
            progress: Callable[[Episode], None] | None = None) -> None:
        """Episodes one after another until ``until`` (monotonic), and at least one of each
        kind, or until ``stop``."""
        unseen = set(self.schedule.kinds)
        while (time.monotonic() < until or unseen) and not stop.is_set():
            episode = self.episode(self.schedule.next_kind())
            unseen.discard(episode.kind)
            if progress is not None:
                progress(episode)
            stop.wait(0.5)  # a calm moment between faults, part of the schedule

    def episode(self, kind: str) -> Episode:
        """Apply one fault of ``kind``, hold it, heal it, and wait for the store to serve."""
        target, heal = getattr(self, f"_{kind}")()
        episode = Episode(kind, target, time.monotonic())
        self.episodes.append(episode)
        threading.Event().wait(self.schedule.rng.uniform(*self.hold))  # the fault's duration
        heal()
        episode.healed = time.monotonic()
        _wait(self.healthy, timeout=90.0)
        episode.recovered = time.monotonic()
        return episode

    def _kill(self) -> Fault:
        group = self.schedule.rng.choice(REPLICA_GROUPS)
        victim = self.schedule.replica(self.deployment.primary(group), self.deployment.ids(group))
        self.deployment.kill(group, victim)
        return f"{group} {victim}", lambda: self.deployment.restart(group, victim)

    def _pause(self) -> Fault:
        group = self.schedule.rng.choice(REPLICA_GROUPS)
        victim = self.schedule.replica(self.deployment.primary(group), self.deployment.ids(group))
        self.deployment.pause(group, victim)
        return f"{group} {victim}", lambda: self.deployment.pause(group, victim, resume=True)

    def _coordinator(self) -> Fault:
        ids = self.deployment.ids("coordinator")
        leader = self.deployment.leader() or self.schedule.rng.choice(ids)
        self.deployment.kill("coordinator", leader)
        return (f"coordinator {leader} (leader)",
                lambda: self.deployment.restart("coordinator", leader))

    def _nameserver(self) -> Fault:
        self.deployment.kill("nameserver", 0)
        return "name server", lambda: self.deployment.restart("nameserver", 0)

    def _clients(self) -> Fault:
        process = self.clients.kill_one()
        return f"client {process}", lambda: None

    def _partition(self) -> Fault:
        network = self._network()
        host = self.schedule.rng.choice(CUTTABLE)
        network.isolate(network[host])
        return f"host {host} cut off", lambda: network.rejoin(network[host])

    def _split(self) -> Fault:
        network = self._network()
        src, dst = self.schedule.rng.sample(CUTTABLE, 2)
        both = self.schedule.rng.random() < 0.5
        network.block(network[src], network[dst], both_ways=both)
        return f"{src} {'<->' if both else '->'} {dst} dropped", network.heal

    def _network(self) -> Network:
        if self.network is None:
            raise ValueError("network nemeses need namespace hosts (verify.py --hosts netns)")
        return self.network


def _wait(condition: Callable[[], bool], *, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"the store did not serve again within {timeout:.0f} s")
        time.sleep(0.1)  # polling the store's state; nothing to wait on
