"""SQLite stores on real files: seeding, durability pragmas, execute-once, books, orders."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pyrostore.config import DEFAULT_INVENTORY
from pyrostore.errors import ConfigError, ConflictingRequest, NotFound, OutOfStock, RequestExpired
from pyrostore.models import Retention, new_request_id
from pyrostore.schemas import CatalogStore, OrderStore, load_inventory
from pyrostore.store import Alongside, Write
from tests.conftest import wait_until

INVENTORY = DEFAULT_INVENTORY
HEADER = "item,title,topic,stock,cost\n"


@pytest.fixture
def catalog(tmp_path: Path) -> Iterator[CatalogStore]:
    store = CatalogStore(tmp_path / "catalog-1.sqlite3")
    assert store.seed(INVENTORY) == 7
    yield store
    store.close()


@pytest.fixture
def orders(tmp_path: Path) -> Iterator[OrderStore]:
    store = OrderStore(tmp_path / "order-1.sqlite3")
    yield store
    store.close()


def taking(
    store: CatalogStore,
    item: int,
    qty: int,
    request_id: str,
    *,
    calls: list[int] | None = None,
    hold: Callable[[], None] | None = None,
) -> Write:
    """A write that buys ``qty`` of ``item``, as the catalog's state machine does."""

    def apply(conn: sqlite3.Connection, seq: int) -> dict[str, Any]:
        if calls is not None:
            calls.append(seq)
        result = store.take(conn, seq, item, qty).to_wire()
        if hold is not None:
            hold()
        return result

    return Write({"op": "take", "item": item, "qty": qty}, request_id, apply)


def take(store: CatalogStore, item: int, qty: int, request_id: str, *,
         alongside: Alongside | None = None, calls: list[int] | None = None,
         hold: Callable[[], None] | None = None) -> Any:
    """Buy ``qty`` of ``item`` through execute_many, alone; its result."""
    write = taking(store, item, qty, request_id, calls=calls, hold=hold)
    store.execute_many([write], alongside=alongside)
    return write.outcome()


def change(store: CatalogStore, item: int, request_id: str, *,
           cost: float | None = None, stock_delta: int | None = None) -> Any:
    op = {"op": "change", "item": item, "cost": cost, "stock_delta": stock_delta}
    return store.execute(
        op, request_id, lambda conn, seq: store.change(conn, seq, item, cost, stock_delta).to_wire()
    )


def record(store: OrderStore, request_id: str, *, item: int = 2, qty: int = 1,
           unit_cost: float = 40.0, created_at: float = 1_700_000_000.0) -> Any:
    op = {"op": "buy", "item": item, "qty": qty}

    def apply(conn: sqlite3.Connection, seq: int) -> dict[str, Any]:
        return store.record(conn, seq, item=item, title=f"book {item}", qty=qty,
                            unit_cost=unit_cost, request_id=request_id,
                            created_at=created_at).to_wire()

    return store.execute(op, request_id, apply)


def stocks(store: CatalogStore) -> dict[int, int]:
    return {item: store.book(item).stock for item in range(1, store.book_count() + 1)}


# --- seeding and pragmas ------------------------------------------------------------------


def test_seed_loads_the_inventory_once_and_survives_reopening(tmp_path: Path) -> None:
    path = tmp_path / "catalog-1.sqlite3"
    store = CatalogStore(path)
    assert store.seed(INVENTORY) == 7
    assert store.book_count() == 7
    first = store.book(1)
    assert first.title == "How to get a good grade in 677 in 20 minutes a day"
    assert (first.topic, first.stock, first.cost, first.version) == (
        "distributed systems", 10, 30.0, 0)
    assert store.book(4).cost == 150.0
    assert store.book(7).title == "Spring in the Pioneer Valley"
    assert store.seed(INVENTORY) == 0
    assert store.book_count() == 7
    store.close()

    reopened = CatalogStore(path)
    try:
        assert reopened.book_count() == 7
        assert reopened.seed(INVENTORY) == 0
        assert reopened.book_count() == 7
        assert reopened.book(2).title == "RPCs for Dummies"
    finally:
        reopened.close()


def test_writer_uses_wal_and_synchronous_full(catalog: CatalogStore) -> None:
    with catalog.transaction() as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2
    assert catalog.reader.execute("PRAGMA synchronous").fetchone()[0] == 2


