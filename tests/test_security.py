"""Attacks on a real store from outside it: each is refused, and the store is exactly as before.

The module's store is real processes in secure mode (mutual TLS, roles in the certificates). An
attack is refused with a typed error (``Forbidden``, ``NotFound``), a TLS handshake that fails,
or a closed connection; :func:`~tests.attackers.nothing_changes` then checks every catalog and
order replica's tables (stock, orders, request ids, applied position), read from their SQLite
files, and the coordinators' views. Attacks on memory also read the frontend's peak RSS.
"""

from __future__ import annotations

import contextlib
import ssl
import struct
import subprocess
import sys
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import Pyro5.api
import Pyro5.core
import Pyro5.errors
import Pyro5.server
import pytest
from Pyro5 import nameserver, protocol

from pyrostore import access, certs, limits, tls
from pyrostore.catalog import CatalogReplica
from pyrostore.client import Client
from pyrostore.config import Settings
from pyrostore.coordinator import Coordinator
from pyrostore.discovery import find, name_server, name_server_uri, peer_uri, service_tags
from pyrostore.errors import ConfigError, Forbidden, NotFound
from pyrostore.frontend import Frontend
from pyrostore.launcher import Cluster
from pyrostore.models import new_request_id
from pyrostore.nameserver import GuardedNameServer, run_name_server
from pyrostore.order import OrderReplica
from pyrostore.peer import PeerEndpoint
from pyrostore.transport import make_proxy
from tests.attackers import (
    MARSHAL,
    address,
    answer,
    client_context,
    decoded,
    handshaken,
    invoke_message,
    memory,
    message,
    nothing_changes,
    open_tls,
    refused,
    views,
)
from tests.conftest import identity, make_settings, run_cli, wait_until

pytestmark = pytest.mark.timeout(120)

EVIL_URI = "PYRO:pyrostore.frontend.9@127.0.0.1:9"
"""An address of the attacker's choosing."""
HIGH_EPOCH = 10**6
"""An epoch above any real one: what a forged primary would claim."""
MEMORY_SLACK = 8 * 1024 * 1024
"""Bytes the frontend's peak RSS may grow by under a memory attack (each would cost 16 MiB to
256 MiB if it got through)."""
MARSHAL_BOMB = b"(" + struct.pack("<i", 2**25)
"""Five bytes of marshal that make a tuple of 2**25 items, 256 MiB, before marshal finds the
data ended (2**31 - 1 would be 16 GiB)."""


# -- who attacks what ---------------------------------------------------------------------------

def shopper(name: str) -> tls.Identity:
    """A shopper's identity from the session's CA, issued on first use."""
    found = identity("client", name)
    if not found.cert.exists():
        certs.issue(found.cert.parent, "client", name=name)
    return found


@contextlib.contextmanager
def client_as(store: Cluster, who: tls.Identity) -> Iterator[Client]:
    """A store client whose connections present ``who``'s certificate."""
    with tls.acting_as(who), Client(settings=store.settings) as connected:
        yield connected


@pytest.fixture(scope="module")
def targets(store: Cluster) -> dict[str, str]:
    """The URI of every kind of object an attacker may call, by a short name."""
    settings = store.settings
    uris = {"frontend": find(settings, "frontend")["pyrostore.frontend.1"],
            "coordinator": settings.coordinator_addresses()[0].uri(1),
            "nameserver": name_server_uri(settings)}
    for group, view in views(settings).items():
        primary = view["uris"][str(view["primary"])]
        uris[group] = primary
        uris[f"{group}-primary.peer"] = peer_uri(primary)
        uris[f"{group}-backup.peer"] = peer_uri(view["uris"][str(view["backups"][0])])
    return uris


@pytest.fixture(scope="module", autouse=True)
def stocked(store: Cluster) -> None:
    """Stock enough for the module's buys."""
    with Client(settings=store.settings) as admin:
        admin.update(1, stock_delta=100)


def pid_of(store: Cluster, uri: str) -> int:
    """The process of the service at ``uri``, from its ``info()``."""
    with make_proxy(uri, store.settings) as proxy:
        return int(proxy.info()["pid"])


def still_serving(store: Cluster) -> None:
    """The store answers a shopper's lookup and buy."""
    with client_as(store, shopper("shopper")) as store_client:
        assert store_client.lookup(1)["item"] == 1
        assert store_client.buy(1)["item"] == 1


