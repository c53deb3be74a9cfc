"""The ``pyrostore`` command: run the store, one service, query it, or make its certificates.

Exit codes: 0 done; 1 the store refused the request (unknown item, out of stock, bad value);
2 bad usage or settings, or a data file that cannot be used (in use, read-only, full, corrupt);
3 the store could not be reached (the request did not run, or its outcome is unknown). Every
error is one red line on stderr. This is the only package that configures logging and Pyro5's
global settings, and it makes every file the store writes its owner's alone (umask 077).

The commands live by group: :mod:`.running` (up, nameserver, one service, client),
:mod:`.shopping` (status, config and the store's requests), :mod:`.certificates` (certs).
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Sequence

import Pyro5.errors
from rich.console import Console

from pyrostore import certs, limits, tls
from pyrostore.cli.certificates import add_certs_commands
from pyrostore.cli.options import Command, common_options, placed
from pyrostore.cli.running import add_run_commands
from pyrostore.cli.shopping import add_store_commands
from pyrostore.clusterfile import ClusterSpec
from pyrostore.config import Settings
from pyrostore.errors import (
    ConfigError,
    Forbidden,
    OutcomeUnknown,
    PyrostoreError,
    StorageError,
    Unavailable,
)
from pyrostore.logfiles import configure_logging

__all__ = ["build_parser", "main", "secure_process"]
log = logging.getLogger("pyrostore")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``); return the exit code."""
    args = build_parser().parse_args(argv)
    err = Console(stderr=True, soft_wrap=True)  # an error is one line, however long
    os.umask(0o077)  # every file the store makes is its owner's alone (datadir also chmods)
    try:
        args.spec = ClusterSpec.load(args.cluster) if args.cluster else None
        settings = Settings.from_env(**placed(args, args.spec))
        configure_logging(settings)
    except (ConfigError, StorageError) as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False)
        return 2
    command: Command = args.command
    try:
        if args.secure is not None:
            on_host = args.starts_store and args.spec is not None  # has only node.crt
            secure_process(settings, service=args.secure == "service" or on_host,
                           make_certs=args.secure == "up", cluster_host=on_host)
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


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    common = common_options(host=True)
    parser = argparse.ArgumentParser(
        prog="pyrostore", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    sub = parser.add_subparsers(required=True, metavar="COMMAND")

    def add(name: str, func: Command, text: str, *, json_flag: bool = False,
            secure: str | None = "client") -> argparse.ArgumentParser:
        """A subcommand ``name`` running ``func``; ``secure``: how its process speaks TLS
        ("client", "service", "up": a service that may make missing certificates; None: it
        does not speak to the store)."""
        p = sub.add_parser(name, parents=[common], help=text, description=text)
        p.set_defaults(command=func, secure=secure, starts_store=False)
        if json_flag:
            p.add_argument("--json", action="store_true", help="print JSON for scripts")
        return p

    add_run_commands(add)
    add_store_commands(add)
    add_certs_commands(sub.add_parser("certs", help="the store's private certificate authority"))
    return parser


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
