"""One frozen ``Settings``: defaults, ``PYROSTORE_*`` environment variables, validation, dump.

Precedence, lowest first: the defaults below, then ``PYROSTORE_<FIELD>`` variables (for example
``PYROSTORE_NS_PORT=9999``), then explicit overrides (the CLI's flags). Only the CLI touches
Pyro5's global configuration; everything else reads a ``Settings`` it was given.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from Pyro5 import serializers

from pyrostore.errors import ConfigError
from pyrostore.versions import PROTOCOL_VERSION

ENV_PREFIX = "PYROSTORE_"
SERIALIZERS = ("serpent", "msgpack", "json")
"""What the store speaks (``marshal`` is refused: a few bytes of it can claim gigabytes)."""
IDENTITIES = ("node", "admin", "client")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
DEFAULT_INVENTORY = Path(__file__).resolve().parent / "data" / "inventory.csv"
"""The seven books, shipped inside the package (package data), so an installed store finds
them from any directory."""


@dataclasses.dataclass(frozen=True)
class CoordinatorAddress:
    """Where one coordinator serves: its Pyro5 daemon's port and its Raft port."""

    host: str
    port: int
    raft_port: int

    def uri(self, replica_id: int) -> str:
        """The Pyro5 URI of coordinator ``replica_id`` at this address."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"PYRO:pyrostore.coordinator.{replica_id}@{host}:{self.port}"

    @property
    def raft(self) -> str:
        """``host:raft_port``, the coordinator's name among the Raft nodes."""
        return f"{self.host}:{self.raft_port}"


