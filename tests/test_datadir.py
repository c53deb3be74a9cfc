"""Storage that refuses mistakes: one process per data directory and file, private modes, one
clear line for a read-only directory, a full disk or a corrupt file, and a corrupt replica that
rejoins from its live primary or refuses to start."""

from __future__ import annotations

import contextlib
import datetime
import os
import re
import sqlite3
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pyrostore import cli
from pyrostore import store as store_module
from pyrostore.client import Client
from pyrostore.config import DEFAULT_INVENTORY
from pyrostore.datadir import hold_directory, hold_file, move_aside, private_dir, set_aside
from pyrostore.discovery import Coordinators, find
from pyrostore.errors import CorruptFile, StorageError
from pyrostore.launcher import Cluster
from pyrostore.replica_core import on_open
from pyrostore.schemas import CatalogStore, ViewStore
from pyrostore.store import sqlite_error
from pyrostore.transport import make_proxy
from tests.conftest import ROOT, free_port, make_settings, run_cli, wait_until

INVENTORY = DEFAULT_INVENTORY
GARBAGE = b"this is not a SQLite database. " * 256


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def error_lines(done: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in done.stderr.splitlines() if line.startswith("error:")]


def pyrostore(data_dir: Path, *args: str, env: dict[str, str] | None = None,
              timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """``python -m pyrostore ARGS --data DIR`` with no store to talk to (a fresh port)."""
    settings = make_settings(data_dir)
    return run_cli(settings, *args, "--data", str(data_dir), "--ns-port", str(settings.ns_port),
                   env=env, timeout=timeout)


# --- the decision ---------------------------------------------------------------------------


def test_a_corrupt_replica_rejoins_only_from_a_live_primary() -> None:
    assert on_open(corrupt=False, live_primary=False) == "open"
    assert on_open(corrupt=False, live_primary=True) == "open"
    assert on_open(corrupt=True, live_primary=True) == "rejoin"
    assert on_open(corrupt=True, live_primary=False) == "refuse"


# --- locks ----------------------------------------------------------------------------------


def test_a_file_lock_names_its_holder_and_is_private(tmp_path: Path) -> None:
    path = tmp_path / "catalog-1.sqlite3"
    lock = hold_file(path)
    lock_file = tmp_path / "catalog-1.sqlite3.lock"
    assert lock_file.read_text() == f"{os.getpid()}\n" and mode(lock_file) == 0o600
    in_use = re.escape(f"{path} is in use by pid {os.getpid()}")
    with pytest.raises(StorageError, match=in_use) as refused:
        hold_file(path)  # flock: a second open of the file is refused, even in one process
    assert refused.value.details["pid"] == os.getpid()
    lock.release()
    lock.release()  # again: nothing
    hold_file(path).release()


def test_a_database_holds_its_file_until_closed(tmp_path: Path) -> None:
    path = tmp_path / "catalog-1.sqlite3"
    store = CatalogStore(path)
    with pytest.raises(StorageError, match="in use by pid"):
        CatalogStore(path)
    with pytest.raises(StorageError, match="in use by pid"):
        ViewStore(path)
    store.close()
    CatalogStore(path).close()


def test_a_killed_holder_leaves_no_stale_lock(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path; "
         "from pyrostore.datadir import hold_directory; "
         "lock = hold_directory(Path(sys.argv[1])); print('held', flush=True); time.sleep(120)",
         str(tmp_path)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        with pytest.raises(StorageError, match=f"in use by pid {holder.pid} "
                                               r"\(another `pyrostore up`\?\)"):
            hold_directory(tmp_path)
    finally:
        holder.kill()
        holder.wait()
    hold_directory(tmp_path).release()  # kill -9 released it


# --- modes ----------------------------------------------------------------------------------


@contextlib.contextmanager
def loose_umask() -> Iterator[None]:
    """Run with umask 022, as a process that is not the ``pyrostore`` command may."""
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def test_directories_are_made_or_tightened_to_0700(tmp_path: Path) -> None:
    with loose_umask():
        private_dir(tmp_path / "new" / "data")
        assert mode(tmp_path / "new" / "data") == 0o700
        loose = tmp_path / "loose"
        loose.mkdir(mode=0o755)
        private_dir(loose)
        assert mode(loose) == 0o700
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    with pytest.raises(StorageError, match="shared with other users"):
        private_dir(shared)
    assert mode(shared) == 0o1777  # left alone


def test_sqlite_files_are_0600_without_the_commands_umask(tmp_path: Path) -> None:
    with loose_umask():
        store = CatalogStore(tmp_path / "data" / "catalog-1.sqlite3")
        store.seed(INVENTORY)
        assert store.book_count() == 7
        files = sorted((tmp_path / "data").iterdir())
        assert [f.name for f in files] == ["catalog-1.sqlite3", "catalog-1.sqlite3-shm",
                                          "catalog-1.sqlite3-wal", "catalog-1.sqlite3.lock"]
        assert {f.name: mode(f) for f in files} == dict.fromkeys((f.name for f in files), 0o600)
        assert mode(tmp_path / "data") == 0o700
        store.close()


def test_the_command_sets_umask_077(capsys: pytest.CaptureFixture[str]) -> None:
    old = os.umask(0o022)
    try:
        assert cli.main(["config", "--json"]) == 0
        assert os.umask(0o022) == 0o077
    finally:
        os.umask(old)
    assert "PYROSTORE_DATA_DIR" in capsys.readouterr().out


# --- corrupt files and SQLite's errors ------------------------------------------------------


def test_garbage_and_a_damaged_page_are_both_corrupt(tmp_path: Path) -> None:
    garbage = tmp_path / "catalog-1.sqlite3"
    garbage.write_bytes(GARBAGE)
    with pytest.raises(CorruptFile, match=r"is corrupt \(file is not a database\)"):
        CatalogStore(garbage)
    damaged = tmp_path / "catalog-2.sqlite3"
    store = CatalogStore(damaged)
    with store.transaction() as conn:  # a few pages of request ids
        conn.executemany("INSERT INTO requests VALUES (?, ?, ?, ?, ?)",
                         [(f"r{i}", "x" * 100, "y" * 100, i, 1) for i in range(500)])
    store.close()
    data = bytearray(damaged.read_bytes())
    data[3 * 4096:3 * 4096 + 200] = b"Z" * 200  # inside a page: the header is sound
    damaged.write_bytes(bytes(data))
    with pytest.raises(CorruptFile) as corrupt:
        CatalogStore(damaged)
    assert "\n" not in str(corrupt.value)  # quick_check's report, on one line
    hold_file(damaged).release()  # a refused open leaves no lock behind


def test_sqlite_errors_read_as_one_line_that_says_what_to_fix(tmp_path: Path) -> None:
    path = tmp_path / "order-1.sqlite3"

    def read(message: str) -> StorageError:
        return sqlite_error(sqlite3.OperationalError(message), path)

    full = read("database or disk is full")
    assert str(full) == f"{path}: the disk is full (database or disk is full)"
    assert not isinstance(full, CorruptFile)
    assert "is not writable" in str(read("attempt to write a readonly database"))
    assert isinstance(read("file is not a database"), CorruptFile)
    assert isinstance(read("database disk image is malformed"), CorruptFile)


class FullDisk(sqlite3.Connection):
    """A connection to a disk with no room left: every statement that writes fails as SQLite
    would."""

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
        if sql.lstrip().upper().startswith(("CREATE", "INSERT", "UPDATE", "PRAGMA USER_")):
            raise sqlite3.OperationalError("database or disk is full")
        return super().execute(sql, *args)


def test_a_full_disk_at_open_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                         ) -> None:
    monkeypatch.setattr(store_module, "connect", lambda path: sqlite3.connect(
        path, isolation_level=None, check_same_thread=False, factory=FullDisk))
    path = tmp_path / "catalog-1.sqlite3"
    with pytest.raises(StorageError) as failed:
        CatalogStore(path)
    assert str(failed.value) == f"{path}: the disk is full (database or disk is full)"
    hold_file(path).release()  # a refused open leaves no lock behind


def test_moving_aside_keeps_every_file(tmp_path: Path) -> None:
    path = tmp_path / "order-2.sqlite3"
    now = datetime.datetime(2024, 5, 1, 12, 0, 0, tzinfo=datetime.UTC)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").write_bytes(b"old" + suffix.encode())
    first = move_aside(path, now)
    assert first.name == "order-2.sqlite3.corrupt-20240501T120000Z"
    assert Path(f"{first}-wal").read_bytes() == b"old-wal" and not path.exists()
    path.write_bytes(b"new")
    second = move_aside(path, now)  # the same second: nothing is overwritten
    assert second.name == "order-2.sqlite3.corrupt-20240501T120000Z.2"
    assert first.read_bytes() == b"old" and second.read_bytes() == b"new"
    assert set_aside(path) == [first, second]


# --- the pyrostore command: one line, exit 2 ------------------------------------------------


@contextlib.contextmanager
def tmpfs(mount_point: Path, *, size: str = "1M") -> Iterator[Path]:
    """A small tmpfs at ``mount_point`` (root only: skips otherwise), unmounted afterwards."""
    mount_point.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs",
                              str(mount_point)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], check=True)


