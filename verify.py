"""pyrostore's own Jepsen-style verifier: a store under faults, its history checked.

Starts a store from a cluster file (five hosts: name server, two replica hosts, two frontend
hosts), on network-namespace hosts when run as root (or on 127.0.0.1), lets client processes
shop while nemeses kill, pause, partition and restart its parts, then heals everything and
checks the history: per-item linearizability of lookups, buys and restocks, stock never
negative, replicas agreeing, exact conservation of stock against orders, every acknowledged
order present once on every order replica, no phantom orders, idempotent replays.

    python verify.py                         # a minute, every nemesis this machine allows
    python verify.py --duration 300 --clients 8 --nemesis kill,partition
    python verify.py --hosts loopback        # no namespaces (no partitions)

It prints a report, writes the history (JSON lines), the final state and the nemesis log to
--out, and exits 0 if every check passed, 1 if one failed, 2 if one could not decide.
Its parts are in the ``verifier`` package.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from rich.console import Console
from rich.table import Table

from pyrostore.clusterfile import ClusterSpec
from verifier import layouts
from verifier.deployment import Deployment
from verifier.nemesis import KINDS, NETWORK_KINDS, Network
from verifier.report import exit_code, render
from verifier.run import RunConfig, RunResult, run


def main(argv: list[str] | None = None) -> int:
    """Parse the command line, run the verifier, print the report; the exit code."""
    args = parser().parse_args(argv)
    console = Console()
    hosts = args.hosts
    if hosts == "auto":
        hosts = "netns" if netns_reason() is None else "loopback"
    if hosts == "netns" and (reason := netns_reason()) is not None:
        console.print(f"[red]error:[/red] namespace hosts: {reason}", highlight=False)
        return 2
    kinds = tuple(args.nemesis.split(",")) if args.nemesis else tuple(
        k for k in KINDS if hosts == "netns" or k not in NETWORK_KINDS)
    if hosts != "netns" and NETWORK_KINDS & set(kinds):
        console.print("[red]error:[/red] partition and split need namespace hosts "
                      "(--hosts netns, as root)", highlight=False)
        return 2
    config = RunConfig(duration=args.duration, clients=args.clients, kinds=kinds,
                       items=args.items, seed=args.seed)
    out = Path(args.out or tempfile.mkdtemp(prefix="pyrostore-verify-"))
    console.print(f"verifying on {hosts} hosts for {config.duration:.0f} s with "
                  f"{config.clients} clients; nemeses: {', '.join(kinds)}; files in {out}")
    try:
        result = verify(config, out, netns=hosts == "netns", console=console)
    except Exception as exc:  # a run that could not finish is reported, never a pass
        console.print(f"[red]the run did not finish:[/red] {exc}", highlight=False)
        return 2
    console.print(render(result.checks, title="pyrostore verifier", stats=result.stats))
    console.print(outage_table(result))
    console.print(f"history, final state and nemesis log in {out}")
    return exit_code(result.checks)


def parser() -> argparse.ArgumentParser:
    """The command line."""
    p = argparse.ArgumentParser(prog="verify.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=float, default=60.0, help="seconds of faults (60)")
    p.add_argument("--clients", type=int, default=6, help="client processes (6)")
    p.add_argument("--items", type=int, default=4, help="books the clients fight over (4)")
    p.add_argument("--nemesis", metavar="KINDS",
                   help=f"comma-separated, of {', '.join(KINDS)} (all this machine allows)")
    p.add_argument("--hosts", choices=("auto", "netns", "loopback"), default="auto",
                   help="namespace hosts (root) or 127.0.0.1; auto: namespaces if possible")
    p.add_argument("--out", metavar="DIR", help="where the files go (a new temporary dir)")
    p.add_argument("--seed", type=int, default=int(time.time()), help="the nemeses' seed")
    return p


def verify(config: RunConfig, out: Path, *, netns: bool, console: Console) -> RunResult:
    """Deploy the standard layout, run, stop and clean up everything."""
    with hosts_for(netns) as (addresses, wraps, network, inside):
        spec = ClusterSpec.parse(layouts.cluster_file(
            addresses, ports=None if netns else layouts.loopback_ports(),
            settings=layouts.STORE_SETTINGS))
        shutil.rmtree(out / "store", ignore_errors=True)  # a store of its own, every run
        with inside, Deployment(spec, out / "store", wraps=wraps) as deployment:
            with console.status("starting the store"):
                deployment.start()
            return run(deployment, config, out, network=network,
                       say=lambda text: console.print(f"  {text}", highlight=False))


Place = tuple[dict[str, str], dict[str, list[str]], Network | None,
              contextlib.AbstractContextManager[None]]


@contextlib.contextmanager
def hosts_for(netns: bool) -> Iterator[Place]:
    """Addresses, process wrappers, the partition controls and the driver's place: namespace
    hosts (the driver enters ``ctl``), or all on 127.0.0.1."""
    if not netns:
        yield {h: "127.0.0.1" for h in layouts.HOSTS}, {}, None, contextlib.nullcontext()
        return
    from verifier.netns import Hosts
    from verifier.setns import entered

    with Hosts(list(layouts.HOSTS)) as hosts:
        yield ({h: hosts[h].address for h in layouts.HOSTS},
               {h: ["ip", "netns", "exec", hosts[h].namespace] for h in layouts.HOSTS},
               hosts, entered(hosts["ctl"].namespace))


def netns_reason() -> str | None:
    """None if namespace hosts can be made here, else why not."""
    if os.geteuid() != 0:
        return "they need root"
    from verifier.netns import Hosts

    return Hosts.available()


def outage_table(result: RunResult) -> Table:
    """The longest time without a successful lookup and buy, per nemesis kind."""
    table = Table(title="longest unavailability per nemesis kind", header_style="bold")
    for name in ("nemesis", "episodes", "lookups", "buys"):
        table.add_column(name, justify="left" if name == "nemesis" else "right")
    for kind, worst in sorted(result.outages.items()):
        count = sum(e["kind"] == kind for e in result.episodes)
        table.add_row(kind, str(count), f"{worst.get('lookup', 0):.2f} s",
                      f"{worst.get('buy', 0):.2f} s")
    return table


if __name__ == "__main__":
    sys.exit(main())
