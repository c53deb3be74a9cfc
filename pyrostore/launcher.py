"""A whole store as supervised child processes: what ``pyrostore up``, demo.py and tests run.

A :class:`Cluster` starts an embedded name server when none answers, then the coordinator,
the catalog, order and frontend replicas, each as ``python -m pyrostore <role> --id N`` with
the cluster's settings in its ``PYROSTORE_*`` environment and its output in
``<data>/logs/<role>-<id>.log``, and waits until each is registered and, for a replica of a
group, serving. It restarts nothing by itself: a child that dies is reported by
:meth:`Cluster.reap` (``pyrostore up`` restarts it through :mod:`pyrostore.supervisor`; tests
that kill a replica on purpose keep it dead). :meth:`Cluster.stop` ends every child it
started, by PID, in reverse order, and children die with their supervisor. It holds the data
directory's lock (:func:`~pyrostore.datadir.hold_directory`) from its creation until
:meth:`Cluster.stop`: one store per directory.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import functools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO

import Pyro5.errors

from pyrostore import certs
from pyrostore.clusterfile import HostSpec
from pyrostore.config import Settings
from pyrostore.coordinator import group_secret
from pyrostore.datadir import hold_directory, private_dir, private_opener, write_private
from pyrostore.discovery import find, name_server_answers, service_name, survey
from pyrostore.errors import ConfigError, PyrostoreError, Unavailable
from pyrostore.restarts import describe_exit
from pyrostore.serving import fixed_port
from pyrostore.transport import make_proxy

_PR_SET_PDEATHSIG = 1
RESTARTS_VARIABLE = "PYROSTORE_RESTARTS"
"""How a child learns how many times it was restarted (it shows the count in ``info()``)."""


@dataclasses.dataclass
class Child:
    """One process the cluster started."""

    role: str
    replica_id: int
    argv: list[str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    reported: bool = False
    restarts: int = 0
    """How many times it was restarted (by a supervisor); passed on in its environment."""

    @property
    def name(self) -> str:
        """The Pyro5 name the child registers (the name server's own for role nameserver)."""
        return service_name(self.role, self.replica_id)

    @property
    def pid(self) -> int | None:
        """The child's PID, or None before it starts."""
        return None if self.process is None else self.process.pid

    def alive(self) -> bool:
        """Whether the child is running."""
        return self.process is not None and self.process.poll() is None

    def command(self) -> str:
        """The shell command that starts this child by hand (``pyrostore catalog --id 1 …``)."""
        return " ".join(["pyrostore", *self.argv])

    def log_tail(self, lines: int = 5) -> str:
        """The last lines the child wrote."""
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""


class Cluster:
    """The processes of one store on one machine."""

    def __init__(
        self,
        settings: Settings,
        *,
        coordinators: int = 3,
        catalogs: int = 2,
        orders: int = 2,
        frontends: int = 1,
        extra_args: dict[str, list[str]] | None = None,
        share: HostSpec | None = None,
        wrap: Sequence[str] = (),
    ) -> None:
        self.lock = hold_directory(settings.data_dir)  # one store per directory, until stop()
        self.share = share
        """One host's share of a cluster file (``up --cluster``); None: the whole store here."""
        if share is None:
            self.settings = settings.replace(
                coordinators=settings.coordinators or coordinator_addresses(settings, coordinators))
            counts = {"coordinator": len(self.settings.coordinator_addresses()),
                      "catalog": catalogs, "order": orders, "frontend": frontends}
            self.plan = {role: list(range(1, n + 1)) for role, n in counts.items()}
        else:
            self.settings = settings
            self.plan = {role: list(ids) for role, ids in share.services.items()}
        self.extra_args = extra_args or {}
        self.wrap = list(wrap)
        """A command the children run under, e.g. ``ip netns exec NAME`` (the verifier's
        hosts); it must exec them, so that a child's PID is the service's."""
        self.children: list[Child] = []
        self.log_dir = settings.data_dir / "logs"

    def child_argv(self, role: str, replica_id: int) -> list[str]:
        """The arguments of ``pyrostore`` that start replica ``replica_id`` of ``role``."""
        s = self.settings
        argv = [role, "--ns-host", s.ns_host, "--ns-port", str(s.ns_port)]
        if role == "nameserver":
            argv += ["--storage", f"sql:{s.data_dir / 'nameserver.sqlite3'}"]
        else:
            argv += ["--data", str(s.data_dir), "--host", s.host,
                     "--coordinator-addrs", s.coordinators, "--id", str(replica_id)]
        return argv + self.extra_args.get(role, [])

    def start(
        self, *, timeout: float = 30.0, progress: Callable[[str], None] | None = None
    ) -> None:
        """Start everything and wait until each service is registered, or raise."""
        private_dir(self.log_dir)
        if self.share is not None:
            self._check_host_files()
        elif not self.settings.insecure:
            certs.ensure(self.settings.certificates, hosts=self.settings.hosts())
        group_secret(self.settings)  # before the coordinators, who would race for it
        self._start_name_server(timeout, progress)
        for role, ids in self.plan.items():
            if not ids:
                continue
            started = [self.spawn(role, i) for i in ids]
            if self.share is not None and role == "coordinator":
                _say(progress, f"waiting for a coordinator leader: a majority of the "
                               f"{len(self.settings.coordinator_addresses())} coordinators must "
                               "be up (start the other hosts)")
            self._wait(functools.partial(self._all_ready, started), timeout, started,
                       f"the {role} service(s)")
            _say(progress, f"{len(ids)} {role} service(s) ready")

    def _check_host_files(self) -> None:
        """A host of a cluster file presents a node certificate for its own address, and its
        coordinators share the group's Raft secret: made here only where the CA's key is,
        since a secret of its own would split the group."""
        directory = self.settings.certificates
        if not self.settings.insecure:
            certs.ensure(directory, hosts=[self.settings.host], roles=("node",))
        if not (directory / "raft.secret").exists() and not (directory / "ca.key").exists():
            raise ConfigError(f"no raft.secret in {directory}: copy this host's files from the "
                              "machine with the CA (pyrostore certs cluster makes them)")

    def _start_name_server(self, timeout: float, progress: Callable[[str], None] | None) -> None:
        """Start a name server here unless one answers; on a host of a cluster file without
        one, wait for the name server's host instead."""
        where = f"{self.settings.ns_host}:{self.settings.ns_port}"
        if name_server_answers(self.settings):
            self._refuse_a_second_store()
        elif self.share is None or self.share.nameserver:
            ns = self.spawn("nameserver", 0)
            self._wait(lambda: name_server_answers(self.settings), timeout, [ns], "the name server")
            _say(progress, f"name server on {where}")
        else:
            _say(progress, f"waiting for the name server at {where}")
            self._wait(lambda: name_server_answers(self.settings), timeout, [],
                       f"the name server at {where}")

    def _refuse_a_second_store(self) -> None:
        """Two stores on one name server would take each other's names: refuse. On a host of
        a cluster file, refuse only if this host's own services are alive already."""
        ours = {service_name(role, i) for role, ids in self.plan.items() for i in ids}
        alive = [row["name"] for row in survey(self.settings) if row.get("state") != "down"
                 and (self.share is None or row["name"] in ours)]
        if alive:
            raise ConfigError(
                f"a store is already running at {self.settings.ns_host}:{self.settings.ns_port} "
                f"({', '.join(alive)}); stop it, or use another --ns-port")

    def _all_ready(self, children: list[Child]) -> bool:
        if all(child.role == "nameserver" for child in children):
            return name_server_answers(self.settings)
        registered = find(self.settings)
        return all(self._ready(child, registered.get(child.name)) for child in children)

    def _ready(self, child: Child, uri: str | None) -> bool:
        """Registered by this child's process and, for a replica of a group, serving."""
        if uri is None:
            return False
        try:
            with make_proxy(uri, self.settings, timeout=1.0) as proxy:
                info = proxy.info()
        except Pyro5.errors.CommunicationError:
            return False  # not up yet, or the entry of a process that died
        if info.get("pid") != child.pid:
            return False
        if child.role == "coordinator":  # a leader is known, and this node has caught up
            raft = info.get("raft", {})
            return raft.get("leader") is not None and bool(raft.get("caught_up"))
        return child.role not in ("catalog", "order") or bool(info.get("serving"))

    def spawn(self, role: str, replica_id: int) -> Child:
        """Start (or restart) one child; its output goes to its log file."""
        child = self.child(role, replica_id)
        if child is None:
            child = Child(
                role,
                replica_id,
                self.child_argv(role, replica_id),
                self.log_dir / f"{role}-{replica_id}.log",
            )
            self.children.append(child)
        private_dir(self.log_dir)
        with open(child.log_path, "ab", opener=private_opener) as log_file:
            child.process = _popen([*self.wrap, sys.executable, "-m", "pyrostore", *child.argv],
                                   log_file,
                                   {**os.environ, **self.settings.dump(),
                                    "PYROSTORE_CERTS_DIR": str(self.settings.certificates),
                                    RESTARTS_VARIABLE: str(child.restarts),
                                    "PYROSTORE_LOG_FILE": str(child.log_path),  # rotated
                                    **self._metrics_port(child),
                                    "PYROSTORE_IDENTITY": ""})  # a service is a node
        child.reported = False
        return child

    def _metrics_port(self, child: Child) -> dict[str, str]:
        """A fixed metrics port is the first of a range, one port per child in start order
        (several services on one host cannot share a port); 0 and off pass through."""
        if self.settings.metrics_port <= 0:
            return {}
        return {"PYROSTORE_METRICS_PORT":
                str(self.settings.metrics_port + self.children.index(child))}

    def child(self, role: str, replica_id: int) -> Child | None:
        """The child of that role and id, if this cluster started it."""
        return next(
            (c for c in self.children if c.role == role and c.replica_id == replica_id), None
        )

    def wait_ready(self, role: str, replica_id: int, *, timeout: float = 30.0) -> None:
        """Wait until the child is registered and, for a replica, serving (after a restart)."""
        child = self.child(role, replica_id)
        if child is None:
            raise PyrostoreError(f"{role} {replica_id} was not started by this cluster")
        self._wait(functools.partial(self._all_ready, [child]), timeout, [child], child.name)

    def kill(self, role: str, replica_id: int, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to one child (tests and the demo kill replicas on purpose)."""
        child = self.child(role, replica_id)
        if child is None or not child.alive() or child.process is None:
            raise PyrostoreError(f"{role} {replica_id} is not running")
        child.process.send_signal(sig)
        if sig == signal.SIGKILL:
            child.process.wait()
            child.reported = True

    def reap(self) -> list[Child]:
        """Children that died since the last call (each reported once)."""
        dead = [
            c
            for c in self.children
            if not c.reported and c.process is not None and c.process.poll() is not None
        ]
        for child in dead:
            child.reported = True
        return dead

    def stop(self, *, grace: float = 5.0) -> None:
        """Stop every child, newest first: SIGTERM, then SIGKILL after ``grace`` seconds."""
        for child in reversed(self.children):
            if child.alive() and child.process is not None:
                child.process.send_signal(signal.SIGTERM)
                try:
                    child.process.wait(grace)
                except subprocess.TimeoutExpired:
                    child.process.kill()
                    child.process.wait()
        self.lock.release()

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def _wait(
        self, ready: Callable[[], bool], timeout: float, watched: list[Child], what: str
    ) -> None:
        deadline = time.monotonic() + timeout
        delay = 0.02
        while True:
            for child in watched:
                if not child.alive():
                    status = exit_status(child.process.returncode if child.process else None)
                    raise PyrostoreError(
                        f"{child.name} {status} while starting "
                        f"(see {child.log_path}):\n{child.log_tail()}"
                    )
            with contextlib.suppress(Unavailable):
                if ready():
                    return
            if time.monotonic() > deadline:
                raise Unavailable(
                    f"{what} did not come up within {timeout:.0f} s (logs in {self.log_dir})"
                )
            time.sleep(delay)  # polling a condition with a deadline; nothing to wait on
            delay = min(delay * 2, 0.25)


def coordinator_addresses(settings: Settings, count: int) -> str:
    """The coordinator group's addresses (``Settings.coordinators``): those this data directory
    used before, if it held as many, so that a restarted store's Raft nodes keep their names;
    else free ports of ``settings.host``, saved there for next time."""
    if not 1 <= count <= 9:
        raise ConfigError(f"--coordinators must be 1..9, not {count}")
    saved = settings.data_dir / "coordinators"
    with contextlib.suppress(OSError, ConfigError):
        previous = settings.replace(coordinators=saved.read_text().strip())
        if len(previous.coordinator_addresses()) == count:
            return previous.coordinators
    ports: list[int] = []
    while len(ports) < 2 * count:  # each free now, and distinct: nothing holds them yet
        port = fixed_port(settings.host)
        if port not in ports and port != settings.ns_port:  # nor does the name server
            ports.append(port)
    addresses = ",".join(f"{settings.host}:{ports[2 * i]}:{ports[2 * i + 1]}"
                         for i in range(count))
    write_private(saved, addresses + "\n")
    return addresses


def _popen(argv: list[str], log_file: IO[bytes], env: dict[str, str]
           ) -> subprocess.Popen[bytes]:
    """Start a child in its own session (Ctrl-C reaches only us) that dies if we die."""
    return subprocess.Popen(
        argv,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log_file,
        stderr=log_file,
        start_new_session=True,
        preexec_fn=_die_with_parent,
    )


def _die_with_parent() -> None:
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _say(progress: Callable[[str], None] | None, text: str) -> None:
    if progress is not None:
        progress(text)


def exit_status(returncode: int | None) -> str:
    """How a child process ended, in words: ``exited with code 1``, ``killed by SIGKILL``."""
    return "ended" if returncode is None else describe_exit(returncode)
