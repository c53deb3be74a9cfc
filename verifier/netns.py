"""Separate "hosts" on one machine: Linux network namespaces joined by a bridge of their own.

:class:`Hosts` makes one namespace per host and one for the switch (the bridge), joined by
veth pairs, so nothing is added to the root namespace and no address exists outside the
namespaces it made. Each host has ``eth0`` with an address in a private range and permanent
neighbour entries for the others, so a cut link loses packets silently (a connect times out)
instead of failing neighbour resolution ("No route to host"). It cuts hosts apart with the
steps that :class:`verifier.partition.Partition` decides, and removes everything it made on
:meth:`Hosts.close`, at exit, or, for a run whose process died, by :func:`sweep`.

Run ``python -m verifier.netns --help`` for the command line (``up`` and ``sweep``).
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import ipaddress
import json
import logging
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

from verifier.partition import LinkChange, Partition, Ruleset, Step, nft_script

log = logging.getLogger(__name__)

PREFIX = "pyrostore"
"""What every namespace this tool makes is named after: ``<prefix>-<tag>-<host>``."""
DEFAULT_SUBNET = "10.213.0.0/24"
"""The private range hosts take addresses from: host i gets the (i + 10)th address."""
STATE_DIR = Path("/run/pyrostore-netns")
"""Where each run records its owner (pid and start time) and namespaces, for :func:`sweep`."""
_HOST_NAME = re.compile(r"^[a-z][a-z0-9]{0,11}$")
_FIRST_HOST = 10


class NetnsError(Exception):
    """Raised when a command that builds, cuts or removes hosts fails, or leaves something."""


@dataclass(eq=False)
class Host:
    """One namespace with ``eth0`` on the switch; runs processes inside and kills them."""

    name: str
    address: str
    namespace: str
    port: str
    """The host's veth end in the switch namespace (down while the host is isolated)."""
    _procs: list[subprocess.Popen[Any]] = field(default_factory=list, repr=False)

    @property
    def exec_prefix(self) -> list[str]:
        """The argv prefix that runs a command inside this host."""
        return ["ip", "netns", "exec", self.namespace]

    def run(self, argv: Sequence[str], **popen_kwargs: Any) -> subprocess.Popen[Any]:
        """Start ``argv`` inside the host as its own process group, tracked for :meth:`kill`."""
        popen_kwargs["start_new_session"] = True
        proc: subprocess.Popen[Any] = subprocess.Popen([*self.exec_prefix, *argv],
                                                       **popen_kwargs)
        self._procs.append(proc)
        return proc

    def check_output(self, argv: Sequence[str], *, timeout: float = 30.0) -> str:
        """Run ``argv`` inside the host to its end; its stdout, or :class:`NetnsError`."""
        return _run([*self.exec_prefix, *argv], timeout=timeout).stdout

    def kill(self, proc: subprocess.Popen[Any]) -> None:
        """SIGKILL the process group of ``proc`` and reap it."""
        # Once reaped, its pid (and group id) may belong to someone else: never signal it then;
        # what is left of the group inside the namespace goes when the Hosts close.
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        if proc in self._procs:
            self._procs.remove(proc)

    def kill_all(self) -> None:
        """Kill every process group that :meth:`run` started."""
        for proc in list(self._procs):
            self.kill(proc)


