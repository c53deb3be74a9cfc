"""The store across hosts: network namespaces joined by a bridge, each a machine with its own
address, and partitions that drop packets silently, as a cut cable does.

The standard layout (verifier/layouts.py) puts the name server and a coordinator on ``ns``,
a coordinator, catalog and order replica on each of ``a`` and ``b``, frontend 1 on ``fe`` and
frontend 2 on ``ctl``, where this test process talks from (its thread enters that namespace).
Every test needs root; without it they skip, saying so. CI runs as root.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import Pyro5.errors
import pytest

from pyrostore.client import Client
from pyrostore.clusterfile import ClusterSpec
from pyrostore.errors import PyrostoreError
from pyrostore.models import new_request_id
from pyrostore.transport import make_proxy
from tests.conftest import ROOT, wait_until
from tests.shopping import Shoppers, add_books, check_ledger
from verifier import layouts
from verifier.deployment import Deployment

pytestmark = pytest.mark.timeout(300)
STORE = layouts.STORE_SETTINGS


def namespaces_unavailable() -> str | None:
    """Why namespace hosts cannot be made here, or None."""
    if os.geteuid() != 0:
        return "namespace hosts need root (CI runs these as root)"
    from verifier.netns import Hosts

    return Hosts.available()


@pytest.fixture
def hosts() -> Iterator[Any]:
    """The five hosts of the standard layout; removed afterwards, whatever happened."""
    reason = namespaces_unavailable()
    if reason:
        pytest.skip(reason)
    from verifier.netns import Hosts

    with Hosts(list(layouts.HOSTS)) as made:
        yield made


@pytest.fixture
def spread(hosts: Any, tmp_path: Path) -> Iterator[Deployment]:
    """The store on the hosts, this thread in ``ctl``; healed and stopped afterwards."""
    from verifier.setns import entered

    spec = ClusterSpec.parse(layouts.cluster_file(addresses(hosts), settings=STORE))
    with entered(hosts["ctl"].namespace):
        deployment = Deployment(spec, tmp_path / "store", wraps={
            h: ["ip", "netns", "exec", hosts[h].namespace] for h in layouts.HOSTS})
        try:
            deployment.start()
            yield deployment
        finally:
            hosts.heal()
            deployment.stop()


def addresses(hosts: Any) -> dict[str, str]:
    return {h: hosts[h].address for h in layouts.HOSTS}


def served_stock(uri: str, deployment: Deployment, item: int) -> int | None:
    """What a frontend answers for ``item``'s stock; None if it answers with an error."""
    try:
        with make_proxy(uri, deployment.admin, timeout=20.0) as frontend:
            return int(frontend.lookup(item)["stock"])
    except (PyrostoreError, Pyro5.errors.CommunicationError):
        return None


def acked_since(shoppers: Shoppers, moment: float) -> int:
    with shoppers.ledger.lock:
        return sum(t > moment for t in shoppers.ledger.acked_at)


def test_the_store_starts_from_its_cluster_file_over_tls_and_status_sees_every_host(
        hosts: Any, tmp_path: Path) -> None:
    """``pyrostore up --cluster FILE --on HOST`` on each host, as an operator would."""
    cluster = tmp_path / "cluster.toml"
    cluster.write_text(layouts.cluster_file(addresses(hosts), settings=STORE))
    ca = tmp_path / "ca"
    pyrostore = [sys.executable, "-m", "pyrostore"]
    for argv in (["certs", "init"], ["certs", "cluster", "--cluster", str(cluster)]):
        subprocess.run([*pyrostore, *argv, "--certs-dir", str(ca)], check=True,
                       capture_output=True, cwd=ROOT)
    ups = [hosts[h].run([*pyrostore, "up", "--cluster", str(cluster), "--on", h,
                         "--data", str(tmp_path / h), "--certs-dir", str(ca / "hosts" / h)],
                        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, cwd=ROOT)
           for h in layouts.HOSTS]

    def ask(*argv: str) -> Any:
        done = subprocess.run([*hosts["ctl"].exec_prefix, *pyrostore, *argv, "--cluster",
                               str(cluster), "--certs-dir", str(ca), "--json"],
                              capture_output=True, text=True, cwd=ROOT, timeout=60)
        return json.loads(done.stdout) if done.returncode == 0 else None

    def every_host_up() -> bool:
        status = ask("status")
        return bool(status) and all(row["up"] == row["expected"] for row in status["hosts"])

    try:
        wait_until(every_host_up, timeout=120, what="every host's services up")
        status = ask("status")
        assert [row["host"] for row in status["hosts"]] == list(layouts.HOSTS)
        assert status["hosts"][0]["nameserver"] is True
        where = {row["name"]: row["uri"] for row in status["services"]}
        assert hosts["a"].address in where["pyrostore.catalog.1"]
        assert hosts["fe"].address in where["pyrostore.frontend.1"]
        before = ask("lookup", "1")["stock"]
        order = ask("buy", "1")
        assert (order["item"], order["qty"]) == (1, 1)
        assert ask("lookup", "1")["stock"] == before - 1
    finally:
        for up in ups:
            up.terminate()
        codes = [up.wait(60) for up in ups]
    assert codes == [0] * len(ups)  # each `up` stopped its own services and exited cleanly


