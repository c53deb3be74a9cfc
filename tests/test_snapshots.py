"""Snapshots travel in parts that each fit a message, and come back whole and in order."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pyrostore.errors import InvalidRequest
from pyrostore.snapshots import Assembly, split


def snapshot(rows: int, *, width: int = 100) -> dict[str, Any]:
    return {"applied": rows,
            "tables": {"requests": [[f"r{i}", "f" * width, "{}", i] for i in range(rows)],
                       "books": [[i, "t" * width, 3] for i in range(rows // 2)],
                       "empty": []}}


def assemble(parts: list[dict[str, Any]]) -> dict[str, Any] | None:
    assembly = Assembly()
    results = [assembly.add(part) for part in parts]
    assert all(result is None for result in results[:-1])
    return results[-1]


@given(rows=st.integers(0, 300), budget=st.integers(1, 20_000))
def test_the_parts_put_back_together_are_the_snapshot(rows: int, budget: int) -> None:
    whole = snapshot(rows)
    parts = split(whole, budget=budget)
    assert [part["part"] for part in parts] == list(range(len(parts)))
    assert assemble(parts) == whole


def test_each_part_stays_near_the_budget() -> None:
    parts = split(snapshot(10_000), budget=64 * 1024)
    assert len(parts) > 10
    for part in parts:
        size = sum(len(v) if isinstance(v, str) else 8
                   for rows in part["tables"].values() for row in rows for v in row)
        assert size <= 64 * 1024


def test_a_part_out_of_order_or_of_another_transfer_is_refused_and_starts_over() -> None:
    first, second = split(snapshot(200), budget=2_000), split(snapshot(200), budget=2_000)
    assembly = Assembly()
    assert assembly.add(first[0]) is None
    with pytest.raises(InvalidRequest, match="start over"):
        assembly.add(second[1])
    with pytest.raises(InvalidRequest, match="start over"):  # the first transfer is gone too
        assembly.add(first[1])
    assert assemble(second) == snapshot(200)


@pytest.mark.parametrize("junk", [None, [], {"transfer": "t"}, {
    "transfer": "t", "part": 0, "parts": 1, "applied": 0, "tables": {"books": "rows"}}, {
    "transfer": "t", "part": 2, "parts": 2, "applied": 0, "tables": {}}, {
    "transfer": "t", "part": 0, "parts": True, "applied": 0, "tables": {}}])
def test_a_malformed_part_is_an_invalid_request(junk: Any) -> None:
    with pytest.raises(InvalidRequest):
        Assembly().add(junk)
