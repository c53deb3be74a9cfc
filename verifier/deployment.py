"""A store deployed from a cluster file, under the verifier's control: one
:class:`~pyrostore.launcher.Cluster` per host (what ``pyrostore up --cluster FILE --on HOST``
runs), each host's processes in its network namespace or, on loopback, all on this machine.

It makes the certificates as an operator would (a CA, then ``certs cluster``'s bundle for each
host), starts the hosts at once (each waits for the name server and for a coordinator
majority, as on real machines), and lets the nemeses kill, pause and restart any service by
its role and id. The driver itself presents the ``admin`` certificate.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import Pyro5.api
import Pyro5.errors

from pyrostore import certs, limits, tls
from pyrostore.clusterfile import ClusterSpec, HostSpec
from pyrostore.config import Settings
from pyrostore.coordinator import group_secret
from pyrostore.discovery import find, survey
from pyrostore.errors import PyrostoreError
from pyrostore.launcher import Cluster
from pyrostore.transport import make_proxy

DRIVER_SETTINGS = {"call_timeout": 2.0, "refresh_interval": 0.5}


class Deployment:
    """The hosts of ``spec``, their data under ``root`` (``root/<host>``, the CA in
    ``root/ca``); ``wraps[host]`` is the command a host's processes run under (``ip netns exec
    NAME``), none on loopback."""

    def __init__(self, spec: ClusterSpec, root: Path, *,
                 wraps: Mapping[str, Sequence[str]] | None = None,
                 settings: Mapping[str, Any] | None = None) -> None:
        self.spec, self.root = spec, Path(root)
        self.extra = dict(settings or {})
        ca = self.root / "ca"
        self.admin = Settings.from_env({}, **{**spec.settings_values(), **self.extra,
                                              **DRIVER_SETTINGS},
                                       data_dir=ca.parent / "driver", certs_dir=ca)
        self._make_certificates(ca)
        self.previous_identity = tls.installed()
        """The TLS identity this process had: :meth:`stop` gives it back (a test process
        talks to stores of other CAs before and after)."""
        if not self.admin.insecure:  # this process talks to the store as its operator
            limits.install(self.admin)
            tls.install(tls.identity_of(self.admin, default="admin"))
        self.clusters = {host.name: Cluster(self._host_settings(host), share=host,
                                            wrap=(wraps or {}).get(host.name, ()))
                         for host in spec.hosts}
        self.workers = {name: ThreadPoolExecutor(1, thread_name_prefix=f"host-{name}")
                        for name in self.clusters}
        self.stopped = False
        self.uris: dict[str, str] = {}

    def _make_certificates(self, ca: Path) -> None:
        if not (ca / "ca.crt").exists():
            certs.init_ca(ca)
            certs.issue(ca, "admin")
        secret = group_secret(self.admin)
        for host in self.spec.hosts:
            target = self.root / host.name / "certs"
            if not (target / "node.crt").exists():
                certs.host_bundle(ca, target, name=host.name, address=host.address,
                                  secret=secret)

    def _host_settings(self, host: HostSpec) -> Settings:
        return Settings.from_env({}, **self.spec.settings_values(host.name), **self.extra,
                                 data_dir=self.root / host.name,
                                 certs_dir=self.root / host.name / "certs")

    def start(self, *, timeout: float = 60.0) -> None:
        """Start every host at once; raise the hosts' failures (after stopping all)."""
        futures = {name: self._on(name, cluster.start, timeout=timeout)
                   for name, cluster in self.clusters.items()}
        errors = {name: future.exception() for name, future in futures.items()}
        failed = {name: exc for name, exc in errors.items() if exc is not None}
        if failed:
            self.stop()
            raise PyrostoreError("; ".join(f"host {name} did not start: {exc}"
                                           for name, exc in failed.items())) from next(
                                               iter(failed.values()))

    def _on(self, host: str, work: Callable[..., Any], *args: Any, **kwargs: Any
            ) -> Future[Any]:
        """Run ``work`` on the host's own thread. A child gets SIGTERM when the *thread* that
        started it ends (PR_SET_PDEATHSIG follows the thread), so every service of a host is
        started by one thread that lives until :meth:`stop`."""
        return self.workers[host].submit(work, *args, **kwargs)

    def stop(self) -> None:
        """Stop every service of every host (each cluster releases its data directory)."""
        if self.stopped:
            return
        self.stopped = True
        for name, cluster in self.clusters.items():
            for child in cluster.children:  # a paused child ignores SIGTERM until resumed
                if child.alive() and child.process is not None:
                    child.process.send_signal(signal.SIGCONT)
            self._on(name, cluster.stop, grace=3.0)
        for worker in self.workers.values():
            worker.shutdown(wait=True)
        tls.install(self.previous_identity)

    def __enter__(self) -> Deployment:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    # -- services by role and id ------------------------------------------------------------

    def host_of(self, role: str, replica_id: int) -> HostSpec:
        """The host that runs ``role`` ``replica_id`` (the name server: role ``nameserver``)."""
        for host in self.spec.hosts:
            if (role == "nameserver" and host.nameserver) or replica_id in host.services.get(
                    role, ()):
                return host
        raise PyrostoreError(f"no host runs {role} {replica_id}")

    def cluster_of(self, role: str, replica_id: int) -> Cluster:
        """The launcher of the host that runs the service."""
        return self.clusters[self.host_of(role, replica_id).name]

    def kill(self, role: str, replica_id: int) -> None:
        """``kill -9`` the service."""
        self.cluster_of(role, replica_id).kill(role, replica_id)

    def pause(self, role: str, replica_id: int, *, resume: bool = False) -> None:
        """SIGSTOP the service (SIGCONT with ``resume``)."""
        self.cluster_of(role, replica_id).kill(
            role, replica_id, signal.SIGCONT if resume else signal.SIGSTOP)

    def restart(self, role: str, replica_id: int, *, timeout: float = 60.0) -> None:
        """Start a dead service again with its own command, and wait until it serves."""
        cluster = self.cluster_of(role, replica_id)
        self._on(self.host_of(role, replica_id).name, cluster.spawn, role, replica_id).result()
        if role != "nameserver":
            cluster.wait_ready(role, replica_id, timeout=timeout)

    def revive(self, *, timeout: float = 60.0) -> None:
        """Resume every paused service and restart every dead one (the end of a run)."""
        for name, cluster in self.clusters.items():
            for child in list(cluster.children):
                if child.alive() and child.process is not None:
                    child.process.send_signal(signal.SIGCONT)
                else:
                    self._on(name, cluster.spawn, child.role, child.replica_id).result()
        for cluster in self.clusters.values():
            for child in cluster.children:
                if child.role != "nameserver":
                    cluster.wait_ready(child.role, child.replica_id, timeout=timeout)

    def ids(self, role: str) -> list[int]:
        """Every replica id of ``role`` in the cluster file."""
        return sorted(i for host in self.spec.hosts for i in host.services[role])

    # -- what the services say --------------------------------------------------------------

    def survey(self) -> list[dict[str, Any]]:
        """``pyrostore status``'s rows: every registered service's ``info()``."""
        return survey(self.admin)

    def uri(self, role: str, replica_id: int, *, fresh: bool = False) -> str:
        """The service's URI: the one last seen (the name server may be cut off or dead),
        or, with ``fresh`` or none seen yet, the name server's."""
        name = f"pyrostore.{role}.{replica_id}"
        if fresh or name not in self.uris:
            self.uris.update(find(self.admin))
        return self.uris[name]

    def proxy(self, role: str, replica_id: int, *, timeout: float | None = None,
              fresh: bool = False) -> Pyro5.api.Proxy:
        """A proxy to one service, as the admin (:meth:`uri`)."""
        return make_proxy(self.uri(role, replica_id, fresh=fresh), self.admin, timeout=timeout)

    def info(self, role: str, replica_id: int) -> dict[str, Any] | None:
        """The service's ``info()``, None if it cannot be reached. A URI that refuses is
        looked up again (a restarted service serves on a new port)."""
        for fresh in (False, True):
            try:
                with self.proxy(role, replica_id, timeout=1.0, fresh=fresh) as service:
                    return dict(service.info())
            except Pyro5.errors.TimeoutError:
                return None  # cut off: asking the name server would not help
            except (Pyro5.errors.CommunicationError, KeyError, PyrostoreError):
                continue
        return None

    def primary(self, group: str) -> int | None:
        """The id of the replica of ``group`` that says it is primary and serving."""
        for replica_id in self.ids(group):
            row = self.info(group, replica_id)
            if row and row.get("serving") and row.get("state") == "primary":
                return replica_id
        return None

    def leader(self) -> int | None:
        """The id of the coordinator that says it leads."""
        for replica_id in self.ids("coordinator"):
            row = self.info("coordinator", replica_id)
            if row and row.get("state") == "leader":
                return replica_id
        return None
