"""The three databases: the catalog's books, the order log, and the coordinator's views.

Each replica database is a :class:`~pyrostore.store.Database` (transactions, request ids, the
applied position, snapshots) with a schema of its own and the primitives its state machine
runs inside a write's transaction. ``inventory.csv`` seeds a catalog on its first start.
"""

from __future__ import annotations

import csv
import json
import math
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from pyrostore.errors import ConfigError, InvalidRequest, NotFound, OutOfStock
from pyrostore.migrations import Step, script
from pyrostore.models import (
    MAX_COST,
    MAX_POSITION,
    MAX_QUANTITY,
    MAX_STORED_JSON,
    Book,
    Order,
    View,
    check_cost,
    check_count,
    check_customer,
    check_int,
    check_item,
    check_quantity,
    check_stock,
    check_stored_text,
    check_text,
    check_time,
    check_token,
)
from pyrostore.store import Database, add_the_log, open_locked


class Table(NamedTuple):
    """A table as a snapshot carries it: its columns in order, each with its check, and the
    columns whose values are unique."""

    columns: tuple[tuple[str, Callable[[Any], Any]], ...]
    unique: tuple[str, ...]


def _text(name: str) -> Callable[[Any], Any]:
    return lambda value: check_stored_text(value, name)


def _json_text(name: str) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        try:
            return json.loads(check_stored_text(value, name, MAX_STORED_JSON))
        except ValueError:
            raise InvalidRequest(f"{name} must be JSON text", field=name) from None
    return check


def _amount(value: Any) -> float:
    if (isinstance(value, bool) or not isinstance(value, int | float)
            or not math.isfinite(value) or not 0 <= value <= MAX_COST * MAX_QUANTITY):
        raise InvalidRequest("total must be a finite amount", field="total")
    return float(value)


def _stored_request_id(value: Any) -> str:
    """A request id as a replica's file holds it (older files hold ids of other forms)."""
    return check_token(value, "request_id")


REQUESTS = Table((("request_id", _stored_request_id), ("fingerprint", _json_text("fingerprint")),
                  ("result", _json_text("result")),
                  ("seq", lambda v: check_int(v, "seq", low=1, high=MAX_POSITION)),
                  ("epoch", lambda v: check_count(v, "epoch"))),
                 unique=("request_id",))
"""The request ids every replica database keeps (:mod:`pyrostore.store`)."""


def check_snapshot_rows(name: Any, rows: Any, applied: int,
                        tables: dict[str, Table]) -> list[list[Any]]:
    """Rows of table ``name`` from a snapshot at ``applied`` (one part of it,
    :mod:`pyrostore.snapshots`) of a database with these tables and the request ids, checked
    row by row before any of it is staged. Uniqueness across parts is the table's own
    constraint's to enforce, when the snapshot is installed."""
    all_tables = {"requests": REQUESTS, **tables}
    if not isinstance(name, str) or name not in all_tables:
        raise InvalidRequest(f"a snapshot has no table {str(name)[:40]!r} (it has "
                             f"{', '.join(all_tables)})", field="table")
    _check_rows(name, all_tables[name], rows)
    if name == "requests" and any(row[3] > applied for row in rows):
        raise InvalidRequest("a snapshot's request is beyond its applied position")
    return [list(row) for row in rows]


def _check_rows(name: str, table: Table, rows: Any) -> None:
    if not isinstance(rows, list):
        raise InvalidRequest(f"a snapshot's {name} must be a list of rows")
    width = len(table.columns)
    seen: dict[str, set[Any]] = {column: set() for column in table.unique}
    for row in rows:
        if not isinstance(row, list | tuple) or len(row) != width:
            raise InvalidRequest(f"a row of {name} has {width} columns")
        for (column, check), value in zip(table.columns, row, strict=True):
            check(value)
            if column in seen:
                if value in seen[column]:
                    raise InvalidRequest(f"{name}.{column} {str(value)[:40]!r} appears twice")
                seen[column].add(value)


