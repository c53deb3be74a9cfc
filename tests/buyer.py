"""A shopper in a process of its own, for tests that kill clients mid-buy (``kill -9``).

    python -m tests.buyer JOURNAL SEED ITEM [ITEM ...]

It buys one or two copies of a random item, again and again, each with a request id of its
own and never a retry, until it is killed. Settings come from the ``PYROSTORE_*`` variables
(:meth:`pyrostore.config.Settings.dump`). Before each buy it journals ``begin`` and after it
what it was told (``ok`` with the order, ``refused``, ``unknown``, ``unavailable``), one JSON
object per line, flushed line by line: whatever instant the process dies at, the journal
holds every buy it began and every answer it got.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path
from typing import IO, Any

from pyrostore.client import Client
from pyrostore.errors import BuyUndone, OutcomeUnknown, OutOfStock, RequestExpired, Unavailable
from pyrostore.models import new_request_id


def journal(out: IO[str], event: str, request_id: str, **fields: Any) -> None:
    out.write(json.dumps({"event": event, "request_id": request_id, **fields}) + "\n")
    out.flush()


def shop(path: Path, seed: int, items: list[int]) -> None:
    rng = random.Random(seed)
    with path.open("a", encoding="utf-8") as out, Client() as client:
        while True:
            item, qty, request_id = rng.choice(items), rng.randint(1, 2), new_request_id()
            journal(out, "begin", request_id, item=item, qty=qty)
            try:
                order = client.buy(item, qty, request_id=request_id)
            except (OutOfStock, BuyUndone, RequestExpired) as exc:
                journal(out, "refused", request_id, error=type(exc).__name__)
            except OutcomeUnknown:
                journal(out, "unknown", request_id)
            except Unavailable:
                journal(out, "unavailable", request_id)
            else:
                journal(out, "ok", request_id, order=order)


def read_journal(path: Path) -> list[dict[str, Any]]:
    """A journal's events; a last line cut short by a kill is not one."""
    events = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:
            continue
    return events


if __name__ == "__main__":
    shop(Path(sys.argv[1]), int(sys.argv[2]), [int(item) for item in sys.argv[3:]])
