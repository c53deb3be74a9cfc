"""A service's Prometheus figures: the families made of its info(), the request histogram,
the endpoint serving them, the service-discovery file, and the settings that place them."""

from __future__ import annotations

import io
import json
import socket
import stat
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console

from pyrostore.client.views import status_table
from pyrostore.config import Settings
from pyrostore.errors import ConfigError, NotServing
from pyrostore.exporter import InfoCollector, families, new_registry
from pyrostore.metrics import MethodStats
from pyrostore.scraping import MetricsEndpoint, scrape_targets, write_targets
from tests.conftest import make_settings, run_cli

CATALOG_PRIMARY = {"role": "catalog", "id": 1, "state": "primary", "serving": True,
                   "epoch": 3, "applied": 42, "lease_left": 0.8, "queued_writes": 0,
                   "pending_buys": 2, "books": 7}


def samples(metrics: list[Any]) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """``{(sample name, sorted labels): value}`` of metric families."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in metrics for s in family.samples}


def test_a_catalog_primary_holds_the_lease_and_reports_its_view() -> None:
    figures = samples(families(CATALOG_PRIMARY))
    assert figures[("pyrostore_primary_lease", ())] == 1
    assert figures[("pyrostore_epoch", ())] == 3
    assert figures[("pyrostore_applied_position", ())] == 42
    assert figures[("pyrostore_pending_buys", ())] == 2
    assert figures[("pyrostore_replica_state", (("state", "primary"),))] == 1
    assert figures[("pyrostore_replica_state", (("state", "backup"),))] == 0


@pytest.mark.parametrize("change", [{"state": "backup"}, {"serving": False},
                                    {"lease_left": 0.0}])
def test_no_lease_gauge_without_a_serving_primary_with_time_left(change: dict[str, Any]) -> None:
    figures = samples(families({**CATALOG_PRIMARY, **change}))
    assert figures[("pyrostore_primary_lease", ())] == 0


def test_an_order_primary_counts_settled_buys() -> None:
    info = {**CATALOG_PRIMARY, "role": "order", "orders": 5, "pending_buys": None,
            "buys": {"pending": 1, "resolved": 4, "completed": 3, "undone": 1}}
    figures = samples(families(info))
    assert figures[("pyrostore_buys_settled_total", (("outcome", "completed"),))] == 3
    assert figures[("pyrostore_buys_settled_total", (("outcome", "undone"),))] == 1
    assert figures[("pyrostore_orders", ())] == 5
    assert ("pyrostore_pending_buys", ()) not in figures  # a catalog figure


def test_a_frontend_reports_its_cache_counters_and_none_when_off() -> None:
    cache = {"hits": 9, "misses": 2, "fills_refused": 1, "invalidations": 4, "entries": 3,
             "lease_left": 0.5}
    figures = samples(families({"role": "frontend", "id": 1, "cache": cache}))
    assert figures[("pyrostore_cache_hits_total", ())] == 9
    assert figures[("pyrostore_cache_misses_total", ())] == 2
    assert figures[("pyrostore_cache_invalidations_total", ())] == 4
    assert figures[("pyrostore_cache_flushes_total", ())] == 0
    assert figures[("pyrostore_cache_entries", ())] == 3
    assert families({"role": "frontend", "id": 1, "cache": None}) == []


def test_a_coordinator_reports_raft_epochs_and_each_replicas_lag() -> None:
    groups = {"catalog": {"epoch": 4, "primary": 1, "replicas": {
                  "1": {"applied": 50}, "2": {"applied": 50}, "3": {"applied": 20}}},
              "order": {"epoch": 1, "primary": None, "replicas": {"1": {"applied": 0}}}}
    info = {"role": "coordinator", "id": 2, "state": "leader", "groups": groups,
            "raft": {"state": "leader", "term": 7, "commit": 99},
            "incidents": {"raft_journal_lost_entries": 2}}
    figures = samples(families(info))
    assert figures[("pyrostore_coordinator_incidents_total",
                    (("kind", "raft_journal_lost_entries"),))] == 2
    assert figures[("pyrostore_raft_leader", ())] == 1
    assert figures[("pyrostore_raft_term", ())] == 7
    assert figures[("pyrostore_group_epoch", (("group", "catalog"),))] == 4
    lag = {labels: value for (name, labels), value in figures.items()
           if name == "pyrostore_group_replication_lag"}
    assert lag == {(("group", "catalog"), ("replica", "1")): 0,
                   (("group", "catalog"), ("replica", "2")): 0,
                   (("group", "catalog"), ("replica", "3")): 30}  # no primary: no lag known


def test_the_histogram_counts_what_method_stats_records_once() -> None:
    registry = CollectorRegistry()
    stats = MethodStats(registry=registry)
    lookup = stats.timed("lookup", lambda item: item)
    for item in range(5):
        lookup(item)
    stats.record("buy", 0.003)
    stats.reset()  # the snapshot forgets; Prometheus counters only grow
    assert registry.get_sample_value("pyrostore_request_duration_seconds_count",
                                     {"method": "lookup"}) == 5
    assert registry.get_sample_value("pyrostore_request_duration_seconds_bucket",
                                     {"method": "buy", "le": "0.005"}) == 1
    assert registry.get_sample_value("pyrostore_request_duration_seconds_bucket",
                                     {"method": "buy", "le": "0.0025"}) == 0
    assert stats.snapshot() == {}


@pytest.fixture
def endpoint() -> Iterator[tuple[MetricsEndpoint, dict[str, Any]]]:
    """An endpoint on a free port serving a registry whose info() the test sets."""
    info: dict[str, Any] = dict(CATALOG_PRIMARY)
    registry = new_registry()
    registry.register(InfoCollector(lambda: info))
    served = MetricsEndpoint(registry)
    try:
        yield served, info
    finally:
        served.stop()


def scrape(address: str) -> dict[str, Any]:
    """The metric families at ``http://address/metrics``, by name."""
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    return {family.name: family for family in text_string_to_metric_families(text)}


