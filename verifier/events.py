"""One event of a history, its JSON form, and the JSON-lines file that holds a history.

A history file has one JSON object per line::

    {"index": 7, "process": 2, "type": "ok", "f": "buy", "item": 3, "value": 1,
     "time": 12.25, "request_id": "r-2-5", "order_id": 41, "error": null}

``type`` is ``invoke`` (a client starts a call) or one of its completions: ``ok`` (it took
effect), ``fail`` (it definitely did not) or ``info`` (it may have, at any moment after the
invocation). ``time`` is seconds on a monotonic clock. A *replay* event (see
:func:`verifier.history.replayed`) also carries ``"replays": <index of the invocation it
resolves>``; other events leave that key out.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

TYPES = ("invoke", "ok", "fail", "info")
FUNCTIONS = ("lookup", "buy", "restock")
COMPLETIONS = ("ok", "fail", "info")


class HistoryError(ValueError):
    """A malformed event, history file or history. ``line`` is the 1-based line of the file
    it was read from, when it came from a file."""

    def __init__(self, message: str, *, line: int | None = None) -> None:
        super().__init__(message if line is None else f"line {line}: {message}")
        self.line = line


@dataclass(frozen=True)
class Event:
    """One invocation or completion, as recorded by the runner (fields as in the file)."""

    index: int
    process: int
    type: str
    f: str
    item: int
    value: int | None
    time: float
    request_id: str | None = None
    order_id: int | None = None
    error: str | None = None
    replays: int | None = None

    def to_json(self) -> dict[str, Any]:
        """The event as a plain dict; ``replays`` only when this is a replay."""
        data = asdict(self)
        if self.replays is None:
            del data["replays"]
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Event:
        """Rebuild an event from :meth:`to_json`'s dict; :class:`HistoryError` if malformed."""
        if not isinstance(data, Mapping):
            raise HistoryError(f"an event is a JSON object, not {type(data).__name__}")
        missing = sorted({"index", "process", "type", "f", "item", "time"} - data.keys())
        if missing:
            raise HistoryError(f"event lacks {', '.join(missing)}")
        unknown = sorted(data.keys() - set(cls.__dataclass_fields__))
        if unknown:
            raise HistoryError(f"event has unknown fields {', '.join(unknown)}")
        if data["type"] not in TYPES:
            raise HistoryError(f"type must be one of {TYPES}, not {data['type']!r}")
        if data["f"] not in FUNCTIONS:
            raise HistoryError(f"f must be one of {FUNCTIONS}, not {data['f']!r}")
        time = data["time"]
        if isinstance(time, bool) or not isinstance(time, int | float):
            raise HistoryError(f"time must be a number, not {time!r}")
        return cls(
            index=_integer(data, "index"), process=_integer(data, "process"),
            type=data["type"], f=data["f"], item=_integer(data, "item"),
            value=_integer(data, "value", optional=True), time=float(time),
            request_id=_text(data, "request_id"), order_id=_integer(data, "order_id",
                                                                    optional=True),
            error=_text(data, "error"), replays=_integer(data, "replays", optional=True))


def _integer(data: Mapping[str, Any], key: str, *, optional: bool = False) -> Any:
    value = data.get(key)
    if value is None and optional:
        return None
    # bool is an int to Python but never a count, an id or a stock
    if isinstance(value, bool) or not isinstance(value, int):
        raise HistoryError(f"{key} must be an integer{' or null' * optional}, not {value!r}")
    return value


def _text(data: Mapping[str, Any], key: str) -> str | None:
    value = data.get(key)
    if value is not None and not isinstance(value, str):
        raise HistoryError(f"{key} must be a string or null, not {value!r}")
    return value


def write_jsonl(path: str | Path, events: Iterable[Event]) -> None:
    """Write ``events`` to ``path``, one JSON object per line (replacing the file)."""
    with open(path, "w", encoding="utf-8") as out:
        for event in events:
            out.write(json.dumps(event.to_json(), separators=(",", ":")) + "\n")


def read_jsonl(path: str | Path) -> list[Event]:
    """The events of a history file; blank lines are skipped. A line that is not a JSON
    object or not a valid event raises :class:`HistoryError` naming its line number."""
    events = []
    with open(path, encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                data = json.loads(line)
            except json.JSONDecodeError as exc:
                raise HistoryError(f"not JSON: {exc.msg}", line=number) from exc
            try:
                events.append(Event.from_json(data))
            except HistoryError as exc:
                raise HistoryError(str(exc), line=number) from exc
    return events