# -- connections without a certificate of the store's CA ----------------------------------------

CONNECTION_TARGETS = ("frontend", "nameserver", "coordinator", "catalog")


@pytest.fixture(scope="module")
def foreign(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Another CA, with a node and a client certificate of its own."""
    directory = tmp_path_factory.mktemp("foreign-ca")
    certs.init_ca(directory)
    certs.issue(directory, "node")
    certs.issue(directory, "client", name="eve")
    return directory


@pytest.mark.parametrize("target", CONNECTION_TARGETS)
def test_no_certificate_is_refused(store: Cluster, targets: dict[str, str], target: str) -> None:
    uri = Pyro5.core.URI(targets[target])
    with nothing_changes(store):
        refused(address(targets[target]), client_context(None, ca=identity("admin").ca),
                uri.object)
    still_serving(store)


@pytest.mark.parametrize("role", ["node", "client"])
@pytest.mark.parametrize("target", CONNECTION_TARGETS)
def test_a_certificate_of_another_ca_is_refused(store: Cluster, targets: dict[str, str],
                                                foreign: Path, target: str, role: str) -> None:
    """Even a foreign *node* certificate: the role counts only under the store's CA. The
    attacker trusts the store's CA, so only the server's check can refuse it."""
    stranger = certs.paths(foreign, role, "eve" if role == "client" else None)
    uri = Pyro5.core.URI(targets[target])
    with nothing_changes(store):
        refused(address(targets[target]), client_context(stranger, ca=identity("admin").ca),
                uri.object)
    still_serving(store)


@pytest.mark.parametrize("target", CONNECTION_TARGETS)
def test_plaintext_pyro5_to_a_tls_port_is_refused(store: Cluster, targets: dict[str, str],
                                                  target: str) -> None:
    uri = Pyro5.core.URI(targets[target])
    with nothing_changes(store):
        refused(address(targets[target]), None, uri.object)
    still_serving(store)


# -- a shopper's certificate calling what is not a shopper's -------------------------------------

SERVED: dict[str, type] = {
    "frontend": Frontend, "catalog": CatalogReplica, "order": OrderReplica,
    "coordinator": Coordinator, "nameserver": GuardedNameServer,
    "catalog-primary.peer": PeerEndpoint, "catalog-backup.peer": PeerEndpoint,
    "order-primary.peer": PeerEndpoint, "order-backup.peer": PeerEndpoint,
}
"""The class of the object each target serves."""
NOT_FOR_SHOPPERS = {
    "frontend": {"invalidate", "update", "add_book", "status"},
    "catalog": {"take", "cache_lease", "lookup_at", "search_at", "topics_at", "update",
                "add_book", "open_takes", "take_status", "settle"},
    "order": {"buy", "outcome", "order_for"},
    "coordinator": {"renew", "report_failure", "add_member", "view", "views"},
    "nameserver": {"register", "remove", "set_metadata"},
    "peer": {"replicate", "committed", "position", "install_snapshot", "join", "write_at",
             "catch_up", "nudge"},
}
"""Written out by hand: were one of these opened to shoppers by mistake (a wrong ``allow``),
the list read from the code would drop it, and this one still calls it."""


def closed_to_shoppers(cls: type) -> set[str]:
    """The exposed methods of ``cls`` that do not declare the client role (one that declares
    no role at all is here too)."""
    instance = object.__new__(cls)  # only its type is read
    return {name for name, method in access.exposed_methods(instance)
            if access.CLIENT not in getattr(method, "allowed_roles", ())}


def kind(target: str) -> str:
    """The key of ``target`` in :data:`NOT_FOR_SHOPPERS`."""
    return "peer" if target.endswith(".peer") else target


CASES = sorted((target, method) for target, cls in SERVED.items()
               for method in closed_to_shoppers(cls) | NOT_FOR_SHOPPERS[kind(target)])
ARGS: dict[str, tuple[Any, ...]] = {
    "replicate": (HIGH_EPOCH, [{"seq": 10**6, "op": {"op": "take", "item": 1, "qty": 1},
                                "request_id": new_request_id(), "result": {}, "keys": [],
                                "epoch": 1}],
                  10**6),
    "committed": (HIGH_EPOCH, 10**6),
    "position": (HIGH_EPOCH,),
    "install_snapshot": (HIGH_EPOCH, {"transfer": "t", "part": 0, "applied": 0,
                                      "table": "books", "rows": [], "last": True}),
    "join": ({"replica": 3, "uri": EVIL_URI, "incarnation": "mallory", "position": 0,
              "last_write": None, "token": "mallory"},),
    "write_at": (1,),
    "catch_up": (HIGH_EPOCH, "mallory", [{"seq": 10**6, "op": {"op": "take", "item": 1, "qty": 1},
                               "request_id": new_request_id(), "result": {}, "keys": [],
                               "epoch": 1}]),
    "take": (1, 1, new_request_id()),
    "settle": ([], [new_request_id()], new_request_id()),
    "open_takes": (10,), "take_status": (new_request_id(),), "outcome": (new_request_id(),),
    "order_for": (new_request_id(),),
    "cache_lease": (EVIL_URI,),
    "lookup_at": (1,), "lookup": (1,),
    "search_at": ("distributed systems",), "search": ("distributed systems",),
    "buy": (1, 1, new_request_id(), "mallory"),
    "order": (1,),
    "update": (1, 0.01, 100, new_request_id()),
    "add_book": ("Free Books", "mallory", 1000, 0.0, new_request_id()),
    "invalidate": (HIGH_EPOCH, [[["item:1"], [HIGH_EPOCH, 1]]]),
    "renew": ({"group": "catalog", "replica": 3, "incarnation": "mallory", "seq": 1,
               "uri": EVIL_URI, "applied": 10**6, "epoch": HIGH_EPOCH, "state": "primary"},),
    "report_failure": ({"group": "catalog", "epoch": 1, "reporter": 1, "failed": 2},),
    "add_member": ({"group": "catalog", "epoch": 1, "primary": 1, "joiner": 3,
                    "incarnation": "mallory"},),
    "view": ("catalog",),
    "register": ("pyrostore.frontend.9", EVIL_URI),
    "remove": ("pyrostore.frontend.1",),
    "set_metadata": ("pyrostore.frontend.1", ["pyrostore"]),
    "set_hook": ("hold_before_ack", 60.0),
    "release_hook": ("hold_before_ack",),
    "hook_waiting": ("hold_before_ack",),
}
"""What an attacker would send each method to do harm (a method not named here gets none: the
refusal comes before the arguments are read)."""


def test_the_hand_written_list_is_closed_in_the_code() -> None:
    for target, cls in SERVED.items():
        assert NOT_FOR_SHOPPERS[kind(target)] <= closed_to_shoppers(cls), target


@pytest.mark.parametrize(("target", "method"), CASES, ids=[f"{t}.{m}" for t, m in CASES])
def test_a_shopper_cannot_call_what_is_not_a_shoppers(store: Cluster, targets: dict[str, str],
                                                      target: str, method: str) -> None:
    """Internal methods (nodes only) and admin ones, each with a shopper's certificate. A
    oneway method (``nudge``) is called here for its answer; the server runs a call oneway
    only when the caller asks (see the next test)."""
    with nothing_changes(store), tls.acting_as(shopper("shopper")), \
            make_proxy(targets[target], store.settings) as proxy:
        proxy._pyroBind()
        proxy._pyroOneway.discard(method)
        with pytest.raises(Forbidden) as refusal:
            getattr(proxy, method)(*ARGS.get(method, ()))
    assert refusal.value.details == {"method": method, "role": "client"}


def test_a_oneway_nudge_from_a_shopper_changes_nothing(store: Cluster,
                                                       targets: dict[str, str]) -> None:
    """A oneway call has no answer to carry ``Forbidden``: the call is seen to have run (the
    replica counts it) and the store is as it was."""
    def nudges() -> int:
        with make_proxy(targets["catalog"], store.settings) as catalog:
            return int(catalog.stats()["methods"].get("nudge", {}).get("count", 0))

    before = nudges()
    with nothing_changes(store):
        with tls.acting_as(shopper("shopper")), \
                make_proxy(targets["catalog-primary.peer"], store.settings) as peer:
            peer.nudge()
        wait_until(lambda: nudges() > before, what="the nudge to arrive")


def test_a_shopper_sees_only_their_own_orders(store: Cluster) -> None:
    with client_as(store, shopper("alice")) as alice:
        alices = alice.buy(1)
    with client_as(store, shopper("bob")) as bob:
        bobs = bob.buy(1)
        with pytest.raises(NotFound):
            bob.order(alices["order_id"])
        assert bob.order(bobs["order_id"])["customer"] == "bob"
        assert [order["order_id"] for order in bob.orders(limit=100)] == [bobs["order_id"]]
    with Client(settings=store.settings) as admin:  # this process is an admin
        everyone = {order["order_id"]: order["customer"] for order in admin.orders(limit=1000)}
        assert admin.order(alices["order_id"])["customer"] == "alice"
    assert {alices["order_id"]: "alice", bobs["order_id"]: "bob"}.items() <= everyone.items()


# -- forged registrations, fake replicas and frontends -------------------------------------------

@pytest.mark.parametrize("who", ["shopper", "admin"])
def test_only_a_node_may_register_a_name(store: Cluster, who: str) -> None:
    forger = shopper("shopper") if who == "shopper" else identity("admin")
    with tls.acting_as(forger), name_server(store.settings) as ns:
        with pytest.raises(Forbidden):
            ns.register("pyrostore.frontend.9", EVIL_URI,
                        metadata=service_tags("frontend", 9))
        with pytest.raises(Forbidden):
            ns.remove("pyrostore.frontend.1")
        with pytest.raises(Forbidden):
            ns.set_metadata("pyrostore.frontend.1", {"pyrostore"})
    assert set(find(store.settings, "frontend")) == {"pyrostore.frontend.1"}


FAKE_FRONTEND = r'''
"""A fake frontend: Pyro5 serving with a shopper's certificate (no serverAuth), registered in
the name server with a stolen node certificate. It notes every connection and call in EVENTS."""
import ssl
import sys

import Pyro5.api
import Pyro5.socketutil
from Pyro5 import config

server_cert, server_key, node_cert, node_key, ca, ns_uri, events = sys.argv[1:8]


def note(*words):
    with open(events, "a") as file:
        file.write(" ".join(map(str, words)) + "\n")


class ServerContext(ssl.SSLContext):
    def wrap_socket(self, sock, server_side=False, do_handshake_on_connect=True, **kwargs):
        try:
            note("connection from", sock.getpeername())
        except OSError:
            pass  # the listening socket
        return super().wrap_socket(sock, server_side=server_side,
                                   do_handshake_on_connect=False, **kwargs)


def context(servercert="", **_):
    if servercert:
        made = ServerContext(ssl.PROTOCOL_TLS_SERVER)
        made.load_cert_chain(server_cert, server_key)
    else:
        made = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        made.load_cert_chain(node_cert, node_key)
    made.load_verify_locations(ca)
    return made


Pyro5.socketutil.get_ssl_context = context
config.SSL = True
config.SSL_SERVERCERT = server_cert
config.COMMTIMEOUT = 10.0


class Daemon(Pyro5.api.Daemon):
    def _handshake(self, conn, denied_reason=None):
        accepted = super()._handshake(conn, denied_reason)
        note("pyro5 handshake", "accepted" if accepted else "failed")
        return accepted


@Pyro5.api.expose
class FakeFrontend:
    def buy(self, item, qty=1, request_id=None):
        note("call buy", item, qty)
        return {"order_id": 1, "item": item, "title": "fake", "qty": qty, "unit_cost": 0.0,
                "total": 0.0, "request_id": request_id, "created_at": 0.0, "customer": ""}

    def lookup(self, item):
        note("call lookup", item)
        return {"item": item, "title": "fake", "topic": "fake", "stock": 999, "cost": 0.0,
                "version": 0}


with Daemon(host="127.0.0.1") as daemon:
    uri = daemon.register(FakeFrontend, "pyrostore.frontend.9")
    with Pyro5.api.Proxy(ns_uri) as ns:
        ns.register("pyrostore.frontend.9", uri,
                    metadata={"pyrostore", "role:frontend", "replica:9"})
    note("registered", uri)
    daemon.requestLoop()
'''


@pytest.fixture
def fake_frontend(store: Cluster, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A fake frontend in its own process, registered as ``pyrostore.frontend.9``; its URI and
    the file where it notes what reaches it."""
    mask, node = shopper("mallory"), identity("node")
    events, output = tmp_path / "fake-frontend.events", tmp_path / "fake-frontend.log"
    events.touch()
    with output.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-c", FAKE_FRONTEND, str(mask.cert), str(mask.key), str(node.cert),
             str(node.key), str(node.ca), name_server_uri(store.settings), str(events)],
            stdout=log, stderr=subprocess.STDOUT)
    try:
        registered = wait_until(lambda: [line for line in events.read_text().splitlines()
                                         if line.startswith("registered ")]
                                or process.poll() is not None,
                                what="the fake frontend to register")
        assert isinstance(registered, list), f"the fake frontend exited: {output.read_text()}"
        yield registered[0].split()[1], events
    finally:
        process.terminate()
        process.wait(10)
        with tls.acting_as(node), name_server(store.settings) as ns:
            ns.remove("pyrostore.frontend.9")


