"""``pyrostore ping``: whether the store answers, which frontend answered, and how fast.

As ping(8) or redis-cli's PING: each round asks every frontend registered in the name server
for the topics (a read that crosses the frontend to the catalog or its cache) over a kept
connection, and prints who answered and the round trip; the first round's includes making
the TLS connection. The store is up if a frontend answered.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from collections.abc import Sequence

from rich.console import Console
from rich.text import Text

from pyrostore.cli.options import AddCommand
from pyrostore.config import Settings
from pyrostore.discovery import HOPS_BELOW, find, parse_name
from pyrostore.errors import ConfigError, PyrostoreError, Unavailable
from pyrostore.transport import TRANSPORT_FAILURES, ProxyPool


@dataclasses.dataclass(frozen=True)
class Answer:
    """One frontend's answer to one ping: its round trip, or why there was none."""

    frontend: int
    uri: str
    ms: float | None
    error: str = ""

    def line(self) -> Text:
        """``frontend 1 (127.0.0.1:40123) answered in 1.84 ms``, or why it did not."""
        where = f"frontend {self.frontend} ({self.uri.rpartition('@')[2]})"
        if self.ms is None:
            return Text(f"{where} did not answer: {self.error}", style="red")
        return Text(f"{where} answered in {self.ms:.2f} ms")


def add_ping_command(add: AddCommand) -> None:
    """``pyrostore ping [-c N] [-i S]``."""
    ping = add("ping", cmd_ping, "is the store up? which frontend answers, and how fast",
               json_flag=True)
    ping.add_argument("-c", "--count", type=int, default=1, metavar="N",
                      help="rounds of pings, each to every frontend (1)")
    ping.add_argument("-i", "--interval", type=float, default=1.0, metavar="S",
                      help="seconds between rounds (1)")


def cmd_ping(args: argparse.Namespace, settings: Settings, console: Console) -> int:
    """Ping every frontend ``--count`` times; 0 if one answered, else Unavailable (3)."""
    if args.count < 1 or args.interval < 0:
        raise ConfigError("--count must be at least 1 and --interval at least 0")
    frontends = sorted(find(settings, "frontend").items())
    if not frontends:
        raise Unavailable(f"no frontend is registered at the name server at {settings.ns_host}:"
                          f"{settings.ns_port}: the store is starting, or stopped (pyrostore "
                          "status)")
    pool = ProxyPool(settings, timeout=settings.call_timeout * (1 + HOPS_BELOW["frontend"]))
    answers: list[Answer] = []
    try:
        for round_ in range(args.count):
            if round_:
                time.sleep(args.interval)  # the pace asked for: nothing to wait on
            for name, uri in frontends:
                answers.append(ping_once(pool, name, uri))
                if not args.json:
                    console.print(answers[-1].line())
    finally:
        pool.close()
    found = {"nameserver": f"{settings.ns_host}:{settings.ns_port}",
             "answered": sum(a.ms is not None for a in answers),
             "pings": [dataclasses.asdict(a) for a in answers]}
    if not found["answered"]:
        raise Unavailable("no frontend answered", **found)
    if args.json:
        print(json.dumps(found, indent=2))
    elif len(answers) > 1:
        console.print(summary(answers), highlight=False)
    return 0


def ping_once(pool: ProxyPool, name: str, uri: str) -> Answer:
    """Ask the frontend at ``uri`` for the topics; its answer and round trip."""
    frontend = parse_name(name)[1]
    started = time.perf_counter()
    try:
        pool.call(uri, "topics")
    except (*TRANSPORT_FAILURES, PyrostoreError) as exc:
        return Answer(frontend, uri, None, str(exc))
    return Answer(frontend, uri, round((time.perf_counter() - started) * 1000, 2))


def summary(answers: Sequence[Answer]) -> str:
    """``3 of 3 answered; round trip min/avg/max 1.20/1.50/2.00 ms``."""
    times: list[float] = [a.ms for a in answers if a.ms is not None]
    spread = f"{min(times):.2f}/{sum(times) / len(times):.2f}/{max(times):.2f}"
    return f"{len(times)} of {len(answers)} answered; round trip min/avg/max {spread} ms"
