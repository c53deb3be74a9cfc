"""Rich tables of a run's figures: pure functions from the results dict to renderables.

bench.py prints them; tests render them to ``Console(file=io.StringIO())``. A time cell reads
``mean`` over ``p50/p99`` (milliseconds); the original report gave means only.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from benchmarks import original
from benchmarks.figures import ratio

TIERS = original.TIERS
OPS = ("search", "lookup", "buy")


def ms(value: float | None, digits: int | None = None) -> str:
    """``1.23``, ``12.3``, ``123`` (milliseconds: three significant figures unless ``digits``
    says how many decimals), or a dash when there is no figure."""
    if value is None:
        return "-"
    if digits is None:
        digits = 2 if value < 10 else 1 if value < 100 else 0
    return f"{value:,.{digits}f}"


def times(summary: Mapping[str, Any] | None) -> Text:
    """A tier cell: the mean, and under it p50/p99, dimmed."""
    if not summary or not summary.get("count"):
        return Text("-", style="dim")
    cell = Text(ms(summary["mean_ms"]))
    cell.append(f"\n{ms(summary['p50_ms'])}/{ms(summary['p99_ms'])}", style="dim")
    return cell


def tier_table(entry: Mapping[str, Any]) -> Table:
    """One configuration of experiment 1, laid out as the original report's tables."""
    cache = "with cache" if entry["cache"] else "without cache"
    clients = entry["clients"]
    table = Table(title=f"{clients} client{'s' if clients > 1 else ''} {cache}",
                  header_style="bold", caption="ms: mean, under it p50/p99; "
                  "2020: the original report's mean at the client")
    table.add_column("function")
    for tier in TIERS:
        table.add_column(tier, justify="right")
    table.add_column("req/s", justify="right")
    table.add_column("2020", justify="right", style="magenta")
    for op in OPS:
        row = entry["rows"][op]
        table.add_row(f"{op.capitalize()}()", *(times(row.get(tier)) for tier in TIERS),
                      f"{entry['ops_per_s'][op]:,.0f}",
                      ms(original.original_mean(entry["cache"], clients, op, "client"), 1))
    return table


def invalidation_table(result: Mapping[str, Any]) -> Table:
    """Experiment 2: each step's latency at the client, and the original's hit and miss."""
    table = Table(title=f"Cost of an invalidation ({result['rounds']} rounds, one client)",
                  header_style="bold",
                  caption="2020: logged by the original frontend, not at the client")
    for name in ("step", "mean ms", "p50 ms", "p99 ms", "2020 ms"):
        table.add_column(name, justify="left" if name == "step" else "right")
    steps = (("first", "lookup (fills, or hits if cached)", None),
             ("hit", "lookup (hit)", original.HIT_MS),
             ("buy", "buy (invalidates)", None),
             ("miss", "lookup (miss)", original.MISS_MS))
    for key, label, before in steps:
        figures = result[key]
        table.add_row(label, ms(figures["mean_ms"]), ms(figures["p50_ms"]),
                      ms(figures["p99_ms"]), ms(before))
    reads = result.get("catalog_reads") or {}
    if reads.get("count"):
        table.add_row(f"  of a miss: the catalog's read ({reads['count']} reads)",
                      ms(reads["mean_ms"]), ms(reads["p50_ms"]), ms(reads["p99_ms"]), "")
    table.add_row(Text("miss / hit", style="bold"), f"{result['miss_over_hit_mean']:.1f}x",
                  f"{result['miss_over_hit_p50']:.1f}x", "",
                  f"{original.MISS_MS / original.HIT_MS:.1f}x")
    return table


def crash_tables(result: Mapping[str, Any]) -> Group:
    """Experiment 3: the timeline, then each replica's final state."""
    timeline = Table(title="Crash and recovery: 9 buys of book 1", header_style="bold")
    timeline.add_column("t (s)", justify="right")
    timeline.add_column("event")
    timeline.add_column("buy latency ms", justify="right")
    for event in result["events"]:
        details = ", ".join(f"{k}={v}" for k, v in event.items()
                            if k not in ("t_s", "event", "latency_ms"))
        text = event["event"] + (f" [dim]({details})[/dim]" if details else "")
        timeline.add_row(f"{event['t_s']:.3f}", text, ms(event.get("latency_ms"), 1))
    final = Table(title="Final state", header_style="bold",
                  caption=f"expected: stock {original.CRASH_FINAL_STOCK} on every catalog "
                  f"replica, {original.CRASH_BUYS} orders on every order replica")
    for name in ("replica", "book 1 stock", "orders"):
        final.add_column(name, justify="right")
    for replica in ("1", "2"):
        final.add_row(replica, str(result["final"]["catalog_stock"][replica]),
                      str(result["final"]["order_count"][replica]))
    return Group(timeline, final)