def test_a_fresh_store_has_applied_nothing(catalog: CatalogStore) -> None:
    assert catalog.applied() == 0
    assert catalog.request_count() == 0


# --- execute: once per request id ---------------------------------------------------------


def test_take_decrements_stock_and_sets_version_to_seq(catalog: CatalogStore) -> None:
    result = take(catalog, 1, 3, "r1")
    assert result["item"] == 1 and result["stock"] == 10  # the book as it was
    assert catalog.book(1).stock == 7
    assert catalog.book(1).version == 1
    assert catalog.applied() == 1

    take(catalog, 5, 2, "r2")
    assert catalog.book(5).stock == 18
    assert catalog.book(5).version == 2
    assert catalog.book(1).version == 1
    assert catalog.applied() == 2
    assert catalog.request_count() == 2


def test_same_request_id_same_op_returns_stored_result_without_applying(
    catalog: CatalogStore,
) -> None:
    calls: list[int] = []
    first = take(catalog, 1, 3, "r1", calls=calls)
    again = take(catalog, 1, 3, "r1", calls=calls)
    assert again == first
    assert calls == [1]
    assert catalog.book(1).stock == 7
    assert catalog.applied() == 1
    assert catalog.request_count() == 1


def test_same_request_id_other_op_conflicts_and_changes_nothing(catalog: CatalogStore) -> None:
    take(catalog, 1, 3, "r1")
    before = stocks(catalog)
    with pytest.raises(ConflictingRequest, match="request id r1 was already used") as caught:
        take(catalog, 1, 4, "r1")
    assert caught.value.details == {"request_id": "r1"}
    with pytest.raises(ConflictingRequest):
        take(catalog, 2, 3, "r1")
    assert stocks(catalog) == before
    assert catalog.applied() == 1
    assert catalog.request_count() == 1


def test_take_more_than_stock_raises_and_changes_nothing(catalog: CatalogStore) -> None:
    take(catalog, 1, 1, "r1")
    before = stocks(catalog)
    with pytest.raises(OutOfStock, match="only 4 of item 2 in stock, 5 asked for") as caught:
        take(catalog, 2, 5, "r2")
    assert caught.value.details == {"item": 2, "stock": 4, "qty": 5}
    assert stocks(catalog) == before
    assert catalog.book(2).version == 0
    assert catalog.applied() == 1
    assert catalog.request_count() == 1


def test_take_the_whole_stock_leaves_zero(catalog: CatalogStore) -> None:
    take(catalog, 2, 4, "r1")
    assert catalog.book(2).stock == 0
    with pytest.raises(OutOfStock):
        take(catalog, 2, 1, "r2")


def test_take_of_unknown_item_is_not_found(catalog: CatalogStore) -> None:
    with pytest.raises(NotFound, match="no book with item number 99"):
        take(catalog, 99, 1, "r1")
    assert catalog.applied() == 0
    assert catalog.request_count() == 0


def test_change_restocks_and_reprices(catalog: CatalogStore) -> None:
    restocked = change(catalog, 2, "r1", stock_delta=6)
    assert restocked["stock"] == 10
    assert restocked["version"] == 1
    repriced = change(catalog, 2, "r2", cost=33.5)
    assert (repriced["cost"], repriced["stock"], repriced["version"]) == (33.5, 10, 2)
    both = change(catalog, 3, "r3", cost=1.0, stock_delta=-10)
    assert (both["cost"], both["stock"]) == (1.0, 0)
    book = catalog.book(2)
    assert (book.stock, book.cost, book.version) == (10, 33.5, 2)
    assert catalog.applied() == 3


def test_change_below_zero_is_refused(catalog: CatalogStore) -> None:
    with pytest.raises(OutOfStock, match="only 4 in stock") as caught:
        change(catalog, 2, "r1", stock_delta=-5, cost=1.0)
    assert caught.value.details == {"item": 2, "stock": 4}
    book = catalog.book(2)
    assert (book.stock, book.cost, book.version) == (4, 40.0, 0)
    assert catalog.applied() == 0