def fill(disk: Path) -> None:
    """Write ``disk`` full."""
    with open(disk / "filler", "wb", buffering=0) as filler:
        for chunk in (65536, 4096, 1):
            with contextlib.suppress(OSError):
                while True:
                    filler.write(b"\0" * chunk)


def test_a_read_only_data_directory_is_one_line_and_exit_2(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "disk") as disk:
        data = disk / "data"
        data.mkdir(mode=0o700)
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        for command in (["up"], ["catalog", "--id", "1"], ["coordinator", "--id", "1"]):
            for directory in (data, data / "new"):
                done = pyrostore(directory, *command)
                assert done.returncode == 2, done.stderr
                assert error_lines(done) == done.stderr.splitlines(), done.stderr
                assert len(error_lines(done)) == 1
                assert "is not writable (Read-only file system)" in done.stderr


def test_a_full_disk_is_one_line_and_exit_2(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "disk") as disk:
        data = disk / "data"
        data.mkdir(mode=0o700)
        (data / "order-1.sqlite3.lock").write_text("1\n")  # the lock finds room: SQLite won't
        fill(disk)
        for command in (["up"], ["catalog", "--id", "1"], ["order", "--id", "1"]):
            done = pyrostore(data, *command)
            assert done.returncode == 2, done.stderr
            assert error_lines(done) == done.stderr.splitlines(), done.stderr
            assert len(error_lines(done)) == 1
            assert ": the disk is full (" in done.stderr
        assert "(database or disk is full)" in done.stderr  # the order replica's: SQLite's


