"""A history: the runner's recorder of events, and its operations (invocations paired with
their completions) that the checkers read.

The event, its JSON form and the file live in :mod:`verifier.events`; they are re-exported
here so that a runner needs one import.

Replays. After the cluster heals, the runner may send a write again with the same request id
to learn what became of it. It records the answer with :meth:`History.replay` as one extra
completion event (``ok`` or ``fail``) of the same process and request id, carrying
``"replays": <index of the original invocation>``. It needs no invocation event of its own and
does not count as the process's outstanding call. :func:`operations` merges it with
:func:`replayed`:

- the original was ``info``: the operation keeps its ``call`` and takes the replay's ``ret``,
  status, value, order id and error. The store deduplicates by request id, so a write that
  took effect did so once, somewhere between the original call and the replay's answer;
- the original was ``ok``: the operation is unchanged (its answer is already definite); the
  replay's answer is only kept in ``outcomes``, for :func:`verifier.checks.idempotent_replays`;
- the original was ``fail``: rejected, since a definite failure has nothing to resolve.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace

from verifier.events import COMPLETIONS, Event, HistoryError, read_jsonl, write_jsonl

__all__ = ["Event", "History", "HistoryError", "Operation", "Outcome", "operations",
           "read_jsonl", "replayed", "write_jsonl"]


class History:
    """A thread-safe recorder: clients call :meth:`invoke` then :meth:`complete`; indices are
    assigned in recording order and times read from ``clock`` (seconds, monotonic)."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._events: list[Event] = []
        self._outstanding: dict[int, Event] = {}

    def invoke(self, process: int, f: str, item: int, value: int | None = None, *,
               request_id: str | None = None) -> Event:
        """Record that ``process`` starts ``f`` on ``item`` (``value``: a buy's qty, a
        restock's delta, None for a lookup); the returned event is the handle to complete."""
        with self._lock:
            if process in self._outstanding:
                raise HistoryError(f"process {process} invokes while its call "
                                   f"#{self._outstanding[process].index} is outstanding")
            event = self._record(process=process, type="invoke", f=f, item=item, value=value,
                                 request_id=request_id)
            self._outstanding[process] = event
            return event

    def complete(self, invocation: Event, type: str, *, value: int | None = None,
                 order_id: int | None = None, error: str | None = None) -> Event:
        """Record the completion (``ok``, ``fail`` or ``info``) of ``invocation``. A write's
        ``value`` defaults to its invocation's (the qty or delta); a lookup's is the stock."""
        with self._lock:
            if self._outstanding.get(invocation.process) is not invocation:
                raise HistoryError(f"call #{invocation.index} is not outstanding")
            del self._outstanding[invocation.process]
            return self._answer(invocation, type, value, order_id, error, replays=None)

    def replay(self, invocation: Event, type: str, *, value: int | None = None,
               order_id: int | None = None, error: str | None = None) -> Event:
        """Record the answer to a replay of ``invocation``'s request id (module docstring)."""
        with self._lock:
            if self._outstanding.get(invocation.process) is invocation:
                raise HistoryError(f"call #{invocation.index} is still outstanding")
            return self._answer(invocation, type, value, order_id, error,
                                replays=invocation.index)

    def events(self) -> list[Event]:
        """The events recorded so far, in order."""
        with self._lock:
            return list(self._events)

    def _answer(self, invocation: Event, type: str, value: int | None, order_id: int | None,
                error: str | None, *, replays: int | None) -> Event:
        if type not in COMPLETIONS:
            raise HistoryError(f"a completion's type is one of {COMPLETIONS}, not {type!r}")
        if value is None and invocation.f != "lookup":
            value = invocation.value
        return self._record(process=invocation.process, type=type, f=invocation.f,
                            item=invocation.item, value=value, request_id=invocation.request_id,
                            order_id=order_id, error=error, replays=replays)

    def _record(self, *, process: int, type: str, f: str, item: int, value: int | None,
                request_id: str | None, order_id: int | None = None, error: str | None = None,
                replays: int | None = None) -> Event:
        event = Event(index=len(self._events), process=process, type=type, f=f, item=item,
                      value=value, time=self._clock(), request_id=request_id,
                      order_id=order_id, error=error, replays=replays)
        self._events.append(event)
        return event


@dataclass(frozen=True)
class Outcome:
    """One completion of an operation: its first answer, or a replay's."""

    status: str
    value: int | None
    order_id: int | None
    error: str | None
    time: float
    replay: bool = False