TAKE_STATES = ("open", "undone")
"""A take in the outbox is open until its order is recorded (then its row goes) or it is
undone (then its row stays, so that its request id's outcome can be told)."""


def _take_state(value: Any) -> str:
    if value not in TAKE_STATES:
        raise InvalidRequest(f"a take's state is one of {', '.join(TAKE_STATES)}", field="state")
    return str(value)


class CatalogStore(Database):
    """The books of one catalog replica, and its outbox of takes that await their order."""

    state_tables = ("books", "takes")
    tables = {"books": Table((
        ("item", check_item), ("title", _text("title")), ("topic", _text("topic")),
        ("topic_key", _text("topic_key")), ("stock", check_stock), ("cost", check_cost),
        ("version", lambda v: check_count(v, "version"))), unique=("item",)),
        "takes": Table((
            ("request_id", _stored_request_id),
            ("seq", lambda v: check_int(v, "seq", low=1, high=MAX_POSITION)),
            ("item", check_item), ("qty", check_quantity), ("customer", check_customer),
            ("state", _take_state)), unique=("request_id",))}
    """The tables a snapshot carries, and what each column holds."""
    schema = """
    CREATE TABLE IF NOT EXISTS books (
        item      INTEGER PRIMARY KEY,
        title     TEXT NOT NULL,
        topic     TEXT NOT NULL,
        topic_key TEXT NOT NULL,
        stock     INTEGER NOT NULL CHECK (stock >= 0),
        cost      REAL NOT NULL CHECK (cost >= 0),
        version   INTEGER NOT NULL DEFAULT 0
    );
    DROP INDEX IF EXISTS books_by_topic;
    CREATE INDEX IF NOT EXISTS books_by_topic_title ON books (topic_key, item, title);
    CREATE TABLE IF NOT EXISTS takes (
        request_id TEXT PRIMARY KEY,
        seq        INTEGER NOT NULL,
        item       INTEGER NOT NULL,
        qty        INTEGER NOT NULL CHECK (qty > 0),
        customer   TEXT NOT NULL,
        state      TEXT NOT NULL DEFAULT 'open'
    );
    CREATE INDEX IF NOT EXISTS takes_by_state ON takes (state, seq);
    """

    def seed(self, inventory: Path) -> int:
        """Load ``inventory`` if this database has never been seeded; return books loaded."""
        with self.transaction() as conn:
            if self._meta(conn, "seeded"):
                return 0
            books = load_inventory(inventory)
            conn.executemany(
                "INSERT INTO books VALUES (?, ?, ?, ?, ?, ?, 0)",
                [(b.item, b.title, b.topic, b.topic.lower(), b.stock, b.cost) for b in books],
            )
            self._set_meta(conn, "seeded", 1)
            return len(books)

    def book(self, item: int, conn: sqlite3.Connection | None = None) -> Book:
        """The book ``item``, or :class:`NotFound`."""
        row = (
            (conn or self.reader)
            .execute(
                "SELECT item, title, topic, stock, cost, version FROM books WHERE item=?", (item,)
            )
            .fetchone()
        )
        if row is None:
            raise NotFound(f"no book with item number {item}", item=item)
        return Book(**dict(row))

    def search(self, topic: str, limit: int, offset: int) -> list[dict[str, Any]]:
        """``[{item, title}]`` of the books in ``topic`` (any case), by item number."""
        rows = self.reader.cursor()
        rows.row_factory = None  # plain tuples: a page of a topic is read from the index alone
        rows.execute(
            "SELECT item, title FROM books WHERE topic_key=? ORDER BY item LIMIT ? OFFSET ?",
            (topic.lower(), limit, offset),
        )
        return [{"item": item, "title": title} for item, title in rows]

    def topics(self) -> list[str]:
        """Every topic (once, in any case: the first spelling by item), sorted."""
        rows = self.reader.execute(
            "SELECT topic FROM books WHERE item IN (SELECT MIN(item) FROM books GROUP BY topic_key)"
            " ORDER BY topic_key")
        return [row[0] for row in rows]

    def book_count(self) -> int:
        """How many books the catalog holds."""
        return int(self.reader.execute("SELECT COUNT(*) FROM books").fetchone()[0])

    # The primitives below run inside a write's transaction (Database.execute_many).

    def take(self, conn: sqlite3.Connection, seq: int, item: int, qty: int) -> Book:
        """Take ``qty`` copies of ``item`` if that many are in stock; the book as it was."""
        book = self.book(item, conn)
        if book.stock < qty:
            raise OutOfStock(
                f"only {book.stock} of item {item} in stock, {qty} asked for",
                item=item,
                stock=book.stock,
                qty=qty,
            )
        conn.execute("UPDATE books SET stock=stock-?, version=? WHERE item=?", (qty, seq, item))
        return book

    def change(
        self,
        conn: sqlite3.Connection,
        seq: int,
        item: int,
        cost: float | None,
        stock_delta: int | None,
    ) -> Book:
        """Reprice and/or restock ``item``; refuses a stock below zero. The book after."""
        book = self.book(item, conn)
        stock = book.stock + (stock_delta or 0)
        if stock < 0:
            raise OutOfStock(
                f"cannot take {-(stock_delta or 0)} of item {item}: only {book.stock} in stock",
                item=item,
                stock=book.stock,
            )
        new_cost = book.cost if cost is None else cost
        conn.execute(
            "UPDATE books SET stock=?, cost=?, version=? WHERE item=?", (stock, new_cost, seq, item)
        )
        return self.book(item, conn)

    def hold(self, conn: sqlite3.Connection, seq: int, request_id: str, item: int, qty: int,
             customer: str) -> None:
        """Put a take in the outbox, open, in the transaction that takes the stock."""
        conn.execute("INSERT INTO takes VALUES (?, ?, ?, ?, ?, 'open')",
                     (request_id, seq, item, qty, customer))

    def settle(self, conn: sqlite3.Connection, seq: int, done: list[str],
               undone: list[str]) -> list[int]:
        """Close open takes: ``done`` ones have their order (their rows go); ``undone`` ones
        never will, so their stock goes back (their rows stay, marked). A take that is not
        open is left as it is, so settling twice changes nothing. The items restocked."""
        for request_id in done:
            conn.execute("DELETE FROM takes WHERE request_id=? AND state='open'", (request_id,))
        restocked = []
        for request_id in undone:
            row = conn.execute("SELECT item, qty FROM takes WHERE request_id=? AND state='open'",
                               (request_id,)).fetchone()
            if row is None:
                continue
            conn.execute("UPDATE books SET stock=stock+?, version=? WHERE item=?",
                         (row["qty"], seq, row["item"]))
            conn.execute("UPDATE takes SET state='undone' WHERE request_id=?", (request_id,))
            restocked.append(int(row["item"]))
        return restocked

    def open_takes(self, limit: int) -> list[dict[str, Any]]:
        """The oldest ``limit`` open takes, each with what its take answered (``result``,
        None if its request id is no longer kept)."""
        rows = self.reader.execute(
            "SELECT t.request_id, t.item, t.qty, t.customer, r.result FROM takes t "
            "LEFT JOIN requests r ON r.request_id = t.request_id "
            "WHERE t.state='open' ORDER BY t.seq LIMIT ?", (limit,))
        return [{"request_id": row["request_id"], "item": row["item"], "qty": row["qty"],
                 "customer": row["customer"],
                 "result": None if row["result"] is None else json.loads(row["result"])}
                for row in rows]

    def take_state(self, request_id: str) -> tuple[str | None, Any, Any]:
        """What this replica knows of the write ``request_id``, from one read of its file:
        its take's outbox state (``open``, ``undone``, or None: not in the outbox), and the
        write's operation and result (None, None if it never ran here or is no longer kept).
        """
        def read() -> tuple[str | None, Any, Any]:
            take = self.reader.execute("SELECT state FROM takes WHERE request_id=?",
                                       (request_id,)).fetchone()
            write = self.reader.execute(
                "SELECT fingerprint, result FROM requests WHERE request_id=?",
                (request_id,)).fetchone()
            state = None if take is None else str(take[0])
            if write is None:
                return state, None, None
            return state, json.loads(write[0]), json.loads(write[1])
        return self.at_position(read)[0]

    def open_take_count(self) -> int:
        """How many takes await their order."""
        return int(self.reader.execute(
            "SELECT COUNT(*) FROM takes WHERE state='open'").fetchone()[0])

    def add(
        self, conn: sqlite3.Connection, seq: int, title: str, topic: str, stock: int, cost: float
    ) -> Book:
        """Add a new book with the next free item number."""
        item = int(conn.execute("SELECT COALESCE(MAX(item), 0) + 1 FROM books").fetchone()[0])
        conn.execute(
            "INSERT INTO books VALUES (?, ?, ?, ?, ?, ?, ?)",
            (item, title, topic, topic.lower(), stock, cost, seq),
        )
        return self.book(item, conn)