def test_a_forged_frontend_entry_leads_no_client_to_it(store: Cluster,
                                                       fake_frontend: tuple[str, Path]) -> None:
    """The name server refuses a forged entry (test above); here an attacker has stolen a node
    key to get one in anyway, for a server of its own that presents a shopper's certificate.
    The store's Client dials it (round robin over the registered frontends), refuses the TLS
    handshake (a shopper's certificate may not serve: no serverAuth), and buys at the real
    frontend: the fake never hears a Pyro5 word, and every buy is a real one, once."""
    uri, events = fake_frontend
    assert find(store.settings, "frontend")["pyrostore.frontend.9"] == uri
    with Client(settings=store.settings) as admin:
        stock = admin.lookup(1)["stock"]
    bought = []
    with client_as(store, shopper("shopper")) as store_client:
        def dialled() -> bool:
            bought.append(store_client.buy(1))
            return "connection from" in events.read_text()

        wait_until(dialled, what="the client to dial the fake frontend")
    with Client(settings=store.settings) as admin:
        assert admin.lookup(1)["stock"] == stock - len(bought)
        for order in bought:
            assert admin.order(order["order_id"])["request_id"] == order["request_id"]
    noted = events.read_text()
    assert "call " not in noted and "accepted" not in noted, noted
    with tls.acting_as(shopper("shopper")), make_proxy(uri, store.settings) as proxy, \
            pytest.raises(Pyro5.errors.CommunicationError, match="certificate"):
        proxy.lookup(1)
    context = tls.client_context(shopper("shopper"))
    context.check_hostname = False  # the purpose alone is enough to refuse it
    with pytest.raises(ssl.SSLCertVerificationError, match="purpose"):
        open_tls(address(uri), context).close()


