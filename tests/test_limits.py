"""Resource limits under attack: thousands of idle connections and a slow sender on the
frontend, the name server and the catalog primary leave a real client buying and looking up
without a stall, and at no less than a tenth of its normal rate (a floor for gross harm only:
the crowd's own churn shares the machine's cores with the store and the client, and costs a
half to two thirds of the rate on a busy 2-core machine; bench.py measures speed); a crowd
beyond a daemon's workers is turned away at once, and the daemon serves again as soon as it
leaves (if it leaves a batch at a time: a crowd of thousands that leaves together still
stalls a daemon, a known hole, marked xfail).

An idle connection holds one worker thread and one file descriptor of the service until the
service's idle timeout (10 s, twice over for one that never sends its TLS ClientHello: once
for the handshake, once for the refusal) closes it; the attacker opens another at once, so the
crowd stays the same size throughout.
"""

from __future__ import annotations

import contextlib
import dataclasses
import resource
import selectors
import socket
import ssl
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import Pyro5.core
import pytest

from pyrostore import limits, tls
from pyrostore.client import Client
from pyrostore.config import Settings
from pyrostore.discovery import find, name_server_answers, name_server_uri
from pyrostore.launcher import Cluster
from pyrostore.transport import make_proxy
from tests.attackers import address, client_context, connect_message, open_tls, views
from tests.conftest import identity, make_settings, start_cluster, wait_until

pytestmark = [pytest.mark.timeout(300), pytest.mark.serial]  # it measures throughput

IDLE = 2000
"""Connections per service that never send a TLS ClientHello."""
HANDSHAKEN = 50
"""Connections per service that complete a TLS handshake with a valid certificate, then idle."""
LOOKUPS, BUYS = 100, 30
"""A round of a measurement: ``LOOKUPS`` lookups, then ``BUYS`` buys."""
SHELL_OPEN_FILES = 1024
"""The soft limit on open files a login shell usually gives the processes it starts."""


def open_files_limit(pid: int) -> int:
    """The soft limit on open files of process ``pid``."""
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            return int(line.split()[3])
    raise AssertionError(f"no open files limit for {pid}")


def pid_of(settings: Settings, uri: str) -> int:
    """The process of the service at ``uri``, from its ``info()``."""
    with make_proxy(uri, settings) as proxy:
        return int(proxy.info()["pid"])


def threads_of(pid: int) -> int:
    """How many threads process ``pid`` runs (a service's held connections are among them)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise AssertionError(f"no thread count for {pid}")


@pytest.fixture
def store_from_a_shell(tmp_path: Path) -> Iterator[Cluster]:
    """A store (no cache: every lookup reaches a catalog replica) whose processes start with
    the open-files limit of a login shell, :data:`SHELL_OPEN_FILES`: each must raise its own."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(SHELL_OPEN_FILES, hard), hard))
    try:
        cluster = start_cluster(tmp_path / "store", no_cache=True)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    try:
        yield cluster
    finally:
        cluster.stop()


@dataclasses.dataclass(frozen=True)
class Target:
    """A service under attack: where it listens, an object it serves, its process."""

    where: tuple[str, int]
    object_id: str
    pid: int


class Crowd:
    """Idle connections held open on some services, and one slow sender per service dripping
    a Pyro5 handshake a byte a second.

    A thread per service opens its connections in batches, each as soon as the service has
    taken the one before (a faster burst would only overflow Pyro5's listen backlog of 100,
    and the connections refused there would come back a second later), and opens another
    for each one the service drops (its idle timeout), so the crowd keeps its size.
    """

    BATCH = 50

    def __init__(self, targets: list[Target], who: tls.Identity, *, idle: int,
                 handshaken: int) -> None:
        self.targets = targets
        self.context = client_context(who, ca=who.ca)
        self.sizes = {False: idle, True: handshaken}
        self.replaced = 0
        self.dripped = 0
        self._stopping = threading.Event()
        self._threads = [threading.Thread(target=run, args=(target,), name=name, daemon=True)
                         for target in targets
                         for run, name in ((self._hold, "crowd"), (self._drip, "slow-sender"))]

    def __enter__(self) -> Crowd:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stopping.set()
        for thread in self._threads:
            thread.join(30)

    def _hold(self, target: Target) -> None:
        selector = selectors.DefaultSelector()
        held = {False: 0, True: 0}
        try:
            while not self._stopping.is_set():
                full = held == self.sizes
                for key, _ in selector.select(timeout=0.2 if full else 0.01):
                    if _dropped(key.fileobj):
                        selector.unregister(key.fileobj)
                        key.fileobj.close()
                        held[key.data] -= 1
                        self.replaced += 1
                if full or threads_of(target.pid) < sum(held.values()) - self.BATCH:
                    continue  # the service has not taken the last batch yet
                for handshake, size in self.sizes.items():
                    for _ in range(min(self.BATCH, size - held[handshake])):
                        with contextlib.suppress(OSError):
                            selector.register(self._open(target, handshake=handshake),
                                              selectors.EVENT_READ, handshake)
                            held[handshake] += 1
        finally:
            for key in list(selector.get_map().values()):
                key.fileobj.close()
            selector.close()

    def _open(self, target: Target, *, handshake: bool) -> socket.socket:
        sock = socket.create_connection(target.where, timeout=10.0)
        if handshake:
            try:
                sock = self.context.wrap_socket(sock, server_hostname=target.where[0])
            except BaseException:
                sock.close()
                raise
        sock.setblocking(False)
        return sock

    def _drip(self, target: Target) -> None:
        with contextlib.suppress(OSError), open_tls(target.where, self.context) as sock:
            for byte in connect_message(target.object_id):
                if self._stopping.wait(1.0):  # one byte a second is the attack itself
                    return
                sock.sendall(bytes([byte]))
                self.dripped += 1


