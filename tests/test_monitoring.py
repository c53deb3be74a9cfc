"""A running store as Prometheus sees it: every service's endpoint scraped and parsed with
prometheus_client's own parser, ``status`` showing where, and the service-discovery file."""

from __future__ import annotations

import contextlib
import json
import socket
import urllib.request
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from Pyro5.core import NAMESERVER_NAME

from pyrostore.client import Client
from pyrostore.discovery import survey
from pyrostore.launcher import Cluster
from pyrostore.serving import fixed_port
from tests.conftest import make_settings, run_cli, wait_until


def scrape(address: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """``{(sample name, sorted labels): value}`` at ``http://address/metrics``."""
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def services(store: Cluster, role: str) -> list[dict[str, Any]]:
    """The ``status`` rows of ``role``'s services that serve."""
    return [row for row in survey(store.settings)
            if row["role"] == role and row.get("state") != "down"]


def calls(figures: dict[Any, float], method: str) -> float:
    """How many calls of ``method`` the histogram counted."""
    return figures.get(("pyrostore_request_duration_seconds_count", (("method", method),)), 0)


def primary(store: Cluster, role: str) -> dict[str, Any]:
    """The ``status`` row of ``role``'s primary (waiting for one)."""
    found = wait_until(lambda: next((row for row in services(store, role)
                                     if row.get("state") == "primary"), None),
                       what=f"a {role} primary")
    assert isinstance(found, dict)
    return found


def test_every_service_serves_metrics_where_status_says(store: Cluster) -> None:
    rows = survey(store.settings)
    assert {row["role"] for row in rows} == {"coordinator", "catalog", "order", "frontend"}
    for row in rows:
        assert str(row["metrics"]).startswith("127.0.0.1:"), row
        assert ("process_cpu_seconds_total", ()) in scrape(row["metrics"])


def test_lookups_and_buys_are_counted_per_method(store: Cluster, client: Client) -> None:
    frontend = services(store, "frontend")[0]["metrics"]
    order = primary(store, "order")["metrics"]
    before, order_before = scrape(frontend), scrape(order)
    for _ in range(3):
        client.lookup(1)
    client.buy(2)
    after, order_after = scrape(frontend), scrape(order)
    assert calls(after, "lookup") == calls(before, "lookup") + 3
    assert calls(after, "buy") == calls(before, "buy") + 1
    assert calls(order_after, "buy") == calls(order_before, "buy") + 1
    assert after[("pyrostore_request_duration_seconds_bucket",
                  (("le", "+Inf"), ("method", "lookup")))] == calls(after, "lookup")


def test_cache_hits_and_misses_move_as_reads_are_served(store: Cluster, client: Client) -> None:
    frontend = services(store, "frontend")[0]["metrics"]
    wait_until(lambda: scrape(frontend).get(("pyrostore_cache_lease_seconds_left", ()), 0) > 0,
               what="the frontend's cache lease")
    before = scrape(frontend)

    def counted(name: str) -> float:
        return scrape(frontend)[(f"pyrostore_cache_{name}_total", ())] - \
            before[(f"pyrostore_cache_{name}_total", ())]

    # item 5 is read nowhere else in this module: its first read under the lease is a miss,
    # the next ones hits (a lease that lapsed in between only means reading again)
    wait_until(lambda: client.lookup(5) and counted("misses") >= 1, what="a cache miss")
    wait_until(lambda: client.lookup(5) and counted("hits") >= 1, what="a cache hit")
    invalidations = scrape(frontend)[("pyrostore_cache_invalidations_total", ())]
    # the catalog primary invalidates before it answers (a frontend whose lease lapsed it
    # no longer tells, hence again until one arrives)
    wait_until(lambda: client.update(5, cost=46.0) and scrape(frontend)[
        ("pyrostore_cache_invalidations_total", ())] > invalidations, what="an invalidation")


def test_one_catalog_primary_holds_the_lease_and_every_replica_has_an_epoch(
        store: Cluster) -> None:
    def leases() -> list[float]:
        figures = [scrape(row["metrics"]) for row in services(store, "catalog")]
        assert all(f[("pyrostore_epoch", ())] >= 1 for f in figures)
        return [f[("pyrostore_primary_lease", ())] for f in figures]

    held = wait_until(lambda: (lambda now: now if sorted(now) == [0, 1] else None)(leases()),
                      what="exactly one catalog replica holding the primary lease")
    assert held
    coordinators = [scrape(row["metrics"]) for row in services(store, "coordinator")]
    assert all(("pyrostore_group_epoch", (("group", "catalog"),)) in c for c in coordinators)


def test_status_json_and_the_prometheus_targets_file(store: Cluster, tmp_path: Path) -> None:
    targets = tmp_path / "sd" / "pyrostore.json"
    targets.parent.mkdir()
    done = run_cli(store.settings, "status", "--json", "--prometheus-targets", str(targets))
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    assert all(str(row["metrics"]).startswith("127.0.0.1:") for row in rows)
    groups = json.loads(targets.read_text())
    assert sorted(g["labels"]["service"] for g in groups) == sorted(
        [NAMESERVER_NAME, *(row["name"] for row in rows)])
    for group in groups:
        row = next((r for r in rows if r["name"] == group["labels"]["service"]), None)
        if row is None:  # the name server: no status row, a target all the same
            assert group["labels"]["role"] == "nameserver"
            names = scrape(group["targets"][0])[("pyrostore_nameserver_registrations", ())]
            assert names >= len(rows)
            continue
        assert group["targets"] == [row["metrics"]]
        assert group["labels"] == {"role": row["role"], "service": row["name"],
                                   "replica": str(row["id"])}
    shown = run_cli(store.settings, "status")
    assert rows[0]["metrics"] in shown.stdout


def _free_range(count: int) -> int:
    """The first of ``count`` consecutive ports free on 127.0.0.1 a moment ago."""
    for _ in range(50):
        base = fixed_port("127.0.0.1")
        try:
            with contextlib.ExitStack() as held:
                for port in range(base, base + count):
                    sock = held.enter_context(socket.socket())
                    sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base
    raise AssertionError(f"no {count} consecutive free ports")


def test_a_fixed_metrics_port_is_the_first_of_a_range_one_port_per_process(
        tmp_path: Path) -> None:
    """Seven processes (name server, three coordinators, a catalog, an order replica, a
    frontend) on one host cannot share port P: each gets its own, P to P + 6."""
    settings = make_settings(tmp_path / "store")
    while True:  # a range clear of the ports the store itself was given
        base = _free_range(7)
        ranged = settings.replace(metrics_port=base)
        cluster = Cluster(ranged, catalogs=1, orders=1, frontends=1)
        taken = {cluster.settings.ns_port,
                 *(int(a.split(":")[i]) for a in cluster.settings.coordinators.split(",")
                   for i in (1, 2))}
        if not taken & set(range(base, base + 7)):
            break
    try:
        cluster.start(timeout=30)
        ports = sorted(int(row["metrics"].rsplit(":", 1)[1]) for row in survey(cluster.settings))
        assert ports == list(range(base + 1, base + 7))
        assert ("process_cpu_seconds_total", ()) in scrape(f"127.0.0.1:{base}")  # name server
    finally:
        cluster.stop()
