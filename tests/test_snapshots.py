"""Snapshots on real SQLite files: read at one position while writes go on, streamed in parts
near a budget, staged, and installed whole or not at all; and the log a replica catches up from."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pyrostore.catalog import CatalogMachine
from pyrostore.config import DEFAULT_INVENTORY
from pyrostore.errors import InvalidRequest
from pyrostore.schemas import CatalogStore
from pyrostore.snapshots import Staging, parts
from pyrostore.store import Write
from tests.test_store import take


@pytest.fixture
def stores(tmp_path: Path) -> Iterator[tuple[CatalogStore, CatalogStore]]:
    """A primary's store with 600 writes, and an empty backup's."""
    primary, backup = (CatalogStore(tmp_path / f"catalog-{n}.sqlite3") for n in (1, 2))
    for store in (primary, backup):
        store.seed(DEFAULT_INVENTORY)
    primary.execute_many([restocking(primary, 1 + n % 7, f"r{n:04d}") for n in range(600)])
    yield primary, backup
    primary.close()
    backup.close()


def new_token() -> str:
    return uuid.uuid4().hex


def restocking(store: CatalogStore, item: int, request_id: str) -> Write:
    """A write: a copy more of ``item``."""
    return Write({"op": "update", "item": item, "cost": None, "stock_delta": 1}, request_id,
                 lambda conn, seq: store.change(conn, seq, item, None, 1).to_wire())


def restock(store: CatalogStore, item: int, request_id: str) -> None:
    store.execute_many([restocking(store, item, request_id)])


def state(store: CatalogStore) -> dict[str, Any]:
    """Every table of a snapshot, the applied position, and which indexes each table has."""
    tables = {name: sorted(tuple(row) for row in store.reader.execute(f"SELECT * FROM {name}"))
              for name in store.snapshot_tables()}
    schema = sorted(tuple(row) for row in store.reader.execute(
        "SELECT type, name, tbl_name FROM sqlite_master"))
    return {"applied": store.applied(), "tables": tables, "schema": schema}


def data(store: CatalogStore | dict[str, Any]) -> dict[str, Any]:
    """What a state holds, without where its indexes are (a transfer moves them)."""
    held = state(store) if isinstance(store, CatalogStore) else store
    return {"applied": held["applied"], "tables": held["tables"]}


def staging(store: CatalogStore) -> Staging:
    return Staging(store, CatalogMachine.check_snapshot_rows)


def install(store: CatalogStore, sent: list[dict[str, Any]]) -> list[int | None]:
    stage = staging(store)
    return [stage.add(stage.check(part)) for part in sent]


def test_a_snapshot_sent_in_parts_makes_the_receiver_the_same(
        stores: tuple[CatalogStore, CatalogStore]) -> None:
    primary, backup = stores
    take(backup, 2, 1, "a tail the primary never had")
    sent = list(parts(primary, new_token(), budget=4_000))
    assert len(sent) > 3 and [part["part"] for part in sent] == list(range(len(sent)))
    assert [part["last"] for part in sent] == [False] * (len(sent) - 1) + [True]
    assert install(backup, sent) == [None] * (len(sent) - 1) + [600]
    assert state(backup) == state(primary)  # the tail is gone, every request id came along


def test_each_part_stays_near_its_budget(stores: tuple[CatalogStore, CatalogStore]) -> None:
    for part in parts(stores[0], new_token(), budget=2_000):
        size = sum(16 + sum(len(v) if isinstance(v, str) else 8 for v in row)
                   for row in part["rows"])
        assert size <= 2_000


def test_a_snapshot_is_of_one_position_while_writes_go_on(
        stores: tuple[CatalogStore, CatalogStore]) -> None:
    primary, backup = stores
    before = state(primary)
    stream = parts(primary, new_token(), budget=4_000)
    first = next(stream)  # the read has begun: what follows is of its position
    for n in range(20):
        restock(primary, 3, f"during {n}")  # no lock held: writes commit meanwhile
    install(backup, [first, *stream])
    assert state(backup) == before
    assert primary.applied() == 620


def half_staged(stores: tuple[CatalogStore, CatalogStore]
                ) -> tuple[Staging, list[dict[str, Any]], list[dict[str, Any]]]:
    """The backup's staging with all but the last part of one transfer taken (nothing
    installed yet), that transfer's parts and another's."""
    primary, backup = stores
    old = state(backup)
    first, second = (list(parts(primary, new_token(), budget=4_000)) for _ in range(2))
    stage = staging(backup)
    for part in first[:-1]:
        stage.add(stage.check(part))
    assert data(backup) == data(old)  # staged aside, not installed
    return stage, first, second


def test_a_stray_part_is_refused_and_the_transfer_under_way_goes_on(
        stores: tuple[CatalogStore, CatalogStore]) -> None:
    primary, backup = stores
    stage, first, second = half_staged(stores)
    with pytest.raises(InvalidRequest, match="start over"):  # another transfer, mid-way
        stage.add(stage.check(second[1]))
    assert stage.add(stage.check(first[-1])) == 600
    assert state(backup) == state(primary)


def test_a_snapshot_that_breaks_a_tables_constraint_installs_nothing(
        stores: tuple[CatalogStore, CatalogStore]) -> None:
    primary, backup = stores
    old = state(backup)
    sent = list(parts(primary, new_token(), budget=4_000))
    books = next(part for part in sent if part["table"] == "books")
    sent.insert(sent.index(books) + 1, {**books, "part": books["part"] + 1})  # each book twice
    for index, part in enumerate(sent):
        part.update(part=index, last=index == len(sent) - 1)
    with pytest.raises(InvalidRequest, match="constraints"):
        install(backup, sent)
    assert data(backup) == data(old)
    backup.unstage()  # as it does before it asks to join again
    assert state(backup) == old


@pytest.mark.parametrize("junk", [
    None, [], {"transfer": "t"},
    {"transfer": "t", "part": 0, "applied": 0, "table": "books", "rows": "rows", "last": True},
    {"transfer": "t", "part": 0, "applied": 0, "table": "meta", "rows": [], "last": True},
    {"transfer": "t", "part": -1, "applied": 0, "table": "books", "rows": [], "last": True},
    {"transfer": "t", "part": 0, "applied": 0, "table": "books", "rows": [], "last": 1},
    {"transfer": "t", "part": 0, "applied": 1, "table": "requests",
     "rows": [["r1", "{}", "{}", 2, 1]], "last": True},
    {"transfer": "t", "part": 0, "applied": 0, "table": "books",
     "rows": [[1, "t", "x", "x", -1, 1.0, 0]], "last": True}])
def test_a_malformed_part_is_an_invalid_request_and_stages_nothing(
        stores: tuple[CatalogStore, CatalogStore], junk: Any) -> None:
    backup = stores[1]
    old = state(backup)
    with pytest.raises(InvalidRequest):
        staging(backup).check(junk)
    assert state(backup) == old


def test_the_log_holds_each_write_with_its_operation_result_and_position(
        stores: tuple[CatalogStore, CatalogStore]) -> None:
    primary = stores[0]
    rows = primary.log(597, 10)
    assert [row["seq"] for row in rows] == [598, 599, 600]
    assert [row["request_id"] for row in rows] == ["r0597", "r0598", "r0599"]
    assert primary.log_holds(500, 600) and primary.log_holds(600, 600)
    with primary.transaction() as conn:  # an id forgotten (as compaction does to old ones)
        conn.execute("DELETE FROM requests WHERE seq=550")
    assert not primary.log_holds(500, 600) and primary.log_holds(550, 600)


def test_what_a_transfer_left_staged_is_dropped_when_the_file_is_opened_again(
        stores: tuple[CatalogStore, CatalogStore]) -> None:
    primary, backup = stores
    old = state(backup)
    stage = staging(backup)
    for part in list(parts(primary, new_token(), budget=4_000))[:2]:
        stage.add(stage.check(part))  # then the process ends mid-transfer

    def staged(store: CatalogStore) -> list[str]:
        return [row[0] for row in store.reader.execute(
            "SELECT name FROM sqlite_master WHERE name LIKE 'incoming_%'")]

    assert staged(backup)
    path = backup.path
    backup.close()
    reopened = CatalogStore(path)
    try:
        assert staged(reopened) == []
        assert state(reopened) == old  # its indexes back where they were
    finally:
        reopened.close()