class Hosts:
    """A context manager making hosts (network namespaces on one bridge) and cutting them apart.

    ``names`` are short lowercase host names; ``subnet`` a private IPv4 range. The run's
    ``tag`` (6 hex digits) is in every name it makes. Partition methods take a :class:`Host`
    or its name.
    """

    def __init__(self, names: Sequence[str] = ("a", "b", "c"), *,
                 subnet: str = DEFAULT_SUBNET, prefix: str = PREFIX,
                 state_dir: Path = STATE_DIR) -> None:
        addresses = plan_addresses(names, subnet)
        self.tag = secrets.token_hex(3)
        self.prefix = prefix
        self.network = ipaddress.IPv4Network(subnet)
        self.switch = f"{prefix}-{self.tag}-sw"
        self.bridge = f"br{self.tag}"
        self.hosts = {name: Host(name, addresses[name], f"{prefix}-{self.tag}-{name}",
                                 f"v{self.tag}-{index}")
                      for index, name in enumerate(names)}
        self._state_file = state_dir / f"{self.tag}.json"
        self._partition = Partition(addresses)
        self._nft: str | None = None
        self._started = False
        self._closed = False

    @staticmethod
    def available() -> str | None:
        """None if hosts can be made here, else the reason why not (for ``pytest.skip``)."""
        if os.geteuid() != 0:
            return f"network namespaces need root (running as uid {os.geteuid()})"
        if _which("ip") is None:
            return "the ip command (iproute2) is missing"
        probe = f"{PREFIX}-probe-{os.getpid()}"
        try:
            _run(["ip", "netns", "add", probe])
            _run(["ip", "netns", "exec", probe, "ip", "link", "set", "lo", "up"])
        except NetnsError as exc:
            return f"ip netns does not work here: {exc}"
        finally:
            _run(["ip", "netns", "del", probe], check=False)
        return None

    def __enter__(self) -> Hosts:
        self.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __getitem__(self, name: str) -> Host:
        return self.hosts[name]

    def __iter__(self) -> Iterator[Host]:
        return iter(self.hosts.values())

    @property
    def namespaces(self) -> list[str]:
        """Every namespace of the run, the switch last."""
        return [host.namespace for host in self] + [self.switch]

    def start(self) -> None:
        """Make the namespaces, bridge and links; on failure remove what was made."""
        if self._started:
            raise NetnsError(f"hosts {self.tag} were already started")
        self._started = True
        atexit.register(self.close)
        try:
            self._write_state()
            self._build()
        except BaseException:
            self.close()
            raise
        log.info("hosts %s up: %s", self.tag, ", ".join(f"{h.name}={h.address}" for h in self))

    def close(self) -> None:
        """Kill every process started in the hosts, remove everything made, check it is gone.

        Idempotent; also runs at exit. Raises :class:`NetnsError` if something is left.
        """
        if self._closed or not self._started:
            return
        self._closed = True
        atexit.unregister(self.close)
        for host in self:
            host.kill_all()
        _remove_namespaces(self.namespaces)
        self._state_file.unlink(missing_ok=True)
        left = self.leftovers()
        if left:
            raise NetnsError(f"hosts {self.tag} left behind: {', '.join(left)}")

    def leftovers(self) -> list[str]:
        """Namespaces and root-namespace links whose names carry this run's tag."""
        names = [ns for ns in _netns_names() if ns.startswith(f"{self.prefix}-{self.tag}-")]
        return names + [link for link in _root_links() if self.tag in link]

    def isolate(self, host: Host | str) -> None:
        """Cut ``host`` off from all others: its port on the switch goes down."""
        self._apply(self._partition.isolate(_name(host)))

    def rejoin(self, host: Host | str) -> None:
        """Undo :meth:`isolate`."""
        self._apply(self._partition.rejoin(_name(host)))

    def block(self, src: Host | str, dst: Host | str, *, both_ways: bool = False) -> None:
        """Drop packets from ``src`` at ``dst`` (nftables), and back too if ``both_ways``."""
        self._apply(self._partition.block(_name(src), _name(dst), both_ways=both_ways))

    def unblock(self, src: Host | str, dst: Host | str, *, both_ways: bool = False) -> None:
        """Undo :meth:`block` for the same directions."""
        self._apply(self._partition.unblock(_name(src), _name(dst), both_ways=both_ways))

    def heal(self) -> None:
        """Every port up, every drop removed."""
        self._apply(self._partition.heal())

    def status(self) -> dict[str, Any]:
        """A flat view of the run: tag, switch, each host's namespace and address, cuts."""
        return {"tag": self.tag, "switch": self.switch,
                "hosts": {h.name: {"namespace": h.namespace, "address": h.address}
                          for h in self},
                **self._partition.status()}

    def _apply(self, steps: list[Step]) -> None:
        for step in steps:
            host = self.hosts[step.host]
            if isinstance(step, LinkChange):
                state = "up" if step.up else "down"
                _run(["ip", "-n", self.switch, "link", "set", host.port, state])
            elif isinstance(step, Ruleset):
                self._nft = self._nft or ensure_nftables()
                _run([*host.exec_prefix, self._nft, "-f", "-"], input=nft_script(step))

    def _write_state(self) -> None:
        self._state_file.parent.mkdir(parents=True, exist_ok=True)
        owner = {"pid": os.getpid(), "started": _start_time(os.getpid()),
                 "prefix": self.prefix, "namespaces": self.namespaces}
        self._state_file.write_text(json.dumps(owner))

    def _build(self) -> None:
        sw = self.switch
        _run(["ip", "netns", "add", sw])
        _run(["ip", "-n", sw, "link", "add", self.bridge, "type", "bridge"])
        _run(["ip", "-n", sw, "link", "set", self.bridge, "up"])
        for host in self:
            _run(["ip", "netns", "add", host.namespace])
            _run(["ip", "-n", sw, "link", "add", host.port, "type", "veth",
                  "peer", "name", "eth0", "netns", host.namespace])
            _run(["ip", "-n", sw, "link", "set", host.port, "master", self.bridge, "up"])
            commands = ["link set lo up",
                        f"link set eth0 address {_mac(host.address)}",
                        f"addr add {host.address}/{self.network.prefixlen} dev eth0",
                        "link set eth0 up"]
            commands += [f"neigh replace {peer.address} lladdr {_mac(peer.address)} "
                         "dev eth0 nud permanent" for peer in self if peer is not host]
            _run(["ip", "-n", host.namespace, "-batch", "-"], input="\n".join(commands) + "\n")


