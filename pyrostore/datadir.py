"""The data directory's files: each held by one process, readable by their owner only.

- **Locks.** ``pyrostore up`` holds ``<data>/LOCK`` (:func:`hold_directory`) for its whole life;
  every process with a SQLite file open holds ``<file>.lock`` (:func:`hold_file`): a catalog or
  order replica, a coordinator. A lock is ``fcntl.flock``: advisory, and released by the kernel
  when its process dies, so a ``kill -9`` never leaves a stale one. The file holds the holder's
  pid, which a refused second process names. The directory lock does not cover the files:
  ``up``'s own children take only their files' locks.
- **Modes.** The directory is made 0700 (and tightened to it if it is ours and looser), every
  file 0600. The ``pyrostore`` command also sets its umask to 077; both are meant.
- **Corrupt files** are never deleted: :func:`move_aside` renames one, with its ``-wal`` and
  ``-shm``, to ``<name>.corrupt-<UTC time>``.

Every failure of the file system is a :class:`~pyrostore.errors.StorageError` that says what
to fix, in one line.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import glob
import os
import stat
from pathlib import Path

from pyrostore.errors import StorageError

PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600
SQLITE_SIDECARS = ("-wal", "-shm")
"""What SQLite keeps beside a database in WAL mode."""
_CREATE = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC


class Lock:
    """An exclusive ``flock`` on a file holding the holder's pid; see :func:`hold_file`."""

    def __init__(self, path: Path, *, what: str, hint: str) -> None:
        self.path = path
        try:
            fd = os.open(path, _CREATE, PRIVATE_FILE)
        except OSError as exc:
            raise storage_error(exc, what) from exc
        self._file = os.fdopen(fd, "r+b", buffering=0)  # closed (and unlocked) if dropped
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.fchmod(fd, PRIVATE_FILE)
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except BlockingIOError:  # flock's answer when another process holds it
            holder = _pid_in(fd)
            self._file.close()
            raise StorageError(f"{what} is in use by "
                               f"{'pid ' + str(holder) if holder else 'another process'} ({hint})",
                               path=str(path), pid=holder) from None
        except OSError as exc:
            self._file.close()
            raise storage_error(exc, what) from exc

    def release(self) -> None:
        """Let go of it (again: nothing); the file stays, empty."""
        if self._file.closed:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(self._file.fileno(), 0)
        self._file.close()


def hold_directory(data_dir: Path) -> Lock:
    """``<data>/LOCK``, held by one ``pyrostore up`` at a time; makes the directory if need be."""
    what = f"data directory {data_dir}"
    private_dir(data_dir, what=what)
    return Lock(data_dir / "LOCK", what=what, hint="another `pyrostore up`?")


def hold_file(path: Path) -> Lock:
    """``<path>.lock``, held while ``path`` is open: one process per data file."""
    private_dir(path.parent, what=f"data directory {path.parent}")
    return Lock(path.with_name(path.name + ".lock"), what=str(path),
                hint="another process with the same --id and --data?")


def private_dir(path: Path, *, what: str = "") -> None:
    """Make directory ``path`` 0700, or tighten it to that if it is ours and looser. A shared
    directory (sticky, like /tmp) is refused: others could plant files in it."""
    what = what or str(path)
    try:
        path.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
        info = path.stat()
        if info.st_mode & stat.S_ISVTX:
            raise StorageError(f"{what} is shared with other users (sticky, like /tmp): "
                               "give the store a directory of its own", path=str(path))
        if info.st_uid == os.geteuid() and info.st_mode & 0o077:
            path.chmod(stat.S_IMODE(info.st_mode) & PRIVATE_DIR)
    except OSError as exc:
        raise storage_error(exc, what) from exc


def create_private(path: Path) -> None:
    """Make file ``path`` (empty) readable by its owner only, or tighten it if it exists."""
    try:
        os.close(os.open(path, _CREATE, PRIVATE_FILE))
        path.chmod(PRIVATE_FILE)
    except OSError as exc:
        raise storage_error(exc, str(path)) from exc


def write_private(path: Path, text: str) -> None:
    """Make ``path`` hold ``text``, readable by its owner only: written beside it, then renamed
    over it, so that a full disk leaves the old file (or none), never half a new one."""
    partial = path.with_name(path.name + ".partial")
    try:
        with open(partial, "w", encoding="utf-8", opener=private_opener) as handle:
            handle.write(text)
        partial.replace(path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            partial.unlink()
        raise storage_error(exc, str(path)) from exc


def make_private(*paths: Path) -> None:
    """Tighten each of ``paths`` that exists to 0600 (files others made: SQLite's, Pyro5's)."""
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            path.chmod(PRIVATE_FILE)


def private_opener(path: str, flags: int) -> int:
    """An ``opener`` for :func:`open` that makes the file 0600 (a log file)."""
    fd = os.open(path, flags | os.O_NOFOLLOW, PRIVATE_FILE)
    os.fchmod(fd, PRIVATE_FILE)
    return fd


def sqlite_files(path: Path) -> list[Path]:
    """A SQLite database and the WAL files beside it."""
    return [path, *(path.with_name(path.name + suffix) for suffix in SQLITE_SIDECARS)]


def move_aside(path: Path, now: datetime.datetime) -> Path:
    """Rename the database ``path`` and its WAL files to ``<name>.corrupt-<UTC time>`` (a later
    one in the same second gets ``.2``, ...); the new path of the database."""
    stamp = now.astimezone(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    aside = path.with_name(f"{path.name}.corrupt-{stamp}")
    count = 1
    while any(p.exists() for p in sqlite_files(aside)):
        count += 1
        aside = path.with_name(f"{path.name}.corrupt-{stamp}.{count}")
    try:
        for source, target in zip(sqlite_files(path), sqlite_files(aside), strict=True):
            with contextlib.suppress(FileNotFoundError):
                source.rename(target)
    except OSError as exc:
        raise storage_error(exc, str(path)) from exc
    make_private(*sqlite_files(aside))
    return aside


def set_aside(path: Path) -> list[Path]:
    """The copies of the database ``path`` that :func:`move_aside` made, oldest first."""
    return sorted(aside for aside in path.parent.glob(f"{glob.escape(path.name)}.corrupt-*")
                  if not aside.name.endswith(SQLITE_SIDECARS))


def storage_error(exc: OSError, what: str) -> StorageError:
    """``exc``, met while using ``what``, as one line that says what to fix."""
    reason = exc.strerror or str(exc)
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return StorageError(f"{what}: the disk is full ({reason})", path=exc.filename)
    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return StorageError(f"{what} is not writable ({reason})", path=exc.filename)
    return StorageError(f"{what}: {reason}", path=exc.filename)


def _pid_in(fd: int) -> int | None:
    with contextlib.suppress(OSError, ValueError):
        return int(os.pread(fd, 32, 0).decode().strip())
    return None