def test_a_fake_replica_cannot_join_nor_a_fake_frontend_lease(store: Cluster,
                                                            targets: dict[str, str]) -> None:
    """A replica's join would send the whole state (every order) to the joiner's URI; a cache
    lease would make the primary wait for a frontend of the attacker's before every write.
    Neither a shopper's nor an admin's certificate may ask for them."""
    for who in (shopper("shopper"), identity("admin")):
        with nothing_changes(store), tls.acting_as(who):
            with make_proxy(targets["catalog-primary.peer"], store.settings) as peer, \
                    pytest.raises(Forbidden):
                peer.join({"replica": 3, "uri": EVIL_URI, "incarnation": "mallory"})
            with make_proxy(targets["catalog"], store.settings) as catalog, \
                    pytest.raises(Forbidden):
                catalog.cache_lease(EVIL_URI)
    with make_proxy(targets["catalog"], store.settings) as catalog:
        assert EVIL_URI not in str(catalog.info().get("cache_leases"))


# -- serializers and sizes: what a message may cost the server -----------------------------------

@contextlib.contextmanager
def costs_no_memory(store: Cluster, targets: dict[str, str]) -> Iterator[None]:
    """Check that the block leaves the store as it was, the frontend's peak RSS within
    :data:`MEMORY_SLACK`, and the frontend serving."""
    pid = pid_of(store, targets["frontend"])
    before = memory(pid)
    with nothing_changes(store):
        yield
    grown = memory(pid)["VmHWM"] - before["VmHWM"]
    assert grown <= MEMORY_SLACK, f"the frontend's peak RSS grew by {grown / 2**20:.1f} MiB"
    still_serving(store)
    assert pid_of(store, targets["frontend"]) == pid


