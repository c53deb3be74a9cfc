"""A primary brings another replica level: by nothing, from its log, or by a snapshot.

What it sends is :func:`~pyrostore.replica_core.transfer_plan`'s decision:

- **level**: nothing;
- **catch-up**: the writes the replica missed, read from the log (the request ids, which keep
  each write's operation, result, position and epoch: :meth:`~pyrostore.store.Database.log`)
  and sent with ``catch_up`` (applied like forwards, but confirming nothing: a backup being
  levelled does not serve until the primary says it is level), up to :data:`MAX_FORWARD`
  writes or :data:`FORWARD_BYTES` a call. It costs per write missed, and is possible while
  the log holds them: up to ``catch_up_limit`` writes, within the request-id retention;
- **snapshot**: the whole state at one position, streamed in parts from one read
  transaction (:mod:`pyrostore.snapshots`), then the writes made since that position from the
  log. It costs per row held.

Nothing here takes the write lock, so writes go on while a replica is brought up; the caller
decides what is ordered with them (:mod:`pyrostore.membership`: only the last few writes and
the change of membership), and gives a ``wanted`` check, asked before each call, that raises
once the transfer should stop (superseded, or this replica no longer leads). A gap in the log
met while catching up (ids forgotten meanwhile), or a logged write the replica refuses (one
stored by an older release), turns the transfer into a snapshot.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from pyrostore.errors import InvalidRequest
from pyrostore.hooks import Hooks
from pyrostore.replica_core import WriteName, transfer_plan
from pyrostore.snapshots import parts
from pyrostore.store import Database
from pyrostore.transport import ProxyPool

log = logging.getLogger(__name__)
MAX_FORWARD = 512
"""The most writes one forward may carry (a catch-up sends up to this many a call)."""
FORWARD_BYTES = 1024 * 1024
"""About how many bytes of stored writes one catch-up call carries at most (the daemons read
no message above 4 MiB; a settlement alone may carry hundreds of request ids)."""
HOLD_POINT = "hold_mid_transfer"
"""The test hook where a transfer is held after its first part or catch-up call."""

Keys = Callable[[dict[str, Any], Any], list[str]]
"""A state machine's read keys of a write (its op and result)."""


Wanted = Callable[[], int]
"""Asked before each call of a transfer: the epoch to send it in (the primary's current one),
or it raises once the transfer should stop (superseded, or this replica no longer leads)."""


class Sender:
    """The sending side of bringing replicas level, for one primary's database."""

    def __init__(self, db: Database, keys: Keys, peers: ProxyPool, *, hooks: Hooks,
                 behind_limit: Callable[[], int]) -> None:
        self.db = db
        self.keys = keys
        self.peers = peers
        self.hooks = hooks
        self.behind_limit = behind_limit
        self._lock = threading.Lock()  # guards the figures below
        self.sent = {"level": 0, "catch-up": 0, "snapshot": 0}
        """How many replicas this one brought level, by each way."""

    def bring_up(self, uri: str, token: str, position: int, theirs: WriteName | None,
                 wanted: Wanted, *, member: bool = False) -> int:
        """Bring the replica at ``uri``, at ``position`` with ``theirs`` its write there, up to
        this database's position (or past it, if writes went on); the position it reached.
        ``token`` names the transfer (the joiner's request); ``member``: the replica is a
        member of the view being levelled (:func:`~pyrostore.replica_core.transfer_plan`)."""
        started, applied = time.monotonic(), self.db.applied()
        how = transfer_plan(
            applied=applied, position=position, theirs=theirs,
            ours=self.db.write_at(position) if position <= applied else None,
            behind_limit=self.behind_limit(), member=member,
            log_holds=lambda: self.db.log_holds(position, applied))
        figures = {"by": how, "from": position, "rows": 0, "writes": 0}
        if how == "snapshot":
            position = self.send_snapshot(uri, token, figures, wanted)
        reached = self.send_log(uri, token, position, applied, figures, wanted)
        figures.update(to=reached, seconds=round(time.monotonic() - started, 3))
        with self._lock:
            self.sent[str(figures["by"])] += 1
        log.log(logging.DEBUG if how == "level" else logging.INFO, "brought %s level by %s: %s",
                uri, figures["by"], figures)
        return reached

    def send_snapshot(self, uri: str, token: str, figures: dict[str, Any],
                      wanted: Wanted) -> int:
        """This database's whole state to the replica at ``uri``, in parts; its position."""
        applied = 0
        with contextlib.closing(parts(self.db, token)) as stream:  # ends the read transaction
            for part in stream:
                self.peers.call(uri, "install_snapshot", wanted(), part)
                applied = part["applied"]
                figures["rows"] += len(part["rows"])
                if part["part"] == 0 and not part["last"]:
                    self.hooks.point(HOLD_POINT)
        figures["by"] = "snapshot"
        return applied

    def send_log(self, uri: str, token: str, after: int, upto: int, figures: dict[str, Any],
                 wanted: Wanted, *, via: ProxyPool | None = None) -> int:
        """The writes after ``after`` up to ``upto`` (at least) from the log, to the replica
        at ``uri`` (a snapshot instead if the log has lost one, or the replica refuses one);
        the position reached. ``via``: the pool to call through (default: the sender's)."""
        first = True
        while after < upto:
            writes = self._writes(after, upto)
            if writes is None:
                log.info("the log lacks writes after %d: a snapshot instead", after)
                after = self.send_snapshot(uri, token, figures, wanted)
                continue
            try:
                (via or self.peers).call(uri, "catch_up", wanted(), token, writes)
            except InvalidRequest as exc:
                log.warning("%s refused write %d of the log (%s): a snapshot instead", uri,
                            writes[0]["seq"], exc)
                after = self.send_snapshot(uri, token, figures, wanted)
                continue
            after = writes[-1]["seq"]
            figures["writes"] += len(writes)
            if first:
                first = False
                self.hooks.point(HOLD_POINT)
        return after
    def _writes(self, after: int, upto: int) -> list[dict[str, Any]] | None:
        """The next writes of the log after ``after`` (at most ``upto - after``), as forwards,
        within :data:`MAX_FORWARD` and :data:`FORWARD_BYTES`; None if the log has a gap."""
        writes: list[dict[str, Any]] = []
        size = 0
        for row in self.db.log(after, min(MAX_FORWARD, upto - after)):
            if row["seq"] != after + len(writes) + 1:
                return None
            size += len(row["fingerprint"].encode()) + len(row["result"].encode()) + 100
            if writes and size > FORWARD_BYTES:
                break
            op, result = json.loads(row["fingerprint"]), json.loads(row["result"])
            writes.append({"seq": row["seq"], "op": op, "request_id": row["request_id"],
                           "result": result, "keys": self.keys(op, result),
                           "epoch": row["epoch"]})
        return writes or None
