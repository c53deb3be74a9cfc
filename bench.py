"""Benchmark pyrostore: the original report's experiments, and the transport's own cost.

Experiments (choose with --only; all by default):

  tiers         response time of search, lookup and buy at the client, the frontend, the
                catalog and the order service (the services' own stats()), cache on and off,
                for each number of concurrent clients (--clients), as the original tables
  invalidation  lookup, lookup (hit), buy (invalidates), lookup (miss), --rounds times
  crash         9 buys of book 1 (stock 10) while catalog replica 1, then 2, is SIGKILLed
                and restarted; a timeline, each buy's latency, every replica's final state
  scale         requests/s and p99 of cached lookups and of buys as clients go 1 -> 32
                (--scale-clients), and lookup/search latency as the catalog grows (--sizes),
                with the start-up of the catalog replicas of each size (from their spawn
                until both serve; each loads the generated inventory on this first start)
  failover      buys from 4 threads while the coordinator leader, a coordinator follower,
                the catalog primary, the order primary and a catalog backup are each
                SIGKILLed and restarted --kills times: the longest time without a buy
  baseline      a bare Pyro5 call (a method returning a constant, in a process of its own,
                same serializer), timed before any store starts and with each store up
                (idle) before its tiers: every figure is also printed as a multiple of it;
                and its calls/s from as many clients as the most of --clients
  rejoin        for each catalog size (--rejoin-sizes) and path (catch-up: the default;
                snapshot: PYROSTORE_CATCH_UP_LIMIT=0), one client buying without pause
                while the catalog backup is SIGKILLed, left out 1 s, restarted: the time
                from its restart until it serves as a backup, and the p50/p99/max of the
                buys in flight meanwhile

Every measured client is a process of its own (multiprocessing, spawn) running its own
pyrostore.Client. The benchmark starts its own stores on free ports of 127.0.0.1 in a
temporary directory (2 catalog + 2 order replicas + 1 frontend; a second one with the cache
off; a fresh one for the crash experiment, one for failover; one per catalog size; one per
size and path of rejoin) and stops all of them, whatever happens. With --ns-host/--ns-port
it measures a running store instead: it adds "benchmark shelf" books there and buys from
them, measures only the cache setting that store has, and skips crash, failover, rejoin and
catalog sizes (it kills nothing it did not start).

With no arguments it runs all experiments in 10-15 minutes on 2 cores (the million-book
stores take most of it); --quick runs them all in about two minutes with small numbers (for
tests). Figures go to the terminal as tables; --json writes them all with the machine's
description, --plot writes PNG charts.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import platform
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import Pyro5
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from benchmarks import report, security
from benchmarks.crash import BUYS, run_crash
from benchmarks.failover import VICTIMS, run_failover
from benchmarks.latency import (
    QUIET,
    bare_calls,
    bare_throughput,
    baseline,
    run_invalidation,
    run_tiers,
)
from benchmarks.pool import BenchError, ClientPool
from benchmarks.rejoin import PATHS, rejoin_series
from benchmarks.scale import run_throughput, sizes_series
from benchmarks.stores import Stores, caches, shelve_books, store_settings
from benchmarks.targets import check
from pyrostore.config import SERIALIZERS, Settings
from pyrostore.errors import PyrostoreError

EXPERIMENTS = ("tiers", "invalidation", "crash", "scale", "failover", "baseline", "rejoin")


@dataclasses.dataclass(frozen=True)
class Plan:
    """What one run measures, and how much of it."""

    experiments: tuple[str, ...]
    requests: int  # searches and lookups per client, experiment 1
    buys: int  # buys per client, experiment 1
    clients: tuple[int, ...]  # concurrent clients, experiment 1
    rounds: int  # experiment 2
    scale_clients: tuple[int, ...]
    seconds: float  # per point of the throughput series
    sizes: tuple[int, ...]  # books in the catalog
    size_requests: int  # lookups and searches per catalog size
    calls: int  # bare Pyro5 calls
    kills: int  # of each victim, failover
    rejoin_sizes: tuple[int, ...]  # books in the catalog, rejoin
    serializer: str
    insecure: bool = False  # plaintext instead of mutual TLS


PROFILES: dict[str, dict[str, Any]] = {
    "default": {"requests": 1000, "buys": 200, "clients": (1, 5, 10), "rounds": 200,
                "scale_clients": (1, 2, 4, 8, 16, 32), "seconds": 1.5,
                "sizes": (7, 100, 1_000, 10_000, 100_000, 1_000_000), "size_requests": 300,
                "calls": 2000, "kills": 5, "rejoin_sizes": (10_000, 100_000, 1_000_000)},
    "quick": {"requests": 30, "buys": 15, "clients": (1, 2, 4), "rounds": 30,
              "scale_clients": (1, 2, 4, 8), "seconds": 0.5, "sizes": (7, 2_000),
              "size_requests": 30, "calls": 300, "kills": 1, "rejoin_sizes": (2_000,)},
}


def numbers(text: str) -> tuple[int, ...]:
    """``"1,5,10"`` -> ``(1, 5, 10)``, each at least 1."""
    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of numbers: {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"need numbers of at least 1: {text!r}")
    return values


def positive(text: str) -> int:
    """``"5"`` -> ``5``, at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"need at least 1: {text!r}")
    return value