def failover_table(result: Mapping[str, Any]) -> Table:
    """Experiment 5: how long buys stopped when each kind of process was killed."""
    table = Table(title=f"Longest time without a buy, {result['kills']} kill(s) of each, "
                  f"{result['shoppers']} shoppers", header_style="bold",
                  caption=f"lease {result['lease_s']:g} s; each killed with SIGKILL, then "
                  "restarted")
    for name in ("killed", "median s", "worst s", "each kill (s)"):
        table.add_column(name, justify="left" if name in ("killed", "each kill (s)")
                         else "right")
    for victim, figures in result["series"].items():
        table.add_row(victim, f"{figures['median_s']:.3f}", f"{figures['worst_s']:.3f}",
                      " ".join(f"{gap:.2f}" for gap in figures["gaps_s"]))
    return table


def throughput_table(series: Mapping[str, list[Mapping[str, Any]]]) -> Table:
    """Experiment 4a: requests per second and latency as clients are added."""
    table = Table(title="Throughput as clients are added", header_style="bold",
                  caption="every client a process of its own, requests back to back")
    for name in ("clients", "cached lookups/s", "p50 ms", "p99 ms", "buys/s", "p50 ms ",
                 "p99 ms "):
        table.add_column(name, justify="right")
    buys = {p["clients"]: p for p in series.get("buy", [])}
    for point in series.get("lookup", []):
        buy = buys.get(point["clients"], {})
        table.add_row(str(point["clients"]), f"{point['ops_per_s']:,.0f}",
                      ms(point["p50_ms"]), ms(point["p99_ms"]),
                      f"{buy['ops_per_s']:,.0f}" if buy else "-",
                      ms(buy.get("p50_ms")), ms(buy.get("p99_ms")))
    return table


def size_table(rows: list[Mapping[str, Any]]) -> Table:
    """Experiment 4b: lookup and search latency as the catalog grows (no cache), and how long
    the catalog replicas took to start."""
    table = Table(title="Latency as the catalog grows (cache off, one client)",
                  header_style="bold", caption="ms: mean, under it p50/p99; catalog start-up: "
                  "from the spawn of the 2 catalog replicas until both serve, each loading "
                  "the inventory into its SQLite file, then the second joining the group (a first "
                  "start)")
    for name in ("books", "lookup, client", "lookup, catalog", "search, client",
                 "search, catalog", "books per search", "view changes", "catalog start-up s"):
        table.add_column(name, justify="right")
    for row in rows:
        changes = row.get("catalog_view_changes", 0)
        start = row.get("catalog_start_s")
        table.add_row(f"{row['books']:,}", times(row["lookup"]["client"]),
                      times(row["lookup"]["catalog"]), times(row["search"]["client"]),
                      times(row["search"]["catalog"]), str(row["topic_books"]),
                      Text(str(changes), style="bold red" if changes else ""),
                      "-" if start is None else f"{start:.1f}")
    return table


def rejoin_table(result: Mapping[str, Any]) -> Table:
    """The rejoin experiment: the time a catalog backup took to rejoin, and the buys meanwhile."""
    rows = result["rows"]
    caption = ("buys: each in flight between the restart and its serving again (a refused one "
               "too: its time is its shopper's wait); stalled: the longest time without an "
               "acknowledged buy from the restart on; before: p50 in the second before the "
               "kill; missed: buys acknowledged while it was away; failed: buys refused in the "
               "whole run; snapshot: the store runs with PYROSTORE_CATCH_UP_LIMIT=0")
    if all(row.get("catch_up_limit") is None for row in rows):
        caption += " (a setting this release lacks: both paths rejoined alike)"
    table = Table(title="Buys while a catalog backup rejoins (one client buying)",
                  header_style="bold", caption=caption)
    by = any(row.get("rejoin") for row in rows)
    names = ("books", "path", *(("by",) if by else ()), "rejoin s", "buys", "p50 ms",
             "p99 ms", "max ms", "stalled s", "before p50", "missed", "failed", "level")
    for name in names:
        table.add_column(name, justify="left" if name in ("path", "by") else "right")
    for row in rows:
        during, failed = row["during"], row["failed_buys"]
        table.add_row(f"{row['books']:,}", row["path"],
                      *(((row.get("rejoin") or {}).get("by", "-"),) if by else ()),
                      f"{row['rejoin_s']:.2f}", str(during["count"]), ms(during["p50_ms"]),
                      ms(during["p99_ms"]), ms(during["max_ms"]), f"{during['stalled_s']:.2f}",
                      ms(row["before"]["p50_ms"]), str(row["missed_buys"]),
                      Text(str(failed), style="bold red" if failed else ""),
                      Text("yes" if row["level"] else "NO",
                           style="" if row["level"] else "bold red"))
    return table


