"""A service's Prometheus metrics: its registry, and its figures as metric families.

Each service has a registry of its own (never prometheus_client's global one) holding the
request histogram (:class:`~pyrostore.metrics.MethodStats`), the process's own figures (CPU,
memory, file descriptors, as every Prometheus client exports them) and an
:class:`InfoCollector`, which turns the service's ``info()`` into metric families at each
scrape: nothing is counted twice, and a figure is as fresh as ``pyrostore status``'s.
:func:`families` is that translation, a pure function of the ``info()`` dict.
:mod:`pyrostore.scraping` serves the registry.

Every name starts ``pyrostore_``. Every service: ``request_duration_seconds{method}``
(histogram). Catalog and order replicas: ``epoch``, ``applied_position``, ``primary_lease``
(1 while primary with a lease), ``lease_seconds_left``, ``serving``,
``replica_state{state}``, ``queued_writes``; the catalog ``books`` and ``pending_buys``; the
order ``orders`` and, on the primary, ``buys_settled_total{outcome}``. Frontends:
``cache_<counter>_total`` for each of :data:`CACHE_COUNTERS`, ``cache_entries``,
``cache_lease_seconds_left``. Coordinators: ``raft_term``, ``raft_commit_index``,
``raft_leader``, ``group_epoch{group}``, ``group_replication_lag{group,replica}``,
``coordinator_incidents_total{kind}``. The name server: ``nameserver_registrations``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from pyrostore.control import REPLICA_STATES
from pyrostore.errors import PyrostoreError

log = logging.getLogger(__name__)
PREFIX = "pyrostore_"
CACHE_COUNTERS = ("hits", "misses", "shared_misses", "fills", "fills_refused", "invalidations",
                  "evictions", "flushes")
"""The frontend cache's counters (``VersionedCache.stats()``), each a ``_total`` counter."""


def new_registry() -> CollectorRegistry:
    """A service's own registry, holding the process's figures as the default one does."""
    registry = CollectorRegistry()
    for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
        registry.register(collector)
    return registry


class InfoCollector(Collector):
    """Metric families made from ``source()`` (a service's ``info()``) at each scrape."""

    def __init__(self, source: Callable[[], Mapping[str, Any]]) -> None:
        self.source = source

    def collect(self) -> Iterable[Metric]:
        """The families of the service's figures now; none if it cannot tell (logged)."""
        try:
            info = self.source()
        except PyrostoreError as exc:
            log.warning("metrics: figures unavailable: %s", exc)
            return []
        return families(info)


def families(info: Mapping[str, Any]) -> list[Metric]:
    """The metric families of one service's ``info()``, by its role."""
    role = info.get("role")
    if role in ("catalog", "order"):
        return _replica(info)
    if role == "frontend":
        return _cache(info.get("cache"))
    if role == "coordinator":
        return _coordinator(info)
    return _gauge("nameserver_registrations", "Names the name server holds",
                  info.get("registrations"))


def _gauge(name: str, text: str, value: Any) -> list[Metric]:
    """One unlabelled gauge, or none if the figure is unknown."""
    if value is None:
        return []
    return [GaugeMetricFamily(PREFIX + name, text, value=float(value))]


def _replica(info: Mapping[str, Any]) -> list[Metric]:
    state, serving = info.get("state"), bool(info.get("serving"))
    leased = state == "primary" and serving and (info.get("lease_left") or 0) > 0
    states = GaugeMetricFamily(PREFIX + "replica_state", "1 for the replica's state in its "
                               "group, 0 for the others", labels=["state"])
    for name in REPLICA_STATES:
        states.add_metric([name], float(name == state))
    metrics = [
        *_gauge("epoch", "Epoch of the view the replica is in", info.get("epoch")),
        *_gauge("applied_position", "Sequence number of the last write the replica applied",
                info.get("applied")),
        *_gauge("primary_lease", "1 while the replica is its group's primary and holds its "
                "lease, else 0", int(leased)),
        *_gauge("lease_seconds_left", "Seconds left of the replica's lease",
                info.get("lease_left")),
        *_gauge("serving", "1 while the replica may serve reads and writes, else 0",
                int(serving)),
        *_gauge("queued_writes", "Writes waiting for the primary's next batch",
                info.get("queued_writes")),
        *_gauge("pending_buys", "Buys whose stock is taken and whose order is not yet recorded "
                "(the catalog's outbox)", info.get("pending_buys")),
        *_gauge("books", "Books in the catalog replica", info.get("books")),
        *_gauge("orders", "Orders in the order replica's log", info.get("orders")),
        states,
    ]
    buys = info.get("buys")
    if buys:
        settled = CounterMetricFamily(PREFIX + "buys_settled", "Buys the order primary's "
                                      "reconciler finished (completed) or gave the stock back "
                                      "(undone) since it started", labels=["outcome"])
        for outcome in ("completed", "undone"):
            settled.add_metric([outcome], float(buys.get(outcome, 0)))
        metrics.append(settled)
    return metrics


def _cache(cache: Mapping[str, Any] | None) -> list[Metric]:
    if not cache:
        return []  # the cache is off
    metrics: list[Metric] = [
        CounterMetricFamily(PREFIX + f"cache_{name}", f"Frontend cache {name.replace('_', ' ')}",
                            value=float(cache.get(name, 0)))
        for name in CACHE_COUNTERS]
    metrics += _gauge("cache_entries", "Entries in the frontend's cache", cache.get("entries"))
    metrics += _gauge("cache_lease_seconds_left", "Seconds left of the frontend's cache lease "
                      "(it serves from its cache only while one runs)", cache.get("lease_left"))
    return metrics


def _coordinator(info: Mapping[str, Any]) -> list[Metric]:
    raft = info.get("raft") or {}
    metrics = [
        *_gauge("raft_term", "This coordinator's Raft term", raft.get("term")),
        *_gauge("raft_commit_index", "This coordinator's Raft commit index", raft.get("commit")),
        *_gauge("raft_leader", "1 on the coordinators' Raft leader, else 0",
                int(raft.get("state") == "leader")),
    ]
    epochs = GaugeMetricFamily(PREFIX + "group_epoch", "Epoch of each group's view, as this "
                               "coordinator applied it", labels=["group"])
    lag = GaugeMetricFamily(PREFIX + "group_replication_lag", "Writes a replica is behind its "
                            "group's primary, from their last heartbeats", labels=["group",
                                                                                   "replica"])
    for group, view in sorted((info.get("groups") or {}).items()):
        epochs.add_metric([group], float(view.get("epoch", 0)))
        replicas = view.get("replicas") or {}
        primary = replicas.get(str(view.get("primary")))
        if primary is None:
            continue
        for replica_id, replica in sorted(replicas.items()):
            behind = max(0, primary.get("applied", 0) - replica.get("applied", 0))
            lag.add_metric([group, replica_id], float(behind))
    incidents = CounterMetricFamily(PREFIX + "coordinator_incidents", "Troubles this "
                                    "coordinator met and rode out since it started, by kind",
                                    labels=["kind"])
    for kind, count in sorted((info.get("incidents") or {}).items()):
        incidents.add_metric([kind], float(count))
    return [*metrics, epochs, lag, incidents]
