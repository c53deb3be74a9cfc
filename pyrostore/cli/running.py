"""The commands that run the store or a part of it: ``up`` and ``down``, ``nameserver``, one
service, and the full-screen ``client``."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import textwrap
import threading
import time

from rich.console import Console
from rich.text import Text

from pyrostore import stopping
from pyrostore.catalog import CatalogReplica
from pyrostore.cli.options import AddCommand, host_names
from pyrostore.client import Client
from pyrostore.client.views import status_table
from pyrostore.config import Settings
from pyrostore.coordinator import Coordinator
from pyrostore.discovery import survey
from pyrostore.errors import ConfigError, PyrostoreError
from pyrostore.frontend import Frontend
from pyrostore.launcher import RESTARTS_VARIABLE, Cluster
from pyrostore.nameserver import run_name_server
from pyrostore.order import OrderReplica
from pyrostore.pidfiles import UP, PidDirectory
from pyrostore.restarts import NEVER, RestartPlan, RestartPolicy
from pyrostore.serving import Service, serve
from pyrostore.supervisor import Supervisor

SERVICES: dict[str, type[Service]] = {
    "coordinator": Coordinator,
    "catalog": CatalogReplica,
    "order": OrderReplica,
    "frontend": Frontend,
}

def _paragraphs(text: str) -> str:
    """``text`` filled to 78 columns, its paragraphs kept (argparse would run them together)."""
    return "\n\n".join(textwrap.fill(" ".join(part.split()), width=78)
                       for part in text.split("\n\n"))


UP_HELP = _paragraphs("""
Start the whole store in the foreground: a name server (unless one answers), the coordinators,
the catalog, order and frontend replicas, each a child process logging to DATA/logs.

Supervision (like systemd's Restart=on-failure): a service that dies of a failure (a non-zero
exit, or a signal other than SIGHUP, SIGINT, SIGTERM, SIGPIPE) is started again after
{p.first_delay:g} s, doubling to {p.max_delay:g} s for each restart within {p.interval:g} s;
past {p.burst} restarts within {p.interval:g} s it stays down and the log says so. Each restart
is logged with its cause ("killed by SIGKILL"), and `pyrostore status` shows each service's
restart count. --restart never only reports a death, with the command that starts the service
by hand.

