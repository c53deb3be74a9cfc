"""A SQLite file's schema version: read first, refused if newer, migrated step by step.

The version is the file's ``PRAGMA user_version`` (:data:`~pyrostore.versions.SCHEMA_VERSION`
for a file this release made). :func:`steps_due` reads it before anything is written, so a
file of a newer release is refused (:class:`~pyrostore.errors.SchemaVersionError`) exactly as
it was. Each kind of file has a migration path, a list of steps where step ``i`` brings
version ``i`` to ``i + 1``; :func:`migrate` runs the steps due, and stamps the new version, in
one transaction: a crash half-way leaves the file at its old version, to be migrated again.
A new file takes the whole path, so it is made the way every older file is upgraded.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence

from pyrostore import versions

Step = Callable[[sqlite3.Connection], None]
"""One step of a migration path: changes the schema inside the open transaction."""


def script(sql: str) -> Step:
    """A step that runs the statements of ``sql`` (``CREATE TABLE ...; ...``) in order."""
    return lambda conn: run_script(conn, sql)


def run_script(conn: sqlite3.Connection, sql: str) -> None:
    """Run each statement of ``sql`` inside the open transaction (``executescript`` would
    commit it first)."""
    statement = ""
    for piece in sql.split(";"):
        statement += piece + ";"
        if sqlite3.complete_statement(statement):  # not a ';' inside a string or a trigger
            if statement.strip(" \t\n;"):
                conn.execute(statement)
            statement = ""


def schema_version(conn: sqlite3.Connection) -> int:
    """The file's schema version (``PRAGMA user_version``)."""
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def steps_due(conn: sqlite3.Connection, path: str) -> range:
    """The steps the file at ``path`` needs (:func:`pyrostore.versions.steps_due`); reads only.
    A file of a newer or unknown version is SchemaVersionError."""
    return versions.steps_due(schema_version(conn), path=path)


def migrate(conn: sqlite3.Connection, path: Sequence[Step], due: range) -> None:
    """Run the steps ``due`` of the migration ``path`` and stamp the version they reach, in one
    transaction (``conn`` in autocommit mode). Nothing to do: nothing written."""
    if len(path) != versions.SCHEMA_VERSION:
        raise ValueError(f"a migration path has {versions.SCHEMA_VERSION} steps, "
                         f"not {len(path)}")
    if not due:
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        for step in due:
            path[step](conn)
        conn.execute(f"PRAGMA user_version = {due.stop:d}")
    except BaseException:
        if conn.in_transaction:  # SQLite ends it itself after some errors
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
