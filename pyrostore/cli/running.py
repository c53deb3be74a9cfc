"""The commands that run the store or a part of it: ``up``, ``nameserver``, one service, and
the full-screen ``client``."""

from __future__ import annotations

import argparse
import logging
import signal
import threading

from rich.console import Console

from pyrostore.catalog import CatalogReplica
from pyrostore.cli.options import AddCommand, host_names
from pyrostore.client import Client
from pyrostore.client.views import status_table
from pyrostore.config import Settings
from pyrostore.coordinator import Coordinator
from pyrostore.discovery import survey
from pyrostore.errors import ConfigError
from pyrostore.frontend import Frontend
from pyrostore.launcher import Cluster
from pyrostore.nameserver import run_name_server
from pyrostore.order import OrderReplica
from pyrostore.serving import Service, serve

SERVICES: dict[str, type[Service]] = {
    "coordinator": Coordinator,
    "catalog": CatalogReplica,
    "order": OrderReplica,
    "frontend": Frontend,
}


def add_run_commands(add: AddCommand) -> None:
    """The commands that run the store or a part of it."""
    up = add("up", cmd_up, "start the whole store in the foreground (Ctrl-C stops it)",
             secure="up")
    up.set_defaults(starts_store=True)
    for role, default in (("coordinators", 3), ("catalogs", 2), ("orders", 2),
                          ("frontends", 1)):
        up.add_argument(
            f"--{role}",
            type=int,
            default=default,
            metavar="N",
            help=f"{role[:-1]} replicas to start ({default})",
        )
    up.add_argument("--no-cache", action="store_true", help="frontends cache nothing")
    up.add_argument("--on", metavar="HOST",
                    help="with --cluster: start this host's share of the cluster file")
    up.add_argument("--wait", metavar="S", type=float,
                    help="seconds to wait for each step of start-up (30; with --cluster 600, "
                         "the time to start the other hosts)")
    ns = add("nameserver", cmd_nameserver, "run a Pyro5 name server in the foreground",
             secure="service")
    ns.add_argument("--storage", metavar="KIND",
                    help="Pyro5 name server storage: memory (default) or sql:FILE (kept "
                         "across restarts)")
    for role in SERVICES:
        what = "one coordinator" if role == "coordinator" else f"one {role} replica"
        service = add(role, cmd_service, f"run {what} in the foreground", secure="service")
        service.add_argument("--id", type=int, default=1, help="replica id (1)")
        service.add_argument("--on", metavar="HOST",
                             help="with --cluster: run it as part of this host (its address)")
        if role == "frontend":
            service.add_argument("--no-cache", action="store_true", help="cache nothing")
        service.set_defaults(role=role)
    add("client", cmd_client, "shop and watch the cluster in a full-screen terminal client")


def cmd_up(args: argparse.Namespace, settings: Settings, console: Console) -> int:
    """Start the store, report children that die, stop everything on Ctrl-C or SIGTERM."""
    for flag in ("catalogs", "orders", "frontends"):
        if not 1 <= getattr(args, flag) <= 16:
            raise ConfigError(f"--{flag} must be 1..16")
    if not 1 <= args.coordinators <= 9:
        raise ConfigError("--coordinators must be 1..9 (3 survives one death; 1 none)")
    share = None if args.spec is None else args.spec.host(args.on)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    cluster = Cluster(settings, coordinators=args.coordinators, catalogs=args.catalogs,
                      orders=args.orders, frontends=args.frontends, share=share)
    wait = args.wait or (600.0 if share else 30.0)
    if settings.insecure:
        console.print("[bold red]INSECURE: plaintext, no certificates: anyone who can connect "
                      "to this machine's loopback may do anything in this store[/bold red]")
    try:
        with console.status("starting the store…"):
            cluster.start(timeout=wait,
                          progress=lambda text: console.print(f"[green]✓[/green] {text}"))
        title = f"pyrostore is up on {share.name}" if share else "pyrostore is up"
        console.print(status_table(survey(settings), title=title, hosts=host_names(args)))
        console.print(f"logs in {cluster.log_dir}; Ctrl-C stops the store")
        while not stop.wait(0.5):
            for child in cluster.reap():
                console.print(
                    f"[red]{child.name} (pid {child.pid}) exited with "
                    f"{child.process.returncode if child.process else '?'}; "
                    f"restart it with:[/red] {child.command()}",
                    highlight=False,
                )
    finally:
        with console.status("stopping the store…"):
            cluster.stop()
    console.print("stopped every process of the store")
    return 0


def cmd_nameserver(args: argparse.Namespace, settings: Settings, console: Console) -> int:
    """Run a name server until SIGTERM/SIGINT."""
    run_name_server(settings, storage=args.storage)
    return 0


def cmd_service(args: argparse.Namespace, settings: Settings, console: Console) -> int:
    """Run one replica until SIGTERM/SIGINT."""
    replica_id = getattr(args, "id", 1)
    if not 1 <= replica_id <= 9999:
        raise ConfigError("--id must be 1..9999")
    serve(SERVICES[args.role](settings, replica_id))
    return 0


def cmd_client(args: argparse.Namespace, settings: Settings, console: Console) -> int:
    """The full-screen terminal client."""
    from pyrostore.client.tui import StoreApp  # Textual loads only for this command

    logging.getLogger().setLevel(logging.CRITICAL)  # log lines would tear the screen
    with Client(settings=settings) as store:
        StoreApp(store).run()
    return 0