def frontend_socket(targets: dict[str, str], *, handshake: bool = False) -> ssl.SSLSocket:
    """A TLS connection to the frontend with the admin's certificate (Pyro5 handshake done
    if asked)."""
    uri = Pyro5.core.URI(targets["frontend"])
    admin = identity("admin")
    if handshake:
        return handshaken(address(targets["frontend"]), uri.object, admin, ca=admin.ca)
    return open_tls(address(targets["frontend"]), client_context(admin, ca=admin.ca))


def test_a_marshal_handshake_is_refused(store: Cluster, targets: dict[str, str]) -> None:
    with costs_no_memory(store, targets), frontend_socket(targets) as sock:
        sock.sendall(message(protocol.MSG_CONNECT, MARSHAL_BOMB,
                             serializer_id=MARSHAL.serializer_id))
        reply = answer(sock)
        assert reply is not None and reply.type == protocol.MSG_CONNECTFAIL
        assert "marshal serializer is refused" in decoded(reply)
        assert answer(sock) is None  # and the connection is closed


def test_a_marshal_call_is_refused(store: Cluster, targets: dict[str, str]) -> None:
    object_id = Pyro5.core.URI(targets["frontend"]).object
    with costs_no_memory(store, targets), frontend_socket(targets, handshake=True) as sock:
        call = message(protocol.MSG_INVOKE, MARSHAL_BOMB, serializer_id=MARSHAL.serializer_id)
        sock.sendall(call)
        reply = answer(sock)
        assert reply is not None and reply.flags & protocol.FLAGS_EXCEPTION
        assert isinstance(decoded(reply), Pyro5.errors.SerializeError)
        assert answer(sock) is None
    with frontend_socket(targets, handshake=True) as sock:  # the same call, as the store speaks
        sock.sendall(invoke_message(object_id, "lookup", 1))
        reply = answer(sock)
        assert reply is not None and not reply.flags & protocol.FLAGS_EXCEPTION