@pytest.mark.parametrize("group", ["catalog", "order"])
def test_a_primarys_host_cut_off_stops_it_and_the_majority_side_serves(
        spread: Deployment, hosts: Any, group: str) -> None:
    from verifier.setns import entered

    old = wait_until(lambda: spread.primary(group), what=f"a {group} primary")
    assert isinstance(old, int)
    host = spread.host_of(group, old).name
    uri = spread.uri(group, old)
    stocks = (10_000, 10_000)
    items = add_books(spread.admin, stocks)
    with Shoppers(spread.admin, items, count=3) as shoppers:
        hosts.isolate(host)
        with entered(hosts[host].namespace):  # seen from its own host: it stops serving
            wait_until(lambda: not _serving(uri, spread), timeout=10,
                       what=f"the cut-off {group} primary to stop serving")
        wait_until(lambda: spread.primary(group) not in (None, old), timeout=30,
                   what=f"a new {group} primary on the majority side")
        promoted = time.monotonic()  # buys acknowledged from here went through the new primary
        wait_until(lambda: acked_since(shoppers, promoted) > 0, timeout=30,
                   what="buys acknowledged after the failover")
        hosts.rejoin(host)
        wait_until(lambda: _state(spread, group, old) == ("backup", True), timeout=60,
                   what=f"the old {group} primary back as a serving backup")
    check_ledger(SimpleNamespace(settings=spread.admin), items, stocks,  # type: ignore[arg-type]
                 shoppers.ledger)


def test_a_coordinator_leaders_host_cut_off_leaves_the_majority_electing_and_selling(
        spread: Deployment, hosts: Any) -> None:
    old = wait_until(spread.leader, what="a coordinator leader")
    assert isinstance(old, int)
    host = spread.host_of("coordinator", old).name
    stocks = (10_000,)
    items = add_books(spread.admin, stocks)
    with Shoppers(spread.admin, items, count=3) as shoppers:
        hosts.isolate(host)
        wait_until(lambda: spread.leader() not in (None, old), timeout=30,
                   what="a new leader among the other coordinators")
        elected = time.monotonic()
        wait_until(lambda: acked_since(shoppers, elected) > 0, timeout=30,
                   what="buys acknowledged under the new leader")
        hosts.rejoin(host)
        wait_until(lambda: _state(spread, "coordinator", old)[0] == "follower", timeout=60,
                   what="the old leader back as a follower")
    check_ledger(SimpleNamespace(settings=spread.admin), items, stocks,  # type: ignore[arg-type]
                 shoppers.ledger)


def test_a_cut_off_frontend_never_serves_its_cache_past_its_lease(
        spread: Deployment, hosts: Any) -> None:
    from verifier.setns import entered

    item = add_books(spread.admin, (50,))[0]
    cut_off = spread.uri("frontend", 1)
    assert served_stock(cut_off, spread, item) == 50  # now in frontend 1's cache
    hosts.isolate("fe")
    with Client(settings=spread.admin) as client:
        client.update(item, stock_delta=5)  # acknowledged after frontend 1's lease ran out
    with entered(hosts["fe"].namespace):  # a shopper on frontend 1's own host
        assert served_stock(cut_off, spread, item) in (None, 55)
    hosts.rejoin("fe")
    wait_until(lambda: served_stock(cut_off, spread, item) == 55, timeout=30,
               what="frontend 1 serving the new stock after the link healed")


def test_a_frontend_cut_from_the_catalog_primary_alone_serves_no_stale_read(
        spread: Deployment, hosts: Any) -> None:
    primary = wait_until(lambda: spread.primary("catalog"), what="a catalog primary")
    assert isinstance(primary, int)
    item = add_books(spread.admin, (50,))[0]
    stale, other = spread.uri("frontend", 1), spread.uri("frontend", 2)
    assert served_stock(stale, spread, item) == 50
    hosts.block("fe", spread.host_of("catalog", primary).name, both_ways=True)
    with make_proxy(other, spread.admin, timeout=20.0) as frontend:
        frontend.update(item, None, 5, new_request_id())
    assert served_stock(stale, spread, item) in (None, 55)
    hosts.heal()
    wait_until(lambda: served_stock(stale, spread, item) == 55, timeout=30,
               what="frontend 1 serving the new stock after the link healed")


@pytest.mark.slow
@pytest.mark.serial  # five hosts of processes under faults: alone, not beside other stores
def test_a_short_verifier_run_with_every_nemesis_passes(tmp_path: Path) -> None:
    """About a minute of faults: on namespace hosts as root (partitions included), else on
    loopback; the verifier exits 0 only if every check passed."""
    done = subprocess.run([sys.executable, "verify.py", "--duration", "45", "--clients", "4",
                           "--out", str(tmp_path), "--seed", "677"],
                          capture_output=True, text=True, cwd=ROOT, timeout=280)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "overall: PASS" in done.stdout
    history = (tmp_path / "history.jsonl").read_text().splitlines()
    kinds = {json.loads(line)["kind"] for line in
             (tmp_path / "nemesis.jsonl").read_text().splitlines()}
    assert len(history) > 1000
    expected = {"kill", "pause", "coordinator", "nameserver", "clients"}
    if namespaces_unavailable() is None:
        expected |= {"partition", "split"}
    assert kinds == expected


def _serving(uri: str, deployment: Deployment) -> bool:
    try:
        with make_proxy(uri, deployment.admin, timeout=1.0) as replica:
            return bool(replica.info().get("serving"))
    except Pyro5.errors.CommunicationError:
        return False


def _state(deployment: Deployment, role: str, replica_id: int) -> tuple[str | None, bool]:
    row = deployment.info(role, replica_id) or {}
    return row.get("state"), bool(row.get("serving"))