class OrderStore(Database):
    """The order log of one order replica."""

    state_tables = ("orders",)
    tables = {"orders": Table((
        ("order_id", lambda v: check_int(v, "order_id", low=1, high=MAX_POSITION)),
        ("item", check_item), ("title", _text("title")), ("qty", check_quantity),
        ("unit_cost", check_cost), ("total", _amount), ("request_id", _stored_request_id),
        ("created_at", lambda v: check_time(v, "created_at")), ("customer", check_customer)),
        unique=("order_id", "request_id"))}
    """The tables a snapshot carries, and what each column holds."""
    schema = """
    CREATE TABLE IF NOT EXISTS orders (
        order_id   INTEGER PRIMARY KEY,
        item       INTEGER NOT NULL,
        title      TEXT NOT NULL,
        qty        INTEGER NOT NULL CHECK (qty > 0),
        unit_cost  REAL NOT NULL,
        total      REAL NOT NULL,
        request_id TEXT NOT NULL UNIQUE,
        created_at REAL NOT NULL,
        customer   TEXT NOT NULL DEFAULT ''
    );
    """

    def migration_path(self) -> list[Step]:
        return [self._version_1, add_the_log]

    def _version_1(self, conn: sqlite3.Connection) -> None:
        """The tables; and files from before shoppers had names: every order an operator's."""
        self.make_tables(conn)
        columns = {row[1] for row in conn.execute("PRAGMA table_info(orders)")}
        if "customer" not in columns:
            conn.execute("ALTER TABLE orders ADD COLUMN customer TEXT NOT NULL DEFAULT ''")
        conn.execute("CREATE INDEX IF NOT EXISTS orders_by_customer ON orders (customer, order_id)")

    def order(self, order_id: int) -> Order:
        """The order ``order_id``, or :class:`NotFound`."""
        row = self.reader.execute("SELECT * FROM orders WHERE order_id=?", (order_id,)).fetchone()
        if row is None:
            raise NotFound(f"no order with id {order_id}", order_id=order_id)
        return Order(**dict(row))

    def orders(self, limit: int, offset: int = 0, *, customer: str | None = None
               ) -> list[Order]:
        """The newest ``limit`` orders (of ``customer`` only, if given) after skipping
        ``offset``, newest first."""
        if customer is None:
            rows = self.reader.execute(
                "SELECT * FROM orders ORDER BY order_id DESC LIMIT ? OFFSET ?", (limit, offset))
        else:
            rows = self.reader.execute(
                "SELECT * FROM orders WHERE customer=? ORDER BY order_id DESC LIMIT ? OFFSET ?",
                (customer, limit, offset))
        return [Order(**dict(row)) for row in rows]

    def order_for(self, request_id: str) -> Order | None:
        """The order of the buy ``request_id``, if the log holds one."""
        row = self.reader.execute("SELECT * FROM orders WHERE request_id=?",
                                  (request_id,)).fetchone()
        return None if row is None else Order(**dict(row))

    def ordered(self, request_ids: list[str]) -> set[str]:
        """Which of ``request_ids`` have an order in the log."""
        found: set[str] = set()
        for start in range(0, len(request_ids), 500):
            chunk = request_ids[start:start + 500]
            marks = ", ".join("?" * len(chunk))
            found.update(row[0] for row in self.reader.execute(
                f"SELECT request_id FROM orders WHERE request_id IN ({marks})", chunk))
        return found

    def order_count(self) -> int:
        """How many orders the log holds."""
        return int(self.reader.execute("SELECT COUNT(*) FROM orders").fetchone()[0])

    def record(
        self,
        conn: sqlite3.Connection,
        seq: int,
        *,
        item: int,
        title: str,
        qty: int,
        unit_cost: float,
        request_id: str,
        created_at: float | None = None,
        customer: str = "",
    ) -> Order:
        """Append an order; its id is the next in the log."""
        order_id = int(
            conn.execute("SELECT COALESCE(MAX(order_id), 0) + 1 FROM orders").fetchone()[0]
        )
        order = Order(
            order_id=order_id,
            item=item,
            title=title,
            qty=qty,
            unit_cost=unit_cost,
            total=round(unit_cost * qty, 2),
            request_id=request_id,
            created_at=time.time() if created_at is None else created_at,
            customer=customer,
        )
        conn.execute(
            "INSERT INTO orders (order_id, item, title, qty, unit_cost, total, request_id, "
            "created_at, customer) VALUES (:order_id, :item, :title, :qty, :unit_cost, :total, "
            ":request_id, :created_at, :customer)", order.to_wire())
        return order


