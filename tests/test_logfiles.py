"""Log files rotate by size, keep a bounded number of old ones, and a process whose output
goes to its log file (as ``pyrostore up`` starts services) still writes a crash there."""

from __future__ import annotations

import logging
import stat
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from pyrostore.config import Settings
from pyrostore.datadir import private_opener
from pyrostore.errors import StorageError
from pyrostore.logfiles import RotatingLog, configure_logging
from tests.conftest import ROOT


@pytest.fixture
def logger() -> Iterator[logging.Logger]:
    """A logger of its own, its handlers closed afterwards."""
    named = logging.getLogger("test_logfiles")
    named.propagate = False
    named.setLevel(logging.INFO)
    try:
        yield named
    finally:
        for handler in list(named.handlers):
            named.removeHandler(handler)
            handler.close()


def test_a_log_rotates_at_its_size_and_keeps_its_backups(tmp_path: Path,
                                                         logger: logging.Logger) -> None:
    path = tmp_path / "catalog-1.log"
    logger.addHandler(RotatingLog(path, max_bytes=1024, backups=2))
    for line in range(200):
        logger.info("line %03d %s", line, "x" * 40)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "catalog-1.log", "catalog-1.log.1", "catalog-1.log.2"]
    for kept in tmp_path.iterdir():
        assert kept.stat().st_size <= 1024
        assert stat.S_IMODE(kept.stat().st_mode) == 0o600
    assert "line 199" in path.read_text()  # the newest in the current file
    assert "line 000" not in "".join(p.read_text() for p in tmp_path.iterdir())  # gone


def test_standard_error_writing_elsewhere_is_left_alone(tmp_path: Path) -> None:
    handler = RotatingLog(tmp_path / "mine.log", max_bytes=1024, backups=1)
    try:
        assert handler.following == []  # pytest's own output is no log file
    finally:
        handler.close()


CRASHING_SERVICE = textwrap.dedent("""
    import logging, sys
    from pathlib import Path
    from pyrostore.config import Settings
    from pyrostore.logfiles import configure_logging
    configure_logging(Settings(log_file=Path(sys.argv[1]), log_max_bytes=2048, log_backups=3))
    for line in range(100):
        logging.getLogger("service").info("working %03d %s", line, "x" * 40)
    print("a stray print", flush=True)
    raise SystemExit(f"died after {line + 1} lines: {1 / 0}")
""")


def test_a_crash_after_rotation_lands_in_the_current_log(tmp_path: Path) -> None:
    path = tmp_path / "order-1.log"
    with open(path, "ab", opener=private_opener) as output:  # as the launcher starts a child
        done = subprocess.run([sys.executable, "-c", CRASHING_SERVICE, str(path)],
                              stdout=output, stderr=output, cwd=ROOT, timeout=60)
    assert done.returncode == 1
    current = path.read_text()
    assert "working 099" in current
    assert "a stray print" in current
    assert "ZeroDivisionError" in current  # the traceback, in the file a reader opens first
    rotated = [path.with_name(f"order-1.log.{n}") for n in (1, 2, 3)]
    assert all(p.exists() for p in rotated)
    assert not path.with_name("order-1.log.4").exists()
    assert all("Traceback" not in p.read_text() for p in rotated)


def test_an_unwritable_log_file_is_a_storage_error(tmp_path: Path) -> None:
    settings = Settings(log_file=tmp_path / "no-such-dir" / "x.log")
    with pytest.raises(StorageError, match="log file"):
        configure_logging(settings)