@pytest.mark.parametrize("blob", ["bomb", "call"])
def test_a_blob_call_is_refused(store: Cluster, targets: dict[str, str], blob: str) -> None:
    """A "keep serialized" call carries its own description in an annotation, which Pyro5
    reads with marshal itself, whatever serializer the message names: refused before that."""
    object_id = Pyro5.core.URI(targets["frontend"]).object
    blob_info = MARSHAL_BOMB if blob == "bomb" else MARSHAL.dumps(("x", object_id, "lookup"))
    with costs_no_memory(store, targets), frontend_socket(targets, handshake=True) as sock:
        sock.sendall(invoke_message(object_id, "lookup", 1,
                                    flags=protocol.FLAGS_KEEPSERIALIZED,
                                    annotations={"BLBI": blob_info}))
        assert answer(sock) is None


def test_a_compressed_bomb_is_refused(store: Cluster, targets: dict[str, str]) -> None:
    """256 KiB of zlib that inflate to 256 MiB (16 MiB of it would be 16 GiB)."""
    deflate, zeros = zlib.compressobj(9), bytes(2**20)
    bomb = b"".join(deflate.compress(zeros) for _ in range(256)) + deflate.flush()
    assert len(bomb) < 2**20
    with costs_no_memory(store, targets):
        with frontend_socket(targets) as sock:
            sock.sendall(message(protocol.MSG_CONNECT, bomb, flags=protocol.FLAGS_COMPRESSED))
            reply = answer(sock)
            assert reply is not None and reply.type == protocol.MSG_CONNECTFAIL
            assert "compressed" in decoded(reply)
        with frontend_socket(targets, handshake=True) as sock:
            sock.sendall(message(protocol.MSG_INVOKE, bomb, flags=protocol.FLAGS_COMPRESSED))
            assert answer(sock) is None


@pytest.mark.parametrize("declared", [limits.MAX_MESSAGE_SIZE + 1, 2**31],
                         ids=["just-above-the-limit", "2GiB"])
def test_an_oversize_message_is_refused_from_its_header(store: Cluster, targets: dict[str, str],
                                                        declared: int) -> None:
    with costs_no_memory(store, targets):
        with frontend_socket(targets) as sock:
            sock.sendall(message(protocol.MSG_CONNECT, declared_size=declared))
            reply = answer(sock)  # the header alone was enough to refuse it
            assert reply is not None and reply.type == protocol.MSG_CONNECTFAIL
            assert "too large" in decoded(reply)
            with pytest.raises(OSError):  # nobody reads the rest
                sock.sendall(bytes(declared if declared < 2**25 else 2**25))
        with frontend_socket(targets, handshake=True) as sock:
            sock.sendall(message(protocol.MSG_INVOKE, declared_size=declared))
            assert answer(sock) is None


