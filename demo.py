"""A walk through pyrostore: bring a store up, shop in it, kill a replica, stop what was started.

    python demo.py                  # its own store, on free ports of 127.0.0.1
    python demo.py --ns-port 9999   # its own store, the name server on port 9999

The demo always runs a store of its own: a name server, coordinators and replicas on free ports
of 127.0.0.1, with their data, logs and certificates in a temporary directory. It never shops
in a store that is already running (``pyrostore up`` in another shell on port 9090 is left
alone), and it refuses an ``--ns-port`` that something already listens on. It kills its catalog
primary to show the store selling on and the replica rejoining, then its coordinator leader to
show the same of the control plane, stops exactly the processes it started and removes the
temporary directory, whatever happens.
"""

from __future__ import annotations

import argparse
import socket
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.rule import Rule

from pyrostore import Client, OutOfStock, PyrostoreError
from pyrostore.cli import secure_process
from pyrostore.client.views import book_table, order_table, status_table
from pyrostore.config import DEFAULT_INVENTORY, Settings
from pyrostore.errors import ConfigError
from pyrostore.launcher import Cluster
from pyrostore.serving import fixed_port

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
    """Run the demo; the exit code is 0 when every step did what it should, 1 when one did not,
    2 when its own store cannot be placed as asked."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ns-port", type=int, metavar="PORT",
                        help="port of the demo's own name server (default: a free one); "
                             "refused if something listens there already")
    parser.add_argument("--shell", action="store_true",
                        help="end in the full-screen terminal client (q quits it)")
    args = parser.parse_args(argv)
    console = Console()
    with tempfile.TemporaryDirectory(prefix="pyrostore-demo-") as data:
        try:
            settings = own_settings(Path(data), ns_port=args.ns_port)
            # mutual TLS, as every process of the store: a CA and certificates of its own
            secure_process(settings, service=False, make_certs=True)
            run(settings, console, shell=args.shell)
        except ConfigError as exc:
            console.print(f"[red]demo refused:[/red] {exc}", highlight=False)
            return 2
        except PyrostoreError as exc:
            console.print(f"[red]demo failed:[/red] {exc}", highlight=False)
            return 1
    return 0


def own_settings(data: Path, *, ns_port: int | None = None) -> Settings:
    """The settings of the demo's own store: everything on 127.0.0.1, the name server on
    ``ns_port`` (a free port if None), the data and certificates in ``data``. Where a running
    store is (``PYROSTORE_NS_PORT``, ``PYROSTORE_CERTS_DIR``, …) is ignored on purpose; the
    other ``PYROSTORE_*`` knobs (serializer, lease, …) apply."""
    host = "127.0.0.1"
    if ns_port is None:
        ns_port = fixed_port(host)
    elif not port_free(host, ns_port):
        raise ConfigError(f"port {ns_port} of {host} is in use (a running store's name server?); "
                          "the demo runs a store of its own: leave out --ns-port for a free port")
    return Settings.from_env(ns_host=host, host=host, ns_port=ns_port, data_dir=data,
                             certs_dir=data / "certs", identity="", coordinators="",
                             inventory=DEFAULT_INVENTORY)


def port_free(host: str, port: int) -> bool:
    """Whether nothing listens on ``host:port`` (the demo's name server can bind it)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def run(settings: Settings, console: Console, *, shell: bool = False) -> None:
    """Start the demo's own store, walk through it, crash parts of it, and stop it."""
    with Cluster(settings) as cluster:
        with console.status("starting a store of its own…"):
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