def experiments(text: str) -> tuple[str, ...]:
    """``"tiers,crash"`` -> the experiments, checked."""
    chosen = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = set(chosen) - set(EXPERIMENTS)
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(f"choose from {','.join(EXPERIMENTS)}")
    return chosen


def build_parser() -> argparse.ArgumentParser:
    """Every option, with its default in the default and the --quick profile."""
    parser = argparse.ArgumentParser(
        prog="bench.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    quick, full = PROFILES["quick"], PROFILES["default"]

    def default(name: str) -> str:
        def show(value: Any) -> str:
            return ",".join(map(str, value)) if isinstance(value, tuple) else str(value)
        return f" (default {show(full[name])}; --quick {show(quick[name])})"

    parser.add_argument("--quick", action="store_true",
                        help="small numbers everywhere: the whole run in about two minutes")
    parser.add_argument("--only", type=experiments, default=EXPERIMENTS, metavar="LIST",
                        help=f"comma-separated experiments to run, of {','.join(EXPERIMENTS)}")
    size = parser.add_argument_group("how much to measure")
    size.add_argument("--requests", type=positive, metavar="N",
                      help="tiers: searches and lookups per client" + default("requests"))
    size.add_argument("--buys", type=positive, metavar="N",
                      help="tiers: buys per client (each is a replicated, fsynced write, ~100x "
                      "a lookup: 1000 makes the run several minutes longer)" + default("buys"))
    size.add_argument("--clients", type=numbers, metavar="LIST",
                      help="tiers: numbers of concurrent clients" + default("clients"))
    size.add_argument("--rounds", type=positive, metavar="N",
                      help="invalidation: lookup/lookup/buy/lookup rounds" + default("rounds"))
    size.add_argument("--scale-clients", type=numbers, metavar="LIST",
                      help="scale: client counts of the throughput series"
                      + default("scale_clients"))
    size.add_argument("--seconds", type=float, metavar="S",
                      help="scale: seconds per point of the throughput series" + default("seconds"))
    size.add_argument("--sizes", type=numbers, metavar="LIST",
                      help="scale: catalog sizes in books" + default("sizes"))
    size.add_argument("--size-requests", type=positive, metavar="N",
                      help="scale: lookups and searches per catalog size"
                      + default("size_requests"))
    size.add_argument("--calls", type=positive, metavar="N",
                      help="baseline: bare Pyro5 calls per burst" + default("calls"))
    size.add_argument("--kills", type=positive, metavar="N",
                      help="failover: kills of each victim" + default("kills"))
    size.add_argument("--rejoin-sizes", type=numbers, metavar="LIST",
                      help="rejoin: catalog sizes in books, each measured by "
                      f"{' and by '.join(PATHS)}" + default("rejoin_sizes"))
    where = parser.add_argument_group("which store")
    where.add_argument("--ns-host", help="measure the running store whose name server is here")
    where.add_argument("--ns-port", type=int, help="... and on this port (default 9090)")
    where.add_argument("--serializer", choices=SERIALIZERS, default=Settings().serializer,
                       help="Pyro5 serializer of the stores started and of every client "
                       f"(default {Settings().serializer}, the store's)")
    where.add_argument("--insecure", action="store_true",
                       help="plaintext, no certificates (to measure what TLS costs)")
    out = parser.add_argument_group("output")
    out.add_argument("--json", type=Path, metavar="FILE",
                     help="write every figure and the machine's description as JSON")
    out.add_argument("--plot", type=Path, metavar="DIR",
                     help="write PNG charts into DIR (needs matplotlib, which nothing else does)")
    return parser


def make_plan(args: argparse.Namespace) -> Plan:
    """The profile's numbers, overridden by the options given."""
    profile = PROFILES["quick" if args.quick else "default"]
    values = {name: profile[name] if getattr(args, name) is None else getattr(args, name)
              for name in profile}
    return Plan(experiments=args.only, serializer=args.serializer, insecure=args.insecure,
                **values)


def commit() -> str:
    """The repository's commit, ``+`` if pyrostore/ has uncommitted changes ("" outside git)."""
    root = Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, text=True,
                              capture_output=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "pyrostore"], cwd=root,
                               text=True, capture_output=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""
    return head + ("+" if head and dirty else "")