def test_add_assigns_the_next_item_number(catalog: CatalogStore) -> None:
    op = {"op": "add", "title": "Paxos Made Simple", "topic": "Distributed Systems"}
    added = catalog.execute(
        op, "r1",
        lambda conn, seq: catalog.add(conn, seq, "Paxos Made Simple", "Distributed Systems",
                                      3, 12.5).to_wire(),
    )
    assert added == {"item": 8, "title": "Paxos Made Simple", "topic": "Distributed Systems",
                     "stock": 3, "cost": 12.5, "version": 1}
    assert catalog.book(8).title == "Paxos Made Simple"
    assert catalog.book_count() == 8
    assert [row["item"] for row in catalog.search("distributed systems", 100, 0)] == [1, 2, 5, 8]

    second = catalog.execute(
        {"op": "add", "title": "B"}, "r2",
        lambda conn, seq: catalog.add(conn, seq, "B", "misc", 0, 0.0).to_wire(),
    )
    assert second["item"] == 9


# --- reads --------------------------------------------------------------------------------


def test_search_is_case_insensitive_paged_and_ordered(catalog: CatalogStore) -> None:
    everything = catalog.search("DISTRIBUTED Systems", 100, 0)
    assert everything == [
        {"item": 1, "title": "How to get a good grade in 677 in 20 minutes a day"},
        {"item": 2, "title": "RPCs for Dummies"},
        {"item": 5, "title": "How to finish Project 3 on time"},
    ]
    assert [row["item"] for row in catalog.search("graduate school", 100, 0)] == [3, 4, 6, 7]
    assert [row["item"] for row in catalog.search("graduate school", 2, 0)] == [3, 4]
    assert [row["item"] for row in catalog.search("graduate school", 2, 2)] == [6, 7]
    assert [row["item"] for row in catalog.search("graduate school", 2, 3)] == [7]
    assert catalog.search("graduate school", 10, 4) == []
    assert catalog.search("cooking", 10, 0) == []


def test_topics(catalog: CatalogStore) -> None:
    assert catalog.topics() == ["distributed systems", "graduate school"]


def test_topics_are_not_repeated_in_another_case(catalog: CatalogStore) -> None:
    catalog.execute({"op": "add"}, "r1",
                    lambda conn, seq: catalog.add(conn, seq, "T", "Graduate School", 1, 1.0)
                    .to_wire())
    topics = catalog.topics()
    assert len({topic.lower() for topic in topics}) == len(topics)


def test_book_not_found(catalog: CatalogStore) -> None:
    with pytest.raises(NotFound) as caught:
        catalog.book(99)
    assert caught.value.details == {"item": 99}


# --- orders -------------------------------------------------------------------------------


def test_order_log_records_lists_newest_first_and_finds(orders: OrderStore) -> None:
    first = record(orders, "a", item=2, qty=2, unit_cost=40.0)
    assert first["order_id"] == 1 and first["total"] == 80.0
    record(orders, "b", item=1, qty=3, unit_cost=0.1, created_at=1_700_000_001.0)
    record(orders, "c", item=7, qty=1, unit_cost=15.0)
    assert orders.order_count() == 3
    assert orders.applied() == 3

    second = orders.order(2)
    assert (second.item, second.qty, second.unit_cost, second.request_id) == (1, 3, 0.1, "b")
    assert second.total == 0.3
    assert second.created_at == 1_700_000_001.0
    assert second.title == "book 1"

    assert [o.order_id for o in orders.orders(10)] == [3, 2, 1]
    assert [o.order_id for o in orders.orders(2)] == [3, 2]
    assert [o.order_id for o in orders.orders(2, offset=1)] == [2, 1]
    assert orders.orders(5, offset=3) == []


def test_order_retry_returns_the_same_order(orders: OrderStore) -> None:
    first = record(orders, "a")
    assert record(orders, "a") == first
    assert orders.order_count() == 1
    with pytest.raises(ConflictingRequest):
        record(orders, "a", qty=5)
    assert orders.order_count() == 1
    assert orders.applied() == 1


def test_order_not_found(orders: OrderStore) -> None:
    with pytest.raises(NotFound, match="no order with id 4") as caught:
        orders.order(4)
    assert caught.value.details == {"order_id": 4}


# --- inventory loading --------------------------------------------------------------------


