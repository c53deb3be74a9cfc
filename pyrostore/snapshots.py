"""A snapshot on the wire: cut into parts that each fit a message, put back together in order.

A daemon reads no message above :data:`pyrostore.limits.MAX_MESSAGE_SIZE`, but a snapshot
grows with the catalog and the order log. :func:`split` cuts one (``{applied, tables}``, as
:meth:`pyrostore.store.Database.snapshot` makes it) into parts of about :data:`PART_BYTES`
each; a backup's :class:`Assembly` takes them one by one, in order, and gives back the whole
snapshot with the last. A part of another transfer, or one out of order, starts nothing and
is refused; the backup only installs a whole, checked snapshot.
"""

from __future__ import annotations

import uuid
from typing import Any

from pyrostore.errors import InvalidRequest
from pyrostore.models import check_count, check_fields, check_int, check_token

PART_BYTES = 1024 * 1024
"""About how many bytes of row data one part carries (a message stays well below the limit)."""
MAX_PARTS = 100_000
"""Most parts one transfer may have (a 100 GB snapshot)."""
PART_FIELDS = ("transfer", "part", "parts", "applied", "tables")


def split(snapshot: dict[str, Any], *, budget: int = PART_BYTES) -> list[dict[str, Any]]:
    """``snapshot`` as parts ``{transfer, part, parts, applied, tables}`` of about ``budget``
    bytes of rows each (at least one part, even for an empty snapshot)."""
    transfer = uuid.uuid4().hex
    parts: list[dict[str, list[Any]]] = [{}]
    size = 0
    for name, rows in snapshot["tables"].items():
        parts[-1].setdefault(name, [])
        for row in rows:
            row_size = 16 + sum(len(value) if isinstance(value, str) else 8 for value in row)
            if size + row_size > budget and size:
                parts.append({name: []})
                size = 0
            parts[-1][name].append(row)
            size += row_size
    return [{"transfer": transfer, "part": index, "parts": len(parts),
             "applied": snapshot["applied"], "tables": tables}
            for index, tables in enumerate(parts)]


class Assembly:
    """The parts of one transfer received so far (one transfer at a time: a new one that
    begins replaces an unfinished one)."""

    def __init__(self) -> None:
        self._transfer: str | None = None
        self._next = 0
        self._applied = 0
        self._tables: dict[str, list[Any]] = {}

    def add(self, part: Any) -> dict[str, Any] | None:
        """Take the next part; the whole snapshot once the last is in, else None."""
        fields = check_fields(part, "snapshot part", PART_FIELDS)
        transfer = check_token(fields["transfer"], "transfer")
        parts = check_int(fields["parts"], "parts", low=1, high=MAX_PARTS)
        index = check_int(fields["part"], "part", low=0, high=parts - 1)
        applied = check_count(fields["applied"], "applied")
        tables = fields["tables"]
        if not isinstance(tables, dict) or not all(
                isinstance(name, str) and isinstance(rows, list) for name, rows in tables.items()):
            raise InvalidRequest("a snapshot part's tables map names to lists of rows")
        if index == 0:
            self._transfer, self._next, self._applied, self._tables = transfer, 0, applied, {}
        if transfer != self._transfer or index != self._next or applied != self._applied:
            self._transfer = None
            raise InvalidRequest(f"snapshot part {index} of transfer {transfer[:12]} is not "
                                 "the one expected next; the transfer must start over")
        for name, rows in tables.items():
            self._tables.setdefault(name, []).extend(rows)
        self._next += 1
        if self._next < parts:
            return None
        whole = {"applied": applied, "tables": self._tables}
        self._transfer, self._tables = None, {}
        return whole
