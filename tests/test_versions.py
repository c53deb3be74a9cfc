"""Schema versions of the SQLite files: a newer file refused untouched, an older one migrated."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pyrostore import migrations, versions
from pyrostore.config import DEFAULT_INVENTORY
from pyrostore.errors import ProtocolVersionError, SchemaVersionError
from pyrostore.models import new_request_id
from pyrostore.schemas import CatalogStore, OrderStore, ViewStore
from pyrostore.store import Database
from tests.conftest import make_settings, run_cli

INVENTORY = DEFAULT_INVENTORY
NEWER = versions.SCHEMA_VERSION + 1


def user_version(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])
    finally:
        conn.close()


def stamp(path: Path, version: int) -> None:
    """Set the file's schema version as another release would have."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute(f"PRAGMA user_version = {version:d}")
    finally:
        conn.close()


def seeded_catalog(path: Path) -> None:
    store = CatalogStore(path)
    store.seed(INVENTORY)
    store.close()


def an_order(path: Path) -> None:
    store = OrderStore(path)
    store.execute({"op": "record"}, new_request_id(), lambda conn, seq: store.record(
        conn, seq, item=1, title="t", qty=2, unit_cost=3.0,
        request_id=new_request_id()).to_wire())
    store.close()


def a_view(path: Path) -> None:
    ViewStore(path).close()


MAKERS: dict[str, tuple[Callable[[Path], None], Callable[[Path], Any]]] = {
    "catalog": (seeded_catalog, CatalogStore),
    "order": (an_order, OrderStore),
    "coordinator": (a_view, ViewStore),
}


def test_a_new_file_gets_this_releases_version(tmp_path: Path) -> None:
    for name, (make, _) in MAKERS.items():
        make(tmp_path / f"{name}.sqlite3")
        assert user_version(tmp_path / f"{name}.sqlite3") == versions.SCHEMA_VERSION


@pytest.mark.parametrize("kind", sorted(MAKERS))
@pytest.mark.parametrize("found", [NEWER, 2**31 - 1, -1])
def test_a_file_of_a_newer_or_unknown_version_is_refused_and_left_as_it_was(
        tmp_path: Path, kind: str, found: int) -> None:
    path = tmp_path / f"{kind}.sqlite3"
    make, open_ = MAKERS[kind]
    make(path)
    stamp(path, found)
    before = path.read_bytes()
    with pytest.raises(SchemaVersionError) as refused:
        open_(path)
    message = str(refused.value)
    assert str(path) in message and f"schema version {found}" in message
    assert f"0 to {versions.SCHEMA_VERSION}" in message and "\n" not in message
    assert refused.value.details == {"path": str(path), "version": found,
                                     "supported": versions.SCHEMA_VERSION}
    assert path.read_bytes() == before
    assert user_version(path) == found
    stamp(path, versions.SCHEMA_VERSION)  # the lock was let go: it opens once it is readable
    open_(path).close()


def test_a_newer_file_left_mid_write_keeps_its_wal(tmp_path: Path) -> None:
    path = tmp_path / "catalog-1.sqlite3"
    seeded_catalog(path)
    killed = subprocess.run([sys.executable, "-c", f"""
import os, sqlite3
conn = sqlite3.connect({str(path)!r}, isolation_level=None)
conn.execute("PRAGMA journal_mode=WAL")
conn.execute("PRAGMA user_version = {NEWER}")
conn.execute("UPDATE books SET stock = 0")
os.kill(os.getpid(), 9)  # a newer release's replica, killed: its last writes in the WAL
"""])
    assert killed.returncode == -9
    files = [path, path.with_name(path.name + "-wal")]  # -shm: an index any reader rebuilds
    before = [file.read_bytes() for file in files]
    with pytest.raises(SchemaVersionError, match=f"schema version {NEWER}"):
        CatalogStore(path)
    assert [file.read_bytes() for file in files] == before


def test_a_file_of_the_release_before_versions_is_migrated_and_keeps_its_data(
        tmp_path: Path) -> None:
    path = tmp_path / "catalog-1.sqlite3"
    store = CatalogStore(path)
    store.seed(INVENTORY)
    store.execute({"op": "take"}, "r1", lambda conn, seq: store.take(conn, seq, 2, 1).to_wire())
    store.close()
    stamp(path, 0)  # what the previous release left: the same tables, no version
    store = CatalogStore(path)
    try:
        assert user_version(path) == versions.SCHEMA_VERSION
        assert store.book(2).stock == 3 and store.book_count() == 7
        assert store.applied() == 1 and store.write_at(1) == ("r1", 0)
        assert store.seed(INVENTORY) == 0  # still known as seeded
    finally:
        store.close()


