"""``pyrostore certs ACTION``: make the store's private CA, issue its certificates (one set
per host of a cluster file), show them."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rich.console import Console

from pyrostore import certs
from pyrostore.certs import LOCAL_HOSTS, describe, host_bundle, init_ca, issue
from pyrostore.cli.options import JSON_HELP, Command, common_options, show
from pyrostore.client.views import certificate_table
from pyrostore.config import Settings
from pyrostore.coordinator import group_secret
from pyrostore.errors import CertificateError, ConfigError


def add_certs_commands(certs_parser: argparse.ArgumentParser) -> None:
    """``pyrostore certs ACTION``: make the CA, issue certificates, show them."""
    common = common_options(host=False)
    actions = certs_parser.add_subparsers(metavar="ACTION", title="actions")

    def action(name: str, func: Command, text: str, **defaults: Any) -> argparse.ArgumentParser:
        p = actions.add_parser(name, parents=[common], help=text, description=text)
        p.set_defaults(command=func, secure=None, starts_store=False, **defaults)
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
    show_action = action("show", cmd_certs_show, "describe certificates (all in the directory)")
    show_action.add_argument("files", nargs="*", type=Path, metavar="FILE",
                             help="certificates to show")
    show_action.add_argument("--json", action="store_true", help=JSON_HELP)


def cmd_certs_init(args: argparse.Namespace, settings: Settings, console: Console) -> int:
    """Make the store's CA."""
    made = init_ca(settings.certificates, force=args.force)
    console.print(certificate_table([describe(made.cert)], title=f"new CA in {made.cert.parent}"))
    return 0


def cmd_certs_issue(args: argparse.Namespace, settings: Settings, console: Console) -> int:
    """Issue a node, admin or client certificate signed by the CA."""
    hosts = [*LOCAL_HOSTS, *args.hosts] if args.role == "node" else []
    made = issue(settings.certificates, args.role, name=args.name, hosts=hosts,
                 force=args.force)
    console.print(certificate_table([describe(made.cert)], title=f"issued {made.cert}"))
    return 0


def cmd_certs_cluster(args: argparse.Namespace, settings: Settings, console: Console) -> int:
    """One directory per host of the cluster file, signed by the CA here."""
    if args.spec is None:
        raise ConfigError("certs cluster needs --cluster FILE")
    directory = settings.certificates
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
    directory = settings.certificates
    files = args.files or sorted(directory.glob("*.crt"))
    if not files:
        raise CertificateError(f"no certificates in {directory}: run `pyrostore certs init`")
    rows = [describe(path) for path in files]
    return show(console, args, rows, lambda: certificate_table(rows, title=str(directory)))
