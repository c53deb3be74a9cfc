"""A client process that buys without pause and stamps every buy, for experiments that disturb
a store while it sells (the rejoin experiment).

The shopper runs its own ``pyrostore.Client`` in a process of its own (spawned, as the pool's
clients are), so the experiment's own work shares no GIL with it. Each attempt is kept as
``(start, seconds, error)``: ``start`` on ``time.monotonic`` (one clock for every process of
the machine), ``error`` the refusal's class name, or "" for an acknowledged buy. A refused buy
is tried again at once with a new one: its time is how long its shopper waited.
"""

from __future__ import annotations

import multiprocessing
import random
import time
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Event
from typing import Any

from benchmarks.pool import BenchError

Attempt = tuple[float, float, str]
"""``(start, seconds, error)`` of one buy; ``error`` is "" for an acknowledged one."""


class Shopper:
    """One client process buying a random one of ``items`` until :meth:`stop`."""

    def __init__(self, settings: Any, items: tuple[int, ...]) -> None:
        context = multiprocessing.get_context("spawn")
        self._stop = context.Event()
        self._ours, self._theirs = context.Pipe()
        self._process = context.Process(target=shop, args=(settings, items, self._stop,
                                                           self._theirs),
                                        daemon=True, name="bench-shopper")
        self.attempts: list[Attempt] = []

    def __enter__(self) -> Shopper:
        self._process.start()
        self._theirs.close()
        if not self._ours.poll(60) or self._ours.recv() != "ready":
            self.__exit__()
            raise BenchError("the shopper process did not start")
        return self

    def stop(self) -> list[Attempt]:
        """Stop buying; every attempt, in order (also kept in :attr:`attempts`)."""
        self._stop.set()
        if not self._ours.poll(60):
            raise BenchError("the shopper process did not report its buys")
        self.attempts = self._ours.recv()
        return self.attempts

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._process.join(10)
        if self._process.is_alive():
            self._process.terminate()
            self._process.join(5)
        self._ours.close()


def shop(settings: Any, items: tuple[int, ...], stop: Event, connection: Connection) -> None:
    """The shopper process: buy until ``stop``, then send every attempt."""
    from benchmarks.security import secure

    secure(role="admin")  # the store's limits and TLS, as every client process of it
    from pyrostore.client import Client
    from pyrostore.errors import PyrostoreError

    rng = random.Random(7)
    attempts: list[Attempt] = []
    clock = time.monotonic
    with Client(settings=settings) as client:
        client.stats()  # connected before the first timed buy
        connection.send("ready")
        while not stop.is_set():
            began, error = clock(), ""
            try:
                client.buy(rng.choice(items))
            except PyrostoreError as exc:
                error = type(exc).__name__
            attempts.append((began, clock() - began, error))
    connection.send(attempts)
    connection.close()