def load_inventory(path: Path) -> list[Book]:
    """The books of an inventory CSV (item,title,topic,stock,cost), checked row by row."""
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
    except OSError as exc:
        raise ConfigError(f"cannot read inventory {path}: {exc.strerror}") from exc
    books: list[Book] = []
    seen: set[int] = set()
    for line, row in enumerate(rows, start=2):
        try:
            book = Book(
                item=check_item(int(row["item"])),
                title=check_text(row["title"], "title"),
                topic=check_text(row["topic"], "topic"),
                stock=check_stock(int(row["stock"])),
                cost=check_cost(float(row["cost"])),
            )
        except (KeyError, TypeError, ValueError, InvalidRequest) as exc:
            raise ConfigError(f"{path}:{line}: bad inventory row ({exc})") from exc
        if book.item in seen:
            raise ConfigError(f"{path}:{line}: item {book.item} appears twice")
        seen.add(book.item)
        books.append(book)
    return books


class ViewStore:
    """The coordinator's durable views: one row per group (epoch, primary, backups)."""

    MIGRATION_PATH: list[Step] = [script(  # version 0 to 1 (see Database.migration_path)
        "CREATE TABLE IF NOT EXISTS views (grp TEXT PRIMARY KEY, "
        "epoch INTEGER NOT NULL, primary_id INTEGER, backups TEXT NOT NULL)"),
        script("")]  # version 1 to 2 changed only the replicas' files
    """How a coordinator's file reaches this release's schema version."""

    def __init__(self, path: Path) -> None:
        """Open (or make) the file, under its lock until :meth:`close`."""
        self._file_lock, self._conn = open_locked(Path(path), self.MIGRATION_PATH)
        self._lock = threading.Lock()

    def load(self) -> dict[str, View]:
        """Every group's last saved view."""
        with self._lock:
            rows = self._conn.execute("SELECT grp, epoch, primary_id, backups FROM views")
            return {grp: View(epoch, primary, tuple(json.loads(backups)))
                    for grp, epoch, primary, backups in rows}

    def save(self, group: str, view: View) -> None:
        """Make ``view`` the group's view, durably, before anyone is told of it."""
        with self._lock:
            self._conn.execute(
                "INSERT INTO views VALUES (?, ?, ?, ?) ON CONFLICT(grp) DO UPDATE SET "
                "epoch=excluded.epoch, primary_id=excluded.primary_id, backups=excluded.backups",
                (group, view.epoch, view.primary, json.dumps(list(view.backups))))

    def close(self) -> None:
        """Close the file."""
        with self._lock:
            self._conn.close()
        self._file_lock.release()