def test_a_corrupt_replica_with_no_live_primary_refuses_to_start(tmp_path: Path) -> None:
    path = tmp_path / "catalog-1.sqlite3"
    path.write_bytes(GARBAGE)
    nowhere = f"127.0.0.1:{free_port()}:{free_port()}"  # coordinators that never answer
    env = {"PYROSTORE_FAILOVER_TIMEOUT": "1.5"}
    done = pyrostore(tmp_path, "catalog", "--id", "1", "--coordinator-addrs", nowhere, env=env)
    assert done.returncode == 2, done.stderr
    [aside] = set_aside(path)
    assert aside.read_bytes() == GARBAGE and not path.exists()
    assert f"ERROR pyrostore.recovery: pyrostore.catalog.1: {path} is corrupt" in done.stderr
    assert f"moved it to {aside}" in done.stderr
    assert error_lines(done) == [
        f"error: {path} was corrupt (file is not a database) and was moved to {aside}; "
        "pyrostore.catalog.1 needs a live primary of its group to rejoin from"]
    assert done.stderr.splitlines()[-1] == error_lines(done)[0]
    again = pyrostore(tmp_path, "catalog", "--id", "1", "--coordinator-addrs", nowhere, env=env)
    assert again.returncode == 2 and "needs a live primary" in again.stderr  # still refused
    assert set_aside(path) == [aside] and not path.exists()


