"""Latency summaries: ``{count, mean_ms, p50_ms, p99_ms}`` from raw samples or merged stats.

The percentiles use the same nearest-rank rule as the services' own ``stats()``
(:func:`pyrostore.metrics.percentile`), so a client figure and a service figure compare.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pyrostore.metrics import percentile

Summary = dict[str, Any]
"""``{count, mean_ms, p50_ms, p99_ms}``; the three times are None when count is 0."""

EMPTY: Summary = {"count": 0, "mean_ms": None, "p50_ms": None, "p99_ms": None}


def summarize(seconds: Iterable[float]) -> Summary:
    """The summary of latency samples given in seconds."""
    ordered = sorted(seconds)
    if not ordered:
        return dict(EMPTY)
    return {
        "count": len(ordered),
        "mean_ms": 1000 * sum(ordered) / len(ordered),
        "p50_ms": 1000 * percentile(ordered, 50),
        "p99_ms": 1000 * percentile(ordered, 99),
    }


def merge(parts: Iterable[Mapping[str, Any]]) -> Summary:
    """Several ``{count, mean_ms, p50_ms, p99_ms}`` as one, each weighted by its count.

    The mean is exact. The raw samples stay inside the services, so p50 and p99 of a group
    (say both catalog replicas) are the count-weighted average of each replica's, an
    approximation that is exact when one replica served everything.
    """
    live = [p for p in parts if p.get("count")]
    total = sum(int(p["count"]) for p in live)
    if not total:
        return dict(EMPTY)
    merged: Summary = {"count": total}
    for key in ("mean_ms", "p50_ms", "p99_ms"):
        merged[key] = sum(float(p[key]) * int(p["count"]) for p in live) / total
    return merged


def ratio(value: float | None, base: float | None) -> float | None:
    """``value / base``, or None if either is missing or the base is 0."""
    if value is None or not base:
        return None
    return value / base
