"""The cluster files the verifier and the namespace tests run: where each service lives.

The standard layout spreads the store over five hosts, so that a partition can cut any one
part off from the rest:

    =======  ============================  =============================================
    host     services                      cut off, it is
    =======  ============================  =============================================
    ns       name server, coordinator 1    the name server, and one coordinator
    a        coordinator 2, catalog 1,     a catalog and an order replica (a primary or
             order 1                       a backup) and a coordinator
    b        coordinator 3, catalog 2,     the same, of the other replicas
             order 2
    fe       frontend 1                    one frontend (its cache)
    ctl      frontend 2                    the driver, the clients and their frontend
    =======  ============================  =============================================
"""

from __future__ import annotations

import random
import socket
from collections.abc import Mapping

HOSTS = ("ns", "a", "b", "fe", "ctl")
PLACEMENT: dict[str, dict[str, bool | list[int]]] = {
    "ns": {"nameserver": True, "coordinator": [1]},
    "a": {"coordinator": [2], "catalog": [1], "order": [1]},
    "b": {"coordinator": [3], "catalog": [2], "order": [2]},
    "fe": {"frontend": [1]},
    "ctl": {"frontend": [2]},
}
STORE_SETTINGS = {"lease": 1.0, "call_timeout": 2.0, "failover_timeout": 10.0}
"""The settings the verifier and the namespace tests run the store with (a 1 s lease)."""
NAMESPACE_PORTS = {"ns_port": 9090, "coordinator_port": 9100, "raft_port": 9200}
"""Every host has its own ports in its namespace: the defaults serve."""


def cluster_file(addresses: Mapping[str, str], *, ports: Mapping[str, int] | None = None,
                 settings: Mapping[str, float | int | bool | str] | None = None) -> str:
    """The standard layout's cluster file (TOML), with ``addresses[host]`` for each host."""
    lines = ["[store]"]
    lines += [f"{key} = {value}" for key, value in (ports or NAMESPACE_PORTS).items()]
    if settings:
        lines += ["", "[settings]"]
        lines += [f"{key} = {_toml(value)}" for key, value in settings.items()]
    for host in HOSTS:
        lines += ["", f"[hosts.{host}]", f'address = "{addresses[host]}"']
        lines += [f"{key} = {_toml(value)}" for key, value in PLACEMENT[host].items()]
    return "\n".join(lines) + "\n"


def loopback_ports() -> dict[str, int]:
    """Ports for the standard layout on 127.0.0.1: a free name server port, and runs of three
    free ports for the coordinators' Pyro5 and Raft."""
    taken: set[int] = set()
    return {"ns_port": _free_run(1, taken), "coordinator_port": _free_run(3, taken),
            "raft_port": _free_run(3, taken)}


def _free_run(count: int, taken: set[int]) -> int:
    """The first of ``count`` consecutive ports free on 127.0.0.1 now, below the ephemeral
    range (so that no outgoing connection takes one before its service binds it)."""
    for base in random.sample(range(21000, 32000, 4), k=200):
        run = range(base, base + count)
        if taken.isdisjoint(run) and all(_free(port) for port in run):
            taken.update(run)
            return base
    raise OSError("no run of free ports on 127.0.0.1 in 21000..32000")


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, list):
        return "[" + ", ".join(str(v) for v in value) + "]"
    return str(value)
