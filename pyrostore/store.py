"""SQLite storage for one replica: transactions, request ids, the applied position, snapshots.

Each replica owns one file, in WAL mode with ``synchronous=FULL``: a write that returned is on
disk. Every write goes through :meth:`Database.execute_many`, which in one transaction applies
the operations, stores ``request_id -> result`` for each (so a retried request is answered, not
re-applied) and advances the replica's applied position. Reads use per-thread connections and
so see only committed state, even while a write's transaction is open. The schemas of the
catalog, the order log and the coordinator's views are in :mod:`pyrostore.schemas`.

A file is opened only under its lock (:func:`pyrostore.datadir.hold_file`: one process per
file), made readable by its owner only, and checked with ``PRAGMA quick_check``: a corrupt file
is :class:`~pyrostore.errors.CorruptFile` and never used; one of a newer schema version is
:class:`~pyrostore.errors.SchemaVersionError` and left as it is; an older one is migrated
(:mod:`pyrostore.migrations`); any other failure to open it is a
:class:`~pyrostore.errors.StorageError` that says what to fix.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from pathlib import Path
from typing import Any, TypeVar

from pyrostore.datadir import Lock, create_private, hold_file, make_private, sqlite_files
from pyrostore.errors import ConflictingRequest, CorruptFile, RequestExpired, StorageError
from pyrostore.migrations import Step, migrate, run_script, steps_due
from pyrostore.models import Retention

T = TypeVar("T")
Apply = Callable[[sqlite3.Connection, int], Any]
"""Applies one operation inside the open transaction, given its sequence number."""
Alongside = Callable[[list["Write"]], None]
"""Called with the writes that applied, while they commit."""

_COMMON_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS requests (
    request_id  TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    result      TEXT NOT NULL,
    seq         INTEGER NOT NULL
);
"""


def add_the_log(conn: sqlite3.Connection) -> None:
    """Version 1 to 2: each write's epoch (that of the primary that numbered it; 0: unknown,
    written before), and the request ids by position: the log a returning replica catches up
    from."""
    if "epoch" not in [row[1] for row in conn.execute("PRAGMA table_info(requests)")]:
        conn.execute("ALTER TABLE requests ADD COLUMN epoch INTEGER NOT NULL DEFAULT 0")
    conn.execute("CREATE INDEX IF NOT EXISTS requests_by_seq ON requests (seq)")


WAL_KEEP_BYTES = 64 * 1024 * 1024
"""Bytes of WAL file kept after a checkpoint: a WAL that grew while a long snapshot read held
it (writes go on meanwhile) shrinks back to this."""


@dataclasses.dataclass(eq=False)
class Write:
    """One request for a write: what to apply, and, once executed, what came of it."""

    op: dict[str, Any]
    request_id: str
    apply: Apply
    seq: int = 0
    """Its sequence number once it applied (a primary's write arrives at a backup with it)."""
    epoch: int = 0
    """The epoch of the primary that gives it its sequence number: with ``seq``, it names the
    write (one primary per epoch gives each number once)."""
    result: Any = None
    error: BaseException | None = None

    def outcome(self) -> Any:
        """Its result, or its error raised."""
        if self.error is not None:
            raise self.error
        return self.result


def fingerprint(op: dict[str, Any]) -> str:
    """A canonical text of an operation, to tell a retry from a different request."""
    return json.dumps(op, sort_keys=True, separators=(",", ":"))


