"""PNG charts of a run's figures, with matplotlib's Agg backend (no display needed).

One function per chart; each takes the results dict and a directory and returns the path it
wrote, or None when the run has no figures for it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # after matplotlib.use: the backend comes first
from matplotlib.figure import Figure

from benchmarks import original
from benchmarks.targets import REJOIN_LIMIT_MS

OPS = ("search", "lookup", "buy")
TIERS = ("client", "frontend", "catalog", "order")


def tiers_chart(results: dict[str, Any], directory: Path) -> Path | None:
    """Grouped bars: the mean at each tier, cache on beside cache off, one panel per op, for
    each number of clients."""
    configs = results.get("tiers", {}).get("configs", [])
    if not configs:
        return None
    clients = sorted({c["clients"] for c in configs})
    figure, axes = plt.subplots(len(clients), 3, figsize=(13, 3.2 * len(clients)),
                                squeeze=False)
    for row, count in enumerate(clients):
        for column, op in enumerate(OPS):
            axis = axes[row][column]
            for offset, cache in ((-0.2, True), (0.2, False)):
                entry = next((c for c in configs if c["clients"] == count
                              and c["cache"] == cache), None)
                if entry is None:
                    continue
                means = [(entry["rows"][op][t] or {}).get("mean_ms") or 0.0 for t in TIERS]
                axis.bar([i + offset for i in range(len(TIERS))], means, width=0.4,
                         label="cache on" if cache else "cache off")
            axis.set_xticks(range(len(TIERS)), TIERS)
            axis.set_title(f"{op}, {count} client{'s' if count > 1 else ''}")
            axis.set_ylabel("mean ms")
            axis.legend(fontsize="small")
    return _save(figure, directory / "tiers.png")


def invalidation_chart(results: dict[str, Any], directory: Path) -> Path | None:
    """Bars: the hit and the miss, p50 and mean, with the original report's two figures."""
    section = results.get("invalidation", {})
    if "hit" not in section:
        return None
    figure, axis = plt.subplots(figsize=(7, 4))
    bars = {"hit": section["hit"], "miss": section["miss"]}
    if "ping" in results.get("baseline", {}):
        bars["bare Pyro5 call"] = results["baseline"]["ping"]
    for offset, key in ((-0.2, "p50_ms"), (0.2, "mean_ms")):
        axis.bar([i + offset for i in range(len(bars))], [f[key] for f in bars.values()],
                 width=0.4, label=key.removesuffix("_ms"))
    axis.set_xticks(range(len(bars)), list(bars))
    axis.set_ylabel("ms at the client")
    axis.set_title(f"Cached lookup: hit vs miss after a buy (2020: {original.HIT_MS} vs "
                   f"{original.MISS_MS} ms)")
    axis.legend()
    return _save(figure, directory / "hit_vs_miss.png")


def throughput_chart(results: dict[str, Any], directory: Path) -> Path | None:
    """Requests/s (left) and p99 (right) against the number of clients, log-2 axis."""
    series = results.get("scale", {}).get("throughput", {})
    if not series:
        return None
    figure, (rates, tails) = plt.subplots(1, 2, figsize=(12, 4))
    for op, label in (("lookup", "cached lookups"), ("buy", "buys")):
        points = series.get(op, [])
        clients = [p["clients"] for p in points]
        rates.plot(clients, [p["ops_per_s"] for p in points], marker="o", label=label)
        tails.plot(clients, [p["p99_ms"] for p in points], marker="o", label=label)
    counts = sorted({p["clients"] for points in series.values() for p in points})
    for axis, title in ((rates, "requests per second (log)"), (tails, "p99 ms (log)")):
        axis.set_xscale("log", base=2)
        axis.set_yscale("log")
        axis.set_xticks(counts, [str(c) for c in counts])
        axis.set_xlabel("concurrent clients (each a process)")
        axis.set_title(title)
        axis.grid(True, which="both", alpha=0.3)
        axis.legend()
    return _save(figure, directory / "throughput.png")


def catalog_size_chart(results: dict[str, Any], directory: Path) -> Path | None:
    """p50 of lookup and search at the client and at the catalog against the catalog's size
    (left), and the start-up of its catalog replicas (right)."""
    rows = results.get("scale", {}).get("catalog_size", [])
    if not rows:
        return None
    figure, (axis, starts) = plt.subplots(1, 2, figsize=(12, 4),
                                          gridspec_kw={"width_ratios": [3, 2]})
    books = [r["books"] for r in rows]
    starts.plot(books, [r.get("catalog_start_s") or float("nan") for r in rows], "-o")
    starts.set_xscale("log")
    starts.set_xlabel("books in the catalog")
    starts.set_ylabel("seconds")
    starts.set_title("Catalog replicas' first start (loading the inventory)")
    starts.set_ylim(bottom=0)
    for op in ("lookup", "search"):
        for tier, style in (("client", "-o"), ("catalog", "--s")):
            axis.plot(books, [r[op][tier]["p50_ms"] or float("nan") for r in rows], style,
                      label=f"{op}, {tier}")
    axis.set_xscale("log")
    axis.set_yscale("log")
    axis.set_xlabel("books in the catalog")
    axis.set_ylabel("p50 ms")
    axis.set_title(f"Latency as the catalog grows (cache off; a search finds "
                   f"{rows[-1]['topic_books']} books)")
    axis.legend()
    return _save(figure, directory / "catalog_size.png")


def rejoin_chart(results: dict[str, Any], directory: Path) -> Path | None:
    """The longest and the p99 buy while a catalog backup rejoins (left) and the time it took
    (right) against the catalog's size, one line per path."""
    rows = results.get("rejoin", {}).get("rows", [])
    if not rows:
        return None
    figure, (tails, times) = plt.subplots(1, 2, figsize=(12, 4))
    for path in dict.fromkeys(r["path"] for r in rows):
        points = [r for r in rows if r["path"] == path]
        books = [r["books"] for r in points]
        line = tails.plot(books, [r["during"]["max_ms"] or float("nan") for r in points],
                          "-o", label=f"{path}: longest buy")[0]
        tails.plot(books, [r["during"]["p99_ms"] or float("nan") for r in points], "--s",
                   color=line.get_color(), label=f"{path}: p99")
        times.plot(books, [r["rejoin_s"] for r in points], "-o", label=path)
    tails.axhline(REJOIN_LIMIT_MS, color="grey", linestyle=":",
                  label=f"target: {REJOIN_LIMIT_MS:g} ms")
    tails.set_yscale("log")
    tails.set_ylabel("ms at the client")
    tails.set_title("Buys while a catalog backup rejoins")
    times.set_ylabel("seconds")
    times.set_ylim(bottom=0)
    times.set_title("Restart until it serves as a backup")
    for axis in (tails, times):
        axis.set_xscale("log")
        axis.set_xlabel("books in the catalog")
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize="small")
    return _save(figure, directory / "rejoin.png")


CHARTS: tuple[Callable[[dict[str, Any], Path], Path | None], ...] = (
    tiers_chart, invalidation_chart, throughput_chart, catalog_size_chart, rejoin_chart)


def write_all(results: dict[str, Any], directory: Path) -> list[Path]:
    """Every chart the run has figures for; the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    return [path for chart in CHARTS if (path := chart(results, directory)) is not None]


def _save(figure: Figure, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
