"""What every command shares: the options that say where the store is, how they combine with
a cluster file, and how a command prints its answer (a table, or JSON for scripts) on a
terminal or, unwrapped, to a pipe or a file."""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable
from typing import Any

from rich.console import Console

from pyrostore.clusterfile import PLACED, ClusterSpec
from pyrostore.config import Settings
from pyrostore.errors import ConfigError

JSON_HELP = "print JSON on stdout, an error too (see pyrostore --help)"
Command = Callable[[argparse.Namespace, Settings, Console], int]
AddCommand = Callable[..., argparse.ArgumentParser]


def common_options(*, host: bool) -> argparse.ArgumentParser:
    """The options every command takes: where the store is (``--host`` only if ``host``)."""
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("store location (defaults from PYROSTORE_* variables)")
    group.add_argument("--ns-host", metavar="H", help="name server host (127.0.0.1)")
    group.add_argument("--ns-port", metavar="P", type=int, help="name server port (9090)")
    group.add_argument("--data", metavar="DIR", help="data directory (./pyrostore-data)")
    if host:
        group.add_argument("--host", metavar="H", help="address services bind to (127.0.0.1)")
    group.add_argument("--serializer", metavar="NAME",
                       help="how requests are encoded: msgpack (default), serpent or json")
    group.add_argument("--coordinator-addrs", metavar="LIST",
                       help="the coordinators' host:port:raft_port, comma-separated")
    group.add_argument("--cluster", metavar="FILE",
                       help="a cluster file (TOML): the store's hosts and services; it says "
                            "where the name server and coordinators are (docs/deploy.md)")
    group.add_argument("--log-level", metavar="LEVEL", type=str.upper,
                       help="DEBUG, INFO (default), WARNING or ERROR")
    group = common.add_argument_group("security (mutual TLS unless --insecure)")
    group.add_argument("--certs-dir", metavar="DIR", help="CA and certificates (DATA/certs)")
    group.add_argument("--as", dest="identity", metavar="WHO",
                       help="certificate to present: admin (default), client.NAME, node")
    group.add_argument("--insecure", action="store_true",
                       help="plaintext, no certificates: anyone may do anything (loopback only)")
    return common


def placed(args: argparse.Namespace, spec: ClusterSpec | None) -> dict[str, Any]:
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
    if args.starts_store and not on:
        raise ConfigError(f"--cluster needs --on HOST: which of "
                          f"{', '.join(h.name for h in spec.hosts)} this machine is")
    clash = [f"--{name.replace('_', '-')}" for name in PLACED if flags.get(name) is not None]
    if clash:
        raise ConfigError(f"{', '.join(sorted(clash))}: the cluster file says where the store "
                          "is; leave it out")
    return {**spec.settings_values(on), **{k: v for k, v in flags.items() if v is not None}}


def host_names(args: argparse.Namespace) -> dict[str, str] | None:
    """Address -> host name from the cluster file, if one was given."""
    if args.spec is None:
        return None
    return {host.address: host.name for host in reversed(args.spec.hosts)}


def show(console: Console, args: argparse.Namespace, data: Any, view: Callable[[], Any]) -> int:
    """Print ``data`` as JSON with ``--json``, else the renderable ``view()`` makes of it."""
    if getattr(args, "json", False):
        print(json.dumps(data, indent=2, default=str))
    else:
        console.print(view())
    return 0


UNBOUNDED = 100_000
"""Columns of a console writing to a pipe or a file: as many as a line needs."""


def make_console(*, stderr: bool = False) -> Console:
    """A console for the command's answer (or, with ``stderr``, its errors). On a terminal,
    rich lays out to its width (an error stays one line, however long); to a pipe or a file
    nothing is wrapped or cut: each line as long as it is, each table as wide as its cells
    (``COLUMNS``, if set, still bounds tables)."""
    console = Console(stderr=stderr, soft_wrap=stderr)
    if console.is_terminal:
        return console
    columns = os.environ.get("COLUMNS", "")
    return Console(stderr=stderr, soft_wrap=True,
                   width=int(columns) if columns.isdigit() else UNBOUNDED)