class Database:
    """One replica's SQLite file: a writer connection, per-thread readers, a write lock."""

    schema = ""
    """This kind's own tables as schema version 1 has them: a later version changes them by a
    step of :meth:`migration_path`, never here."""
    state_tables: tuple[str, ...] = ()
    """The tables a snapshot carries besides the request ids."""

    def __init__(self, path: Path, *, lock: Lock | None = None,
                 retention: Retention | None = None) -> None:
        """Open (or make) the database at ``path``, under ``lock`` (the file's, held by the
        caller) or else a lock of its own; :meth:`close` releases it. ``retention``: seconds
        how long request ids are remembered (``None``: for ever, and no id is too old)."""
        self.path = Path(path)
        self.retention = retention
        self.clock: Callable[[], float] = time.time
        """The wall clock request ids are aged by (tests set a fake one)."""
        self._file_lock, self._writer = open_locked(self.path, self.migration_path(),
                                                    lock=lock)
        self._write_lock = threading.RLock()
        self._applied = self._meta(self._writer, "applied")  # as committed
        self._applying: int | None = None  # as the open transaction would leave it
        self._readers = threading.local()
        self._readers_lock = threading.Lock()  # not the write lock: a read never waits on a write
        self._all_readers: list[sqlite3.Connection] = []
        self._committer = futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="commit")
        if self._staged_left():
            self.unstage()  # a transfer was under way when the process ended

    @property
    def reader(self) -> sqlite3.Connection:
        """This thread's read connection (sees committed state only)."""
        conn = getattr(self._readers, "conn", None)
        if conn is None:
            conn = connect(self.path)
            self._readers.conn = conn
            with self._readers_lock:
                self._all_readers.append(conn)
        return conn

    def close(self) -> None:
        """Close every connection of this database."""
        with self._write_lock, self._readers_lock:
            for conn in [*self._all_readers, self._writer]:
                conn.close()
            self._all_readers.clear()
        self._committer.shutdown()
        self._file_lock.release()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """An immediate (write-locked) transaction on the writer connection."""
        with self._write_lock:
            self._writer.execute("BEGIN IMMEDIATE")
            try:
                yield self._writer
            except BaseException:
                self._rollback()
                raise
            self._commit()

    def _commit(self) -> None:
        try:
            self._writer.execute("COMMIT")
        except sqlite3.Error:
            with contextlib.suppress(sqlite3.Error):
                self._rollback()  # never leave the writer mid-transaction
            raise
        if self._applying is not None:
            self._applied, self._applying = self._applying, None

    def _rollback(self) -> None:
        self._applying = None
        self._writer.execute("ROLLBACK")

    def execute(self, op: dict[str, Any], request_id: str, apply: Apply) -> Any:
        """Apply ``op`` once for ``request_id`` and return its result (see execute_many)."""
        write = Write(op, request_id, apply)
        self.execute_many([write])
        return write.outcome()

    def execute_many(self, writes: list[Write], *, alongside: Alongside | None = None) -> None:
        """Apply each write once for its request id, all in one transaction: one fsync.

        Each write's outcome lands on it. A request id seen before with the same op gets the
        stored result, applying nothing; with another op, :class:`ConflictingRequest`. Any
        other write gets the next sequence number and its ``apply`` runs in a savepoint that
        also stores the result and the new applied position; what ``apply`` raises (e.g.
        OutOfStock) becomes that write's error and undoes that write alone.

        ``alongside(applied)`` is the seam where replication forwards the writes that applied:
        it runs on the caller's thread while the COMMIT (its fsync) runs on the committer
        thread, so that this disk's flush and the backups' overlap. The write lock is held
        until both are over. If either fails, the other may already have happened: the
        caller must treat the writes as possibly applied here, possibly there. If both fail,
        the commit's error is raised (from the other).
        """
        with self._write_lock:
            conn = self._writer
            conn.execute("BEGIN IMMEDIATE")
            applied: list[Write] = []
            try:
                for write in writes:
                    if self._run(conn, write, self._applied + len(applied) + 1):
                        applied.append(write)
            except BaseException:
                with contextlib.suppress(sqlite3.Error):  # SQLite may have ended it already
                    self._rollback()
                raise
            if not applied:
                self._rollback()  # it only read: repeats, refusals
                return
            if alongside is None:
                self._commit()
                return
            committing = self._committer.submit(self._commit)
            try:
                alongside(applied)
            except BaseException as exc:
                futures.wait([committing])
                failed = committing.exception()
                if failed is not None:  # here and there differ: that is the news
                    raise failed from exc
                raise
            committing.result()

    def _run(self, conn: sqlite3.Connection, write: Write, seq: int) -> bool:
        """Apply ``write`` as number ``seq`` in the open transaction; whether it applied."""
        op_print = fingerprint(write.op)
        stored = conn.execute(
            "SELECT fingerprint, result FROM requests WHERE request_id=?", (write.request_id,)
        ).fetchone()
        if stored is not None:
            if stored["fingerprint"] == op_print:
                write.result = json.loads(stored["result"])
            else:
                write.error = ConflictingRequest(
                    f"request id {write.request_id} was already used for another request",
                    request_id=write.request_id)
            return False
        retention = self.retention
        late = None if retention is None else retention.expired_by(write.request_id,
                                                                   self.clock())
        if retention is not None and late is not None:
            write.error = RequestExpired(
                f"request id {write.request_id} is older than the request-id retention "
                f"({retention.keep:g} s) by {late:.0f} s: it may have run and been forgotten, "
                "so it is not run now (a new request needs a new id; is this machine's clock "
                "right?)", request_id=write.request_id, age=round(retention.keep + late, 3))
            return False
        applying = self._applying
        conn.execute("SAVEPOINT write")
        try:
            write.result = write.apply(conn, seq)
            self._remember(conn, write, seq, op_print)
        except Exception as exc:
            conn.execute("ROLLBACK TO write")
            conn.execute("RELEASE write")
            self._applying = applying
            write.result, write.error = None, exc
            return False
        conn.execute("RELEASE write")
        write.seq = seq
        return True

    def apply_replicated(self, writes: list[Write]) -> None:
        """Apply a primary's writes here, in one transaction, each as its ``seq``, storing the
        primary's ``result``.

        The state machines are deterministic, so ``apply`` changes this replica's state as it
        changed the primary's; the stored answer is the primary's, so a retry gets the same.
        """
        with self.transaction() as conn:
            for index, write in enumerate(writes):
                expected = self._applied + index + 1
                if write.seq != expected:
                    raise ValueError(f"write {write.seq} arrived where {expected} was expected")
                write.apply(conn, write.seq)
                self._remember(conn, write, write.seq, fingerprint(write.op))

    def _remember(self, conn: sqlite3.Connection, write: Write, seq: int, op_print: str
                  ) -> None:
        conn.execute("INSERT INTO requests VALUES (?, ?, ?, ?, ?)",
                     (write.request_id, op_print, json.dumps(write.result), seq, write.epoch))
        self._set_meta(conn, "applied", seq)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the write lock: no write starts or commits meanwhile."""
        with self._write_lock:
            yield

    @contextlib.contextmanager
    def consistent_read(self) -> Iterator[tuple[sqlite3.Connection, int]]:
        """A connection of its own in a read transaction, and the applied position of what it
        sees: one position for as long as the transaction lasts, while writes go on (WAL). No
        lock is held: a snapshot read this way delays no write."""
        conn = connect(self.path)
        try:
            conn.execute("BEGIN")
            yield conn, self._meta(conn, "applied")  # the first read fixes what it sees
            conn.execute("COMMIT")
            # While it read, no checkpoint could fold the writes made meanwhile into the file,
            # and the next write's commit would do it all (a write path's autocheckpoint);
            # do it here, off that path, without blocking writers (PASSIVE)
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        finally:
            conn.close()  # ends the transaction, if it is still open

    def stage_begin(self) -> None:
        """Make empty staging tables (``incoming_<table>``) for a snapshot on its way in, each
        as its table is (keys, constraints), discarding anything an unfinished transfer
        staged. The table's other indexes move to the staging table, to be filled as the rows
        come rather than built all at once when it is installed (a replica taking a snapshot
        serves nothing, and does not need them meanwhile)."""
        with self.transaction() as conn:
            self._unstage(conn)
            for name in self.snapshot_tables():
                made = conn.execute("SELECT sql FROM sqlite_master WHERE type='table' AND "
                                    "name=?", (name,)).fetchone()[0]
                # SQLite keeps it as "CREATE TABLE <name> (...)", whatever was written
                conn.execute(_retable(made, rf"^CREATE TABLE \"?{name}\"?",
                                      f"CREATE TABLE incoming_{name}"))
                for index, sql in _indexes(conn, name):
                    conn.execute(f'DROP INDEX "{index}"')
                    conn.execute(_retable(sql, rf"\bON \"?{name}\"? ?\(",
                                          f"ON incoming_{name} ("))

    def unstage(self) -> None:
        """Drop what a transfer left staged (it is of no use: a new transfer starts over),
        and give the tables their indexes back."""
        with self.transaction() as conn:
            self._unstage(conn)

    def _unstage(self, conn: sqlite3.Connection) -> None:
        for name in self.snapshot_tables():
            staged = f"incoming_{name}"
            if conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?",
                            (staged,)).fetchone() is None:
                continue
            indexes = _indexes(conn, staged)
            conn.execute(f"DROP TABLE {staged}")
            for _, sql in indexes:
                conn.execute(_retable(sql, rf"\bON \"?{staged}\"? ?\(", f"ON {name} ("))

    def _staged_left(self) -> bool:
        return self._writer.execute(
            "SELECT 1 FROM sqlite_master WHERE type='table' "
            "AND name LIKE 'incoming!_%' ESCAPE '!'").fetchone() is not None

    def stage(self, name: str, rows: list[list[Any]]) -> None:
        """Add ``rows`` (checked) of table ``name`` to the snapshot on its way in. A row that
        breaks the table's constraints (an item twice) is :class:`sqlite3.IntegrityError`.

        Staged rows need not survive a power cut (the transfer would start over), so their
        transactions are not synced one by one (``synchronous=NORMAL``, which in WAL mode
        still never corrupts the file): a replica taking a large snapshot does not flush
        the disk every part, which the primary sharing it would feel. The install is synced.
        """
        if not rows:
            return
        marks = ", ".join("?" * len(rows[0]))
        with self._write_lock:
            self._writer.execute("PRAGMA synchronous=NORMAL")
            try:
                with self.transaction() as conn:
                    conn.executemany(f"INSERT INTO incoming_{name} VALUES ({marks})", rows)
            finally:
                self._writer.execute("PRAGMA synchronous=FULL")

    def install_staged(self, applied: int) -> None:
        """Replace the whole replicated state by the staged snapshot (at ``applied``) in one
        transaction, dropping any tail of this replica's own. The staged tables, indexes and
        all, take the place of the old ones (renamed, not copied: a million rows are not
        written again)."""
        with self.transaction() as conn:
            for name in self.snapshot_tables():
                conn.execute(f"DROP TABLE {name}")
                conn.execute(f"ALTER TABLE incoming_{name} RENAME TO {name}")
            self._set_meta(conn, "applied", applied)
            self._set_meta(conn, "seeded", 1)
        # fold the install into the file now, not in the first forward's commit after it
        # joins (a checkpoint runs in the commit that fills the WAL, and the primary waits)
        self._writer.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def snapshot_tables(self) -> tuple[str, ...]:
        """The tables a snapshot carries: the request ids, then this kind's state."""
        return ("requests", *self.state_tables)

    def log(self, after: int, limit: int) -> list[sqlite3.Row]:
        """Up to ``limit`` of the writes after ``after``, in order, as the request ids keep
        them (``seq, request_id, fingerprint, result, epoch``): the log a replica that missed
        them catches up from. It may have gaps where ids were forgotten (:meth:`compact`)."""
        return self.reader.execute(
            "SELECT seq, request_id, fingerprint, result, epoch FROM requests WHERE seq > ? "
            "ORDER BY seq LIMIT ?", (after, limit)).fetchall()

    def write_at(self, seq: int) -> tuple[str, int] | None:
        """The request id and epoch of write ``seq`` (what names it), if this replica holds
        it."""
        row = self.reader.execute("SELECT request_id, epoch FROM requests WHERE seq=?",
                                  (seq,)).fetchone()
        return None if row is None else (str(row[0]), int(row[1]))

    def log_holds(self, after: int, upto: int) -> bool:
        """Whether the log holds every write after ``after`` up to ``upto``."""
        count = self.reader.execute("SELECT COUNT(*) FROM requests WHERE seq > ? AND seq <= ?",
                                    (after, upto)).fetchone()[0]
        return int(count) == upto - after

    def migration_path(self) -> list[Step]:
        """How a file of this kind reaches this release's schema version: step ``i`` brings
        version ``i`` to ``i + 1`` (:mod:`pyrostore.migrations`); a new file takes them all."""
        return [self.make_tables, add_the_log]

    def make_tables(self, conn: sqlite3.Connection) -> None:
        """Version 0 to 1: make the tables (a new file), or keep those a release from before
        schema versions made (``IF NOT EXISTS``)."""
        run_script(conn, _COMMON_SCHEMA + self.schema)

    def applied(self) -> int:
        """The sequence number of the last operation this replica committed."""
        return self._applied

    def at_position(self, read: Callable[[], T]) -> tuple[T, int]:
        """``read()`` and the applied position of the very state it read (one snapshot)."""
        conn = self.reader
        conn.execute("BEGIN")
        try:
            return read(), self._meta(conn, "applied")
        finally:
            conn.execute("COMMIT")

    def compact(self, *, chunk: int = 500) -> int:
        """Forget the request ids that every replica may forget
        (:meth:`~pyrostore.models.Retention.forgettable`), ``chunk`` at a time, each chunk its
        own short transaction, so writes wait for one chunk at most. Ids without a time
        (written by an older version) and the id of the last applied write (a rejoin compares
        it) are kept. Returns how many went. Not replicated: each replica compacts on its own
        clock."""
        if self.retention is None:
            return 0
        below = self.retention.oldest_kept(self.clock())
        forgotten = 0
        while True:
            with self.transaction() as conn:
                gone = conn.execute(
                    "DELETE FROM requests WHERE request_id IN (SELECT request_id FROM requests "
                    "WHERE request_id < ? AND length(request_id) = 32 "
                    "AND substr(request_id, 13, 1) = '7' AND seq < ? LIMIT ?)",
                    (below, self._applied, chunk)).rowcount
            forgotten += gone
            if gone < chunk:
                return forgotten

    def request_count(self) -> int:
        """How many request ids this replica remembers."""
        return int(self.reader.execute("SELECT COUNT(*) FROM requests").fetchone()[0])

    @staticmethod
    def _meta(conn: sqlite3.Connection, key: str) -> int:
        row = conn.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return int(row[0]) if row else 0

    def _set_meta(self, conn: sqlite3.Connection, key: str, value: int) -> None:
        if key == "applied":
            self._applying = value
        conn.execute(
            "INSERT INTO meta VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value=?",
            (key, value, value),
        )