def test_the_endpoint_serves_the_families_at_each_scrape(
        endpoint: tuple[MetricsEndpoint, dict[str, Any]]) -> None:
    served, info = endpoint
    address = served.start("127.0.0.1", 0)
    assert address is not None and address.startswith("127.0.0.1:")
    assert scrape(address)["pyrostore_epoch"].samples[0].value == 3
    info["epoch"] = 4  # read at scrape time
    scraped = scrape(address)
    assert scraped["pyrostore_epoch"].samples[0].value == 4
    assert "process_cpu_seconds" in scraped  # the process's own figures, as usual
    served.stop()
    with pytest.raises(urllib.error.URLError):
        scrape(address)


def test_a_service_that_cannot_tell_is_scraped_without_its_figures() -> None:
    registry = new_registry()

    def not_yet() -> dict[str, Any]:
        raise NotServing("not yet")

    registry.register(InfoCollector(not_yet))
    failing = MetricsEndpoint(registry)
    try:
        address = failing.start("127.0.0.1", 0)
        assert address is not None
        scraped = scrape(address)
        assert "process_cpu_seconds" in scraped and "pyrostore_epoch" not in scraped
    finally:
        failing.stop()


def test_a_port_in_use_is_a_clear_error_and_off_serves_nothing(
        endpoint: tuple[MetricsEndpoint, dict[str, Any]]) -> None:
    served, _ = endpoint
    assert served.start("127.0.0.1", -1) is None
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match=f"cannot serve metrics on 127.0.0.1:{port}"):
            served.start("127.0.0.1", port)


def test_a_service_whose_metrics_port_is_taken_exits_with_one_line(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = run_cli(settings, "frontend", "--id", "7",
                       env={"PYROSTORE_METRICS_PORT": str(port)})
    assert done.returncode == 2, done.stderr
    assert f"cannot serve metrics on 127.0.0.1:{port}" in done.stderr
    assert "PYROSTORE_METRICS_PORT" in done.stderr


ROWS = [{"role": "catalog", "id": 1, "name": "pyrostore.catalog.1", "state": "primary",
         "metrics": "127.0.0.1:4001"},
        {"role": "frontend", "id": 1, "name": "pyrostore.frontend.1", "state": "serving",
         "metrics": None},
        {"role": "order", "id": 2, "name": "pyrostore.order.2", "state": "down"}]


def test_scrape_targets_name_every_service_serving_metrics() -> None:
    assert scrape_targets(ROWS) == [{"targets": ["127.0.0.1:4001"], "labels": {
        "role": "catalog", "replica": "1", "service": "pyrostore.catalog.1"}}]


def test_the_targets_file_is_replaced_whole_and_readable_by_prometheus(tmp_path: Path) -> None:
    path = tmp_path / "pyrostore.json"
    path.write_text("old")
    write_targets(path, scrape_targets(ROWS))
    assert json.loads(path.read_text())[0]["targets"] == ["127.0.0.1:4001"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["pyrostore.json"]  # nothing left beside it


def test_the_status_table_shows_where_the_metrics_are() -> None:
    console = Console(file=io.StringIO(), width=200, color_system=None)
    console.print(status_table(ROWS))
    text = console.file.getvalue()
    assert "metrics" in text and "127.0.0.1:4001" in text


def test_metrics_and_log_settings_are_checked() -> None:
    assert Settings.from_env(environ={"PYROSTORE_METRICS_PORT": "off"}).metrics_port == -1
    assert Settings.from_env(environ={"PYROSTORE_METRICS_PORT": "9464"}).metrics_port == 9464
    assert Settings().metrics_port == 0
    for bad, message in (({"metrics_port": -2}, "metrics_port must be"),
                         ({"metrics_port": 65536}, "metrics_port must be"),
                         ({"log_max_bytes": 100}, "log_max_bytes must be"),
                         ({"log_backups": 0}, "log_backups must be 1..100")):
        with pytest.raises(ConfigError, match=message):
            Settings(**bad)
    assert Settings(log_max_bytes=0).log_max_bytes == 0  # never rotate
