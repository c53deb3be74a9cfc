"""The order group finishes every buy the catalog began: the catalog's outbox, reconciled.

A buy takes stock in the catalog group, then records its order in the order group. The take
is one replicated catalog write that also puts it, open, in the catalog's outbox (the table
``takes``: request id, item, qty, customer; what the take answered is its request's stored
result). The order primary reconciles that outbox in the background, pass after pass:

1. it reads the oldest open takes from the catalog primary (a read ordered after every write
   in flight there, so it sees only takes the catalog acknowledged);
2. it reads which of them its log holds an order for, seeing only orders every backup has
   acknowledged (:meth:`~pyrostore.replication.ReplicatedGroup.read_acknowledged`): those are
   done, at the cost of one indexed read, not a write;
3. for each other take that has stayed open for ``grace`` (its buy is not coming back), it
   records the order through its own write path, with the take's own request id and the very
   operation the buy would have made (so a buy that is still under way and the reconciler
   meet in the log's deduplication: one order, whoever comes first);
4. once those writes are acknowledged, it settles the done takes at the catalog: their rows
   leave the outbox. A take whose order can never be recorded (its request id is forgettable:
   :meth:`pyrostore.models.Retention.forgettable`) is *undone*: its stock goes back.

So no take is orphaned: a take leaves the outbox only after the order group acknowledged an
order with its request id, or after it was undone in the same catalog write that restocks it;
until then every pass of every order primary, in any epoch, sees it again. And none is doubled:
an order is recorded at most once per request id (the order log's deduplication, replicated
with the order), a take is taken at most once (the catalog's), and a settlement applies to
open takes only, so settling twice restocks nothing twice.

:class:`Reconciler` decides (fed the takes, what the log holds and the clocks; stepped by
tests with fake ones); :class:`Settler` is the thread around it at an order replica.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from pyrostore.config import Settings
from pyrostore.discovery import ReplicaSet
from pyrostore.errors import ConflictingRequest, NotServing, PyrostoreError
from pyrostore.models import ORDERS_KEY, new_request_id
from pyrostore.replication import ReplicatedGroup
from pyrostore.schemas import OrderStore

log = logging.getLogger(__name__)
PASS_SIZE = 512
"""Most open takes one pass reads and settles (a pass that settles this many is followed by
the next at once, so a backlog drains at the catalog's write rate)."""

RecordOp = Callable[[dict[str, Any]], dict[str, Any]]
"""Builds the operation that records a take's order (the buy's own builder)."""


@dataclasses.dataclass
class Plan:
    """What one pass does: settle ``done`` (their orders are acknowledged), record the orders
    of ``record``, undo ``undo``."""

    done: list[str]
    record: list[dict[str, Any]]
    undo: list[str]


class Reconciler:
    """Which open takes a pass completes, confirms or undoes; and what came of them.

    ``grace``: seconds a take may stay open before the reconciler completes it (the buy that
    made it has that long to record its order itself). ``forgettable(request_id, now)``:
    whether an id is so old that every replica may have forgotten it (it can only be undone).
    """

    def __init__(self, grace: float, forgettable: Callable[[str, float], bool]) -> None:
        self.grace = grace
        self.forgettable = forgettable
        self._first_seen: dict[str, float] = {}
        self.pending = 0
        """Open takes at the last pass."""
        self.counts = {"resolved": 0, "completed": 0, "undone": 0}
        """Takes settled by the reconciler; of them orders it recorded itself, takes undone."""

    def plan(self, takes: list[dict[str, Any]], ordered: set[str], now: float,
             wall: float) -> Plan:
        """A pass over ``takes`` (the oldest open ones), ``ordered`` those of them whose order
        the log holds acknowledged, at monotonic ``now`` and wall-clock ``wall``."""
        first_seen, done, record, undo = {}, [], [], []
        for take in takes:
            request_id = take["request_id"]
            first_seen[request_id] = self._first_seen.get(request_id, now)
            if request_id in ordered:
                done.append(request_id)
            elif self.forgettable(request_id, wall):
                undo.append(request_id)
            elif take.get("result") is not None and now - first_seen[request_id] >= self.grace:
                record.append(take)
        self._first_seen = first_seen  # takes no longer open are forgotten
        self.pending = len(takes)
        return Plan(done, record, undo)

    def settled(self, done: int, completed: int, undone: int) -> None:
        """A settlement went through: ``done`` takes with their order (``completed`` of them
        recorded by the reconciler itself), ``undone`` given back."""
        self.counts["resolved"] += done + undone
        self.counts["completed"] += completed
        self.counts["undone"] += undone
        self.pending = max(0, self.pending - done - undone)

    def stats(self) -> dict[str, int]:
        """``{pending, resolved, completed, undone}``."""
        return {"pending": self.pending, **self.counts}


class Settler:
    """The reconciler's thread at an order replica: a pass every ``interval`` while this
    replica is the ready primary of its group."""

    def __init__(self, settings: Settings, group: ReplicatedGroup, store: OrderStore,
                 catalog: ReplicaSet, record_op: RecordOp, core: Reconciler) -> None:
        self.settings = settings
        self.group = group
        self.store = store
        self.catalog = catalog
        self.record_op = record_op
        self.core = core
        self.interval = settings.lease / 4
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="settler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()

    def _run(self) -> None:
        wait = self.interval
        while not self._stopping.wait(wait):
            wait = self.interval
            try:
                with self.group.member.changed:
                    self.group.member.check_serving(("primary",))
            except NotServing:
                continue
            try:
                settled = self.run_once()
                if settled["open"] == PASS_SIZE and settled["done"]:
                    wait = 0  # a backlog: the next page at once
            except PyrostoreError as exc:  # the catalog or this group is failing over
                log.debug("outbox pass failed: %s", exc)
            except Exception:  # a bug: say so, and try again next pass
                log.exception("outbox pass failed")

    def run_once(self) -> dict[str, int]:
        """One pass; what it saw and settled (``{open, done, completed, undone}``)."""
        takes: list[dict[str, Any]] = self.catalog.call(
            "open_takes", PASS_SIZE, primary=True, patience=self.settings.lease)
        ordered = self.group.read_acknowledged(  # orders every backup holds too
            [ORDERS_KEY], lambda: self.store.ordered([take["request_id"] for take in takes]))
        plan = self.core.plan(takes, ordered, time.monotonic(), time.time())
        writes = self.group.write_all([(self.record_op(take), take["request_id"])
                                       for take in plan.record]) if plan.record else []
        done, completed = list(plan.done), 0
        for take, write in zip(plan.record, writes, strict=True):
            request_id = take["request_id"]
            if write.error is None:  # recorded now, or by its buy a moment ago: acknowledged
                done.append(request_id)
                completed += write.seq > 0  # 0: a repeat, the buy recorded it first
            elif isinstance(write.error, ConflictingRequest):  # an order with its id exists
                log.warning("order %s was recorded differently from its take", request_id)
                done.append(request_id)
            else:
                log.debug("could not record order %s yet: %s", request_id, write.error)
        if done or plan.undo:
            self.catalog.call("settle", done, plan.undo, new_request_id(), primary=True,
                              patience=self.settings.lease)
            self.core.settled(len(done), completed, len(plan.undo))
            if completed or plan.undo:
                log.info("outbox: recorded %d order(s) whose buy did not, undid %d take(s)",
                         completed, len(plan.undo))
        return {"open": len(takes), "done": len(done), "completed": completed,
                "undone": len(plan.undo)}