# -- what Pyro5 serves beside the store's own methods --------------------------------------------

@pytest.mark.parametrize("cls", sorted(set(SERVED.values()), key=lambda cls: cls.__name__))
def test_pyro5_serves_exactly_what_the_guard_checks(cls: type) -> None:
    """What Pyro5 would serve of each class (its own reading of ``expose``, class-wide for its
    name server) is what :func:`pyrostore.access.unguarded` checks: methods only, all guarded."""
    pyro5_serves = Pyro5.server._get_exposed_members(cls)
    instance = object.__new__(cls)
    assert pyro5_serves["methods"] == {name for name, _ in access.exposed_methods(instance)}
    assert pyro5_serves["attrs"] == set()
    assert access.unguarded(instance) == []


def test_every_method_of_pyro5s_name_server_is_guarded() -> None:
    for name in Pyro5.server._get_exposed_members(nameserver.NameServer)["methods"]:
        assert getattr(GuardedNameServer, name) is not getattr(nameserver.NameServer, name)
        assert getattr(GuardedNameServer, name).allowed_roles, name


def test_a_method_pyro5_adds_to_its_name_server_is_not_served_unguarded(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Pyro5 exposes its NameServer class-wide: a method a newer Pyro5 adds would be served,
    open to every role, by the guarded subclass that does not override it."""
    def purge(self: nameserver.NameServer) -> None:
        """What a newer Pyro5 might add."""

    def serve(*_: object, **__: object) -> None:
        raise AssertionError("the name server was served")

    monkeypatch.setattr(nameserver.NameServer, "purge", Pyro5.api.expose(purge), raising=False)
    monkeypatch.setattr(nameserver.NameServerDaemon, "requestLoop", serve)
    with pytest.raises(ConfigError, match="purge"):
        run_name_server(make_settings(tmp_path))


def test_the_daemons_own_object_tells_a_shopper_only_names(store: Cluster,
                                                          targets: dict[str, str]) -> None:
    """``Pyro.Daemon`` (ping, info, registered, get_metadata, and the item streams the store
    never makes) is open to any certificate of the CA: it names the objects and their methods,
    which the name server and the code already tell; it changes nothing."""
    catalog = Pyro5.core.URI(targets["catalog"])
    daemon_uri = f"PYRO:{Pyro5.core.DAEMON_NAME}@{catalog.host}:{catalog.port}"
    with nothing_changes(store), tls.acting_as(shopper("shopper")), \
            make_proxy(daemon_uri, store.settings) as daemon:
        daemon.ping()
        assert set(daemon.registered()) == {Pyro5.core.DAEMON_NAME, catalog.object,
                                            f"{catalog.object}.peer"}
        assert "take" in daemon.get_metadata(catalog.object)["methods"]
        assert "bound on" in daemon.info()
        with pytest.raises(Pyro5.errors.PyroError):
            daemon.get_next_stream_item("no-such-stream")


# -- --insecure ---------------------------------------------------------------------------------

@pytest.mark.parametrize("remote", [{"host": "10.1.2.3"}, {"ns_host": "10.1.2.3"},
                                    {"coordinators": "10.1.2.3:20001:20002"}],
                         ids=["host", "ns_host", "coordinators"])
def test_insecure_is_for_loopback_only(remote: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match="loopback"):
        Settings(insecure=True, **remote)
    assert not Settings(**remote).insecure


def test_pyrostore_up_insecure_warns_loudly(tmp_path: Path) -> None:
    """``up`` says so before it does anything (here it then stops at a bad flag, cheaply)."""
    settings = make_settings(tmp_path)
    result = run_cli(settings, "up", "--insecure", "--coordinators", "0")
    assert result.returncode == 2
    assert "INSECURE" in result.stderr and "anyone who can connect" in result.stderr
    remote = run_cli(settings, "up", "--insecure", "--host", "10.1.2.3")
    assert remote.returncode == 2 and "loopback" in remote.stderr
