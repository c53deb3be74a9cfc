"""Fixtures: real stores (name server + replicas as processes) on free ports of 127.0.0.1.

Every store a fixture starts is stopped by PID when the fixture ends, passed or failed. The
suite runs in secure mode: one CA and its certificates for the session (:data:`CERTS`), the
test process an admin unless a test lends a thread another identity (``tls.acting_as``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pyrostore import certs, limits, tls
from pyrostore.client import Client
from pyrostore.config import Settings
from pyrostore.discovery import survey
from pyrostore.launcher import Cluster
from pyrostore.serving import fixed_port

ROOT = Path(__file__).resolve().parent.parent
CERTS: Path | None = None
"""The session's certificate directory (set by :func:`secure_session`)."""


@pytest.fixture(scope="session", autouse=True)
def secure_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One CA, node, admin and shopper certificates for the session; this process an admin."""
    global CERTS
    CERTS = tmp_path_factory.mktemp("certs")
    certs.ensure(CERTS, hosts=["127.0.0.1"])
    limits.install()
    tls.install(certs.paths(CERTS, "admin"))
    yield CERTS


def identity(role: str, name: str | None = None) -> tls.Identity:
    """One of the session's identities (``client`` needs a name: ``shopper`` exists)."""
    assert CERTS is not None
    return certs.paths(CERTS, role, name)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 a moment ago, below the ephemeral range (so that no
    connection takes it before the name server binds it)."""
    return fixed_port("127.0.0.1")


def wait_until(condition: Callable[[], object], *, timeout: float = 20.0,
               what: str = "condition") -> object:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    delay = 0.01
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 2, 0.2)


def settled(cluster: Cluster, *, timeout: float = 20.0) -> None:
    """Wait until the store has settled every buy it began: no take open in the outbox of
    any live catalog replica, all of them at one position (after that the store writes
    nothing on its own, so a test may compare its state before and after)."""
    def quiet() -> bool:
        rows = [row for row in survey(cluster.settings)
                if row["role"] == "catalog" and row.get("state") != "down"]
        return bool(rows) and all(row.get("pending_buys") == 0 for row in rows) \
            and len({row.get("applied") for row in rows}) == 1
    wait_until(quiet, timeout=timeout, what="every take in the outbox settled")


def make_settings(data_dir: Path) -> Settings:
    """Settings for a test store: a fresh port, its own data, no PYROSTORE_* from the shell."""
    return Settings.from_env(environ={}, ns_port=free_port(), data_dir=data_dir,
                             call_timeout=2.0, refresh_interval=1.0, test_hooks=True,
                             certs_dir=CERTS)


def start_cluster(data_dir: Path, *, catalogs: int = 2, orders: int = 2, frontends: int = 1,
                  no_cache: bool = False, **settings_: Any) -> Cluster:
    """A started store (with any setting changed by ``settings_``); the caller stops it."""
    settings = make_settings(data_dir).replace(cache=not no_cache, **settings_)
    cluster = Cluster(settings, catalogs=catalogs, orders=orders, frontends=frontends)
    try:
        cluster.start(timeout=30)
    except BaseException:
        cluster.stop()
        raise
    return cluster


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """One store shared by a test module (tests that need fresh stock make their own)."""
    cluster = start_cluster(tmp_path_factory.mktemp("store"))
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def fresh_store(tmp_path: Path) -> Iterator[Cluster]:
    """A store of its own for one test."""
    cluster = start_cluster(tmp_path / "store")
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def client(store: Cluster) -> Iterator[Client]:
    """A client of the module's store."""
    with Client(settings=store.settings) as connected:
        yield connected


def run_cli(settings: Settings, *args: str, timeout: float = 60.0,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m pyrostore ARGS`` against the store of ``settings`` (``env``: more variables)."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("PYROSTORE_")}
    environ.update({"PYROSTORE_NS_PORT": str(settings.ns_port),
                    "PYROSTORE_DATA_DIR": str(settings.data_dir),
                    "PYROSTORE_CERTS_DIR": str(settings.certificates), "COLUMNS": "200",
                    "NO_COLOR": "1", **(env or {})})
    return subprocess.run([sys.executable, "-m", "pyrostore", *args], capture_output=True,
                          text=True, env=environ, timeout=timeout, cwd=ROOT)
