"""A walk through pyrostore: bring a store up, shop in it, kill a replica, stop what was started.

    python demo.py                  # uses a name server at 127.0.0.1:9090 if one answers
    python demo.py --ns-port 9999   # or starts an embedded one there

If the name server already knows a running store (``pyrostore up`` in another shell), the demo
shops in that one and starts nothing; otherwise it starts one with its own data in a temporary
directory, kills its catalog primary to show the store selling on and the replica rejoining,
then its coordinator leader to show the same of the control plane, and stops exactly the
processes it started.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.rule import Rule

from pyrostore import Client, OutOfStock, PyrostoreError
from pyrostore.cli import secure_process
from pyrostore.client.views import book_table, order_table, status_table
from pyrostore.config import Settings
from pyrostore.discovery import find, name_server_answers
from pyrostore.launcher import Cluster

BOOK = 2  # "RPCs for Dummies": 4 in stock at the start, so running out is quick


def walk_through(store: Client, console: Console) -> None:
    """The steps of the demo, each printed as it happens."""
    step(console, "Topics", "client.topics()")
    console.print(", ".join(store.topics()))

    step(console, "Search a topic (any case)", 'client.search("Distributed Systems")')
    console.print(book_table(store.search("Distributed Systems")))

    step(console, "Look up one book", f"client.lookup({BOOK})")
    book = store.lookup(BOOK)
    console.print(book_table([book]))

    step(console, "Buy a copy", f"client.buy({BOOK})")
    console.print(order_table([store.buy(BOOK)]))
    console.print(f"stock now: [bold]{store.lookup(BOOK)['stock']}[/bold] "
                  f"(was {book['stock']})")

    too_many = store.lookup(BOOK)["stock"] + 1
    step(console, "Buy more than the stock", f"client.buy({BOOK}, {too_many})")
    try:
        store.buy(BOOK, too_many)
        console.print("[red]the store sold more than it had[/red]")
        raise SystemExit(1)
    except OutOfStock as exc:
        console.print(f"[red]OutOfStock:[/red] {exc}; stock still "
                      f"{store.lookup(BOOK)['stock']}, nothing was changed")

    step(console, "Restock it (admin)", f"client.update({BOOK}, stock_delta=10)")
    console.print(book_table([store.update(BOOK, stock_delta=10)]))

    step(console, "Now the big order goes through", f"client.buy({BOOK}, {too_many})")
    console.print(order_table([store.buy(BOOK, too_many)]))

    step(console, "The order log", "client.orders(limit=5)")
    console.print(order_table(store.orders(limit=5)))

    step(console, "The cluster", "pyrostore status")
    console.print(status_table(store.status()))


def survive_a_crash(cluster: Cluster, store: Client, console: Console) -> None:
    """Kill the catalog primary with SIGKILL, keep selling, bring it back level."""
    victim = next(row for row in store.status()
                  if row["role"] == "catalog" and row["state"] == "primary")
    step(console, "Kill the catalog primary", f"kill -9 {victim['pid']}")
    cluster.kill("catalog", victim["id"])
    console.print(f"catalog replica {victim['id']} is gone; buying goes on (the coordinators "
                  "promote the backup once the dead primary's lease is over)…")
    started = time.monotonic()
    order = store.buy(BOOK)
    console.print(order_table([order]))
    console.print(f"that buy waited {time.monotonic() - started:.1f} s for the failover")
    console.print(status_table(store.status(), title="the cluster without it"))

    step(console, "Restart it with the same command", cluster.child("catalog",
                                                                    victim["id"]).command())
    cluster.spawn("catalog", victim["id"])
    with console.status("it rejoins: a snapshot from the primary, then it is a backup…"):
        cluster.wait_ready("catalog", victim["id"])
    console.print(status_table(store.status(), title="back, and level"))


def survive_a_coordinator_crash(cluster: Cluster, store: Client, console: Console) -> None:
    """Kill the coordinator leader with SIGKILL: the other two elect a new one, and buys go on."""
    leader = next(row for row in store.status()
                  if row["role"] == "coordinator" and row["state"] == "leader")
    store.update(BOOK, stock_delta=1000)  # enough to buy without pause for a while
    step(console, "Kill the coordinator leader", f"kill -9 {leader['pid']}")
    cluster.kill("coordinator", leader["id"])
    console.print(f"coordinator {leader['id']} is gone; the other two elect a leader (Raft) "
                  "while the replicas' leases still run, so buying hardly pauses…")
    started, bought = time.monotonic(), 0
    while time.monotonic() < started + 2.0:
        store.buy(BOOK)
        bought += 1
    console.print(f"{bought} buys in the 2 s after the kill")
    new_leader = wait_for_leader(store, other_than=leader["id"])
    console.print(f"coordinator {new_leader} leads now")
    step(console, "Restart it with the same command", cluster.child(
        "coordinator", leader["id"]).command())
    cluster.spawn("coordinator", leader["id"])
    with console.status("it catches up with the others' log…"):
        cluster.wait_ready("coordinator", leader["id"])
    console.print(status_table(store.status(), title="three coordinators again"))


def wait_for_leader(store: Client, *, other_than: int) -> int:
    """The id of the coordinator leading now (not ``other_than``)."""
    deadline = time.monotonic() + 10.0
    while time.monotonic() < deadline:
        for row in store.status():
            if (row["role"] == "coordinator" and row["state"] == "leader"
                    and row["id"] != other_than):
                return int(row["id"])
        time.sleep(0.1)  # polling the cluster's status; nothing to wait on
    raise PyrostoreError("no coordinator leads 10 s after the leader died")


def open_shell(store: Client) -> None:
    """The full-screen client on the same store, until q."""
    from pyrostore.client.tui import StoreApp

    StoreApp(store).run()


def step(console: Console, title: str, code: str) -> None:
    """Print a step's heading and the call it makes."""
    console.print(Rule(f"[bold]{title}[/bold]", align="left"))
    console.print(f"[dim]>>> {code}[/dim]")


