"""Latency experiments: response time per operation and tier, a cache hit against a miss, and
the bare Pyro5 call every other figure is measured against.

Each function runs its requests in :class:`~benchmarks.pool.ClientPool` processes and returns
plain data (dicts, lists, numbers) ready for JSON, the tables and the plots.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from benchmarks.bare import BareServer
from benchmarks.figures import Summary, ratio, summarize
from benchmarks.pool import OPERATIONS, ClientPool, Job, Result
from benchmarks.stores import BENCH_TOPIC, cache_counters, reset_stats, tier_stats
from pyrostore.config import Settings

Tick = Callable[[int], None]


def throughput(results: list[Result]) -> float:
    """Requests per second of clients that ran side by side: all requests over the window
    from the first client's start to the last one's end."""
    window = max(r.ended for r in results) - min(r.started for r in results)
    return sum(r.requests for r in results) / window if window > 0 else 0.0


def pooled(results: list[Result], label: str) -> Summary:
    """The summary of every client's samples of ``label`` together."""
    return summarize(s for r in results for s in r.latencies.get(label, []))


def run_tiers(pool: ClientPool, settings: Settings, *, clients: int, requests: int, buys: int,
              items: tuple[int, ...], tick: Tick) -> dict[str, Any]:
    """One configuration of experiment 1: ``clients`` processes, each making ``requests``
    searches, then ``requests`` lookups, then ``buys`` buys, one after the other.

    Every operation starts on all clients together and is measured on its own (clients wait
    for each other between operations). The services' timings are reset first, so the
    frontend, catalog and order columns cover exactly this configuration.
    """
    reset_stats(settings)
    before = cache_counters(settings)
    rows: dict[str, dict[str, Summary]] = {}
    rates: dict[str, float] = {}
    for op in OPERATIONS:
        count = buys if op == "buy" else requests
        jobs = [Job("ops", settings, op=op, count=count, items=items, topic=BENCH_TOPIC,
                    seed=1000 * clients + index) for index in range(clients)]
        results = pool.run(jobs, tick)
        rows[op] = {"client": pooled(results, op)}
        rates[op] = throughput(results)
    for op, tiers in tier_stats(settings).items():
        rows[op].update(tiers)
    after = cache_counters(settings)
    return {
        "cache": bool(after or before),
        "clients": clients,
        "requests_per_client": {op: buys if op == "buy" else requests for op in OPERATIONS},
        "rows": rows,
        "ops_per_s": rates,
        "cache_counters": {k: after[k] - before.get(k, 0) for k in after},
    }


def run_invalidation(pool: ClientPool, settings: Settings, *, rounds: int,
                     items: tuple[int, ...], tick: Tick) -> dict[str, Any]:
    """Experiment 2: ``rounds`` times, on one item (a different one each round): lookup,
    lookup (a hit), buy (which invalidates the entry), lookup (a miss), by one client.
    ``catalog_reads`` is how long the catalog took over the reads the misses made."""
    reset_stats(settings)
    before = cache_counters(settings)
    [result] = pool.run([Job("cycles", settings, count=rounds, items=items)], tick)
    after = cache_counters(settings)
    figures = {label: summarize(result.latencies[label]) for label in result.latencies}
    return {
        "rounds": rounds,
        **figures,
        "catalog_reads": tier_stats(settings)["lookup"]["catalog"],
        "miss_over_hit_p50": ratio(figures["miss"]["p50_ms"], figures["hit"]["p50_ms"]),
        "miss_over_hit_mean": ratio(figures["miss"]["mean_ms"], figures["hit"]["mean_ms"]),
        "cache_counters": {k: after[k] - before.get(k, 0) for k in after},
    }


def bare_calls(pool: ClientPool, settings: Settings, *, calls: int, tick: Tick) -> list[float]:
    """Experiment 5, one burst: ``calls`` sequential calls of a method that returns a
    constant, on a bare Pyro5 object in a process of its own, with the store's serializer;
    each call's latency in seconds."""
    with BareServer() as uri:
        [result] = pool.run([Job("bare", settings, count=calls, uri=uri)], tick)
    return result.latencies["ping"]


def bare_throughput(pool: ClientPool, settings: Settings, *, clients: int,
                    seconds: float) -> dict[str, Any]:
    """``clients`` processes calling the bare object back to back for ``seconds``: the
    most calls per second this machine's Pyro5 can answer from one server process, the
    ceiling of any throughput figure of the store (whose frontend is one such process)."""
    with BareServer() as uri:
        results = pool.run([Job("bare", settings, seconds=seconds, uri=uri)
                            for _ in range(clients)])
    return {"clients": clients, "ops_per_s": throughput(results), **pooled(results, "ping")}


QUIET = "no store running"


def baseline(bursts: list[tuple[str, list[float]]], *, serializer: str) -> dict[str, Any]:
    """The bare call's figures: each burst's (``when`` it was made), ``ping``: every burst
    made with a store up (idle), together, which is what the other figures are divided by
    (the same machine, the same background load: heartbeats, lease renewals), and ``quiet``:
    the bursts made before any store started, the transport's cost on an idle machine."""
    loaded = [samples for when, samples in bursts if when != QUIET] or [s for _, s in bursts]
    quiet = [samples for when, samples in bursts if when == QUIET]
    return {"calls": sum(len(b) for _, b in bursts), "serializer": serializer,
            "bursts": [{"when": when, **summarize(b)} for when, b in bursts],
            "ping": summarize(s for b in loaded for s in b),
            "quiet": summarize(s for b in quiet for s in b) if quiet else None}