def test_load_inventory_reads_the_seven_books() -> None:
    books = load_inventory(INVENTORY)
    assert [b.item for b in books] == [1, 2, 3, 4, 5, 6, 7]
    assert books[2].title == "Xen and the Art of Surviving Graduate School"
    assert books[2].cost == 75.0


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ("item,title,topic,stock\n1,A,t,3\n", 2, "bad inventory row"),
        (HEADER + "1,A,t,1,1\n2,B,t,1,1\n1,C,t,1,1\n", 4, "item 1 appears twice"),
        (HEADER + "1,A,t,1,1\n2,B,t,-1,1\n", 3, "stock must be between 0"),
        (HEADER + "1,A,t,1,cheap\n", 2, "bad inventory row"),
        (HEADER + "1,A,t,1,1\n2,B,t,many,1\n", 3, "bad inventory row"),
        (HEADER + "x,A,t,1,1\n", 2, "bad inventory row"),
        (HEADER + "1,A,t,1\n", 2, "bad inventory row"),
        (HEADER + "1,,t,1,1\n", 2, "title must have"),
        (HEADER + "1,A,t,1,-5\n", 2, "cost must be between"),
    ],
    ids=["missing-column", "duplicate-item", "negative-stock", "non-numeric-cost",
         "non-numeric-stock", "non-numeric-item", "short-row", "empty-title", "negative-cost"],
)
def test_load_inventory_rejects_bad_rows(
    tmp_path: Path, text: str, line: int, words: str
) -> None:
    path = tmp_path / "inventory.csv"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_inventory(path)
    assert f"{path}:{line}:" in str(caught.value)
    assert words in str(caught.value)


def test_load_inventory_of_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read inventory"):
        load_inventory(tmp_path / "nope.csv")