def main(argv: list[str] | None = None) -> int:
    """Run the demo; the exit code is 0 when every step did what it should."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ns-host", help="name server host (127.0.0.1)")
    parser.add_argument("--ns-port", type=int, help="name server port (9090)")
    parser.add_argument("--shell", action="store_true",
                        help="end in the full-screen terminal client (q quits it)")
    args = parser.parse_args(argv)
    console = Console()
    with tempfile.TemporaryDirectory(prefix="pyrostore-demo-") as data:
        settings = Settings.from_env(ns_host=args.ns_host, ns_port=args.ns_port,
                                     data_dir=Path(data))
        try:
            # mutual TLS, as every process of the store: a CA and certificates of its own,
            # unless PYROSTORE_CERTS_DIR names those of a running store
            secure_process(settings, service=False, make_certs=True)
            run(settings, console, shell=args.shell)
        except PyrostoreError as exc:
            console.print(f"[red]demo failed:[/red] {exc}")
            return 1
    return 0


def run(settings: Settings, console: Console, *, shell: bool = False) -> None:
    """Use the store already registered at the name server, or start (and stop) one."""
    if name_server_answers(settings) and find(settings, "frontend"):
        console.print(f"using the store already running at {settings.ns_host}:{settings.ns_port}")
        with Client(settings=settings) as store:
            walk_through(store, console)
            if shell:
                open_shell(store)
        return
    with Cluster(settings) as cluster:
        with console.status("starting a store…"):
            cluster.start(progress=lambda text: console.print(f"[green]✓[/green] {text}"))
        with Client(settings=settings) as store:
            walk_through(store, console)
            survive_a_crash(cluster, store, console)
            survive_a_coordinator_crash(cluster, store, console)
            if shell:
                open_shell(store)
        console.print(Rule())
        console.print(f"stopping the {len(cluster.children)} processes the demo started")
    console.print("[green]done[/green]")


if __name__ == "__main__":
    sys.exit(main())
