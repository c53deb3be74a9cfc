"""demo.py runs a store of its own, always: next to a store already running on the default
port it buys nothing there and still walks through its kill-and-rejoin part; and it refuses a
name-server port that something already listens on."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from demo import port_free
from pyrostore.client import Client
from pyrostore.discovery import find
from pyrostore.launcher import Cluster
from tests.conftest import ROOT, make_settings

DEFAULT_PORT = 9090
THE_WALK = ("Buy a copy", "Restock it (admin)", "Kill the catalog primary", "back, and level",
            "Kill the coordinator leader", "three coordinators again", "done")
"""Headings the demo prints as it goes, its kill-and-rejoin parts among them."""


def demo(*args: str, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("PYROSTORE_")}
    environ.update(COLUMNS="200", NO_COLOR="1", **env)
    return subprocess.run([sys.executable, str(ROOT / "demo.py"), *args], capture_output=True,
                          text=True, env=environ, timeout=timeout, cwd=ROOT)


@pytest.fixture
def store_on_9090(tmp_path: Path) -> Iterator[Cluster]:
    """A small store whose name server is on the default port, as `pyrostore up` leaves it."""
    if not port_free("127.0.0.1", DEFAULT_PORT):
        pytest.skip(f"port {DEFAULT_PORT} is in use on this machine: the test needs it free "
                    "to start a store there")
    settings = make_settings(tmp_path / "running").replace(ns_port=DEFAULT_PORT)
    cluster = Cluster(settings, coordinators=1, catalogs=1, orders=1, frontends=1)
    try:
        cluster.start(timeout=60)
        yield cluster
    finally:
        cluster.stop()


def contents(cluster: Cluster) -> dict[str, Any]:
    """What the demo would change if it shopped there: stock, orders, registered names."""
    with Client(settings=cluster.settings) as store:
        books = sorted((book["item"], book["stock"], book["cost"])
                       for topic in store.topics() for book in
                       (store.lookup(found["item"]) for found in store.search(topic)))
        return {"books": books, "orders": store.orders(limit=100),
                "names": sorted(find(cluster.settings))}


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_the_demo_leaves_a_running_store_alone(store_on_9090: Cluster) -> None:
    before = contents(store_on_9090)
    assert before["orders"] == []
    # a shell whose variables point at the running store, as after `pyrostore up`
    pointed = {"PYROSTORE_NS_PORT": str(DEFAULT_PORT),
               "PYROSTORE_CERTS_DIR": str(store_on_9090.settings.certificates)}
    done = demo(env=pointed, timeout=540)
    assert done.returncode == 0, f"{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    for heading in THE_WALK:
        assert heading in done.stdout, heading
    assert "using the store already running" not in done.stdout
    assert f"name server on 127.0.0.1:{DEFAULT_PORT}" not in done.stdout
    assert contents(store_on_9090) == before  # not a copy bought, not a book restocked


def test_a_port_in_use_is_refused(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = demo("--ns-port", str(port), env={}, timeout=120)
    assert done.returncode == 2, f"{done.stdout}\n{done.stderr}"
    assert f"port {port} of 127.0.0.1 is in use" in done.stdout
    assert "leave out --ns-port" in done.stdout