@dataclass(frozen=True)
class Operation:
    """An invocation and its completion. ``arg`` is the invocation's value (qty, delta or
    None), ``result`` the completion's. ``ret`` is ``math.inf`` while the status is ``info``
    (including an invocation that never completed). ``index`` is the invocation's event index;
    ``outcomes`` every completion seen, replays included, in order."""

    process: int
    f: str
    item: int
    arg: int | None
    result: int | None
    call: float
    ret: float
    status: str
    request_id: str | None
    order_id: int | None
    error: str | None
    index: int = -1
    outcomes: tuple[Outcome, ...] = ()

    def describe(self) -> str:
        """One line for a human: ``#12 p3 buy 2 -> ok (order 7) [1.250, 1.310]``."""
        what = f"{self.f} {self.arg}" if self.arg is not None else self.f
        answer = self.status
        if self.f == "lookup" and self.status == "ok":
            answer = f"ok {self.result}"
        elif self.order_id is not None:
            answer = f"ok (order {self.order_id})"
        elif self.error:
            answer = f"{self.status} {self.error}"
        return (f"#{self.index} p{self.process} item {self.item}: {what} -> {answer} "
                f"[{self.call:.3f}, {self.ret:.3f}]")


def replayed(op: Operation, completion: Event) -> Operation:
    """``op`` with a replay's answer merged in, as the module docstring explains."""
    if completion.type not in ("ok", "fail"):
        raise HistoryError(f"event #{completion.index}: a replay answers ok or fail")
    if completion.request_id is None or completion.request_id != op.request_id:
        raise HistoryError(f"event #{completion.index}: a replay carries its original's "
                           f"request id {op.request_id!r}")
    if (completion.process, completion.f, completion.item) != (op.process, op.f, op.item):
        raise HistoryError(f"event #{completion.index} replays a different call than "
                           f"#{op.index}")
    if op.status == "fail":
        raise HistoryError(f"event #{completion.index} replays call #{op.index}, which "
                           "definitely failed")
    outcomes = (*op.outcomes, _outcome(completion, replay=True))
    if op.status == "ok":
        return replace(op, outcomes=outcomes)
    return replace(op, ret=completion.time, status=completion.type, result=completion.value,
                   order_id=completion.order_id, error=completion.error, outcomes=outcomes)


def _outcome(event: Event, *, replay: bool = False) -> Outcome:
    return Outcome(status=event.type, value=event.value, order_id=event.order_id,
                   error=event.error, time=event.time, replay=replay)


def _paired(invocation: Event, completion: Event | None) -> Operation:
    op = Operation(
        process=invocation.process, f=invocation.f, item=invocation.item, arg=invocation.value,
        result=None, call=invocation.time, ret=math.inf, status="info",
        request_id=invocation.request_id, order_id=None, error=None, index=invocation.index)
    if completion is None:  # never answered: it may have taken effect, like info
        return op
    return replace(op, result=completion.value, status=completion.type,
                   ret=math.inf if completion.type == "info" else completion.time,
                   order_id=completion.order_id, error=completion.error,
                   outcomes=(_outcome(completion),))


def operations(events: Iterable[Event]) -> list[Operation]:
    """Pair each invocation with its completion (and merge replays), in invocation order.
    Raise :class:`HistoryError` for indices out of order, a completion without invocation,
    a second invocation while one is outstanding, or a replay of nothing completed."""
    by_index: dict[int, Operation] = {}
    outstanding: dict[int, Event] = {}
    last = -1
    for event in events:
        if event.index <= last:
            raise HistoryError(f"event #{event.index} comes after #{last}")
        last = event.index
        if event.replays is not None:
            if event.replays not in by_index:
                raise HistoryError(f"event #{event.index} replays #{event.replays}, which is "
                                   "no completed invocation")
            by_index[event.replays] = replayed(by_index[event.replays], event)
        elif event.type == "invoke":
            if event.process in outstanding:
                raise HistoryError(f"process {event.process} invokes #{event.index} while "
                                   f"#{outstanding[event.process].index} is outstanding")
            outstanding[event.process] = event
        else:
            invocation = outstanding.pop(event.process, None)
            if invocation is None:
                raise HistoryError(f"completion #{event.index} of process {event.process} "
                                   "has no invocation")
            if (invocation.f, invocation.item) != (event.f, event.item):
                raise HistoryError(f"completion #{event.index} answers {event.f} of item "
                                   f"{event.item}, but #{invocation.index} asked "
                                   f"{invocation.f} of item {invocation.item}")
            by_index[invocation.index] = _paired(invocation, event)
    for invocation in outstanding.values():
        by_index[invocation.index] = _paired(invocation, None)
    return [by_index[index] for index in sorted(by_index)]
