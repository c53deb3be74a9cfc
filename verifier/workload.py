"""A verifier client: one process that shops until told to stop, and writes what it asked and
what it was told, one JSON line per event, to its own history file.

Each invocation is written (and flushed) before the call and its completion after it, so a
client killed mid-call (``kill -9``, a nemesis) leaves an invocation without a completion,
which the checkers read as an operation of unknown outcome. What each answer means:

    ============================  ===========  =========================================
    answer                        recorded     why
    ============================  ===========  =========================================
    a book, an order, a restock   ok           it happened
    OutOfStock                    fail         a definite refusal: nothing changed
    Unavailable                   fail         the store says it did not run (checked:
                                               an order for it is a phantom)
    OutcomeUnknown, anything else info         it may or may not have happened
    ============================  ===========  =========================================

Run as ``python -m verifier.workload SETTINGS.json OUT.jsonl --process N --items 1,2,3``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

from pyrostore.client import Client
from pyrostore.config import Settings
from pyrostore.errors import OutOfStock, PyrostoreError, Unavailable
from pyrostore.models import new_request_id

MIX = (("lookup", 5), ("buy", 4), ("restock", 2))
"""The operations' weights."""
DEFINITE = (OutOfStock, Unavailable)


class Recorder:
    """Writes one process's events to its history file, each flushed at once."""

    def __init__(self, file: IO[str], process: int) -> None:
        self.file, self.process = file, process

    def write(self, kind: str, f: str, item: int, value: int | None, *,
              request_id: str | None = None, order_id: int | None = None,
              error: str | None = None) -> None:
        """One event, timed now on the system's monotonic clock (shared by every process)."""
        event = {"process": self.process, "type": kind, "f": f, "item": item, "value": value,
                 "time": time.monotonic(), "request_id": request_id, "order_id": order_id,
                 "error": error}
        self.file.write(json.dumps(event) + "\n")
        self.file.flush()


def one_operation(client: Client, recorder: Recorder, rng: random.Random,
                  items: list[int]) -> None:
    """Choose an operation, record its invocation, call the store, record what came of it."""
    f = rng.choices([name for name, _ in MIX], [weight for _, weight in MIX])[0]
    item = rng.choice(items)
    value = None if f == "lookup" else (rng.randint(1, 3) if f == "buy" else rng.randint(1, 5))
    request_id = None if f == "lookup" else new_request_id()
    recorder.write("invoke", f, item, value, request_id=request_id)
    try:
        if f == "lookup":
            result: Any = client.lookup(item)["stock"]
            order_id = None
        elif f == "buy":
            order_id = client.buy(item, value or 1, request_id=request_id)["order_id"]
            result = value
        else:
            client.update(item, stock_delta=value, request_id=request_id)
            result, order_id = value, None
    except DEFINITE as exc:
        recorder.write("fail", f, item, value, request_id=request_id, error=type(exc).__name__)
    except PyrostoreError as exc:
        recorder.write("info", f, item, value, request_id=request_id, error=type(exc).__name__)
    else:
        recorder.write("ok", f, item, result, request_id=request_id, order_id=order_id)


def shop(settings: Settings, out: Path, *, process: int, items: list[int], seed: int,
         stop: threading.Event) -> None:
    """Shop until ``stop`` is set, appending every event to ``out``."""
    rng = random.Random(seed)
    with out.open("a") as file, Client(settings=settings) as client:
        recorder = Recorder(file, process)
        while not stop.is_set():
            one_operation(client, recorder, rng, items)


def main(argv: list[str] | None = None) -> int:
    """The client process: its settings from a JSON file of ``PYROSTORE_*`` values."""
    parser = argparse.ArgumentParser(prog="python -m verifier.workload", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("settings", type=Path, help="JSON of PYROSTORE_* values")
    parser.add_argument("out", type=Path, help="the history file to append to")
    parser.add_argument("--process", type=int, required=True, help="this client's number")
    parser.add_argument("--items", required=True, help="the books to shop, comma-separated")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    environ = json.loads(args.settings.read_text())
    settings = Settings.from_env(environ)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    shop(settings, args.out, process=args.process,
         items=[int(item) for item in args.items.split(",")], seed=args.seed, stop=stop)
    return 0


if __name__ == "__main__":
    os.umask(0o077)
    sys.exit(main())
