"""Installed like any PyPA project: the wheel carries everything the package needs (the default
inventory included), and a store started from a fresh virtualenv (not editable, not this
checkout) in another directory serves, answers a lookup, and stops cleanly.

The slow test builds a wheel from a copy of the project (so the build leaves nothing in the
checkout), installs it with its dependencies into a new venv without the system's or the
test run's site-packages, and runs the venv's own ``pyrostore`` from an unrelated directory.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import pyrostore
from pyrostore.config import DEFAULT_INVENTORY
from tests.conftest import ROOT, free_port, wait_until

INVENTORY_IN_WHEEL = "pyrostore/data/inventory.csv"
NOT_SOURCE = shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info", "__pycache__",
                                    ".*_cache", ".hypothesis", "pyrostore-data", "verify-out")
"""What a fresh clone would not have: the copy that is built leaves these out."""


def test_the_default_inventory_is_package_data() -> None:
    package = Path(pyrostore.__file__).resolve().parent
    assert DEFAULT_INVENTORY.is_relative_to(package), DEFAULT_INVENTORY
    assert DEFAULT_INVENTORY.read_text().startswith("item,title,topic,stock,cost\n")


def clean_env() -> dict[str, str]:
    """The environment without this run's store settings, import path or virtualenv."""
    return {k: v for k, v in os.environ.items()
            if not k.startswith("PYROSTORE_") and k not in ("PYTHONPATH", "VIRTUAL_ENV")} | {
        "COLUMNS": "200", "NO_COLOR": "1"}


def run(argv: list[str], *, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` in ``cwd`` with :func:`clean_env`; fail with its output if it fails."""
    done = subprocess.run(argv, cwd=cwd, env=clean_env(), capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, f"{argv}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel built the standard way (PEP 517, isolated) from a copy of the project, as a
    fresh clone has it (a build writes into its source tree)."""
    source = tmp_path_factory.mktemp("source") / "pyrostore"
    shutil.copytree(ROOT, source, ignore=NOT_SOURCE)
    out = tmp_path_factory.mktemp("wheel")
    run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(out),
         str(source)], cwd=source)
    (built,) = out.glob("pyrostore-*.whl")
    return built


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv with the wheel and its dependencies installed."""
    path = tmp_path_factory.mktemp("venv")
    run([sys.executable, "-m", "venv", str(path)], cwd=path)
    run([str(path / "bin" / "python"), "-m", "pip", "install", "--quiet", str(wheel)], cwd=path)
    return path


@pytest.mark.slow
@pytest.mark.timeout(600)  # the build installs setuptools in its isolated environment first
def test_the_wheel_holds_the_inventory(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        assert INVENTORY_IN_WHEEL in archive.namelist()
        assert archive.read(INVENTORY_IN_WHEEL) == DEFAULT_INVENTORY.read_bytes()


@pytest.fixture
def elsewhere(tmp_path: Path) -> Path:
    """A working directory that has nothing of the project in it."""
    path = tmp_path / "elsewhere"
    path.mkdir()
    return path


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_an_installed_store_runs_from_any_directory(venv: Path, elsewhere: Path) -> None:
    python, command = venv / "bin" / "python", str(venv / "bin" / "pyrostore")
    where = run([str(python), "-c", "import pyrostore; print(pyrostore.__file__)"], cwd=elsewhere)
    assert Path(where.stdout.strip()).is_relative_to(venv), where.stdout  # not this checkout
    port = str(free_port())
    with up(command, port, elsewhere) as (process, log):
        def lookup() -> subprocess.CompletedProcess[str] | None:
            assert process.poll() is None, f"pyrostore up exited:\n{log()}"
            done = subprocess.run([command, "lookup", "1", "--json", "--ns-port", port],
                                  cwd=elsewhere, env=clean_env(), capture_output=True,
                                  text=True, timeout=120)
            return done if done.returncode == 0 else None

        answered = wait_until(lookup, timeout=240, what=f"a lookup; up's output:\n{log()}")
        assert isinstance(answered, subprocess.CompletedProcess)
        book = json.loads(answered.stdout)
        assert book["item"] == 1 and book["stock"] == 10, book  # seeded from the package data
        assert (elsewhere / "pyrostore-data" / "catalog-1.sqlite3").is_file()


@contextlib.contextmanager
def up(command: str, port: str, cwd: Path
       ) -> Iterator[tuple[subprocess.Popen[bytes], Callable[[], str]]]:
    """``pyrostore up`` (one of each service) in ``cwd``, and what it printed so far; on
    leaving, Ctrl-C, which must end it with 0 and every process of the store, the name server
    included."""
    log_path = cwd.parent / "up.log"
    with open(log_path, "w") as log_file:
        process = subprocess.Popen(
            [command, "up", "--ns-port", port, "--coordinators", "1", "--catalogs", "1",
             "--orders", "1"], cwd=cwd, env=clean_env(), stdout=log_file,
            stderr=subprocess.STDOUT, start_new_session=True)
    pids: list[int] = []
    try:
        yield process, log_path.read_text
        status = run([command, "status", "--json", "--ns-port", port], cwd=cwd, timeout=120)
        rows = json.loads(status.stdout)
        assert {row["role"] for row in rows} >= {"coordinator", "catalog", "order", "frontend"}
        pids = [int(row["pid"]) for row in rows if row.get("pid")]
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=120) == 0, log_path.read_text()
        wait_until(lambda: not any(map(alive, pids)), timeout=30, what="every service gone")
        assert not listening(int(port)), "the name server outlived pyrostore up"
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        for pid in filter(alive, pids):
            os.kill(pid, signal.SIGKILL)


def alive(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def listening(port: int) -> bool:
    """Whether something accepts connections on 127.0.0.1:``port``."""
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0
