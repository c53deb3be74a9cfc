"""The ``pyrostore`` command: run the store, one service, query it, or make its certificates.

Exit codes: 0 done; 1 the store refused the request (unknown item, out of stock, bad value);
2 bad usage or settings, or a data file that cannot be used (in use, read-only, full, corrupt);
3 the store could not be reached (the request did not run, or its outcome is unknown). Every
error is one red line on stderr. This is the only module that configures logging and Pyro5's
global settings, and it makes every file the store writes its owner's alone (umask 077).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import Pyro5.errors
from rich.console import Console, Group
from rich.text import Text

from pyrostore import certs, limits, tls
from pyrostore.catalog import CatalogReplica
from pyrostore.certs import LOCAL_HOSTS, describe, host_bundle, init_ca, issue
from pyrostore.client import Client
from pyrostore.client.views import (
    book_table,
    buys_table,
    cache_table,
    certificate_table,
    clean,
    group_table,
    hosts_table,
    order_table,
    outcome_view,
    settings_table,
    status_table,
)
from pyrostore.clusterfile import PLACED, ClusterSpec, host_report
from pyrostore.config import Settings
from pyrostore.coordinator import Coordinator, group_secret
from pyrostore.discovery import survey
from pyrostore.errors import (
    CertificateError,
    ConfigError,
    Forbidden,
    OutcomeUnknown,
    PyrostoreError,
    StorageError,
    Unavailable,
)
from pyrostore.frontend import Frontend
from pyrostore.launcher import Cluster
from pyrostore.nameserver import run_name_server
from pyrostore.order import OrderReplica
from pyrostore.serving import Service, serve

log = logging.getLogger("pyrostore")
SERVICES: dict[str, type[Service]] = {
    "coordinator": Coordinator,
    "catalog": CatalogReplica,
    "order": OrderReplica,
    "frontend": Frontend,
}
Command = Callable[[argparse.Namespace, Settings, Console], int]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``); return the exit code."""
    args = build_parser().parse_args(argv)
    err = Console(stderr=True, soft_wrap=True)  # an error is one line, however long
    os.umask(0o077)  # every file the store makes is its owner's alone (datadir also chmods)
    try:
        args.spec = ClusterSpec.load(args.cluster) if args.cluster else None
        settings = Settings.from_env(**_placed(args, args.spec))
    except ConfigError as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False)
        return 2
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    command: Command = args.command
    try:
        if command not in (cmd_certs_init, cmd_certs_issue, cmd_certs_show, cmd_certs_cluster,
                           cmd_config):
            on_host = command is cmd_up and args.spec is not None  # has only node.crt
            secure_process(settings, service=command in (cmd_service, cmd_nameserver) or on_host,
                           make_certs=command is cmd_up, cluster_host=on_host)
        return command(args, settings, Console())
    except OutcomeUnknown as exc:
        err.print(f"[red]outcome unknown:[/red] {exc}", highlight=False)
        if "request_id" in exc.details:
            who = f" --as {settings.identity}" if settings.identity else ""
            err.print(f"ask later: pyrostore outcome {exc.details['request_id']}{who}",
                      highlight=False)
        return 3
    except Unavailable as exc:
        err.print(f"[red]unavailable:[/red] {exc}", highlight=False)
        return 3
    except (ConfigError, StorageError) as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False)
        return 2
    except Forbidden as exc:
        err.print(f"[red]forbidden:[/red] {exc} (the certificate in use is "
                  f"{settings.identity or 'admin'}: see --as)", highlight=False)
        return 1
    except PyrostoreError as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False)
        return 1
    except Pyro5.errors.CommunicationError as exc:
        err.print(f"[red]unavailable:[/red] {exc}", highlight=False)
        return 3


