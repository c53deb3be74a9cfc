"""The issue's performance targets, checked against a run's figures.

Every target is for the default store (2 catalog + 2 order replicas, fsync on every write):
one client making sequential requests, except the two throughput targets (10 clients). A
target whose figure the run did not measure (an experiment left out) is reported as unknown.
The two targets relative to the bare Pyro5 call are judged against the call timed with a
store up (the same background load), and again against it timed before any store started.
"""

from __future__ import annotations

from typing import Any

TARGET_CLIENTS = 10


def config(results: dict[str, Any], *, cache: bool, clients: int) -> dict[str, Any] | None:
    """The experiment 1 configuration with that cache setting and number of clients."""
    for entry in results.get("tiers", {}).get("configs", []):
        if entry["cache"] == cache and entry["clients"] == clients:
            return dict(entry)
    return None


def client_p50(results: dict[str, Any], *, cache: bool, op: str) -> float | None:
    """The client's p50 of ``op`` with one client."""
    entry = config(results, cache=cache, clients=1)
    return None if entry is None else entry["rows"][op]["client"]["p50_ms"]


def bare_p50(results: dict[str, Any], *, quiet: bool = False) -> float | None:
    """The bare Pyro5 call's p50 with a store up (or with none, ``quiet``), if measured."""
    figures = results.get("baseline", {}).get("quiet" if quiet else "ping")
    return figures["p50_ms"] if figures else None


def rate(results: dict[str, Any], op: str) -> tuple[float | None, str]:
    """Requests/s of ``op`` with 10 clients (experiment 1, cache on), or else the nearest
    point of the throughput series at or below 10 clients; and where it came from."""
    entry = config(results, cache=True, clients=TARGET_CLIENTS)
    if entry is not None:
        return entry["ops_per_s"][op], f"experiment 1, {TARGET_CLIENTS} clients, cache on"
    series = results.get("scale", {}).get("throughput", {}).get(op, [])
    below = [p for p in series if p["clients"] <= TARGET_CLIENTS]
    if not below:
        return None, "not measured"
    point = max(below, key=lambda p: p["clients"])
    return point["ops_per_s"], f"throughput series, {point['clients']} clients (not 10)"


def check(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target with its limit, the measured figure and whether it is met (None: unknown)."""
    rows = []
    for quiet, against in ((False, "bare p50, store up"), (True, "bare p50, no store")):
        bare = bare_p50(results, quiet=quiet)
        if quiet and bare is None:
            continue
        rows += [
            _at_most(f"cached lookup p50 ≤ 1.5 x {against}", "ms",
                     client_p50(results, cache=True, op="lookup"), bare and 1.5 * bare,
                     "experiment 1, 1 client, cache on"),
            _at_most(f"uncached lookup p50 ≤ 3 x {against}", "ms",
                     client_p50(results, cache=False, op="lookup"), bare and 3 * bare,
                     "experiment 1, 1 client, cache off"),
        ]
    rows += [
        _at_most("search (100 books) p50 ≤ 1 ms, cache on", "ms",
                 client_p50(results, cache=True, op="search"), 1.0,
                 "experiment 1, 1 client, cache on"),
        _at_most("search (100 books) p50 ≤ 1 ms, cache off", "ms",
                 client_p50(results, cache=False, op="search"), 1.0,
                 "experiment 1, 1 client, cache off"),
        _at_most("buy p50 ≤ 4 ms", "ms", client_p50(results, cache=True, op="buy"), 4.0,
                 "experiment 1, 1 client, cache on"),
    ]
    rows += failover_targets(results)
    rows.append(rejoin_target(results))
    buys, buys_from = rate(results, "buy")
    rows.append(_at_least("10 clients: ≥ 300 buys/s", "/s", buys, 300.0, buys_from))
    lookups, lookups_from = rate(results, "lookup")
    rows.append(_at_least("10 clients: ≥ 4,000 cached lookups/s", "/s", lookups, 4000.0,
                          lookups_from))
    return rows


FAILOVER_LIMITS = (("coordinator leader", "median_s", 1.5), ("coordinator leader", "worst_s", 3.0),
                   ("coordinator follower", "worst_s", 0.25), ("catalog primary", "worst_s", 1.2),
                   ("order primary", "worst_s", 1.2))
"""Longest times without a buy after a kill (seconds): a coordinator leader's death costs
about an election minus what is left of the leases; a follower's nothing; a primary's about
one lease (1 s) and a heartbeat."""


REJOIN_LIMIT_MS = 100.0
"""A backup's return (at a million books, the issue that set it) must not stop the sales."""


def failover_targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The failover experiment's gaps against their limits."""
    series = results.get("failover", {}).get("series", {})
    rows = []
    for victim, figure, limit in FAILOVER_LIMITS:
        measured = series.get(victim, {}).get(figure)
        what = "median" if figure == "median_s" else "worst"
        rows.append(_at_most(f"{victim} killed: {what} gap ≤ {limit:g} s", "s",
                             None if measured is None else measured, limit,
                             "experiment 5" if measured is not None else "not measured"))
    return rows


def rejoin_target(results: dict[str, Any]) -> dict[str, Any]:
    """The longest buy while a catalog backup rejoins, at the largest catalog the rejoin
    experiment measured, by the worse of its paths."""
    rows = results.get("rejoin", {}).get("rows", [])
    name = "longest buy while a catalog backup rejoins ≤ 100 ms"
    if not rows:
        return _at_most(name, "ms", None, REJOIN_LIMIT_MS, "not measured")
    books = max(row["books"] for row in rows)
    worst = max(row["during"]["max_ms"] or 0.0 for row in rows if row["books"] == books)
    return _at_most(name, "ms", worst, REJOIN_LIMIT_MS, f"rejoin, {books:,} books, worse path")


def _at_most(name: str, unit: str, measured: float | None, limit: float | None,
             source: str) -> dict[str, Any]:
    met = None if measured is None or limit is None else measured <= limit
    return {"target": name, "unit": unit, "limit": limit, "measured": measured, "met": met,
            "source": source}


def _at_least(name: str, unit: str, measured: float | None, limit: float,
              source: str) -> dict[str, Any]:
    met = None if measured is None else measured >= limit
    return {"target": name, "unit": unit, "limit": limit, "measured": measured, "met": met,
            "source": source}