def _dropped(sock: socket.socket) -> bool:
    """Whether the service closed ``sock``, which select() found readable (for TLS, that may
    be no more than the session tickets a TLS 1.3 server sends after the handshake)."""
    try:
        return not sock.recv(1)
    except ssl.SSLWantReadError:
        return False
    except OSError:
        return True


@dataclasses.dataclass
class Rates:
    """What :func:`rates` measured: lookups and buys per second, and the longest single call."""

    lookups: float
    buys: float
    longest: float


def rates(store_client: Client, *, seconds: float,
          sample: Callable[[], object] = lambda: None) -> Rates:
    """Lookups and buys per second, over rounds of :data:`LOOKUPS` lookups then :data:`BUYS`
    buys for at least ``seconds`` (each call timed, so that a stall anywhere counts); calls
    ``sample`` after each round."""
    timed = {"lookup": [0, 0.0], "buy": [0, 0.0]}
    longest = 0.0

    def time_calls(method: str, calls: int, call: Callable[[int], object]) -> None:
        nonlocal longest
        for number in range(calls):
            started = time.perf_counter()
            call(number)
            took = time.perf_counter() - started
            longest = max(longest, took)
            timed[method][1] += took
        timed[method][0] += calls

    until = time.monotonic() + seconds
    while time.monotonic() < until:
        time_calls("lookup", LOOKUPS, lambda n: store_client.lookup(n % 7 + 1))
        time_calls("buy", BUYS, lambda n: store_client.buy(1))
        sample()
    return Rates(lookups=timed["lookup"][0] / timed["lookup"][1],
                 buys=timed["buy"][0] / timed["buy"][1], longest=longest)


@pytest.mark.slow
def test_idle_connections_and_a_slow_sender_leave_room_for_real_callers(
        store_from_a_shell: Cluster) -> None:
    """Measured under load for longer than the crowd's first connections live, so that the
    service closing them and the crowd opening new ones fall within the measurement."""
    store = store_from_a_shell
    settings = store.settings
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)  # limits.install() raised it
    needed = 3 * (IDLE + HANDSHAKEN) + 500
    if soft < needed:
        pytest.skip(f"{needed} open files needed, this process may open {soft}")
    view = views(settings)["catalog"]
    loaded = {"frontend": find(settings, "frontend")["pyrostore.frontend.1"],
              "name server": name_server_uri(settings),
              "catalog primary": view["uris"][str(view["primary"])]}
    pids = {name: pid_of(settings, uri) for name, uri in loaded.items() if name != "name server"}
    pids["name server"] = store.child("nameserver", 0).pid
    for name, pid in pids.items():
        assert open_files_limit(pid) >= min(hard, limits.OPEN_FILES), name

    with Client(settings=settings) as admin:
        admin.update(1, stock_delta=100_000)
    shopper = identity("client", "shopper")
    targets = [Target(address(uri), Pyro5.core.URI(uri).object, pids[name])
               for name, uri in loaded.items()]
    held: list[int] = []
    with tls.acting_as(shopper), Client(settings=settings) as store_client:
        rates(store_client, seconds=1.0)  # warm up: connections made, pages touched
        normal = rates(store_client, seconds=5.0)
        with Crowd(targets, shopper, idle=IDLE, handshaken=HANDSHAKEN) as crowd:
            wait_until(lambda: all(threads_of(pid) >= IDLE for pid in pids.values()),
                       timeout=60, what=f"every service to hold {IDLE} connections")
            under_load = rates(store_client, seconds=2 * limits.IDLE_TIMEOUT + 5,
                               sample=lambda: held.append(min(map(threads_of, pids.values()))))
    median_held = statistics.median(held)
    print(f"\nlookups/s {normal.lookups:.0f} normally, {under_load.lookups:.0f} under load; "
          f"buys/s {normal.buys:.0f} normally, {under_load.buys:.0f} under load; longest call "
          f"{normal.longest:.3f} s normally, {under_load.longest:.3f} s under load; threads held "
          f"{min(held)}..{max(held)}, median {median_held:.0f}; {crowd.replaced} "
          f"connections replaced, {crowd.dripped} bytes dripped")
    assert crowd.replaced >= IDLE  # the measurement saw the first of the crowd go and return
    # it dips while a service closes one generation of the crowd and the next comes in
    assert median_held >= 0.5 * IDLE, "the crowd was not held"
    # a service whose accept or workers the crowd blocked stalls for an idle timeout or more
    assert under_load.longest < limits.IDLE_TIMEOUT / 2, "a call stalled under the crowd"
    assert under_load.lookups >= 0.1 * normal.lookups, "lookups slowed down tenfold"
    assert under_load.buys >= 0.1 * normal.buys, "buys slowed down tenfold"
    wait_until(lambda: all(threads_of(pid) < IDLE / 10 for pid in pids.values()), timeout=60,
               what="the services to let go of the crowd's connections")