Ctrl-C or SIGTERM (or `pyrostore down`) stops every process of the store, including services
started by hand with the same --data. DATA/pids holds the pid files of the running processes.
""".format(p=RestartPolicy()))
DOWN_HELP = _paragraphs("""
Stop the store that runs in a data directory (--data, ./pyrostore-data by default): its
`pyrostore up` and every service started by hand with that directory, as their pid files in
DATA/pids name them. Each gets SIGTERM; whatever has not exited after --timeout seconds gets
SIGKILL. A pid file whose process has gone, or whose pid now belongs to another process, is
removed and never signalled. With no store running it says so and exits 0.
""")


def add_run_commands(add: AddCommand) -> None:
    """The commands that run the store or a part of it."""
    up = add("up", cmd_up, "start the whole store in the foreground (Ctrl-C stops it)",
             secure="up")
    up.description = UP_HELP
    up.formatter_class = argparse.RawDescriptionHelpFormatter
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
    up.add_argument("--restart", choices=("on-failure", "never"), default="on-failure",
                    help="on-failure (default): start again a service that dies of a failure; "
                         "never: only report it, with the command to start it by hand")
    down = add("down", cmd_down, "stop the store that runs in a data directory", secure=None)
    down.description = DOWN_HELP
    down.formatter_class = argparse.RawDescriptionHelpFormatter
    down.add_argument("--timeout", metavar="S", type=float, default=30.0,
                      help="seconds to wait for them to exit before SIGKILL (30)")
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
    """Start the store, restart (or report) children that fail, and stop everything, services
    started by hand with its data directory included, on Ctrl-C or SIGTERM."""
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
        plan = RestartPlan(RestartPolicy() if args.restart == "on-failure" else NEVER)
        supervisor = Supervisor(cluster, plan, report=lambda line, loud: _event(console, line,
                                                                                loud))
    except BaseException:
        cluster.stop()
        raise
    try:
        with console.status("starting the store…"):
            cluster.start(timeout=wait,
                          progress=lambda text: console.print(f"[green]✓[/green] {text}"))
        supervisor.record()
        title = f"pyrostore is up on {share.name}" if share else "pyrostore is up"
        console.print(status_table(survey(settings), title=title, hosts=host_names(args)))
        console.print(f"logs in {cluster.log_dir}; Ctrl-C stops the store")
        while not stop.wait(supervisor.step()):
            pass
    finally:
        with console.status("stopping the store…"):
            outcome = supervisor.stop()
    for record in outcome.stopped + outcome.killed:
        console.print(f"stopped {record}, started by hand with this data directory")
    console.print("stopped every process of the store")
    return 0


def _event(console: Console, line: str, loud: bool) -> None:
    """One line of what the supervisor did, never wrapped (it may end with a command)."""
    stamp = time.strftime("%H:%M:%S")
    console.print(Text(f"{stamp} {line}", style="bold red" if loud else "yellow"),
                  soft_wrap=True, highlight=False)


def cmd_down(args: argparse.Namespace, settings: Settings, console: Console) -> int:
    """Stop the ``up`` and the hand-started services of the data directory."""
    found = PidDirectory(settings.data_dir).read()
    if not found:
        console.print(f"no store running in {settings.data_dir}", highlight=False)
        return 0
    up = next((pid_file for pid_file in found if pid_file.process.name == UP), None)
    children = list(up.children) if up is not None else []
    others = [pid_file.process for pid_file in found
              if pid_file is not up and pid_file.process not in children]
    parts = [] if up is None else [f"pyrostore {up.process} and its {len(children)} children"]
    parts += [f"{record}, started by hand" if up is not None else str(record)
              for record in others]
    console.print(f"stopping {'; '.join(parts)} (waiting up to {args.timeout:g} s, then "
                  "SIGKILL)", highlight=False)
    targets = ([] if up is None else [up.process]) + others
    with console.status("stopping…") as status:
        outcome = stopping.stop(targets, also_wait=children, grace=args.timeout,
                                progress=lambda left, seconds: status.update(
                                    f"waiting for {len(left)} process(es) to exit "
                                    f"({seconds:.0f} s left, then SIGKILL)"))
    if outcome.stopped:
        console.print(f"stopped {', '.join(map(str, outcome.stopped))}", highlight=False)
    if outcome.killed:
        console.print(f"[red]killed with SIGKILL after {args.timeout:g} s:[/red] "
                      f"{', '.join(map(str, outcome.killed))}", highlight=False)
    if outcome.left:
        raise PyrostoreError(f"still running after SIGKILL: {', '.join(map(str, outcome.left))}")
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
    service = SERVICES[args.role](settings, replica_id)
    if RESTARTS_VARIABLE in os.environ:  # started by `pyrostore up`
        try:
            service.restarts = int(os.environ[RESTARTS_VARIABLE])
        except ValueError:
            raise ConfigError(f"{RESTARTS_VARIABLE} must be a number") from None
    with PidDirectory(settings.data_dir).registered(f"{args.role}-{replica_id}"):
        serve(service)  # its pid file lets `down` and `up`'s Ctrl-C stop it, however started
    return 0


def cmd_client(args: argparse.Namespace, settings: Settings, console: Console) -> int:
    """The full-screen terminal client."""
    from pyrostore.client.tui import StoreApp  # Textual loads only for this command

    logging.getLogger().setLevel(logging.CRITICAL)  # log lines would tear the screen
    with Client(settings=settings) as store:
        StoreApp(store).run()
    return 0

