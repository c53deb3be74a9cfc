"""The ``pyrostore`` command: parse the command line, put the process in the store's terms
(logging, Pyro5's limits and certificates, umask 077: every file the store writes is its
owner's alone), run the command, and turn any failure into an exit code and one line
(:mod:`.failures`). This is the only package that configures logging and Pyro5's global
settings.

The commands live by group: :mod:`.running` (up, nameserver, one service, client),
:mod:`.shopping` (status, config and the store's requests), :mod:`.pinging` (ping),
:mod:`.certificates` (certs).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from importlib import metadata

from pyrostore import certs, limits, tls
from pyrostore.cli.certificates import add_certs_commands
from pyrostore.cli.failures import EXIT_CODES, explain, report
from pyrostore.cli.options import JSON_HELP, Command, common_options, make_console, placed
from pyrostore.cli.running import add_run_commands
from pyrostore.cli.shopping import add_store_commands
from pyrostore.clusterfile import ClusterSpec
from pyrostore.config import Settings
from pyrostore.logfiles import configure_logging
from pyrostore.versions import PROTOCOL_VERSION, SCHEMA_VERSION

__all__ = ["build_parser", "main", "secure_process", "version"]
log = logging.getLogger("pyrostore")

DESCRIPTION = """\
Run a replicated bookstore, shop in it, and watch it.

  pyrostore up                  start a store here, in the foreground (Ctrl-C stops it)
  pyrostore ping                is the store up? which frontend answers, and how fast
  pyrostore search WORDS...     books whose title or topic has every word
  pyrostore buy ITEM            buy a book
  pyrostore status              every service of the store and its state
  pyrostore COMMAND --help      what a command does and takes
"""
EPILOG = "exit codes:\n" + EXIT_CODES + """
An error is one line on stderr. With --json the answer is JSON on stdout, and so is an
error: {"error": {"type": "NotFound", "message": "...", ...}}, with the same exit code
(a mistake on the command line itself is still reported as text, with exit code 2).
Settings come from PYROSTORE_* variables, overridden by the flags (pyrostore config).
"""


CLOSED_PIPE = 128 + 13
"""The exit code when the reader of the output went away: what a shell shows for SIGPIPE."""


def version() -> str:
    """The installed package's version (or the source tree's, when it is not installed)."""
    try:
        return metadata.version("pyrostore")
    except metadata.PackageNotFoundError:
        from pyrostore import __version__

        return __version__


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``); return the exit code."""
    args = build_parser().parse_args(argv)
    if args.command is None:  # bare `pyrostore` (or `pyrostore certs`): what there is to do
        args.help_of.print_help()
        return 0
    err = make_console(stderr=True)
    as_json = getattr(args, "json", False)
    os.umask(0o077)  # every file the store makes is its owner's alone (datadir also chmods)
    settings: Settings | None = None
    try:
        args.spec = ClusterSpec.load(args.cluster) if args.cluster else None
        settings = Settings.from_env(**placed(args, args.spec))
        configure_logging(settings)
        command: Command = args.command
        if args.secure is not None:
            on_host = args.starts_store and args.spec is not None  # has only node.crt
            secure_process(settings, service=args.secure == "service" or on_host,
                           make_certs=args.secure == "up", cluster_host=on_host)
        return command(args, settings, make_console())
    except BrokenPipeError:  # `pyrostore status | head -1`: the reader had what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no flush error at exit
        return CLOSED_PIPE
    except Exception as exc:
        failure = explain(exc, settings)
        if failure is None:
            raise
        return report(failure, as_json=as_json, err=err)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    common = common_options(host=True)
    parser = argparse.ArgumentParser(
        prog="pyrostore", description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=(
        f"pyrostore {version()} (protocol {PROTOCOL_VERSION}, schema {SCHEMA_VERSION})"))
    parser.set_defaults(command=None, help_of=parser)
    sub = parser.add_subparsers(metavar="COMMAND", title="commands")

    def add(name: str, func: Command, text: str, *, json_flag: bool = False,
            secure: str | None = "client") -> argparse.ArgumentParser:
        """A subcommand ``name`` running ``func``; ``secure``: how its process speaks TLS
        ("client", "service", "up": a service that may make missing certificates; None: it
        does not speak to the store)."""
        p = sub.add_parser(name, parents=[common], help=text, description=text)
        p.set_defaults(command=func, secure=secure, starts_store=False)
        if json_flag:
            p.add_argument("--json", action="store_true", help=JSON_HELP)
        return p

    add_run_commands(add)
    add_store_commands(add)
    certs_parser = sub.add_parser("certs", help="the store's private certificate authority",
                                  description="Make the store's private certificate "
                                  "authority and its certificates, and show them.")
    certs_parser.set_defaults(help_of=certs_parser)
    add_certs_commands(certs_parser)
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