def test_a_failed_seed_leaves_the_database_unseeded(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text(HEADER + "1,A,t,1,1\n1,A,t,1,1\n", encoding="utf-8")
    store = CatalogStore(tmp_path / "catalog-1.sqlite3")
    try:
        with pytest.raises(ConfigError):
            store.seed(bad)
        assert store.book_count() == 0
        assert store.seed(INVENTORY) == 7
    finally:
        store.close()


# --- alongside (replication's seam) and isolation ------------------------------------------


def test_alongside_gets_seq_and_result(catalog: CatalogStore) -> None:
    take(catalog, 1, 1, "r0")
    seen: list[tuple[int, Any]] = []
    result = take(catalog, 2, 1, "r1",
                  alongside=lambda writes: seen.extend((w.seq, w.result) for w in writes))
    assert seen == [(2, result)]
    assert result["item"] == 2


def test_alongside_is_not_called_for_a_retry(catalog: CatalogStore) -> None:
    take(catalog, 2, 1, "r1")
    seen: list[int] = []
    take(catalog, 2, 1, "r1", alongside=lambda writes: seen.extend(w.seq for w in writes))
    assert seen == []


def test_the_commit_runs_while_alongside_runs(catalog: CatalogStore) -> None:
    """The local flush overlaps the backups': alongside sees the write committed here."""
    seen: list[int] = []

    def forward(writes: list[Write]) -> None:
        wait_until(lambda: catalog.applied() == writes[-1].seq,
                   what="the commit, while alongside runs")
        seen.append(catalog.book(1).stock)

    take(catalog, 1, 2, "r1", alongside=forward)
    assert seen == [8]


def test_a_failure_alongside_is_raised_after_the_commit_is_over(catalog: CatalogStore) -> None:
    """The write may be on disk here though alongside failed: the caller must know."""
    def refuse(writes: list[Write]) -> None:
        raise RuntimeError("backup did not ack")

    with pytest.raises(RuntimeError, match="backup did not ack"):
        take(catalog, 1, 2, "r1", alongside=refuse)
    assert catalog.book(1).stock == 8
    assert catalog.applied() == 1
    assert catalog.request_count() == 1


def test_a_batch_applies_in_one_transaction_and_refuses_writes_one_by_one(
    catalog: CatalogStore,
) -> None:
    take(catalog, 2, 1, "earlier")
    batch = [taking(catalog, 1, 3, "a"), taking(catalog, 2, 99, "too many"),
             taking(catalog, 2, 1, "earlier"), taking(catalog, 3, 2, "b"),
             Write({"op": "other"}, "a", lambda conn, seq: None), taking(catalog, 1, 3, "a")]
    forwarded: list[tuple[str, int]] = []
    catalog.execute_many(batch, alongside=lambda writes: forwarded.extend(
        (w.request_id, w.seq) for w in writes))
    assert forwarded == [("a", 2), ("b", 3)]  # consecutive, after the earlier write
    assert catalog.applied() == 3
    assert [w.result["stock"] if w.result else None for w in batch] == [10, None, 4, 10, None, 10]
    assert isinstance(batch[1].error, OutOfStock)  # refused alone: the others went on
    assert isinstance(batch[4].error, ConflictingRequest)  # the same id for another op
    assert batch[5].error is None and batch[5].seq == 0  # a repeat within the batch: once
    assert (catalog.book(1).stock, catalog.book(2).stock, catalog.book(3).stock) == (7, 3, 8)


def test_a_batch_that_applies_nothing_forwards_nothing(catalog: CatalogStore) -> None:
    take(catalog, 2, 1, "earlier")
    batch = [taking(catalog, 2, 99, "too many"), taking(catalog, 2, 1, "earlier")]
    forwarded: list[Write] = []
    catalog.execute_many(batch, alongside=forwarded.extend)
    assert forwarded == []
    assert isinstance(batch[0].error, OutOfStock) and batch[1].result["stock"] == 4
    assert catalog.applied() == 1


def test_a_backup_applies_a_batch_whole_or_not_at_all(tmp_path: Path) -> None:
    backup = CatalogStore(tmp_path / "catalog-2.sqlite3")
    try:
        backup.seed(INVENTORY)
        writes = [Write({"op": "take", "item": 1, "qty": 1}, f"r{seq}",
                        lambda conn, seq: backup.take(conn, seq, 1, 1), seq=seq,
                        result={"stock": 10 - seq}) for seq in (1, 2, 4)]
        with pytest.raises(ValueError, match="write 4 arrived where 3 was expected"):
            backup.apply_replicated(writes)
        assert backup.applied() == 0 and backup.book(1).stock == 10
        backup.apply_replicated(writes[:2])
        assert backup.applied() == 2 and backup.book(1).stock == 8
        assert backup.write_at(2) == ("r2", 0)
    finally:
        backup.close()


def test_a_failure_in_apply_rolls_the_write_back(catalog: CatalogStore) -> None:
    def refuse() -> None:
        raise RuntimeError("refused while applying")

    before = stocks(catalog)
    with pytest.raises(RuntimeError, match="refused while applying"):
        take(catalog, 1, 2, "r1", hold=refuse)
    assert stocks(catalog) == before
    assert catalog.book(1).version == 0
    assert catalog.applied() == 0
    assert catalog.request_count() == 0
    # The request id was not remembered: the same request may run now.
    take(catalog, 1, 2, "r1")
    assert catalog.book(1).stock == 8
    assert catalog.applied() == 1


class HeldWrite:
    """A take on another thread held, applied but uncommitted, until released."""

    def __init__(self, store: CatalogStore) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.outcome: dict[str, Any] = {}
        self.thread = threading.Thread(target=self._run, args=(store,), daemon=True)

    def _hold(self) -> None:
        self.entered.set()
        if not self.release.wait(10):
            raise RuntimeError("never released")

    def _run(self, store: CatalogStore) -> None:
        try:
            self.outcome["result"] = take(store, 1, 4, "held", hold=self._hold)
        except BaseException as exc:
            self.outcome["error"] = exc

    def __enter__(self) -> HeldWrite:
        self.thread.start()
        assert self.entered.wait(10), "the write was never applied"
        return self

    def __exit__(self, *_: object) -> None:
        self.release.set()
        self.thread.join(10)


def test_readers_do_not_see_an_uncommitted_write(catalog: CatalogStore) -> None:
    assert catalog.book(1).stock == 10  # this thread's reader connection exists from here
    with HeldWrite(catalog) as held:
        assert catalog.book(1).stock == 10
        assert catalog.book(1).version == 0
        assert catalog.applied() == 0
        assert catalog.request_count() == 0
    assert "error" not in held.outcome
    assert held.outcome["result"]["stock"] == 10
    assert catalog.book(1).stock == 6
    assert catalog.applied() == 1


def test_first_read_on_a_new_thread_does_not_wait_for_an_open_write(
    catalog: CatalogStore,
) -> None:
    seen: list[int] = []
    reader = threading.Thread(target=lambda: seen.append(catalog.book(1).stock), daemon=True)
    with HeldWrite(catalog):
        reader.start()
        reader.join(1.0)
        answered_during_write = list(seen)
    reader.join(10)
    assert answered_during_write == [10]


# -- request ids have a lifetime ------------------------------------------------------------

KEEP, SKEW, NOW = 3600.0, 60.0, 1.8e9


@pytest.fixture
def aging(tmp_path: Path) -> Iterator[tuple[CatalogStore, list[float]]]:
    """A catalog that keeps request ids an hour (clocks within a minute), on a clock the test
    moves: ``clock[0]``."""
    store = CatalogStore(tmp_path / "catalog-1.sqlite3", retention=Retention(KEEP, SKEW))
    store.seed(INVENTORY)
    clock = [NOW]
    store.clock = lambda: clock[0]
    yield store, clock
    store.close()


def remembered(store: CatalogStore) -> set[str]:
    return {row[0] for row in store.reader.execute("SELECT request_id FROM requests")}


def test_compaction_forgets_exactly_the_ids_every_replica_may_forget(
        aging: tuple[CatalogStore, list[float]]) -> None:
    store, clock = aging
    ages = [KEEP + SKEW + 50, KEEP + SKEW + 1, KEEP + SKEW - 1, KEEP + 1, KEEP - 1, 10, 0]
    ids = {age: new_request_id(NOW - age) for age in ages}
    clock[0] = NOW - KEEP  # each was new when it was made, an hour ago
    for age in ages:
        change(store, 1, ids[age], stock_delta=1)
    legacy = "0f8e4c3a9b2d4e6f8a1b2c3d4e5f6a7b"  # a UUIDv4 from an older file: no time in it
    change(store, 1, legacy, stock_delta=1)
    last = new_request_id(NOW - 2 * KEEP)  # the last write's id, however old, is kept
    clock[0] = NOW - 2 * KEEP
    change(store, 1, last, stock_delta=1)
    clock[0] = NOW
    assert store.compact(chunk=1) == 2  # one chunk at a time, until a chunk comes back short
    assert remembered(store) == {ids[age] for age in ages if age < KEEP + SKEW} | {legacy, last}
    assert store.compact() == 0


def test_a_new_write_with_an_expired_id_is_refused_and_changes_nothing(
        aging: tuple[CatalogStore, list[float]]) -> None:
    store, _ = aging
    before, applied, ids = store.book(1), store.applied(), remembered(store)
    expired = new_request_id(NOW - KEEP - 1)
    with pytest.raises(RequestExpired, match="older than the request-id retention") as caught:
        change(store, 1, expired, stock_delta=5)
    assert caught.value.details == {"request_id": expired, "age": pytest.approx(KEEP + 1, abs=0.01)}
    assert (store.book(1), store.applied(), remembered(store)) == (before, applied, ids)
    assert change(store, 1, new_request_id(NOW - KEEP + 1), stock_delta=5)["stock"] \
        == before.stock + 5


def test_a_retry_is_answered_while_its_id_is_remembered_and_refused_once_forgotten(
        aging: tuple[CatalogStore, list[float]]) -> None:
    store, clock = aging
    request_id = new_request_id(NOW)
    first = change(store, 1, request_id, stock_delta=2)
    clock[0] = NOW + KEEP + SKEW / 2  # expired, but remembered: the first answer, once
    assert change(store, 1, request_id, stock_delta=2) == first
    change(store, 2, new_request_id(clock[0]), stock_delta=1)  # so it is not the last write
    clock[0] = NOW + KEEP + SKEW + 1
    assert store.compact() == 1
    with pytest.raises(RequestExpired):
        change(store, 1, request_id, stock_delta=2)
    assert store.book(1).stock == first["stock"]


def test_compaction_lets_writes_through_between_chunks(
        aging: tuple[CatalogStore, list[float]]) -> None:
    store, clock = aging
    clock[0] = NOW - KEEP - SKEW - 10
    for n in range(40):
        change(store, 1, new_request_id(clock[0] - n), stock_delta=1)
    clock[0] = NOW
    change(store, 2, new_request_id(NOW), stock_delta=1)
    stock = store.book(3).stock
    chunks: list[int] = []
    original = store.transaction

    @contextlib.contextmanager
    def counted() -> Iterator[sqlite3.Connection]:
        with original() as conn:
            yield conn
        chunks.append(1)
        change(store, 3, new_request_id(NOW), stock_delta=1)  # a write, between two chunks

    store.transaction = counted  # type: ignore[method-assign]
    assert store.compact(chunk=8) == 40
    store.transaction = original  # type: ignore[method-assign]
    assert len(chunks) == 6  # five full chunks, and the one that found none left
    assert store.book(3).stock == stock + 6