def _placed(args: argparse.Namespace, spec: ClusterSpec | None) -> dict[str, Any]:
    """The settings the command line gives: the cluster file's (for host ``--on``), then the
    flags, which win; a flag that contradicts where the file puts things is an error."""
    on = getattr(args, "on", None)
    if on and spec is None:
        raise ConfigError("--on HOST needs --cluster FILE")
    flags = {
        "ns_host": args.ns_host,
        "ns_port": args.ns_port,
        "data_dir": args.data,
        "host": getattr(args, "host", None),  # `certs node --host` means another thing
        "serializer": args.serializer,
        "log_level": args.log_level,
        "coordinators": args.coordinator_addrs,
        "cache": False if getattr(args, "no_cache", False) else None,
        "insecure": True if args.insecure else None,
        "certs_dir": args.certs_dir,
        "identity": args.identity,
    }
    if spec is None:
        return flags
    if args.command is cmd_up and not on:
        raise ConfigError(f"--cluster needs --on HOST: which of "
                          f"{', '.join(h.name for h in spec.hosts)} this machine is")
    clash = [f"--{name.replace('_', '-')}" for name in PLACED if flags.get(name) is not None]
    if clash:
        raise ConfigError(f"{', '.join(sorted(clash))}: the cluster file says where the store "
                          "is; leave it out")
    return {**spec.settings_values(on), **{k: v for k, v in flags.items() if v is not None}}