def baseline_table(results: Mapping[str, Any]) -> Table:
    """Experiment 5: the bare Pyro5 call, and the 1-client figures as multiples of it."""
    bare = results["baseline"]["ping"]
    transport = "plaintext" if results["plan"].get("insecure") else "mutual TLS"
    table = Table(title=f"Against a bare Pyro5 call ({results['baseline']['serializer']}, "
                        f"{transport})",
                  header_style="bold",
                  caption="x : the figure over the bare call's, timed with a store up")
    for name in ("call", "p50 ms", "x p50", "mean ms", "x mean"):
        table.add_column(name, justify="left" if name == "call" else "right")
    table.add_row("bare Pyro5 ping(), store up", ms(bare["p50_ms"], 3), "1.0",
                  ms(bare["mean_ms"], 3), "1.0")
    for burst in results["baseline"].get("bursts", []):
        table.add_row(Text(f"  {burst['when']} ({burst['count']} calls)", style="dim"),
                      ms(burst["p50_ms"], 3), ms(ratio(burst["p50_ms"], bare["p50_ms"]), 2),
                      ms(burst["mean_ms"], 3), ms(ratio(burst["mean_ms"], bare["mean_ms"]), 2))
    rate = results["baseline"].get("throughput")
    if rate:
        table.add_row(f"bare Pyro5 ping(), {rate['clients']} clients at once",
                      ms(rate["p50_ms"], 3), ms(ratio(rate["p50_ms"], bare["p50_ms"]), 1),
                      ms(rate["mean_ms"], 3), f"{rate['ops_per_s']:,.0f} calls/s")
    for entry in results.get("tiers", {}).get("configs", []):
        if entry["clients"] != 1:
            continue
        for op in OPS:
            client = entry["rows"][op]["client"]
            p50, mean = ratio(client["p50_ms"], bare["p50_ms"]), ratio(client["mean_ms"],
                                                                       bare["mean_ms"])
            table.add_row(f"{op}, cache {'on' if entry['cache'] else 'off'}",
                          ms(client["p50_ms"], 3), ms(p50, 1), ms(client["mean_ms"], 3),
                          ms(mean, 1))
    return table


def targets_table(rows: list[Mapping[str, Any]]) -> Table:
    """The issue's targets: limit, measured, met."""
    table = Table(title="Targets", header_style="bold")
    for name in ("target", "limit", "measured", "met", "from"):
        table.add_column(name, justify="right" if name in ("limit", "measured") else "left")
    verdicts = {True: Text("yes", style="green"), False: Text("no", style="bold red"),
                None: Text("unknown", style="dim")}
    for row in rows:
        digits = 3 if row["unit"] in ("ms", "s") else 0
        table.add_row(row["target"], _amount(row["limit"], row["unit"], digits),
                      _amount(row["measured"], row["unit"], digits), verdicts[row["met"]],
                      row["source"])
    return table


def machine_table(machine: Mapping[str, Any]) -> Table:
    """Where the run happened."""
    table = Table(title="Machine", header_style="bold", show_header=False)
    table.add_column("what")
    table.add_column("value")
    for key, value in machine.items():
        table.add_row(key, str(value))
    return table


def everything(results: Mapping[str, Any]) -> list[RenderableType]:
    """Every table the run has figures for, in experiment order."""
    out: list[RenderableType] = [machine_table(results["machine"])]
    out += [tier_table(entry) for entry in results.get("tiers", {}).get("configs", [])]
    if "rounds" in results.get("invalidation", {}):
        out.append(invalidation_table(results["invalidation"]))
    if "events" in results.get("crash", {}):
        out.append(crash_tables(results["crash"]))
    if "series" in results.get("failover", {}):
        out.append(failover_table(results["failover"]))
    scale = results.get("scale", {})
    if scale.get("throughput"):
        out.append(throughput_table(scale["throughput"]))
    if scale.get("catalog_size"):
        out.append(size_table(scale["catalog_size"]))
    if "ping" in results.get("baseline", {}):
        out.append(baseline_table(results))
    if results.get("rejoin", {}).get("rows"):
        out.append(rejoin_table(results["rejoin"]))
    out.append(targets_table(results["targets"]))
    skipped = [f"{name}: {section['skipped']}" for name, section in results.items()
               if isinstance(section, Mapping) and "skipped" in section]
    out += [Text(f"skipped {line}", style="yellow") for line in skipped]
    return out


def _amount(value: float | None, unit: str, digits: int) -> str:
    if value is None:
        return "-"
    if unit in ("ms", "s"):
        return f"{value:,.{digits}f} {unit}"
    return f"{value:,.{digits}f}/s"