# --- a running store ------------------------------------------------------------------------


def test_the_stores_files_are_its_owners_alone(store: Cluster) -> None:
    data = store.settings.data_dir
    assert mode(data) == 0o700 and mode(data / "logs") == 0o700
    assert mode(store.settings.certificates) == 0o700
    sqlite = [f for f in data.iterdir()
              if ".sqlite3" in f.name and not f.name.endswith("-journal")]  # Pyro5's, fleeting
    assert {f.name for f in sqlite} >= {"catalog-1.sqlite3", "catalog-1.sqlite3-wal",
                                        "catalog-1.sqlite3-shm", "catalog-1.sqlite3.lock",
                                        "coordinator-1.sqlite3", "nameserver.sqlite3"}
    certs = store.settings.certificates
    private = [*sqlite, *(data / "logs").iterdir(), data / "LOCK", certs / "raft.secret",
               *certs.glob("*.key"), data / "coordinators", *data.glob("*.raft-journal")]
    assert {f.name: mode(f) for f in private} == dict.fromkeys((f.name for f in private), 0o600)
    assert (data / "LOCK").read_text() == f"{os.getpid()}\n"  # the Cluster runs in pytest


def test_a_second_up_on_the_same_directory_exits_2_naming_the_holder(store: Cluster) -> None:
    data = store.settings.data_dir
    done = run_cli(store.settings, "up", "--data", str(data), "--ns-port", str(free_port()))
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == [
        f"error: data directory {data} is in use by pid {os.getpid()} "
        "(another `pyrostore up`?)"]


def test_a_second_replica_on_the_same_file_exits_2_naming_the_holder(store: Cluster) -> None:
    first = store.child("catalog", 1)
    assert first is not None
    done = run_cli(store.settings, "catalog", "--id", "1",
                   "--coordinator-addrs", store.settings.coordinators)
    assert done.returncode == 2, done.stderr
    path = store.settings.database_path("catalog", 1)
    assert done.stderr.splitlines() == [
        f"error: {path} is in use by pid {first.pid} "
        "(another process with the same --id and --data?)"]
    assert first.alive()


def catalog_view(store: Cluster) -> dict[str, Any]:
    coordinators = Coordinators(store.settings)
    try:
        return dict(coordinators.read("view", "catalog"))
    finally:
        coordinators.close()


def test_a_corrupt_backup_rejoins_from_the_live_primary(store: Cluster) -> None:
    settings = store.settings
    with Client(settings=settings) as client:
        stock = client.lookup(4)["stock"]
        client.buy(4, 1)
    primary = int(catalog_view(store)["primary"])
    backup = 3 - primary
    store.kill("catalog", backup)
    path = settings.database_path("catalog", backup)
    wal = path.with_name(path.name + "-wal")  # it holds the newest pages: garbage there too
    for damaged in (path, wal):
        damaged.write_bytes(GARBAGE)
    with Client(settings=settings) as client:
        client.buy(4, 1)  # while it is away (the primary goes on once it is dropped)
    store.spawn("catalog", backup)
    store.wait_ready("catalog", backup, timeout=60)

    uris = find(settings, "catalog")

    def info(replica_id: int) -> dict[str, Any]:
        with make_proxy(uris[f"pyrostore.catalog.{replica_id}"], settings) as proxy:
            return dict(proxy.info())

    wait_until(lambda: info(backup)["applied"] == info(primary)["applied"],
               what="the rejoined backup level with its primary")
    with make_proxy(uris[f"pyrostore.catalog.{backup}"], settings) as proxy:
        assert proxy.lookup(4)["stock"] == stock - 2
    [aside] = set_aside(path)
    assert aside.read_bytes() == GARBAGE == Path(f"{aside}-wal").read_bytes()
    log = (settings.data_dir / "logs" / f"catalog-{backup}.log").read_text()
    assert f"is corrupt (file is not a database); moved it to {aside}" in log
    assert "starts empty and rejoins by snapshot" in log
