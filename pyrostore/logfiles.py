"""Where a process's log goes: standard error, or a file rotated by size.

With ``log_file`` set (``pyrostore up`` sets it for each service it starts), the log goes to
that file; once it would pass ``log_max_bytes`` it becomes ``<file>.1`` (the older ones
``.2`` … up to ``log_backups``, the oldest deleted) and a new file starts, so a service's
logs never take more than ``(log_backups + 1) x log_max_bytes``.

A service started by ``pyrostore up`` also has its standard output and error in that file
(a crash's traceback, a library's prints, anything written before logging was set up).
:class:`RotatingLog` keeps them there: at each rotation, descriptors 1 and 2, if they wrote to
the log file, are moved to the new one, so what a dying process writes ends up in its current
log, not in a rotated one.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
from logging.handlers import RotatingFileHandler
from pathlib import Path

from pyrostore.config import Settings
from pyrostore.datadir import private_opener, storage_error

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
STANDARD_STREAMS = (1, 2)


class RotatingLog(RotatingFileHandler):
    """A size-rotated log file (0600) that takes the process's standard output and error
    along to each new file, if they were writing to it when it was opened."""

    def __init__(self, path: Path, *, max_bytes: int, backups: int) -> None:
        super().__init__(path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8")
        stream = self._current()
        self.following = [fd for fd in STANDARD_STREAMS if _same_file(fd, stream.fileno())]
        """The standard descriptors that write to this log (moved along at each rotation)."""

    def _open(self) -> io.TextIOWrapper:
        return open(self.baseFilename, "a", encoding=self.encoding, errors=self.errors,
                    opener=private_opener)

    def doRollover(self) -> None:
        """Rotate, then point the followed descriptors at the new file."""
        for stream in (sys.stdout, sys.stderr):  # what they hold belongs to the old file
            with contextlib.suppress(OSError, ValueError, AttributeError):
                stream.flush()
        super().doRollover()
        if self.following:
            fileno = self._current().fileno()
            for fd in self.following:
                os.dup2(fileno, fd)

    def _current(self) -> io.TextIOWrapper:
        if self.stream is None:
            self.stream = self._open()
        return self.stream


def configure_logging(settings: Settings) -> None:
    """Send this process's log to ``settings.log_file`` (rotated), or to standard error if
    unset, at ``settings.log_level``. Raises StorageError if the file cannot be opened."""
    if str(settings.log_file) in ("", "."):
        logging.basicConfig(level=settings.log_level, format=LOG_FORMAT)
        return
    try:
        handler = RotatingLog(settings.log_file, max_bytes=settings.log_max_bytes,
                              backups=settings.log_backups)
    except OSError as exc:
        raise storage_error(exc, f"log file {settings.log_file}") from exc
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    logging.basicConfig(level=settings.log_level, handlers=[handler])


def _same_file(fd: int, other: int) -> bool:
    """Whether descriptors ``fd`` and ``other`` are open on the same file."""
    try:
        mine, theirs = os.fstat(fd), os.fstat(other)
    except OSError:
        return False
    return (mine.st_dev, mine.st_ino) == (theirs.st_dev, theirs.st_ino)
