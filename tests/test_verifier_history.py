"""The verifier's history: recording, the JSON-lines file, pairing and replays."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from verifier.history import Event, History, HistoryError, operations, read_jsonl, write_jsonl


def recorded() -> History:
    """A lookup, an acknowledged buy, a refused buy, an unknown restock, a pending buy."""
    history = History(clock=iter(float(t) for t in range(100)).__next__)
    look = history.invoke(0, "lookup", 1)
    history.complete(look, "ok", value=5)
    buy = history.invoke(0, "buy", 1, 2, request_id="r-1")
    history.complete(buy, "ok", order_id=7)
    refused = history.invoke(1, "buy", 1, 9, request_id="r-2")
    history.complete(refused, "fail", error="OutOfStock")
    restock = history.invoke(1, "restock", 1, 4, request_id="r-3")
    history.complete(restock, "info", error="Unavailable")
    history.invoke(2, "buy", 1, 1, request_id="r-4")
    return history


def test_operations_pair_invocations_with_their_completions() -> None:
    ops = operations(recorded().events())
    assert [(op.f, op.status, op.arg, op.result, op.call, op.ret) for op in ops] == [
        ("lookup", "ok", None, 5, 0.0, 1.0), ("buy", "ok", 2, 2, 2.0, 3.0),
        ("buy", "fail", 9, 9, 4.0, 5.0), ("restock", "info", 4, 4, 6.0, math.inf),
        ("buy", "info", 1, None, 8.0, math.inf)]
    assert ops[1].order_id == 7 and ops[1].request_id == "r-1"
    assert ops[2].error == "OutOfStock"
    assert [op.index for op in ops] == [0, 2, 4, 6, 8]


def test_a_history_round_trips_through_json_lines(tmp_path: Path) -> None:
    history = recorded()
    buy = history.events()[2]
    history.replay(buy, "ok", order_id=7)
    path = tmp_path / "history.jsonl"
    write_jsonl(path, history.events())
    assert read_jsonl(path) == history.events()
    lines = path.read_text().splitlines()
    assert '"replays":2' in lines[-1] and "replays" not in lines[0]


@pytest.mark.parametrize(("line", "message"), [
    ("{not json", "not JSON"),
    ("[1, 2]", "JSON object"),
    ('{"index": 9, "process": 0, "type": "invoke", "f": "lookup", "item": 1}', "lacks time"),
    ('{"index": 9, "process": 0, "type": "maybe", "f": "lookup", "item": 1, "time": 1}',
     "type must be"),
    ('{"index": 9, "process": 0, "type": "ok", "f": "buy", "item": "1", "time": 1}',
     "item must be an integer"),
    ('{"index": 9, "process": 0, "type": "ok", "f": "buy", "item": 1, "time": 1, "x": 0}',
     "unknown fields x"),
])
def test_a_malformed_line_is_named_by_number(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "history.jsonl"
    write_jsonl(path, recorded().events()[:2])
    path.write_text(path.read_text() + "\n" + line + "\n")
    with pytest.raises(HistoryError, match=f"line 4: .*{message}") as caught:
        read_jsonl(path)
    assert caught.value.line == 4 and isinstance(caught.value, ValueError)


def event(index: int, process: int, type: str, **kw: object) -> Event:
    fields: dict[str, object] = {"f": "buy", "item": 1, "value": 1, "time": float(index),
                                 "request_id": f"r-{process}", **kw}
    return Event(index=index, process=process, type=type, **fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(("events", "message"), [
    ([event(0, 0, "ok")], "has no invocation"),
    ([event(0, 0, "invoke"), event(1, 0, "invoke")], "while #0 is outstanding"),
    ([event(1, 0, "invoke"), event(0, 0, "ok")], "comes after"),
    ([event(0, 0, "invoke"), event(1, 0, "ok", item=2)], "item 2"),
    ([event(0, 0, "invoke"), event(1, 0, "ok", replays=0)], "no completed invocation"),
    ([event(0, 0, "invoke"), event(1, 0, "fail"), event(2, 0, "ok", replays=0)],
     "definitely failed"),
    ([event(0, 0, "invoke"), event(1, 0, "info"), event(2, 0, "info", replays=0)],
     "ok or fail"),
    ([event(0, 0, "invoke"), event(1, 0, "info"), event(2, 0, "ok", replays=0,
                                                        request_id="other")], "request id"),
])
def test_malformed_histories_are_rejected(events: list[Event], message: str) -> None:
    with pytest.raises(HistoryError, match=message):
        operations(events)


def test_the_recorder_refuses_what_a_history_cannot_hold() -> None:
    history = History(clock=lambda: 1.0)
    buy = history.invoke(0, "buy", 1, 1, request_id="r")
    with pytest.raises(HistoryError, match="outstanding"):
        history.invoke(0, "lookup", 1)
    with pytest.raises(HistoryError, match="still outstanding"):
        history.replay(buy, "ok")
    history.complete(buy, "info")
    with pytest.raises(HistoryError, match="not outstanding"):
        history.complete(buy, "ok")
    with pytest.raises(HistoryError, match="type"):
        history.replay(buy, "maybe")


def test_a_replay_resolves_an_info_write_from_its_call_to_the_replays_return() -> None:
    history = History(clock=iter(float(t) for t in range(100)).__next__)
    buy = history.invoke(0, "buy", 1, 2, request_id="r-1")
    history.complete(buy, "info", error="OutcomeUnknown")
    look = history.invoke(0, "lookup", 1)
    history.complete(look, "ok", value=3)
    history.replay(buy, "ok", order_id=7)
    op = operations(history.events())[0]
    assert (op.call, op.ret, op.status, op.result, op.order_id, op.error) == (
        0.0, 4.0, "ok", 2, 7, None)
    assert [(o.status, o.replay) for o in op.outcomes] == [("info", False), ("ok", True)]


def test_a_replay_of_an_acknowledged_write_changes_nothing_but_its_outcomes() -> None:
    history = History(clock=iter(float(t) for t in range(100)).__next__)
    buy = history.invoke(0, "buy", 1, 2, request_id="r-1")
    history.complete(buy, "ok", order_id=7)
    history.replay(buy, "ok", order_id=8)
    op = operations(history.events())[0]
    assert (op.ret, op.order_id) == (1.0, 7)
    assert [o.order_id for o in op.outcomes] == [7, 8]