@dataclasses.dataclass(frozen=True)
class Settings:
    """Every knob of the store, with its unit. Build with :meth:`from_env`; it validates."""

    ns_host: str = "127.0.0.1"
    """Host of the Pyro5 name server. Always explicit: the store never broadcasts to find it."""
    ns_port: int = 9090
    """TCP port of the Pyro5 name server."""
    host: str = "127.0.0.1"
    """Address the services' Pyro5 daemons bind to (each on a free port)."""
    data_dir: Path = Path("pyrostore-data")
    """Directory of the replicas' SQLite files (``<role>-<id>.sqlite3``) and logs."""
    inventory: Path = DEFAULT_INVENTORY
    """CSV (item,title,topic,stock,cost) that seeds a catalog replica's database on first start."""
    serializer: str = "msgpack"
    """Pyro5 serializer used by the store's proxies: one of serpent, msgpack, json."""
    call_timeout: float = 5.0
    """Seconds a remote call may take before it fails with a timeout (> 0)."""
    refresh_interval: float = 3.0
    """Seconds between refreshes of a cached replica list from the name server (> 0)."""
    failover_timeout: float = 10.0
    """Seconds a call keeps trying other replicas (riding out a failover) before it gives up
    with ``Unavailable`` or ``OutcomeUnknown``; more than ``lease``."""
    coordinators: str = ""
    """The coordinator group, in id order: ``host:port:raft_port`` of each, comma-separated
    (``port`` serves Pyro5, ``raft_port`` the coordinators' Raft traffic). Empty: one
    coordinator, found through the name server. ``pyrostore up`` sets it."""
    heartbeat_interval: float = 0.25
    """Seconds between a replica's heartbeats to the coordinator leader. Each is a Raft commit
    on the coordinators, so fewer cost less CPU; a failover is judged from the last renewal, so
    a longer interval does not slow it, but a coordinator election must fit in what is left
    of a lease after a heartbeat (lease - interval)."""
    lease: float = 1.0
    """Seconds a replica may serve after sending a heartbeat the coordinator answered; at least
    3 x ``heartbeat_interval``. A dead primary is replaced about one lease after it died."""
    cache: bool = True
    """Whether frontends cache lookups and searches (``--no-cache`` turns it off)."""
    cache_entries: int = 100_000
    """Most entries a frontend's cache holds (least recently used go first)."""
    cache_max_age: float = 60.0
    """Seconds after which a cached entry is a miss anyway (a backstop: invalidation is the
    mechanism). The cache lease is ``lease``: a frontend serves from its cache only while the
    catalog primary's lease on it runs, so writes wait at most that long for a mute frontend."""
    request_retention: float = 86400.0
    """Seconds the replicas remember a request id (24 h), and so answer its retry with the
    first answer; compacted in the background after that. A new write whose id is older is
    refused (``RequestExpired``), never applied again. More than ``failover_timeout``."""
    catch_up_limit: int = 100_000
    """Most writes a returning replica may have missed and still get from the primary's log
    (its request ids, kept for ``request_retention``) rather than a whole snapshot; 0: always
    a snapshot. Catching up costs per write missed, a snapshot per row held
    (docs/architecture.md, Replication)."""
    clock_skew: float = 60.0
    """Most seconds the clocks of the store's machines may differ by (>= 0). A replica forgets
    a request id only this long after it expired, so that none forgets an id another would
    still take as new."""
    insecure: bool = False
    """Plaintext, without certificates (``--insecure``): anyone who can connect may do
    anything, so every address must be loopback. Off by default: mutual TLS everywhere."""
    certs_dir: Path = Path("")
    """Directory of the CA and the certificates (``pyrostore certs``); empty:
    ``<data_dir>/certs``."""
    identity: str = ""
    """The certificate this process presents: ``node``, ``admin`` or ``client.<name>`` (a
    shopper); empty: ``node`` for a service, ``admin`` for the other commands."""
    idle_timeout: float = 10.0
    """Seconds a daemon keeps a silent connection open (Pyro5's COMMTIMEOUT); pooled
    connections are dropped after half of it, before the other side closes them."""
    worker_threads: int = 4096
    """Connections one daemon serves at once, each on a thread of its own (16..65536); one
    more is closed at once."""
    test_hooks: bool = False
    """Expose ``set_hook`` on the services so tests can hold a request at a chosen point."""
    test_protocol_version: int = 0
    """The protocol version this process speaks, for tests that play a process of another
    release; 0 (the default): this release's (:data:`pyrostore.versions.PROTOCOL_VERSION`)."""
    log_level: str = "INFO"
    """Logging level of the ``pyrostore`` command: DEBUG, INFO, WARNING or ERROR."""
    log_file: Path = Path("")
    """File this process logs to, rotated by size; empty: standard error. ``pyrostore up``
    sets it for each service to ``<data_dir>/logs/<role>-<id>.log``."""
    log_max_bytes: int = 10 * 1024 * 1024
    """Bytes a log file may reach before it is rotated (10 MiB; at least 1024, or 0: never)."""
    log_backups: int = 5
    """Rotated log files kept beside the current one (``<file>.1`` the newest, 1..100): a
    service's logs take at most ``(log_backups + 1) x log_max_bytes``."""
    metrics_port: int = 0
    """TCP port of a service's Prometheus metrics endpoint (HTTP, on ``host``): 0 any free
    port (``pyrostore status`` shows which), -1 or ``off`` none. A fixed port P given to
    ``pyrostore up`` is the first of a range: the Nth process it starts (the name server,
    then coordinators, catalogs, orders, frontends, in that order) serves on P + N - 1."""

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            object.__setattr__(self, field.name, _typed(field.name, field.type,
                                                        getattr(self, field.name)))
        self._validate()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Defaults, overridden by ``PYROSTORE_*`` variables, overridden by ``overrides``.

        ``None`` values in ``overrides`` are ignored, so unset CLI flags fall through.
        """
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for field in dataclasses.fields(cls):
            raw = environ.get(ENV_PREFIX + field.name.upper())
            if raw is not None:
                values[field.name] = _parse(field.name, field.type, raw)
        unknown = set(overrides) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ConfigError(f"unknown setting(s): {', '.join(sorted(unknown))}")
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def replace(self, **changes: Any) -> Settings:
        """A copy with ``changes`` applied (and validated)."""
        return dataclasses.replace(self, **changes)

    def dump(self) -> dict[str, str]:
        """Every setting as ``{PYROSTORE_NAME: value}``, ready to print or to export."""
        return {
            ENV_PREFIX + f.name.upper(): str(getattr(self, f.name))
            for f in dataclasses.fields(self)
        }

    def dump_typed(self) -> dict[str, Any]:
        """Every setting as ``{PYROSTORE_NAME: value}`` in JSON's types: numbers, booleans,
        paths as text, and ``coordinators`` as the list of its ``host:port:raft_port``."""
        values: dict[str, Any] = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.name == "coordinators":
                value = [entry.strip() for entry in value.split(",") if entry.strip()]
            elif isinstance(value, Path):
                value = str(value)
            values[ENV_PREFIX + field.name.upper()] = value
        return values

    def database_path(self, role: str, replica_id: int) -> Path:
        """Where replica ``replica_id`` of group ``role`` keeps its SQLite file."""
        return self.data_dir / f"{role}-{replica_id}.sqlite3"

    @property
    def protocol_version(self) -> int:
        """The protocol version this process speaks (see ``test_protocol_version``)."""
        return self.test_protocol_version or PROTOCOL_VERSION

    @property
    def certificates(self) -> Path:
        """Where the CA and the certificates are (``certs_dir`` or ``<data_dir>/certs``)."""
        return self.certs_dir if str(self.certs_dir) not in ("", ".") else self.data_dir / "certs"

    def hosts(self) -> list[str]:
        """Every address the store's services use (what a node certificate must cover)."""
        hosts = [self.host, self.ns_host, *(a.host for a in self.coordinator_addresses())]
        return list(dict.fromkeys(hosts))

    def coordinator_addresses(self) -> list[CoordinatorAddress]:
        """The coordinator group from ``coordinators``, in id order (empty if unset)."""
        addresses = []
        for entry in filter(None, (e.strip() for e in self.coordinators.split(","))):
            host, _, ports = entry.rpartition(":")
            host, _, port = host.rpartition(":")
            try:
                address = CoordinatorAddress(host, int(port), int(ports))
            except ValueError:
                raise ConfigError(f"coordinators: {entry!r} is not host:port:raft_port") from None
            _check_address("coordinators", host)
            for number in (address.port, address.raft_port):
                if not 0 < number < 65536:
                    raise ConfigError(f"coordinators: port {number} is not 1..65535")
            addresses.append(address)
        return addresses

    def _validate(self) -> None:
        for name in ("ns_host", "host"):
            _check_address(name, getattr(self, name))
        self.coordinator_addresses()
        if not 0 < self.ns_port < 65536:
            raise ConfigError(f"ns_port must be 1..65535, not {self.ns_port}")
        if self.serializer not in SERIALIZERS:
            raise ConfigError(f"serializer must be one of {', '.join(SERIALIZERS)}")
        if self.serializer not in serializers.serializers:
            raise ConfigError(f"serializer {self.serializer} is not installed "
                              f"(pip install {self.serializer})")
        for name in ("call_timeout", "refresh_interval", "heartbeat_interval"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be > 0 seconds, not {getattr(self, name)}")
        if not self.lease >= 3 * self.heartbeat_interval:
            raise ConfigError(f"lease ({self.lease} s) must be at least 3 x heartbeat_interval "
                              f"({self.heartbeat_interval} s)")
        if not 1 <= self.cache_entries <= 10_000_000:
            raise ConfigError(f"cache_entries must be 1..10000000, not {self.cache_entries}")
        if not 0.5 <= self.idle_timeout <= 3600:
            raise ConfigError(f"idle_timeout must be 0.5..3600 seconds, not {self.idle_timeout}")
        if not 16 <= self.worker_threads <= 65536:
            raise ConfigError(f"worker_threads must be 16..65536, not {self.worker_threads}")
        if not self.cache_max_age > 0:
            raise ConfigError(f"cache_max_age must be > 0 seconds, not {self.cache_max_age}")
        if not self.failover_timeout > self.lease:
            raise ConfigError(f"failover_timeout ({self.failover_timeout} s) must be more than "
                              f"the lease ({self.lease} s)")
        if not self.request_retention > self.failover_timeout:
            raise ConfigError(f"request_retention ({self.request_retention} s) must be more than "
                              f"failover_timeout ({self.failover_timeout} s): a client retries "
                              "a request for that long")
        if not 0 <= self.test_protocol_version < 2**31:
            raise ConfigError(f"test_protocol_version must be 0 (this release's) or a "
                              f"version, not {self.test_protocol_version}")
        if not 0 <= self.catch_up_limit <= 10_000_000:
            raise ConfigError(f"catch_up_limit must be 0..10000000 writes, not "
                              f"{self.catch_up_limit}")
        if not 0 <= self.clock_skew <= 86400:
            raise ConfigError(f"clock_skew must be 0..86400 seconds, not {self.clock_skew}")
        role, _, name = self.identity.partition(".")
        if self.identity and (role not in IDENTITIES or bool(name) != (role == "client")):
            raise ConfigError(f"identity must be node, admin or client.<name>, "
                              f"not {self.identity!r}")
        if self.insecure:
            remote = [host for host in self.hosts() if not _loopback(host)]
            if remote:
                raise ConfigError(f"--insecure is loopback-only: {', '.join(remote)} is not a "
                                  "loopback address (use certificates: pyrostore certs)")
        if self.log_level not in LOG_LEVELS:
            raise ConfigError(f"log_level must be one of {', '.join(LOG_LEVELS)}")
        if not (self.log_max_bytes == 0 or self.log_max_bytes >= 1024):
            raise ConfigError(f"log_max_bytes must be 0 (never rotate) or at least 1024, "
                              f"not {self.log_max_bytes}")
        if not 1 <= self.log_backups <= 100:
            raise ConfigError(f"log_backups must be 1..100, not {self.log_backups}")
        if not -1 <= self.metrics_port < 65536:
            raise ConfigError(f"metrics_port must be 0 (any free port), 1..65535, or -1 / off "
                              f"(none), not {self.metrics_port}")


def _parse(name: str, type_name: Any, raw: str) -> Any:
    """Convert the text of a ``PYROSTORE_*`` variable to the field's type."""
    kind = str(type_name)
    if name == "metrics_port" and raw.strip().lower() == "off":
        return -1
    try:
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
    except ValueError:
        raise ConfigError(f"{ENV_PREFIX}{name.upper()}={raw!r} is not a valid {kind}") from None
    if kind == "Path":
        return Path(raw)
    if kind == "bool":
        if raw.lower() not in ("1", "0", "true", "false", "yes", "no"):
            raise ConfigError(f"{ENV_PREFIX}{name.upper()}={raw!r} is not 1/0/true/false")
        return raw.lower() in ("1", "true", "yes")
    return raw.upper() if name == "log_level" else raw


def _typed(name: str, type_name: Any, value: Any) -> Any:
    """``value`` as the field's type; a value of the wrong type is a ConfigError."""
    kind = str(type_name)
    if kind == "Path" and isinstance(value, str | Path):
        return Path(value)
    if kind == "float" and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if kind == "int" and isinstance(value, int) and not isinstance(value, bool):
        return value
    if kind == "str" and isinstance(value, str):
        return value
    if kind == "bool" and isinstance(value, bool):
        return value
    raise ConfigError(f"{name} must be {'a' if kind != 'int' else 'an'} {kind}, "
                      f"not {type(value).__name__} {value!r}")


def _loopback(host: str) -> bool:
    return host == "localhost" or ipaddress.ip_address(host).is_loopback


def _check_address(name: str, value: str) -> None:
    if value == "localhost":
        return
    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise ConfigError(f"{name} must be an IP address or 'localhost', not {value!r}") from None