def machine(serializer: str) -> dict[str, Any]:
    """Where the figures come from."""
    cpu = ""
    with contextlib.suppress(OSError):
        cpu = next((line.split(":", 1)[1].strip() for line in
                    Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name")), "")
    return {"cores": os.cpu_count(), "cpu": cpu or platform.processor(), "commit": commit(),
            "python": platform.python_version(), "pyro5": Pyro5.__version__,
            "serializer": serializer, "sqlite": sqlite3.sqlite_version,
            "platform": platform.platform(),
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "load_before": " ".join(f"{x:.2f}" for x in os.getloadavg())}


class Runner:
    """Runs the plan's experiments, starting and stopping the stores they need."""

    def __init__(self, plan: Plan, pool: ClientPool, workdir: Path, progress: Progress,
                 external: Settings | None) -> None:
        self.plan, self.pool, self.workdir = plan, pool, workdir
        self.progress, self.external = progress, external
        self.stores = Stores()
        self._bursts: list[tuple[str, list[float]]] = []
        self._bare_rate: dict[str, Any] | None = None
        self.results: dict[str, Any] = {}
        self.tasks: dict[str, Any] = {}

    def run(self) -> dict[str, Any]:
        """Every experiment of the plan; the results by section."""
        self._add_tasks()
        self.pool.ensure(max(self._client_counts()))
        if self._wants("baseline") and self.external is None:
            self._bare(Settings(serializer=self.plan.serializer), QUIET)
        try:
            if self.external is not None:
                self._on_store(self.external)
            else:
                self._with_own_stores()
        finally:
            self.stores.close()
        if self._wants("baseline"):
            self.results["baseline"] = baseline(self._bursts, serializer=self.plan.serializer)
            self.results["baseline"]["throughput"] = self._bare_rate
        return self.results

    def _with_own_stores(self) -> None:
        plan = self.plan
        if {"tiers", "invalidation", "scale", "baseline"} & set(plan.experiments):
            with self._store("cached store", cache=True) as settings:
                self._on_store(settings)
        if self._wants("tiers"):
            with self._store("store without cache", cache=False) as settings:
                items = shelve_books(settings)
                if self._wants("baseline"):
                    self._bare(settings, "uncached store up, idle")
                self._tiers(settings, items, cache=False)
        if self._wants("crash"):
            self._crash()
        if self._wants("failover"):
            self._failover()
        if self._wants("rejoin"):
            self.results["rejoin"] = {"paths": PATHS, "rows": rejoin_series(
                self.stores, self.workdir, sizes=list(plan.rejoin_sizes),
                serializer=plan.serializer, tick=self._ticker("rejoin"), on_store=self._say)}
        if self._wants("scale"):
            self.results.setdefault("scale", {})["catalog_size"] = sizes_series(
                self.pool, self.stores, self.workdir, sizes=list(plan.sizes),
                requests=plan.size_requests,
                serializer=plan.serializer, tick=self._ticker("sizes"), on_store=self._say)

    def _on_store(self, settings: Settings) -> None:
        """Everything that runs on the main (cached) store."""
        cache = caches(settings)
        items = shelve_books(settings)
        if self._wants("baseline"):
            self._bare(settings, f"{'cached' if cache else 'uncached'} store up, idle")
            clients = max(self.plan.clients)
            self._say(f"baseline: bare Pyro5 calls from {clients} clients at once")
            self._bare_rate = bare_throughput(self.pool, settings, clients=clients,
                                              seconds=self.plan.seconds)
        if self._wants("tiers"):
            self._tiers(settings, items, cache=cache)
        if self._wants("invalidation"):
            if cache:
                self._say("invalidation: lookup, lookup, buy, lookup")
                self.results["invalidation"] = run_invalidation(
                    self.pool, settings, rounds=self.plan.rounds, items=items,
                    tick=self._ticker("invalidation"))
            else:
                self.results["invalidation"] = {"skipped": "the store does not cache"}
        if self._wants("scale"):
            self.results["scale"] = {"throughput": self._throughput(settings, items)}
        if self.external is not None:
            self.results["crash"] = {"skipped": "it kills replicas: only of a store it started"}
            self.results["failover"] = {
                "skipped": "it kills processes: only of a store it started"}
            self.results["rejoin"] = {"skipped": "it kills replicas: only of a store it started"}
            self.results.setdefault("scale", {})["skipped"] = (
                "catalog sizes: only on stores it starts")

    def _tiers(self, settings: Settings, items: tuple[int, ...], *, cache: bool) -> None:
        configs = self.results.setdefault("tiers", {"configs": []})["configs"]
        for clients in self.plan.clients:
            self._say(f"tiers: {clients} client(s), cache {'on' if cache else 'off'}")
            configs.append(run_tiers(self.pool, settings, clients=clients,
                                     requests=self.plan.requests, buys=self.plan.buys,
                                     items=items, tick=self._ticker("tiers")))

    def _bare(self, settings: Settings, when: str) -> None:
        """A burst of bare Pyro5 calls: one before any store starts, then one with each
        store up, before its tiers (the same background load as the figures set against it)."""
        self._say(f"baseline: bare Pyro5 calls, {when}")
        self._bursts.append((when, bare_calls(self.pool, settings, calls=self.plan.calls,
                                              tick=self._ticker("baseline"))))

    def _throughput(self, settings: Settings, items: tuple[int, ...]
                    ) -> dict[str, list[dict[str, Any]]]:
        series: dict[str, list[dict[str, Any]]] = {}
        for op in ("lookup", "buy"):  # lookups first: no buy invalidates their entries
            for clients in self.plan.scale_clients:
                self._say(f"throughput: {op}, {clients} client(s)")
                series.setdefault(op, []).append(run_throughput(
                    self.pool, settings, op=op, clients=clients, seconds=self.plan.seconds,
                    items=items))
                self._advance("throughput")
        return series

    def _crash(self) -> None:
        settings = store_settings(self.workdir / "crash", cache=True,
                                  serializer=self.plan.serializer)
        self._say("crash: starting a fresh store")
        with self.stores.started(settings) as cluster:
            self.results["crash"] = run_crash(self.pool, cluster, tick=self._ticker("crash"))

    def _failover(self) -> None:
        settings = store_settings(self.workdir / "failover", cache=True,
                                  serializer=self.plan.serializer)
        self._say("failover: starting a fresh store")
        with self.stores.started(settings) as cluster:
            self.results["failover"] = run_failover(cluster, kills=self.plan.kills,
                                                    tick=self._ticker("failover"))

    @contextlib.contextmanager
    def _store(self, what: str, *, cache: bool) -> Iterator[Settings]:
        settings = store_settings(self.workdir / what.replace(" ", "-"), cache=cache,
                                  serializer=self.plan.serializer)
        began = time.monotonic()
        with self.stores.started(settings):
            self._say(f"{what} up on 127.0.0.1:{settings.ns_port} "
                      f"({time.monotonic() - began:.1f} s)")
            yield settings

    def _wants(self, experiment: str) -> bool:
        return experiment in self.plan.experiments

    def _client_counts(self) -> list[int]:
        counts = [1]
        if self._wants("tiers"):
            counts += self.plan.clients
        if self._wants("scale"):
            counts += self.plan.scale_clients
        return counts

    def _add_tasks(self) -> None:
        plan = self.plan
        own = self.external is None
        modes = 2 if own else 1  # cache on and off, or the running store's
        # bare bursts: before any store and on each own store, or on the running store
        bursts = (3 if self._wants("tiers") else 2) if own else 1
        totals = {
            "baseline": plan.calls * bursts if self._wants("baseline") else 0,
            "tiers": modes * sum(plan.clients) * (2 * plan.requests + plan.buys)
            if self._wants("tiers") else 0,
            "invalidation": plan.rounds if self._wants("invalidation") else 0,
            "crash": BUYS if self._wants("crash") and self.external is None else 0,
            "failover": plan.kills * len(VICTIMS)
            if self._wants("failover") and self.external is None else 0,
            "throughput": 2 * len(plan.scale_clients) if self._wants("scale") else 0,
            "sizes": 2 * len(plan.sizes) * plan.size_requests
            if self._wants("scale") and self.external is None else 0,
            "rejoin": len(PATHS) * len(plan.rejoin_sizes)
            if self._wants("rejoin") and self.external is None else 0,
        }
        for name, total in totals.items():
            if total:
                self.tasks[name] = self.progress.add_task(name, total=total, start=False)

    def _ticker(self, task: str) -> Callable[[int], None]:
        return lambda n: self._advance(task, n)

    def _advance(self, task: str, steps: int = 1) -> None:
        self.progress.start_task(self.tasks[task])  # the clock of a task runs from its first step
        self.progress.advance(self.tasks[task], steps)

    def _say(self, text: str) -> None:
        self.progress.console.log(text)


def external_settings(args: argparse.Namespace) -> Settings | None:
    """The running store to measure, if --ns-host or --ns-port names one."""
    if args.ns_host is None and args.ns_port is None:
        return None
    return Settings.from_env(ns_host=args.ns_host, ns_port=args.ns_port,
                             serializer=args.serializer)


def measure(plan: Plan, workdir: Path, console: Console,
            external: Settings | None) -> dict[str, Any]:
    """Every experiment of ``plan``, with its client processes and a progress display."""
    with ClientPool() as pool, Progress(
            TextColumn("{task.description:<13}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), console=console, refresh_per_second=4) as progress:
        return Runner(plan, pool, workdir, progress, external).run()


def chart_writer(parser: argparse.ArgumentParser, args: argparse.Namespace
                 ) -> Callable[[dict[str, Any], Path], list[Path]] | None:
    """What writes the charts if --plot asks for them, checked before anything is measured:
    matplotlib is imported only then, so the rest of the benchmark runs without it."""
    if args.plot is None:
        return None
    try:
        from benchmarks import plots
    except ImportError as exc:
        parser.error(f"--plot needs matplotlib, which cannot be imported ({exc}); "
                     "install it (pip install matplotlib) or leave out --plot")
    return plots.write_all


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; 0 when done, 1 when an experiment failed, 2 on bad usage, 130 when
    interrupted."""
    parser = build_parser()
    args = parser.parse_args(argv)
    write_charts = chart_writer(parser, args)
    plan = make_plan(args)
    console = Console()
    began = time.monotonic()
    try:
        external = external_settings(args)
        results: dict[str, Any] = {"machine": machine(plan.serializer),
                                   "plan": dataclasses.asdict(plan)}
        with tempfile.TemporaryDirectory(prefix="pyrostore-bench-") as workdir:
            security.prepare(Path(workdir), insecure=plan.insecure, own_stores=external is None)
            results.update(measure(plan, Path(workdir), console, external))
    except (BenchError, PyrostoreError) as exc:
        console.print(f"[red]error:[/red] {exc}", highlight=False)
        return 1
    except KeyboardInterrupt:
        console.print("[red]interrupted[/red]: every store and client it started is stopped")
        return 130
    results["duration_s"] = time.monotonic() - began
    results["machine"]["load_after"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    results["targets"] = check(results)
    for renderable in report.everything(results):
        console.print(renderable)
    console.print(f"done in {results['duration_s']:.0f} s")
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2, default=str))
    if write_charts is not None:
        for path in write_charts(results, args.plot):
            console.print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