def _indexes(conn: sqlite3.Connection, table: str) -> list[tuple[str, str]]:
    """The indexes a table was given by name (``CREATE INDEX``), as ``(name, sql)``."""
    return [(str(row[0]), str(row[1])) for row in conn.execute(
        "SELECT name, sql FROM sqlite_master WHERE type='index' AND tbl_name=? "
        "AND sql IS NOT NULL", (table,))]


def _retable(sql: str, pattern: str, replacement: str) -> str:
    """``sql`` (as SQLite keeps it) with the table it names changed: StorageError if the
    pattern is not found (a schema this code does not know)."""
    changed = re.sub(pattern, replacement, sql, count=1)
    if changed == sql:
        raise StorageError(f"cannot stage the table of {sql[:80]!r}")
    return changed


def connect(path: Path) -> sqlite3.Connection:
    """A connection to the database at ``path``: autocommit (transactions are explicit), WAL,
    ``synchronous=FULL``, rows by name, usable from any thread."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10.0)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute(f"PRAGMA journal_size_limit={WAL_KEEP_BYTES}")
    return conn


def open_locked(path: Path, migration_path: list[Step], *, lock: Lock | None = None
                ) -> tuple[Lock, sqlite3.Connection]:
    """The file's lock and a checked connection to it at this release's schema version
    (:func:`open_file`). ``lock``: the file's lock, already held (it stays the caller's if
    opening fails)."""
    held = lock or hold_file(path)
    try:
        return held, open_file(path, migration_path)
    except BaseException:
        if lock is None:
            held.release()
        raise


def open_file(path: Path, migration_path: list[Step]) -> sqlite3.Connection:
    """A connection (:func:`connect`) to the file at ``path``, made 0600 if new, that passed
    ``PRAGMA quick_check``, migrated along ``migration_path`` to this release's schema version.
    A corrupt file is :class:`CorruptFile`, one of a newer schema version
    :class:`~pyrostore.errors.SchemaVersionError` (refused before anything is written to it),
    any other failure to open it a :class:`StorageError`."""
    create_private(path)
    conn: sqlite3.Connection | None = None
    try:
        due = _checked(path)
        conn = connect(path)
        migrate(conn, migration_path, due)
    except BaseException as exc:
        if conn is not None:
            conn.close()
        if isinstance(exc, sqlite3.Error):
            raise sqlite_error(exc, path) from exc
        raise
    make_private(*sqlite_files(path))
    return conn


def _checked(path: Path) -> range:
    """The migration steps the file at ``path`` needs, once it passed ``PRAGMA quick_check``
    and has a schema version this release reads. Read-only: a file refused here keeps every
    byte, its WAL included (a writer's close could fold or delete that)."""
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=10.0)
    try:
        problem = " ".join(conn.execute("PRAGMA quick_check(1)").fetchone()[0].split())
        if problem != "ok":  # its report spans lines: one line is what the caller prints
            raise CorruptFile(f"{path} is corrupt ({problem})", path=str(path), reason=problem)
        return steps_due(conn, str(path))
    finally:
        conn.close()


def sqlite_error(exc: sqlite3.Error, path: Path) -> StorageError:
    """SQLite's ``exc``, met while opening ``path``, as one line that says what to fix."""
    name, text = getattr(exc, "sqlite_errorname", "") or "", str(exc)

    def means(names: tuple[str, ...], words: tuple[str, ...]) -> bool:
        return name.startswith(names) or any(word in text for word in words)

    if means(("SQLITE_CORRUPT", "SQLITE_NOTADB"), ("malformed", "not a database")):
        return CorruptFile(f"{path} is corrupt ({text})", path=str(path), reason=text)
    if means(("SQLITE_FULL",), ("disk is full",)):
        return StorageError(f"{path}: the disk is full ({text})", path=str(path))
    if means(("SQLITE_READONLY", "SQLITE_CANTOPEN", "SQLITE_PERM"),
             ("readonly", "unable to open")):
        return StorageError(f"{path} is not writable ({text})", path=str(path))
    if means(("SQLITE_IOERR",), ("disk I/O error",)):
        return StorageError(f"{path}: {text} (is the disk full, or failing?)", path=str(path))
    return StorageError(f"{path}: {text}", path=str(path))