def secure_process(settings: Settings, *, service: bool, make_certs: bool = False,
                   cluster_host: bool = False) -> None:
    """Put this process's Pyro5 in the store's terms: its limits, and its certificate
    (``node`` for a service, else ``admin``), or plaintext, loudly, with ``--insecure``.
    ``make_certs``: first make whatever of the CA and certificates is missing (``up``); on a
    host of a cluster file (``cluster_host``) only its node certificate, for its address, and
    only where the CA's key is."""
    limits.install(settings)
    if make_certs and not settings.insecure:
        if cluster_host:
            certs.ensure(settings.certificates, hosts=[settings.host], roles=("node",))
        else:
            certs.ensure(settings.certificates, hosts=settings.hosts())
    tls.install(tls.identity_of(settings, default="node" if service else "admin"))
    if settings.insecure:
        log.warning("INSECURE: plaintext and no certificates; anyone who can connect to these "
                    "ports may do anything (loopback only)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    common = _common_options(host=True)
    parser = argparse.ArgumentParser(
        prog="pyrostore", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    sub = parser.add_subparsers(required=True, metavar="COMMAND")

    def add(
        name: str, func: Command, text: str, *, json_flag: bool = False
    ) -> argparse.ArgumentParser:
        p = sub.add_parser(name, parents=[common], help=text, description=text)
        p.set_defaults(command=func)
        if json_flag:
            p.add_argument("--json", action="store_true", help="print JSON for scripts")
        return p

    _add_run_commands(add)
    _add_store_commands(add)
    _add_certs_commands(sub.add_parser("certs", help="the store's private certificate authority"))
    return parser


def _common_options(*, host: bool) -> argparse.ArgumentParser:
    """The options every command takes: where the store is (``--host`` only if ``host``)."""
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("store location (defaults from PYROSTORE_* variables)")
    group.add_argument("--ns-host", metavar="H", help="name server host (127.0.0.1)")
    group.add_argument("--ns-port", metavar="P", type=int, help="name server port (9090)")
    group.add_argument("--data", metavar="DIR", help="data directory (./pyrostore-data)")
    if host:
        group.add_argument("--host", metavar="H", help="address services bind to (127.0.0.1)")
    group.add_argument("--serializer", help="Pyro5 serializer (msgpack)")
    group.add_argument("--coordinator-addrs", metavar="LIST",
                       help="the coordinators' host:port:raft_port, comma-separated")
    group.add_argument("--cluster", metavar="FILE",
                       help="a cluster file (TOML): the store's hosts and services; it says "
                            "where the name server and coordinators are (docs/deploy.md)")
    group.add_argument("--log-level", metavar="LEVEL", type=str.upper, help="INFO")
    group = common.add_argument_group("security (mutual TLS unless --insecure)")
    group.add_argument("--certs-dir", metavar="DIR", help="CA and certificates (DATA/certs)")
    group.add_argument("--as", dest="identity", metavar="WHO",
                       help="certificate to present: admin (default), client.NAME, node")
    group.add_argument("--insecure", action="store_true",
                       help="plaintext, no certificates: anyone may do anything (loopback only)")
    return common


AddCommand = Callable[..., argparse.ArgumentParser]


def _add_run_commands(add: AddCommand) -> None:
    """The commands that run the store or a part of it."""
    up = add("up", cmd_up, "start the whole store in the foreground (Ctrl-C stops it)")
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
    ns = add("nameserver", cmd_nameserver, "run a Pyro5 name server in the foreground")
    ns.add_argument("--storage", metavar="KIND",
                    help="Pyro5 name server storage: memory (default) or sql:FILE (kept "
                         "across restarts)")
    for role in SERVICES:
        what = "one coordinator" if role == "coordinator" else f"one {role} replica"
        service = add(role, cmd_service, f"run {what} in the foreground")
        service.add_argument("--id", type=int, default=1, help="replica id (1)")
        service.add_argument("--on", metavar="HOST",
                             help="with --cluster: run it as part of this host (its address)")
        if role == "frontend":
            service.add_argument("--no-cache", action="store_true", help="cache nothing")
        service.set_defaults(role=role)
    add("client", cmd_client, "shop and watch the cluster in a full-screen terminal client")


def _add_store_commands(add: AddCommand) -> None:
    """The commands that ask the store something."""
    add("status", cmd_status, "every service of the store and its state", json_flag=True)
    add("config", cmd_config, "print the settings in force", json_flag=True)
    add("topics", cmd_topics, "list the topics", json_flag=True)
    add("search", cmd_search, "books of a topic", json_flag=True).add_argument("topic")
    add("lookup", cmd_lookup, "one book", json_flag=True).add_argument("item", type=int)
    buy = add("buy", cmd_buy, "buy a book", json_flag=True)
    buy.add_argument("item", type=int)
    buy.add_argument("--qty", type=int, default=1, help="copies to buy (1)")
    update = add("update", cmd_update, "restock, take off stock or reprice (admin)", json_flag=True)
    update.add_argument("item", type=int)
    update.add_argument("--cost", type=float, help="new price of one copy")
    update.add_argument("--stock-delta", type=int, help="copies to add (or, negative, remove)")
    new = add("add-book", cmd_add_book, "add a book (admin)", json_flag=True)
    new.add_argument("title")
    new.add_argument("topic")
    new.add_argument("--stock", type=int, default=0, help="copies in stock (0)")
    new.add_argument("--cost", type=float, required=True, help="price of one copy")
    add("outcome", cmd_outcome, "what became of a buy, by its request id",
        json_flag=True).add_argument("request_id")
    orders = add("orders", cmd_orders, "the order log, newest first", json_flag=True)
    orders.add_argument("--limit", type=int, default=20, help="orders to show (20)")
    orders.add_argument("--id", dest="order_id", type=int, help="show only this order")


def _add_certs_commands(certs: argparse.ArgumentParser) -> None:
    """``pyrostore certs ACTION``: make the CA, issue certificates, show them."""
    common = _common_options(host=False)
    actions = certs.add_subparsers(required=True, metavar="ACTION")

    def action(name: str, func: Command, text: str, **defaults: Any) -> argparse.ArgumentParser:
        p = actions.add_parser(name, parents=[common], help=text, description=text)
        p.set_defaults(command=func, **defaults)
        if name != "show":
            p.add_argument("--force", action="store_true", help="replace existing files")
        return p

    action("init", cmd_certs_init, "make the CA: ca.crt and ca.key")
    node = action("node", cmd_certs_issue, "issue node.crt: the services' (TLS server and client)",
                  role="node")
    node.add_argument("--name", help="its common name (node)")
    node.add_argument("--host", dest="hosts", metavar="H", action="append", default=[],
                      help="an IP address or DNS name the services answer on, besides "
                           "127.0.0.1 and localhost (repeatable)")
    admin = action("admin", cmd_certs_issue, "issue admin.crt (TLS client only)", role="admin")
    admin.add_argument("--name", help="its common name (admin)")
    client = action("client", cmd_certs_issue, "issue client.NAME.crt: a shopper's (TLS client "
                    "only)", role="client")
    client.add_argument("name", help="the shopper's name: letters, digits, . _ -")
    bundle = action("cluster", cmd_certs_cluster, "with --cluster FILE: each host's CA "
                    "certificate, node certificate for its address, and Raft secret, in "
                    "OUT/HOST/ to copy to that host's certs directory")
    bundle.add_argument("--out", type=Path, metavar="OUT",
                        help="where the hosts' directories go (CERTS/hosts)")
    show = action("show", cmd_certs_show, "describe certificates (all in the directory)")
    show.add_argument("files", nargs="*", type=Path, metavar="FILE", help="certificates to show")
    show.add_argument("--json", action="store_true", help="print JSON for scripts")


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
        console.print(status_table(survey(settings), title=title, hosts=_host_names(args)))
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


def cmd_status(args: argparse.Namespace, settings: Settings, console: Console) -> int:
    """Every registered service and its state, asked of each service directly."""
    rows = survey(settings)
    coordinators = sorted((row for row in rows if row["role"] == "coordinator"),
                          key=lambda row: row.get("state") != "leader")  # the leader's view first
    groups: dict[str, Any] = next((row["groups"] for row in coordinators if "groups" in row), {})
    if args.spec is None:
        return _show(console, args, rows, lambda: Group(
            status_table(rows, title="services"), group_table(groups, title="groups"),
            buys_table(rows, title="buys"), cache_table(rows, title="frontend caches")))
    hosts = host_report(args.spec, rows, nameserver_up=True)  # survey() reached it
    return _show(console, args, {"hosts": hosts, "services": rows}, lambda: Group(
        hosts_table(hosts, title="hosts"),
        status_table(rows, title="services", hosts=_host_names(args)),
        group_table(groups, title="groups"), buys_table(rows, title="buys"),
        cache_table(rows, title="frontend caches")))


def _host_names(args: argparse.Namespace) -> dict[str, str] | None:
    """Address -> host name from the cluster file, if one was given."""
    if args.spec is None:
        return None
    return {host.address: host.name for host in reversed(args.spec.hosts)}


def cmd_config(args: argparse.Namespace, settings: Settings, console: Console) -> int:
    """The settings in force, as PYROSTORE_* variables."""
    values = settings.dump()
    return _show(console, args, values, lambda: settings_table(values))


def cmd_topics(args: argparse.Namespace, settings: Settings, console: Console) -> int:
    """The topics."""
    with Client(settings=settings) as store:
        topics = store.topics()
    return _show(console, args, topics, lambda: Text("\n".join(map(clean, topics))))


def cmd_search(args: argparse.Namespace, settings: Settings, console: Console) -> int:
    """The books of a topic."""
    with Client(settings=settings) as store:
        books = store.search(args.topic)
    return _show(
        console,
        args,
        books,
        lambda: book_table(books, title=f"{len(books)} book(s) in {args.topic!r}"),
    )


def cmd_lookup(args: argparse.Namespace, settings: Settings, console: Console) -> int:
    """One book."""
    with Client(settings=settings) as store:
        book = store.lookup(args.item)
    return _show(console, args, book, lambda: book_table([book]))


def cmd_buy(args: argparse.Namespace, settings: Settings, console: Console) -> int:
    """Buy a book."""
    with Client(settings=settings) as store:
        order = store.buy(args.item, args.qty)
    return _show(console, args, order, lambda: order_table([order], title="bought"))


def cmd_outcome(args: argparse.Namespace, settings: Settings, console: Console) -> int:
    """What became of a buy: done, pending, refused or unknown."""
    with Client(settings=settings) as store:
        outcome = store.outcome(args.request_id)
    return _show(console, args, outcome, lambda: outcome_view(outcome))


def cmd_update(args: argparse.Namespace, settings: Settings, console: Console) -> int:
    """Restock, take off stock, reprice."""
    with Client(settings=settings) as store:
        book = store.update(args.item, cost=args.cost, stock_delta=args.stock_delta)
    return _show(console, args, book, lambda: book_table([book], title="updated"))


def cmd_add_book(args: argparse.Namespace, settings: Settings, console: Console) -> int:
    """Add a book."""
    with Client(settings=settings) as store:
        book = store.add_book(args.title, args.topic, stock=args.stock, cost=args.cost)
    return _show(console, args, book, lambda: book_table([book], title="added"))


def cmd_orders(args: argparse.Namespace, settings: Settings, console: Console) -> int:
    """The order log, or one order with --id."""
    with Client(settings=settings) as store:
        if args.order_id is not None:
            order = store.order(args.order_id)
            return _show(console, args, order, lambda: order_table([order]))
        orders = store.orders(limit=args.limit)
    return _show(console, args, orders, lambda: order_table(orders, title="orders"))


def cmd_certs_init(args: argparse.Namespace, settings: Settings, console: Console) -> int:
    """Make the store's CA."""
    made = init_ca(_certs_dir(args, settings), force=args.force)
    console.print(certificate_table([describe(made.cert)], title=f"new CA in {made.cert.parent}"))
    return 0


def cmd_certs_issue(args: argparse.Namespace, settings: Settings, console: Console) -> int:
    """Issue a node, admin or client certificate signed by the CA."""
    hosts = [*LOCAL_HOSTS, *args.hosts] if args.role == "node" else []
    made = issue(_certs_dir(args, settings), args.role, name=args.name, hosts=hosts,
                 force=args.force)
    console.print(certificate_table([describe(made.cert)], title=f"issued {made.cert}"))
    return 0


def cmd_certs_cluster(args: argparse.Namespace, settings: Settings, console: Console) -> int:
    """One directory per host of the cluster file, signed by the CA here."""
    if args.spec is None:
        raise ConfigError("certs cluster needs --cluster FILE")
    directory = _certs_dir(args, settings)
    out = args.out or directory / "hosts"
    secret = group_secret(settings)
    if not certs.paths(directory, "admin").cert.exists():  # the operator's, on this machine
        issue(directory, "admin")
    made = [host_bundle(directory, out / host.name, name=host.name, address=host.address,
                        secret=secret, force=args.force) for host in args.spec.hosts]
    console.print(certificate_table([describe(paths.cert) for paths in made],
                                    title=f"node certificates in {out}"))
    console.print(f"copy each {out}/HOST/ to that host's certs directory "
                  "(--certs-dir, or DATA/certs); the CA's key stays here", highlight=False)
    return 0


def cmd_certs_show(args: argparse.Namespace, settings: Settings, console: Console) -> int:
    """The certificates named, or every one in the certs directory."""
    directory = _certs_dir(args, settings)
    files = args.files or sorted(directory.glob("*.crt"))
    if not files:
        raise CertificateError(f"no certificates in {directory}: run `pyrostore certs init`")
    rows = [describe(path) for path in files]
    return _show(console, args, rows, lambda: certificate_table(rows, title=str(directory)))


def _certs_dir(args: argparse.Namespace, settings: Settings) -> Path:
    return settings.certificates


def _show(console: Console, args: argparse.Namespace, data: Any, view: Callable[[], Any]) -> int:
    if getattr(args, "json", False):
        print(json.dumps(data, indent=2, default=str))
    else:
        console.print(view())
    return 0


if __name__ == "__main__":
    sys.exit(main())
