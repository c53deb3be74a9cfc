"""Protocol versions: a process of another release is refused once, clearly, and the store
keeps serving. Real processes on a real store; the odd one out speaks another version through
``PYROSTORE_TEST_PROTOCOL_VERSION``."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import Pyro5.api
import Pyro5.errors
import pytest

from pyrostore import tls
from pyrostore.client import Client
from pyrostore.discovery import Coordinators, ReplicaSet, find, peer_uri, survey
from pyrostore.errors import NotServing, OutcomeUnknown, ProtocolVersionError, Unavailable
from pyrostore.handshake import VersionedDaemon
from pyrostore.launcher import Cluster
from pyrostore.transport import CallLost, make_proxy
from pyrostore.versions import PROTOCOL_VERSION, REFUSAL
from tests.conftest import ROOT, identity, make_settings

OTHER = PROTOCOL_VERSION + 98


def run_other_release(store: Cluster, role: str, replica_id: int, client: Client
                      ) -> tuple[int, str, int]:
    """Run replica ``replica_id`` of ``role`` speaking protocol :data:`OTHER` beside ``store``,
    reading through ``client`` until it exits: its exit code, its output, the reads done."""
    env = {**os.environ, **store.settings.dump(),
           "PYROSTORE_CERTS_DIR": str(store.settings.certificates), "PYROSTORE_IDENTITY": "",
           "PYROSTORE_TEST_PROTOCOL_VERSION": str(OTHER)}
    process = subprocess.Popen(
        [sys.executable, "-m", "pyrostore", *store.child_argv(role, replica_id)], env=env,
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    reads, deadline = 0, time.monotonic() + 60
    try:
        while process.poll() is None and time.monotonic() < deadline:
            assert client.lookup(1 + reads % 7)["item"] == 1 + reads % 7  # the store serves
            reads += 1
    finally:
        if process.poll() is None:
            process.kill()
        output = process.communicate(timeout=30)[0]
    return process.returncode, output, reads


def test_every_service_says_which_protocol_it_speaks(store: Cluster) -> None:
    rows = survey(store.settings)
    assert {row["role"] for row in rows} == {"coordinator", "catalog", "order", "frontend"}
    assert {row["protocol"] for row in rows} == {PROTOCOL_VERSION}


def serving_ids(store: Cluster, role: str) -> set[int]:
    return {row["id"] for row in survey(store.settings)
            if row["role"] == role and row.get("state") != "down"}


def test_a_replica_of_another_protocol_is_refused_and_the_group_serves_on(
        store: Cluster, client: Client) -> None:
    code, output, reads = run_other_release(store, "catalog", 3, client)
    assert code == 1, output
    assert f"error: {REFUSAL}: pyrostore.coordinator." in output
    assert f"speaks pyrostore protocol version {PROTOCOL_VERSION}, the caller {OTHER}" in output
    assert reads > 0
    assert serving_ids(store, "catalog") == {1, 2}  # not in the view, and withdrawn
    assert "pyrostore.catalog.3" not in find(store.settings, "catalog")
    assert client.buy(3, 1)["item"] == 3


def test_a_frontend_of_another_protocol_is_refused(store: Cluster, client: Client) -> None:
    code, output, _ = run_other_release(store, "frontend", 2, client)
    assert code == 1, output
    assert f"error: {REFUSAL}: " in output and f"the caller {OTHER}" in output
    assert "pyrostore.frontend.2" not in find(store.settings, "frontend")
    assert client.lookup(2)["item"] == 2


@pytest.mark.parametrize("target", ["frontend", "catalog", "catalog.peer", "coordinator"])
def test_a_caller_of_another_protocol_gets_the_typed_error_at_once(
        store: Cluster, target: str) -> None:
    role = target.split(".")[0]
    uri = find(store.settings, role)[f"pyrostore.{role}.1"]
    other = store.settings.replace(test_protocol_version=OTHER)
    with make_proxy(peer_uri(uri) if target.endswith(".peer") else uri, other) as proxy, \
            pytest.raises(ProtocolVersionError, match=f"the caller {OTHER}"):
        proxy.info() if not target.endswith(".peer") else proxy.position(0)


def test_a_plain_pyro5_caller_is_welcome_at_the_frontend_only(store: Cluster) -> None:
    uris = find(store.settings)
    with Pyro5.api.Proxy(uris["pyrostore.frontend.1"]) as frontend:
        assert frontend.lookup(1)["item"] == 1
    with Pyro5.api.Proxy(uris["pyrostore.catalog.1"]) as catalog, \
            pytest.raises(Pyro5.errors.CommunicationError, match="speaks none"):
        catalog.lookup(1)


@Pyro5.api.expose
class Replica:
    """A stand-in replica that says who answered."""

    def __init__(self, name: str) -> None:
        self.name = name

    def lookup(self, item: int) -> str:
        return self.name


@pytest.fixture
def two_releases() -> Iterator[dict[str, str]]:
    """Two stand-in catalog replicas in this process: one of this release, one of another."""
    uris, daemons, threads = {}, [], []
    for replica_id, version in ((1, PROTOCOL_VERSION), (9, OTHER)):
        name = f"pyrostore.catalog.{replica_id}"
        with tls.acting_as(identity("node")):
            daemon = VersionedDaemon(host="127.0.0.1", port=0, version=version, who=name,
                                     plain_ok=False)
        uris[name] = str(daemon.register(Replica(name), name))
        thread = threading.Thread(target=daemon.requestLoop, daemon=True)
        thread.start()
        daemons.append(daemon)
        threads.append(thread)
    try:
        yield uris
    finally:
        for daemon, thread in zip(daemons, threads, strict=True):
            daemon.shutdown()
            thread.join(10)


def replica_set(tmp_path: Path, known: dict[str, str], refusals: list[ProtocolVersionError]
                ) -> ReplicaSet:
    replicas = ReplicaSet(make_settings(tmp_path), "catalog", on_refused=refusals.append)
    replicas._by_name = dict(known)  # as if found: no name server here
    replicas._refreshed_at = float("inf")  # and never stale
    return replicas


def test_a_reader_skips_a_replica_of_another_protocol(
        tmp_path: Path, two_releases: dict[str, str]) -> None:
    refusals: list[ProtocolVersionError] = []
    replicas = replica_set(tmp_path, two_releases, refusals)
    try:
        answers = {replicas.call("lookup", 1) for _ in range(10)}
    finally:
        replicas.close()
    assert answers == {"pyrostore.catalog.1"} and refusals == []


def test_a_reader_every_replica_refuses_raises_at_once(
        tmp_path: Path, two_releases: dict[str, str]) -> None:
    refusals: list[ProtocolVersionError] = []
    other = {"pyrostore.catalog.9": two_releases["pyrostore.catalog.9"]}
    replicas = replica_set(tmp_path, other, refusals)
    try:  # with 600 s of patience: were it waited out, the test's timeout would fail it
        with pytest.raises(ProtocolVersionError, match=f"speaks pyrostore protocol version "
                                                       f"{OTHER}, the caller {PROTOCOL_VERSION}"):
            replicas.call("lookup", 1, patience=600)
    finally:
        replicas.close()
    assert len(refusals) == 1


@Pyro5.api.expose
class Refused:
    """A stand-in service of this release that was itself refused by one it called."""

    def lookup(self, item: int) -> str:
        raise ProtocolVersionError("protocol version mismatch: refused by the catalog")

    def view(self, role: str) -> dict[str, Any]:
        raise NotServing("not ready yet")


@contextlib.contextmanager
def stand_ins(*specs: tuple[str, int, object]) -> Iterator[list[str]]:
    """Daemons in this process, one per ``(name, protocol version, object)``: their URIs."""
    uris, daemons, threads = [], [], []
    try:
        for name, version, served in specs:
            with tls.acting_as(identity("node")):
                daemon = VersionedDaemon(host="127.0.0.1", port=0, version=version, who=name,
                                         plain_ok=False)
            daemons.append(daemon)
            uris.append(str(daemon.register(served, name)))
            threads.append(threading.Thread(target=daemon.requestLoop, daemon=True))
            threads[-1].start()
        yield uris
    finally:
        for daemon in daemons:
            daemon.shutdown()
        for thread in threads:
            thread.join(10)


def test_a_refusal_met_by_the_service_called_is_not_news_about_the_caller(
        tmp_path: Path) -> None:
    """The order primary refused by the catalog (it stops) answers its caller with the
    refusal: to that caller it is a call that may have run, never a reason to stop."""
    refusals: list[ProtocolVersionError] = []
    with stand_ins(("pyrostore.catalog.1", PROTOCOL_VERSION, Refused())) as (uri,):
        replicas = replica_set(tmp_path, {"pyrostore.catalog.1": uri}, refusals)
        try:
            with pytest.raises(CallLost, match="refused by the catalog"):
                replicas._pool.call(uri, "lookup", 1)
            with pytest.raises(OutcomeUnknown):
                replicas.call("lookup", 1, patience=0.5)
        finally:
            replicas.close()
    assert refusals == []


def test_a_refusal_after_a_call_that_may_have_run_is_an_unknown_outcome(
        tmp_path: Path, two_releases: dict[str, str]) -> None:
    refusals: list[ProtocolVersionError] = []
    replicas = replica_set(tmp_path, two_releases, refusals)
    try:
        with pytest.raises(OutcomeUnknown, match="may or may not have run") as raised:
            replicas._refused(ProtocolVersionError("refused"), two_releases[
                "pyrostore.catalog.9"], primary=True, may_have_run=True)
    finally:
        replicas.close()
    assert isinstance(raised.value.__cause__, ProtocolVersionError) and len(refusals) == 1


def test_one_coordinator_of_another_release_is_skipped_not_obeyed(tmp_path: Path) -> None:
    """A coordinator left running from another release refuses this process; the others
    (here not ready) decide: no answer yet is Unavailable, which callers wait out. Only
    when every coordinator refuses is the refusal the answer."""
    with stand_ins(("pyrostore.coordinator.1", OTHER, Refused()),
                   ("pyrostore.coordinator.2", PROTOCOL_VERSION, Refused()),
                   ("pyrostore.coordinator.3", OTHER, Refused())) as uris:
        coordinators = Coordinators(make_settings(tmp_path))
        try:
            coordinators._configured = uris
            with pytest.raises(Unavailable, match="no coordinator could take view") as raised:
                coordinators.read("view", "catalog")
            assert not isinstance(raised.value, ProtocolVersionError)
            coordinators._configured = [uris[0], uris[2]]
            with pytest.raises(ProtocolVersionError):
                coordinators.read("view", "catalog")
        finally:
            coordinators.close()