def plan_addresses(names: Sequence[str], subnet: str) -> dict[str, str]:
    """Each host's address in ``subnet`` (the i-th name gets the (i + 10)th); checks both."""
    network = ipaddress.IPv4Network(subnet)
    if not network.is_private:
        raise ValueError(f"subnet {subnet} is not a private range")
    if not names:
        raise ValueError("at least one host is needed")
    for name in names:
        if not _HOST_NAME.match(name) or name == "sw":
            raise ValueError(f"host name {name!r} is not 1-12 lowercase letters and digits "
                             "starting with a letter (and not 'sw')")
    if len(set(names)) != len(names):
        raise ValueError(f"host names repeat: {', '.join(names)}")
    if len(names) > min(network.num_addresses - 2 - _FIRST_HOST, 100):
        raise ValueError(f"{len(names)} hosts do not fit in {subnet}")
    return {name: str(network.network_address + _FIRST_HOST + i) for i, name in enumerate(names)}


def describe(hosts: Iterable[Host]) -> str:
    """A table of host, namespace, address and the prefix that runs a command inside it."""
    rows = [("host", "namespace", "address", "run inside with")]
    rows += [(h.name, h.namespace, h.address, " ".join(h.exec_prefix) + " <command>")
             for h in hosts]
    widths = [max(len(row[col]) for row in rows) for col in range(3)]
    return "\n".join("  ".join([*(row[col].ljust(widths[col]) for col in range(3)), row[3]])
                     for row in rows)


def ensure_nftables() -> str:
    """The path of ``nft``, installing the Debian package ``nftables`` first if root may."""
    found = _which("nft")
    if found:
        return found
    if os.geteuid() != 0:
        raise NetnsError("nft is missing and only root may install it (apt-get install nftables)")
    if _which("apt-get") is None:
        raise NetnsError("nft is missing and there is no apt-get to install nftables with")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "nftables"]
    began = time.monotonic()
    result = _run(install, check=False, timeout=600, env=env)
    if result.returncode != 0:
        # a fresh machine may have no package lists yet
        _run(["apt-get", "update", "-q"], check=False, timeout=600, env=env)
        result = _run(install, check=False, timeout=600, env=env)
    found = _which("nft")
    if result.returncode != 0 or not found:
        raise NetnsError(f"could not install nftables: {_last_line(result.stderr)}")
    log.info("installed nftables in %.1f s", time.monotonic() - began)
    return found


def sweep(prefix: str = PREFIX, *, state_dir: Path = STATE_DIR) -> list[str]:
    """Remove what runs of this tool left when their process died; the namespaces removed.

    A run is swept only if its owner (pid and start time in its state file) no longer lives,
    so a live run on the same machine is never touched.
    """
    removed: list[str] = []
    for path in sorted(state_dir.glob("*.json")):
        try:
            owner = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            log.warning("skipping unreadable state file %s: %s", path, exc)
            continue
        if owner.get("prefix") != prefix or _alive(owner["pid"], owner["started"]):
            continue
        tag_prefix = f"{prefix}-{path.stem}-"
        namespaces = set(owner["namespaces"]) | {
            ns for ns in _netns_names() if ns.startswith(tag_prefix)}
        removed += _remove_namespaces(sorted(namespaces))
        path.unlink(missing_ok=True)
        log.info("swept run %s of dead pid %s", path.stem, owner["pid"])
    return removed


