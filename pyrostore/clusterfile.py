"""The cluster file: a store across machines, described once (TOML, read with ``tomllib``).

It names the hosts, the address each serves on, and the services each runs; every machine
gets the same file and ``pyrostore up --cluster FILE --on HOST`` starts its own share::

    [store]
    ns_port = 9090            # the name server's port, on the host that runs it
    coordinator_port = 9100   # coordinator N serves Pyro5 on coordinator_port + N - 1
    raft_port = 9200          # ... and its Raft traffic on raft_port + N - 1

    [settings]                # optional: any other setting (`pyrostore config` lists them)
    lease = 1.0

    [hosts.alpha]
    address = "10.0.0.1"
    nameserver = true
    coordinator = [1]
    catalog = [1]
    order = [1]

    [hosts.beta]
    address = "10.0.0.2"
    coordinator = [2]
    catalog = [2]
    order = [2]
    frontend = [1]

Replica ids are the cluster's: each (role, id) runs on one host. Coordinators are numbered
1..N, since their group is addressed in id order. The other services bind free ports of their
host's address and are found through the name server.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from pyrostore.config import Settings
from pyrostore.errors import ConfigError
from pyrostore.models import service_name

ROLES = ("coordinator", "catalog", "order", "frontend")
PLACED = frozenset({"ns_host", "ns_port", "host", "coordinators"})
"""Settings the file decides by itself, from its hosts and ports."""
PER_MACHINE = frozenset({"data_dir", "certs_dir", "identity", "inventory"})
"""Settings that belong to one machine, not to the cluster: flags or variables there."""
_HOST_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
_STORE_KEYS = {"ns_port": 9090, "coordinator_port": 9100, "raft_port": 9200}


@dataclasses.dataclass(frozen=True)
class HostSpec:
    """One machine of the cluster: its name, its address, and what it runs."""

    name: str
    address: str
    nameserver: bool
    services: Mapping[str, tuple[int, ...]]
    """Role -> the replica ids of that role on this host (every role present, maybe empty)."""

    def runs(self) -> Iterator[tuple[str, int]]:
        """``(role, id)`` of each service this host runs, in start-up order."""
        for role in ROLES:
            for replica_id in self.services[role]:
                yield role, replica_id


@dataclasses.dataclass(frozen=True)
class ClusterSpec:
    """A whole cluster file, checked."""

    hosts: tuple[HostSpec, ...]
    ns_port: int
    coordinator_port: int
    raft_port: int
    settings: Mapping[str, Any]
    """The ``[settings]`` table: overrides of :class:`~pyrostore.config.Settings` fields."""
    path: Path | None = None

    @classmethod
    def load(cls, path: Path | str) -> ClusterSpec:
        """Read and check a cluster file; any problem is a ConfigError naming the file."""
        path = Path(path)
        try:
            text = path.read_text()
        except OSError as exc:
            raise ConfigError(f"cannot read the cluster file {path}: {exc.strerror}") from None
        return cls.parse(text, path=path)

    @classmethod
    def parse(cls, text: str, *, path: Path | None = None) -> ClusterSpec:
        """Check the text of a cluster file."""
        where = str(path) if path else "the cluster file"
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{where} is not valid TOML: {exc}") from None
        try:
            return _checked(data, path)
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None

    def host(self, name: str) -> HostSpec:
        """The host called ``name``, or a ConfigError listing the hosts there are."""
        for host in self.hosts:
            if host.name == name:
                return host
        raise ConfigError(f"no host {name!r} in the cluster file (hosts: "
                          f"{', '.join(h.name for h in self.hosts)})")

    @property
    def nameserver_host(self) -> HostSpec:
        """The host that runs the name server."""
        return next(host for host in self.hosts if host.nameserver)

    def coordinators(self) -> str:
        """The coordinator group as :attr:`Settings.coordinators` takes it, in id order."""
        placed = {replica_id: host for host in self.hosts
                  for replica_id in host.services["coordinator"]}
        return ",".join(f"{placed[i].address}:{self.coordinator_port + i - 1}:"
                        f"{self.raft_port + i - 1}" for i in sorted(placed))

    def settings_values(self, on: str | None = None) -> dict[str, Any]:
        """The settings this file decides, for host ``on`` (its address is ``host``) or, with
        no host, for a machine that only talks to the store."""
        values = {**self.settings, "ns_host": self.nameserver_host.address,
                  "ns_port": self.ns_port, "coordinators": self.coordinators()}
        if on is not None:
            values["host"] = self.host(on).address
        return values

    def host_of(self, address: str) -> str | None:
        """The name of the host with ``address`` (the first, if several share it)."""
        return next((host.name for host in self.hosts if host.address == address), None)

    def placement(self) -> Iterator[tuple[HostSpec, str, int]]:
        """``(host, role, id)`` of every service of the cluster."""
        for host in self.hosts:
            for role, replica_id in host.runs():
                yield host, role, replica_id


def _checked(data: Mapping[str, Any], path: Path | None) -> ClusterSpec:
    _only(data, {"store", "settings", "hosts"}, "top level")
    store = _table(data, "store")
    _only(store, set(_STORE_KEYS), "[store]")
    ports = {key: _port(store.get(key, default), f"store.{key}")
             for key, default in _STORE_KEYS.items()}
    settings = dict(_table(data, "settings"))
    fixed = (PLACED | PER_MACHINE) & set(settings)
    if fixed:
        raise ConfigError(f"[settings] cannot set {', '.join(sorted(fixed))}: the hosts decide "
                          "where services are; data and certificates belong to each machine")
    Settings.from_env({}, **settings)  # unknown names and bad values fail with their name
    hosts = tuple(_host(name, table) for name, table in _table(data, "hosts").items())
    _check_placement(hosts)
    count = sum(len(host.services["coordinator"]) for host in hosts)
    for key in ("coordinator_port", "raft_port"):
        _port(ports[key] + count - 1, f"store.{key} + {count - 1} (the last coordinator's)")
    return ClusterSpec(hosts, settings=settings, path=path, **ports)


def _host(name: str, table: Any) -> HostSpec:
    if not _HOST_NAME.fullmatch(name):
        raise ConfigError(f"host name {name!r}: letters, digits, '.', '_', '-'")
    if not isinstance(table, Mapping):
        raise ConfigError(f"hosts.{name} must be a table")
    _only(table, {"address", "nameserver", *ROLES}, f"[hosts.{name}]")
    address = table.get("address")
    if not isinstance(address, str):
        raise ConfigError(f"hosts.{name}.address is missing (an IP address)")
    Settings.from_env({}, host=address)  # the rule of --host: an IP address or localhost
    nameserver = table.get("nameserver", False)
    if not isinstance(nameserver, bool):
        raise ConfigError(f"hosts.{name}.nameserver must be true or false")
    services = {role: _ids(table.get(role, []), f"hosts.{name}.{role}") for role in ROLES}
    return HostSpec(name, address, nameserver, services)


def _check_placement(hosts: tuple[HostSpec, ...]) -> None:
    if not hosts:
        raise ConfigError("no [hosts.NAME] tables")
    nameservers = [host.name for host in hosts if host.nameserver]
    if len(nameservers) != 1:
        raise ConfigError("exactly one host runs the name server (nameserver = true), not "
                          f"{len(nameservers)} ({', '.join(nameservers) or 'none'})")
    for role in ROLES:
        owners: dict[int, str] = {}
        for host in hosts:
            for replica_id in host.services[role]:
                if replica_id in owners:
                    raise ConfigError(f"{role} {replica_id} is on both {owners[replica_id]} "
                                      f"and {host.name}")
                owners[replica_id] = host.name
        if not owners:
            raise ConfigError(f"no host runs a {role}")
        if role == "coordinator" and sorted(owners) != list(range(1, len(owners) + 1)):
            raise ConfigError(f"coordinators must be numbered 1..{len(owners)}, "
                              f"not {sorted(owners)}")
        if role == "coordinator" and len(owners) > 9:
            raise ConfigError("at most 9 coordinators")


def _table(data: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, Mapping):
        raise ConfigError(f"{key} must be a table ([{key}])")
    return value


def _only(table: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = set(table) - allowed
    if unknown:
        raise ConfigError(f"unknown key(s) in {where}: {', '.join(sorted(unknown))} "
                          f"(allowed: {', '.join(sorted(allowed))})")


def _port(value: Any, where: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 < value < 65536:
        raise ConfigError(f"{where} must be a port number 1..65535, not {value!r}")
    return value


def _ids(value: Any, where: str) -> tuple[int, ...]:
    if not isinstance(value, list) or not all(
            isinstance(i, int) and not isinstance(i, bool) and 1 <= i <= 9999 for i in value):
        raise ConfigError(f"{where} must be a list of replica ids 1..9999, not {value!r}")
    if len(set(value)) != len(value):
        raise ConfigError(f"{where} lists an id twice: {value}")
    return tuple(value)


def uri_address(uri: str) -> str:
    """The address in a Pyro5 URI (``PYRO:name@10.0.0.1:4711`` -> ``10.0.0.1``)."""
    location = uri.rpartition("@")[2]
    return location.rpartition(":")[0].strip("[]")


def host_report(spec: ClusterSpec, services: Iterable[Mapping[str, Any]], *,
                nameserver_up: bool) -> list[dict[str, Any]]:
    """One row per host of the file, from ``pyrostore status``'s survey of the services:
    ``{host, address, nameserver, expected, up, missing}``, where ``up`` counts the host's
    services that answered, and ``missing`` names those that did not, or are not registered.
    ``nameserver`` is None on a host that does not run it."""
    answered = {row["name"] for row in services if row.get("state") != "down"}
    rows = []
    for host in spec.hosts:
        names = {service_name(role, i): f"{role} {i}" for role, i in host.runs()}
        missing = [label for name, label in names.items() if name not in answered]
        rows.append({"host": host.name, "address": host.address,
                     "nameserver": nameserver_up if host.nameserver else None,
                     "expected": len(names), "up": len(names) - len(missing),
                     "missing": missing})
    return rows
