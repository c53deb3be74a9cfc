"""Client processes: each runs its own ``pyrostore.Client`` and reports its latencies back.

A measured client must not share a GIL with anything else, so every request the benchmark
times is made by a :class:`ClientPool` worker: a process started with the ``spawn`` context,
with Pyro5's ``SOCK_NODELAY`` on, that keeps one connected ``Client`` per store between jobs
(so a job measures requests, not connection set-up). The parent sends a :class:`Job` to each
of ``n`` workers at once and collects one :class:`Result` from each; workers send a tick every
:data:`TICK` requests so the parent's progress bar moves.
"""

from __future__ import annotations

import contextlib
import dataclasses
import multiprocessing
import multiprocessing.connection
import random
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any, cast

TICK = 25
"""Requests between two progress messages from a worker."""
OPERATIONS = ("search", "lookup", "buy")


class BenchError(Exception):
    """A benchmark could not run as planned (a client failed, a store did not come up)."""


@dataclasses.dataclass(frozen=True)
class Job:
    """What one worker does next.

    ``kind`` is ``ops`` (``count`` requests of ``op``, or as many as fit in ``seconds``),
    ``cycles`` (``count`` rounds of lookup, lookup, buy, lookup: hit then miss) or ``bare``
    (``count`` calls of ``ping()`` on the plain Pyro5 object at ``uri``, or for ``seconds``).
    Items are picked at random from ``items`` with ``seed``.
    """

    kind: str
    settings: Any = None  # a pyrostore Settings; Any keeps this module import-light
    op: str = "lookup"
    count: int = 0
    seconds: float = 0.0
    items: tuple[int, ...] = (1,)
    topic: str = ""
    uri: str = ""
    seed: int = 0


@dataclasses.dataclass
class Result:
    """Latencies in seconds by label (the op, or fill/hit/buy/miss), and the time window."""

    latencies: dict[str, list[float]]
    started: float  # time.monotonic(): one clock for every process on the machine
    ended: float

    @property
    def requests(self) -> int:
        """How many requests were timed."""
        return sum(len(samples) for samples in self.latencies.values())


class ClientPool:
    """Worker processes that run :class:`Job` s side by side; close it when done."""

    def __init__(self) -> None:
        self._context = multiprocessing.get_context("spawn")
        self._workers: list[tuple[BaseProcess, Connection]] = []

    def __enter__(self) -> ClientPool:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    @property
    def size(self) -> int:
        """How many workers run."""
        return len(self._workers)

    def ensure(self, count: int) -> None:
        """Start workers until there are at least ``count``, and wait until each is ready."""
        started: list[Connection] = []
        while len(self._workers) < count:
            ours, theirs = self._context.Pipe()
            process = self._context.Process(target=worker_main, args=(theirs,), daemon=True,
                                            name=f"bench-client-{len(self._workers) + 1}")
            process.start()
            theirs.close()
            self._workers.append((process, ours))
            started.append(ours)
        for connection in started:  # its imports done: it will not compete with a measurement
            if not connection.poll(60) or connection.recv() != ("ready", None):
                raise BenchError("a client process did not start")

    def run(self, jobs: list[Job], on_tick: Callable[[int], None] | None = None) -> list[Result]:
        """Run ``jobs[i]`` on worker ``i``, all at once; every result, or :class:`BenchError`."""
        self.ensure(len(jobs))
        pending: dict[Connection, int] = {}
        for index, job in enumerate(jobs):
            connection = self._workers[index][1]
            connection.send(job)
            pending[connection] = index
        results: list[Result | None] = [None] * len(jobs)
        failures: list[str] = []
        while pending:
            for waited in multiprocessing.connection.wait(list(pending)):
                ready = cast(Connection, waited)
                try:
                    kind, payload = ready.recv()
                except EOFError:
                    kind, payload = "error", "the client process died"
                if kind == "tick":
                    if on_tick is not None:
                        on_tick(payload)
                    continue
                index = pending.pop(ready)
                if kind == "done":
                    results[index] = payload
                else:
                    failures.append(f"client {index + 1}: {payload}")
        if failures:
            raise BenchError("; ".join(failures))
        return [r for r in results if r is not None]

    def close(self) -> None:
        """Ask every worker to stop, then end any that did not, by its own handle."""
        for _, connection in self._workers:
            with contextlib.suppress(OSError):
                connection.send(None)
        for process, connection in self._workers:
            process.join(5)
            if process.is_alive():
                process.terminate()
                process.join(5)
            connection.close()
        self._workers = []