def _remove_namespaces(namespaces: Sequence[str]) -> list[str]:
    """Kill every process inside, then delete the namespaces (veths go with them)."""
    present = [ns for ns in namespaces if ns in set(_netns_names())]
    for ns in present:
        for pid in _pids_in(ns):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10.0
    while any(_pids_in(ns) for ns in present):
        if time.monotonic() > deadline:
            raise NetnsError(f"processes outlive SIGKILL in {', '.join(present)}")
        time.sleep(0.02)
    for ns in present:
        _run(["ip", "netns", "del", ns])
    return present


def _pids_in(namespace: str) -> list[int]:
    result = _run(["ip", "netns", "pids", namespace], check=False)
    return [int(word) for word in result.stdout.split()]


def _netns_names() -> list[str]:
    result = _run(["ip", "netns", "list"], check=False)
    return [line.split()[0] for line in result.stdout.splitlines() if line.strip()]


def _root_links() -> list[str]:
    result = _run(["ip", "-br", "link"], check=False)
    return [line.split()[0].split("@")[0] for line in result.stdout.splitlines() if line.strip()]


def _start_time(pid: int) -> int:
    """The process's start time in clock ticks since boot (tells a reused pid apart)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[19])


def _alive(pid: int, started: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    fields = stat.rsplit(")", 1)[1].split()
    return fields[0] != "Z" and int(fields[19]) == started


def _mac(address: str) -> str:
    """A locally administered MAC made from the address, so peers can know it in advance."""
    return "02:00:" + ":".join(f"{byte:02x}" for byte in ipaddress.IPv4Address(address).packed)


def _name(host: Host | str) -> str:
    return host.name if isinstance(host, Host) else host


def _which(command: str) -> str | None:
    return shutil.which(command) or shutil.which(command, path="/usr/sbin:/sbin")


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "(no output)"


def _run(argv: Sequence[str], *, input: str | None = None, check: bool = True,
         timeout: float = 30.0, env: dict[str, str] | None = None
         ) -> subprocess.CompletedProcess[str]:
    try:
        result = subprocess.run(list(argv), input=input, capture_output=True, text=True,
                                timeout=timeout, env=env, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise NetnsError(f"{' '.join(argv)}: {exc}") from exc
    if check and result.returncode != 0:
        raise NetnsError(f"{' '.join(argv)} failed ({result.returncode}): "
                         f"{_last_line(result.stderr)}")
    return result


def _up(names: list[str], subnet: str) -> int:
    hosts = Hosts(names, subnet=subnet)
    reason = Hosts.available()
    if reason:
        raise NetnsError(reason)

    def stop(signum: int, frame: FrameType | None) -> None:
        # a second signal must not cut the clean-up short
        for name in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(name, signal.SIG_IGN)
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGHUP, stop)
    try:
        with hosts:
            print(describe(hosts))
            print(f"switch namespace {hosts.switch}; Ctrl-C or SIGTERM removes them", flush=True)
            while True:
                signal.pause()
    except KeyboardInterrupt:
        pass
    print(f"removed hosts {hosts.tag}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """The command line: ``up`` makes hosts until interrupted, ``sweep`` removes dead runs'."""
    parser = argparse.ArgumentParser(
        prog="python -m verifier.netns",
        description="Separate hosts on one machine (network namespaces on a private bridge). "
                    "Needs root and iproute2.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    up = commands.add_parser(
        "up", help="make hosts, print how to reach them, remove them on Ctrl-C or SIGTERM")
    up.add_argument("--hosts", default="a,b,c", metavar="NAMES",
                    help="comma-separated host names (default: a,b,c)")
    up.add_argument("--subnet", default=DEFAULT_SUBNET,
                    help=f"private IPv4 range for their addresses (default: {DEFAULT_SUBNET})")
    commands.add_parser("sweep", help="remove what runs whose process died left behind")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        if args.command == "up":
            return _up([name.strip() for name in args.hosts.split(",")], args.subnet)
        removed = sweep()
        print(f"removed {len(removed)} namespaces" + (f": {', '.join(removed)}" if removed else ""))
        return 0
    except (NetnsError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
