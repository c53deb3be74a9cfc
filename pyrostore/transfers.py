"""A primary brings another replica level: by nothing, from its log, or by a snapshot.

What it sends is :func:`~pyrostore.replica_core.transfer_plan`'s decision:

- **level**: nothing;
- **catch-up**: the writes the replica missed, read from the log (the request ids, which keep
  each write's operation, result and position: :meth:`~pyrostore.store.Database.log`) and
  sent as forwards (``replicate``) of up to :data:`MAX_FORWARD` writes each. It costs per
  write missed, and is possible while the log holds them: up to ``catch_up_limit`` writes,
  within the request-id retention;
- **snapshot**: the whole state at one position, streamed in parts from one read
  transaction (:mod:`pyrostore.snapshots`), then the writes made since that position from the
  log. It costs per row held.

Nothing here takes the write lock, so writes go on while a replica is brought up; the caller
decides what is ordered with them (:mod:`pyrostore.membership`: only the last few writes and
the change of membership). A gap in the log met while catching up (ids forgotten meanwhile)
turns the transfer into a snapshot.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Callable
from typing import Any

from pyrostore.hooks import Hooks
from pyrostore.replica_core import transfer_plan
from pyrostore.snapshots import parts
from pyrostore.store import Database
from pyrostore.transport import ProxyPool

log = logging.getLogger(__name__)
MAX_FORWARD = 512
"""The most writes one forward may carry (a catch-up sends the log in forwards this big; a
primary's own batches are smaller)."""
HOLD_POINT = "hold_mid_transfer"
"""The test hook where a transfer is held after its first part or forward."""

Keys = Callable[[dict[str, Any], Any], list[str]]
"""A state machine's read keys of a write (its op and result)."""


class Sender:
    """The sending side of bringing replicas level, for one primary's database."""

    def __init__(self, db: Database, keys: Keys, peers: ProxyPool, *, hooks: Hooks,
                 behind_limit: Callable[[], int]) -> None:
        self.db = db
        self.keys = keys
        self.peers = peers
        self.hooks = hooks
        self.behind_limit = behind_limit
        self.sent = {"level": 0, "catch-up": 0, "snapshot": 0}
        """How many replicas this one brought level, by each way."""
        self.last: dict[str, Any] = {}
        """The last transfer: how, from and to which position, rows and writes sent, seconds."""

    def bring_up(self, uri: str, epoch: int, position: int, last_request: str | None) -> int:
        """Bring the replica at ``uri``, at ``position`` with ``last_request`` its last write,
        up to this database's position (or past it, if writes went on); the position it
        reached."""
        started, applied = time.monotonic(), self.db.applied()
        how = transfer_plan(
            applied=applied, position=position, last_request=last_request,
            primary_request=self.db.request_at(position) if position <= applied else None,
            behind_limit=self.behind_limit(), log_holds=lambda: self.db.log_holds(position,
                                                                                  applied))
        self.last = {"by": how, "from": position, "rows": 0, "writes": 0}
        reached = self.send_snapshot(uri, epoch) if how == "snapshot" else position
        reached = self.send_log(uri, epoch, reached, applied)
        self.sent[how] += 1
        self.last.update(to=reached, seconds=round(time.monotonic() - started, 3))
        log.log(logging.DEBUG if how == "level" else logging.INFO, "brought %s level by %s: %s",
                uri, how, self.last)
        return reached

    def send_snapshot(self, uri: str, epoch: int) -> int:
        """This database's whole state to the replica at ``uri``, in parts; its position."""
        applied = 0
        with contextlib.closing(parts(self.db)) as stream:  # ends the read transaction
            for part in stream:
                self.peers.call(uri, "install_snapshot", epoch, part)
                applied = part["applied"]
                self.last["rows"] = self.last.get("rows", 0) + len(part["rows"])
                if part["part"] == 0 and not part["last"]:
                    self.hooks.point(HOLD_POINT)
        self.last["by"] = "snapshot"
        return applied

    def send_log(self, uri: str, epoch: int, after: int, upto: int) -> int:
        """The writes after ``after`` up to ``upto`` (at least) from the log, as forwards to the
        replica at ``uri`` (a snapshot instead if the log has lost one); the position reached."""
        first = True
        while after < upto:
            rows = self.db.log(after, min(MAX_FORWARD, upto - after))
            if not rows or rows[0]["seq"] != after + 1 or \
                    rows[-1]["seq"] != after + len(rows):
                log.info("the log lacks writes after %d: a snapshot instead", after)
                after = self.send_snapshot(uri, epoch)
                continue
            writes = [self._forward(row) for row in rows]
            self.peers.call(uri, "replicate", epoch, writes, writes[-1]["seq"])
            after = writes[-1]["seq"]
            self.last["writes"] = self.last.get("writes", 0) + len(writes)
            if first:
                first = False
                self.hooks.point(HOLD_POINT)
        return after

    def _forward(self, row: Any) -> dict[str, Any]:
        """A write of the log as the primary forwarded it."""
        op, result = json.loads(row["fingerprint"]), json.loads(row["result"])
        return {"seq": row["seq"], "op": op, "request_id": row["request_id"], "result": result,
                "keys": self.keys(op, result)}