def test_a_version_1_file_gains_the_log_index_and_keeps_its_data(tmp_path: Path) -> None:
    path = tmp_path / "catalog-1.sqlite3"
    store = CatalogStore(path)
    store.seed(INVENTORY)
    store.execute({"op": "take"}, "r1", lambda conn, seq: store.take(conn, seq, 2, 1).to_wire())
    store.close()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("DROP INDEX requests_by_seq")  # as version 1 made it
    conn.execute("ALTER TABLE requests DROP COLUMN epoch")
    conn.close()
    stamp(path, 1)

    def indexes() -> list[str]:
        conn = sqlite3.connect(path)
        try:
            return [row[0] for row in conn.execute(
                "SELECT name FROM sqlite_master WHERE type='index' AND tbl_name='requests' "
                "AND sql IS NOT NULL")]
        finally:
            conn.close()

    assert indexes() == []
    store = CatalogStore(path)
    try:
        assert user_version(path) == versions.SCHEMA_VERSION == 2
        assert indexes() == ["requests_by_seq"]
        assert store.book(2).stock == 3 and store.log(0, 10)[0]["request_id"] == "r1"
        assert store.write_at(1) == ("r1", 0)  # its epoch unknown: written before epochs
    finally:
        store.close()


def test_an_order_log_from_before_shoppers_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "order-1.sqlite3"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.executescript("""
        CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
        CREATE TABLE requests (request_id TEXT PRIMARY KEY, fingerprint TEXT NOT NULL,
                               result TEXT NOT NULL, seq INTEGER NOT NULL);
        CREATE TABLE orders (order_id INTEGER PRIMARY KEY, item INTEGER NOT NULL,
            title TEXT NOT NULL, qty INTEGER NOT NULL CHECK (qty > 0), unit_cost REAL NOT NULL,
            total REAL NOT NULL, request_id TEXT NOT NULL UNIQUE, created_at REAL NOT NULL);
        INSERT INTO orders VALUES (1, 2, 'RPCs for Dummies', 1, 40, 40, 'old-1', 1.5);
        INSERT INTO meta VALUES ('applied', 1);
    """)
    conn.close()
    store = OrderStore(path)
    try:
        assert user_version(path) == versions.SCHEMA_VERSION
        order = store.order(1)
        assert (order.title, order.customer, store.applied()) == ("RPCs for Dummies", "", 1)
    finally:
        store.close()


def test_a_migration_that_fails_leaves_the_old_version(tmp_path: Path) -> None:
    def broken(conn: sqlite3.Connection) -> None:
        conn.execute("CREATE TABLE half (x)")
        raise sqlite3.OperationalError("disk I/O error")

    class Broken(Database):
        def migration_path(self) -> list[migrations.Step]:
            return [broken, *super().migration_path()[1:]]

    path = tmp_path / "broken.sqlite3"
    with pytest.raises(Exception, match="disk I/O error"):
        Broken(path)
    conn = sqlite3.connect(path)
    tables = [row[0] for row in conn.execute("SELECT name FROM sqlite_master")]
    conn.close()
    assert (user_version(path), tables) == (0, [])
    Database(path).close()  # the lock is free, and the file migrates once the step works
    assert user_version(path) == versions.SCHEMA_VERSION


def test_a_script_step_runs_its_statements_inside_the_transaction() -> None:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.execute("BEGIN")
    migrations.script("CREATE TABLE t (x TEXT); INSERT INTO t VALUES ('a;b');\n;")(conn)
    assert conn.in_transaction
    conn.execute("ROLLBACK")
    assert conn.execute("SELECT name FROM sqlite_master").fetchall() == []


def test_every_kind_of_file_has_a_step_per_version(tmp_path: Path) -> None:
    for kind in (CatalogStore, OrderStore):
        store = kind(tmp_path / f"{kind.__name__}.sqlite3")
        assert len(store.migration_path()) == versions.SCHEMA_VERSION
        store.close()
    assert len(ViewStore.MIGRATION_PATH) == versions.SCHEMA_VERSION


def test_a_replica_on_a_newer_file_exits_with_one_line_and_leaves_it(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data")
    path = settings.database_path("catalog", 1)
    path.parent.mkdir(mode=0o700)
    seeded_catalog(path)
    stamp(path, NEWER)
    before = path.read_bytes()
    done = run_cli(settings, "catalog", "--id", "1", timeout=60)
    assert done.returncode == 2, done.stderr
    line = f"error: {path} has schema version {NEWER}, but this release reads versions 0 to"
    assert line in done.stderr
    assert path.read_bytes() == before and user_version(path) == NEWER


def test_protocol_verdicts() -> None:
    ours = versions.PROTOCOL_VERSION
    versions.check_caller(versions.greeting(ours), ours=ours, who="x", plain_ok=False)
    versions.check_caller("hello", ours=ours, who="frontend", plain_ok=True)
    for data, plain_ok in ((versions.greeting(ours + 1), True), ("hello", False),
                           ({versions.HANDSHAKE_KEY: True}, False)):
        with pytest.raises(ProtocolVersionError, match=versions.REFUSAL):
            versions.check_caller(data, ours=ours, who="x", plain_ok=plain_ok)
    versions.check_answer(versions.greeting(ours), ours=ours, where="x")
    for answer in ("hello", versions.greeting(ours + 1), None):
        with pytest.raises(ProtocolVersionError, match="this process"):
            versions.check_answer(answer, ours=ours, where="pyrostore.catalog.1")
    refused = versions.refusal_in("connection to ('127.0.0.1', 1) rejected: "
                                  f"{versions.REFUSAL}: x speaks 1, the caller 2")
    assert refused is not None and str(refused).startswith(versions.REFUSAL)
    assert versions.refusal_in("connection refused") is None
