"""A replica's whole state moved to another: read in one pass, streamed in parts, installed at once.

**Sending** (:func:`parts`): the sender reads its state inside one SQLite read transaction
(:meth:`~pyrostore.store.Database.consistent_read`). WAL gives that transaction one position
for as long as it lasts while writes go on, so no lock is held and no write waits for a
snapshot. Rows go out table by table in parts of about :data:`PART_BYTES`, read from the
cursor as they are sent: one part is in memory at a time, however large the catalog.

**Receiving** (:class:`Staging`): the receiver takes the parts in order into staging tables of
its own, each part in a short transaction of its own, and with the last one installs them all
in one transaction. Its state is its old one or the whole snapshot, never a mix, whatever
fails between; it holds one part in memory at a time. A part of another transfer, or out of
order, is refused (the transfer under way goes on); a new transfer's first part discards
whatever an unfinished one staged. (Which transfers a replica takes at all, the membership
decides: :meth:`~pyrostore.membership.Membership.check_transfer`.)
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Callable, Generator, Iterator
from typing import Any

from pyrostore.errors import InvalidRequest
from pyrostore.models import check_count, check_fields, check_int, check_token
from pyrostore.store import Database

PART_BYTES = 1024 * 1024
"""About how many bytes of row data one part carries: a message stays well below the
daemons' limit (:data:`pyrostore.limits.MAX_MESSAGE_SIZE`)."""
MAX_PARTS = 1_000_000
"""Most parts one transfer may have (a terabyte)."""
PART_FIELDS = ("transfer", "part", "applied", "table", "rows", "last")
"""A part on the wire: which transfer, its index, the snapshot's position, one table's rows,
and whether it is the last."""
FETCH = 500
"""Rows read from the cursor at a time."""

CheckRows = Callable[[Any, Any, int], list[list[Any]]]
"""A state machine's check of one table's rows of a snapshot at a position."""


def parts(db: Database, transfer: str, *, budget: int = PART_BYTES
          ) -> Generator[dict[str, Any], None, None]:
    """``db``'s whole replicated state at one position, as parts ``{transfer, part, applied,
    table, rows, last}`` of about ``budget`` bytes of rows each, read as they are taken (at
    least one part, even for an empty database); ``transfer`` names the transfer (a joiner's
    request to join). The read transaction lasts until the generator is exhausted or
    closed."""
    with db.consistent_read() as (conn, applied):
        index, pending = 0, None
        for table in db.snapshot_tables():
            for rows in _chunks(conn.execute(f"SELECT * FROM {table}"), budget):
                if pending is not None:
                    yield pending
                pending = {"transfer": transfer, "part": index, "applied": applied,
                           "table": table, "rows": rows, "last": False}
                index += 1
        if pending is None:
            pending = {"transfer": transfer, "part": 0, "applied": applied,
                       "table": "requests", "rows": [], "last": False}
        yield {**pending, "last": True}


def _chunks(cursor: Any, budget: int) -> Iterator[list[list[Any]]]:
    """The cursor's rows in lists of about ``budget`` bytes."""
    rows: list[list[Any]] = []
    size = 0
    while batch := cursor.fetchmany(FETCH):
        for row in batch:
            row_size = 16 + sum(len(value.encode()) if isinstance(value, str) else 8
                                for value in row)
            if size + row_size > budget and rows:
                yield rows
                rows, size = [], 0
            rows.append(list(row))
            size += row_size
    if rows:
        yield rows


TRANSFER_NICENESS = 10
"""How much lower than the others the thread taking a snapshot's part runs (Linux keeps a
nice value per thread): a joiner serves nothing yet, and on a machine it shares with the
primary its checking and staging of rows should take the CPU only when nothing else wants
it."""


@contextlib.contextmanager
def low_priority() -> Iterator[None]:
    """Run the body with this thread's nice value raised by :data:`TRANSFER_NICENESS`, and
    back afterwards where the system allows (lowering it needs privilege: without, this
    thread, which serves the primary's transfer connection, stays low)."""
    thread = threading.get_native_id()
    try:
        before = os.getpriority(os.PRIO_PROCESS, thread)
        os.setpriority(os.PRIO_PROCESS, thread, min(19, before + TRANSFER_NICENESS))
    except OSError:  # not Linux, or not allowed: run as it is
        yield
        return
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, thread, before)


class Staging:
    """The receiving end of snapshot transfers into ``db`` (one at a time), the caller holding
    ``db``'s write lock around each :meth:`add`."""

    def __init__(self, db: Database, check_rows: CheckRows) -> None:
        self.db = db
        self.check_rows = check_rows
        self._transfer: str | None = None
        self._next = 0
        self._applied = 0

    def check(self, part: Any) -> dict[str, Any]:
        """``part`` checked field by field and row by row (nothing staged yet)."""
        fields = check_fields(part, "snapshot part", PART_FIELDS)
        applied = check_count(fields["applied"], "applied")
        if not isinstance(fields["last"], bool):
            raise InvalidRequest("a snapshot part's last is true or false", field="last")
        return {"transfer": check_token(fields["transfer"], "transfer"),
                "part": check_int(fields["part"], "part", low=0, high=MAX_PARTS - 1),
                "applied": applied, "table": fields["table"], "last": fields["last"],
                "rows": self.check_rows(fields["table"], fields["rows"], applied)}

    def expect(self, part: dict[str, Any]) -> None:
        """Refuse ``part`` (:meth:`check` ed) unless it is the next of the transfer under way,
        or the first of a new one."""
        transfer, index = part["transfer"], part["part"]
        if index != 0 and (transfer, index, part["applied"]) != \
                (self._transfer, self._next, self._applied):
            raise InvalidRequest(f"snapshot part {index} of transfer {transfer[:12]} is not "
                                 "the one expected next; that transfer must start over")

    def add(self, part: dict[str, Any]) -> int | None:
        """Take the next part (:meth:`check` ed and :meth:`expect` ed); once the last is in,
        install the snapshot and return its position (else None)."""
        self.expect(part)
        applied = part["applied"]
        if part["part"] == 0:
            self.db.stage_begin()
            self._transfer, self._next, self._applied = part["transfer"], 0, applied
        try:
            self.db.stage(part["table"], part["rows"])
        except sqlite3.IntegrityError as exc:  # a key twice: nothing installed
            self._transfer = None
            raise InvalidRequest(f"a snapshot breaks a table's constraints ({exc})") from None
        self._next += 1
        if not part["last"]:
            return None
        self._transfer = None
        self.db.install_staged(applied)
        return applied