@pytest.fixture
def name_server(tmp_path: Path) -> Iterator[tuple[Settings, int]]:
    """A name server alone, in its own process, with the default limits: its settings, pid."""
    if resource.getrlimit(resource.RLIMIT_NOFILE)[0] < limits.WORKER_THREADS + 500:
        pytest.skip(f"{limits.WORKER_THREADS + 500} open files needed")
    with name_server_alone(make_settings(tmp_path)) as started:
        yield started


@contextlib.contextmanager
def name_server_alone(settings: Settings) -> Iterator[tuple[Settings, int]]:
    """A name server of ``settings`` alone, in its own process: its settings and pid."""
    cluster = Cluster(settings)
    try:
        pid = cluster.spawn("nameserver", 0).pid
        assert pid is not None
        wait_until(lambda: name_server_answers(settings), what="the name server")
        yield settings, pid
    finally:
        cluster.stop()


@contextlib.contextmanager
def idle_crowd(where: tuple[str, int], pid: int, size: int) -> Iterator[list[socket.socket]]:
    """``size`` connections to ``where`` that send nothing, each batch opened once the
    service (process ``pid``) has taken the one before; closed gently afterwards, a batch at a
    time, unless the caller closed them already."""
    crowd: list[socket.socket] = []
    try:
        while len(crowd) < size:
            crowd.extend(socket.create_connection(where, timeout=10.0)
                         for _ in range(min(Crowd.BATCH, size - len(crowd))))
            wait_until(lambda: threads_of(pid) >= len(crowd),
                       what="the service to take the crowd's connections")
        yield crowd
    finally:
        while crowd:
            for sock in crowd[-Crowd.BATCH:]:
                sock.close()
            del crowd[-Crowd.BATCH:]
            wait_until(lambda: threads_of(pid) <= len(crowd) + 2 * Crowd.BATCH, timeout=60,
                       what="the service to let go of the crowd's connections")


@pytest.mark.slow
def test_a_crowd_beyond_the_workers_is_turned_away_at_once(tmp_path: Path) -> None:
    """Every worker of a daemon (here a name server's, with 256) held by a connection that
    sends nothing: one more is closed at once, and the daemon takes callers again once the
    crowd leaves. (Pyro5 itself reads a handshake from such a connection in its accept
    thread: one that sends nothing stalled every accept for twice the idle timeout, and the
    name server answered nobody for two minutes after the crowd had left.) A small pool, so
    that the whole crowd is in before its first connections reach the idle timeout."""
    small = make_settings(tmp_path).replace(worker_threads=256, idle_timeout=60.0)
    with name_server_alone(small) as (settings, pid):
        where = (settings.ns_host, settings.ns_port)
        with idle_crowd(where, pid, settings.worker_threads), \
                socket.create_connection(where, timeout=10) as one_more:
            assert one_more.recv(1) == b""  # closed, not read from (a timeout would raise)
        wait_until(lambda: name_server_answers(settings), timeout=60,
                   what="the name server to answer once the crowd left")


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="a known hole: a Pyro5 daemon parks a thread per "
                   "connection, and thousands of them woken at once fight over the GIL "
                   "(4,000 leaving together: no answer for 24-29 s)")
def test_a_daemon_answers_at_once_when_a_crowd_leaves(name_server: tuple[Settings, int]) -> None:
    """4,000 connections that send nothing, closed together: every one of the daemon's
    threads holding them wakes at once, and the daemon should still answer within a call's
    timeout. It does not: each waiting thread wakes every switch interval (5 ms) to ask for
    the GIL, so thousands of them leave little of it for the threads that do the work. A fix
    keeps connections that have not sent a request out of threads (a selector loop that
    does their TLS handshake and reads their first message)."""
    settings, pid = name_server
    with idle_crowd((settings.ns_host, settings.ns_port), pid, 4000) as crowd:
        for sock in crowd:
            sock.close()
        crowd.clear()
        left = time.monotonic()
        try:
            wait_until(lambda: name_server_answers(settings), timeout=120,
                       what="the name server to answer at all")
        finally:
            stalled = time.monotonic() - left
            wait_until(lambda: threads_of(pid) < Crowd.BATCH, timeout=120,
                       what="the name server to let go of the crowd")
    assert stalled <= settings.call_timeout, f"the name server answered nobody for {stalled:.0f} s"