def worker_main(connection: Connection) -> None:
    """A client process: run jobs until told to stop (None), keeping one Client per store."""
    from benchmarks.security import secure

    secure(role="admin")  # the store's limits and TLS, as every client process of it
    import pyrostore.client  # noqa: F401  (imported now, not during a measurement)

    clients: dict[tuple[str, int], Any] = {}
    connection.send(("ready", None))
    try:
        while (job := connection.recv()) is not None:
            try:
                result = _run(job, clients, lambda n: connection.send(("tick", n)))
            except Exception as exc:
                connection.send(("error", f"{type(exc).__name__}: {exc}"))
            else:
                connection.send(("done", result))
    except (EOFError, KeyboardInterrupt):
        pass
    finally:
        for client in clients.values():
            client.close()


def _run(job: Job, clients: dict[tuple[str, int], Any], tick: Callable[[int], None]) -> Result:
    if job.kind == "bare":
        return _bare(job, tick)
    client = _client(job.settings, clients)
    if job.kind == "cycles":
        return _cycles(job, client, tick)
    return _ops(job, client, tick)


def _client(settings: Any, clients: dict[tuple[str, int], Any]) -> Any:
    """The connected Client of this store; clients of other stores are closed."""
    from pyrostore.client import Client

    key = (settings.ns_host, settings.ns_port)
    for other in [k for k in clients if k != key]:
        clients.pop(other).close()
    if key not in clients:
        clients[key] = Client(settings=settings)
        clients[key].stats()  # connect now, not in the first timed request (stats is untimed)
    return clients[key]


def _ops(job: Job, client: Any, tick: Callable[[int], None]) -> Result:
    rng = random.Random(job.seed)
    items = job.items
    calls: dict[str, Callable[[], Any]] = {
        "search": lambda: client.search(job.topic),
        "lookup": lambda: client.lookup(rng.choice(items)),
        "buy": lambda: client.buy(rng.choice(items)),
    }
    call = calls[job.op]
    samples: list[float] = []
    clock = time.perf_counter
    started = time.monotonic()
    deadline = clock() + job.seconds
    while (len(samples) < job.count) if job.count else (clock() < deadline):
        begin = clock()
        call()
        samples.append(clock() - begin)
        if len(samples) % TICK == 0:
            tick(TICK)
    ended = time.monotonic()
    tick(len(samples) % TICK)
    return Result({job.op: samples}, started, ended)


def _cycles(job: Job, client: Any, tick: Callable[[int], None]) -> Result:
    """Per round, on one item: lookup (fills the entry, or hits it if an earlier round left
    it cached), lookup (hit), buy (invalidates), lookup (miss)."""
    labels = ("first", "hit", "buy", "miss")
    samples: dict[str, list[float]] = {label: [] for label in labels}
    clock = time.perf_counter
    started = time.monotonic()
    for round_number in range(job.count):
        item = job.items[round_number % len(job.items)]
        for label in labels:
            begin = clock()
            if label == "buy":
                client.buy(item)
            else:
                client.lookup(item)
            samples[label].append(clock() - begin)
        tick(1)
    return Result(samples, started, time.monotonic())


def _bare(job: Job, tick: Callable[[int], None]) -> Result:
    """Time ``ping()`` on a plain Pyro5 object with the store's serializer."""
    import Pyro5.api

    samples: list[float] = []
    clock = time.perf_counter
    with Pyro5.api.Proxy(job.uri) as proxy:
        proxy._pyroSerializer = job.settings.serializer
        proxy._pyroBind()
        for _ in range(50):  # warm up as the store's clients are (connected, code paths hot)
            proxy.ping()
        started = time.monotonic()
        deadline = clock() + job.seconds
        while (len(samples) < job.count) if job.count else (clock() < deadline):
            begin = clock()
            proxy.ping()
            samples.append(clock() - begin)
            if len(samples) % TICK == 0:
                tick(TICK)
        ended = time.monotonic()
    tick(len(samples) % TICK)
    return Result({"ping": samples}, started, ended)
