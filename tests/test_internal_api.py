"""The store's internal methods refuse wrong arguments with a typed error, and change nothing.

Property-based: for every method the store's services call on each other (the peer endpoint's,
the catalog's and order service's node methods, the frontend's ``invalidate``, the
coordinators'), hypothesis makes wrong arguments — wrong types, bools for ints, huge and
negative numbers, long and non-printable strings, nested junk, named dicts with a field
missing, extra or wrong, forwarded writes and snapshots of the wrong shape — and sends them
through Pyro5 with a *node* certificate to a real store. Each must come back as
``InvalidRequest``; afterwards every replica's books, orders, request ids and position (read
from its SQLite file, read-only) and the coordinators' views are as they were.

Where a template message is otherwise well-formed it names epoch 0 (older than any view) or a
book that does not exist: a check that let a bad field through would show up as
``StaleEpoch`` or ``NotFound`` rather than change anything.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable, Iterator
from typing import Any

import Pyro5.api
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyrostore import tls
from pyrostore.discovery import Coordinators, find, make_proxy, peer_uri
from pyrostore.errors import InvalidRequest, PyrostoreError
from pyrostore.launcher import Cluster
from pyrostore.models import new_request_id
from pyrostore.transfers import MAX_FORWARD
from tests.conftest import identity, settled
from tests.test_replication import view

pytestmark = pytest.mark.timeout(300)
EXAMPLES = settings(max_examples=30, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])
NOWHERE = "127.0.0.1:1"

# -- wrong values ---------------------------------------------------------------------------

JUNK = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**80), 2**80) | st.floats()
    | st.text(max_size=300) | st.binary(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=12)
NOT_INT = st.none() | st.booleans() | st.floats() | st.text(max_size=20) | st.lists(
    st.integers(), max_size=2) | st.dictionaries(st.text(max_size=4), st.integers(), max_size=2)
NOT_STR = st.none() | st.booleans() | st.integers() | st.floats() | st.lists(
    st.text(max_size=3), max_size=2)
BAD_COUNT = NOT_INT | st.integers(max_value=-1) | st.integers(2**62 + 1, 2**80)
BAD_POSITIVE = NOT_INT | st.integers(max_value=0) | st.integers(2**62 + 1, 2**80)
BAD_REPLICA = NOT_INT | st.integers(max_value=0) | st.integers(10_000, 2**80)
CONTROL = st.characters(categories=["Cc"])
BAD_TOKEN = NOT_STR | st.just("") | st.text(min_size=65, max_size=300) | st.builds(
    lambda a, c: a + c, st.text(max_size=10), CONTROL)
BAD_TEXT = NOT_STR | st.sampled_from(["", "   "]) | st.text(min_size=201, max_size=400).filter(
    lambda t: len(t.strip()) > 200) | st.builds(lambda a, c: f"x{a}{c}y", st.text(max_size=10),
                                                CONTROL)
BAD_URI = NOT_STR | st.text(max_size=60).filter(lambda t: not t.startswith("PYRO:")) | \
    st.sampled_from(["PYRO:", "PYRO:x@", "PYRO:a b@h:1", "PYRO:x@h:0", "PYRO:x@h:99999",
                     "PYRO:x@h", "pyro:x@h:1", "PYRO:x@h:1\n", "PYRO:x@[zz]:1"])
BAD_GROUP = NOT_STR | st.text(max_size=20).filter(lambda t: t not in ("catalog", "order"))


def one_wrong(template: dict[str, Any], bad: dict[str, st.SearchStrategy[Any]]
              ) -> st.SearchStrategy[Any]:
    """``template`` with one field wrong, one missing or one too many; or junk."""
    wrong = st.sampled_from(sorted(bad)).flatmap(
        lambda name: bad[name].map(lambda value: {**template, name: value}))
    missing = st.sampled_from(sorted(template)).map(
        lambda name: {k: v for k, v in template.items() if k != name})
    extra = st.text(min_size=1, max_size=12).filter(lambda k: k not in template).map(
        lambda name: {**template, name: 1})
    return wrong | missing | extra | JUNK.filter(lambda value: value != template)


# -- the store, as a node sees it -----------------------------------------------------------

@contextlib.contextmanager
def as_node(uri: str, store: Cluster) -> Iterator[Pyro5.api.Proxy]:
    """A proxy to ``uri`` over a connection made with the node certificate (serpent: it
    carries big integers, tuples and the rest of the junk)."""
    with tls.acting_as(identity("node")), make_proxy(uri, store.settings) as proxy:
        proxy._pyroSerializer = "serpent"
        yield proxy


def refuses(call: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
    with pytest.raises(InvalidRequest):
        call(*args, **kwargs)


def service(store: Cluster, role: str, replica_id: int) -> str:
    return find(store.settings, role)[f"pyrostore.{role}.{replica_id}"]


def backup(store: Cluster, group: str) -> int:
    return int(view(store, group)["backups"][0])


def tables(store: Cluster) -> dict[str, Any]:
    """Every replica's rows, read from its file (read-only, beside the running store)."""
    found = {}
    for role, state in (("catalog", "books"), ("order", "orders")):
        for replica_id in (1, 2):
            path = store.settings.database_path(role, replica_id)
            conn = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)
            try:
                found[f"{role}-{replica_id}"] = {
                    table: sorted(map(tuple, conn.execute(f"SELECT * FROM {table}")))
                    for table in (state, "requests", "meta")}
            finally:
                conn.close()
    return found


def members(store: Cluster) -> dict[str, Any]:
    """Who the coordinators know of in each group (their views may move on by themselves)."""
    with tls.acting_as(identity("node")):
        coordinators = Coordinators(store.settings)
        try:
            views = coordinators.read("views")
        finally:
            coordinators.close()
    return {group: sorted(v["replicas"]) for group, v in views.items()}


@pytest.fixture
def unchanged(store: Cluster) -> Iterator[Cluster]:
    """The module's store, checked to hold the same rows and members after the test."""
    settled(store)
    before_tables, before_members = tables(store), members(store)
    yield store
    assert tables(store) == before_tables
    assert members(store) == before_members


# -- the peer endpoint ----------------------------------------------------------------------

BOOK = {"item": 999_999, "title": "T", "topic": "t", "stock": 1, "cost": 1.0, "version": 9}
UPDATE = {"op": "update", "item": 999_999, "cost": 9.0, "stock_delta": None}
WRITE = {"seq": 1, "op": UPDATE, "request_id": new_request_id(), "result": BOOK,
         "keys": ["item:999999"], "epoch": 0}
BAD_OP = one_wrong(UPDATE, {"op": JUNK.filter(lambda v: v not in ("take", "update", "add")),
                            "item": BAD_POSITIVE, "cost": NOT_INT.filter(
                                lambda v: v is not None and not isinstance(v, float)),
                            "stock_delta": st.just(0) | st.integers(1_000_001, 2**80)}) | \
    st.just({**UPDATE, "cost": None})
BAD_WRITE = one_wrong(WRITE, {"seq": BAD_POSITIVE, "op": BAD_OP, "request_id": BAD_TOKEN,
                              "result": one_wrong(BOOK, {"title": BAD_TOKEN.filter(
                                  lambda v: not isinstance(v, str)), "stock": BAD_COUNT}),
                              "keys": JUNK.filter(lambda v: v != ["item:999999"]),
                              "epoch": BAD_COUNT | st.just(1)})  # 1: after the sender's 0
BAD_WRITES = (JUNK.filter(lambda v: not isinstance(v, list)) | st.just([])
              | st.lists(BAD_WRITE, min_size=1, max_size=3)
              | st.just([{**WRITE, "seq": s} for s in range(1, MAX_FORWARD + 2)])
              | st.just([WRITE, {**WRITE, "seq": 3}]))


@EXAMPLES
@given(epoch=BAD_COUNT, writes=BAD_WRITES, committed=BAD_COUNT,
       which=st.sampled_from(["epoch", "writes", "committed"]))
def test_replicate(unchanged: Cluster, epoch: Any, writes: Any, committed: Any,
                   which: str) -> None:
    args = {"epoch": 0, "writes": [WRITE], "committed": 0, which: locals()[which]}
    with as_node(peer_uri(service(unchanged, "catalog", backup(unchanged, "catalog"))),
                 unchanged) as peer:
        refuses(peer.replicate, args["epoch"], args["writes"], args["committed"])


@EXAMPLES
@given(epoch=BAD_COUNT, seq=BAD_COUNT)
def test_committed_position_write_at(unchanged: Cluster, epoch: Any, seq: Any) -> None:
    with as_node(peer_uri(service(unchanged, "order", backup(unchanged, "order"))),
                 unchanged) as peer:
        refuses(peer.committed, epoch, 0)
        refuses(peer.committed, 0, seq)
        refuses(peer.position, epoch)
        refuses(peer.write_at, seq)


ROWS = {"requests": [["r-1", "{}", "{}", 1, 1]],
        "books": [[999_999, "T", "t", "t", 1, 1.0, 1]]}
PART = {"transfer": "t1", "part": 0, "applied": 1, "table": "books", "rows": ROWS["books"],
        "last": True}
BAD_CELL = st.none() | st.booleans() | st.lists(st.integers(), max_size=2) | st.dictionaries(
    st.text(max_size=3), st.integers(), max_size=2)


def bad_row(table: str) -> st.SearchStrategy[dict[str, Any]]:
    row = ROWS[table][0]
    cell = st.tuples(st.integers(0, len(row) - 1), BAD_CELL).map(
        lambda c: [*row[:c[0]], c[1], *row[c[0] + 1:]])
    shapes = cell | st.just(row[:-1]) | st.just([*row, 1]) | JUNK.filter(lambda v: v != row)
    return shapes.map(lambda bad: {**PART, "table": table, "rows": [bad]})


BAD_PART = one_wrong(PART, {
    "transfer": BAD_TOKEN, "part": BAD_COUNT, "applied": BAD_COUNT,
    "table": JUNK | st.sampled_from(["meta", "incoming_books", "books; DROP TABLE books"]),
    "rows": JUNK.filter(lambda v: not isinstance(v, list)),
    "last": JUNK.filter(lambda v: not isinstance(v, bool))}) \
    | bad_row("requests") | bad_row("books") \
    | st.just({**PART, "rows": ROWS["books"] * 2}) \
    | st.just({**PART, "table": "requests", "rows": [["r-1", "not json", "{}", 1, 1]]}) \
    | st.just({**PART, "table": "requests", "rows": [["r-1", "{}", "{}", 2, 1]]}) \
    | st.just({**PART, "table": "requests", "rows": [["r-1", "{}", "{}", 1]]})


@EXAMPLES
@given(epoch=BAD_COUNT, part=BAD_PART)
def test_install_snapshot(unchanged: Cluster, epoch: Any, part: Any) -> None:
    with as_node(peer_uri(service(unchanged, "catalog", backup(unchanged, "catalog"))),
                 unchanged) as peer:
        refuses(peer.install_snapshot, epoch, PART)
        refuses(peer.install_snapshot, 0, part)


JOINER = {"replica": 77, "uri": f"PYRO:pyrostore.catalog.77@{NOWHERE}", "incarnation": "x",
          "position": 0, "last_write": None, "token": "t1"}


@EXAMPLES
@given(joiner=one_wrong(JOINER, {
    "replica": BAD_REPLICA, "incarnation": BAD_TOKEN, "position": BAD_COUNT, "token": BAD_TOKEN,
    "last_write": JUNK.filter(lambda v: v is not None and not (
        isinstance(v, list) and len(v) == 2 and isinstance(v[0], str) and 0 < len(v[0]) <= 64
        and type(v[1]) is int and v[1] >= 0)) | BAD_TOKEN.map(lambda t: [t, 1])
    | BAD_COUNT.map(lambda e: ["r-1", e]),
    "uri": BAD_URI | st.sampled_from([f"PYRO:pyrostore.catalog.78@{NOWHERE}",
                                      f"PYRO:pyrostore.order.77@{NOWHERE}",
                                      f"PYRO:pyrostore.coordinator.1@{NOWHERE}"])}))
def test_join(unchanged: Cluster, joiner: Any) -> None:
    primary = view(unchanged, "catalog")["primary"]
    with as_node(peer_uri(service(unchanged, "catalog", primary)), unchanged) as peer:
        refuses(peer.join, joiner)


def test_calls_with_the_wrong_arguments(unchanged: Cluster) -> None:
    with as_node(peer_uri(service(unchanged, "catalog", 1)), unchanged) as peer:
        refuses(peer.position)
        refuses(peer.position, 0, 1)
        refuses(peer.write_at, seq=1, extra=2)
    with as_node(service(unchanged, "catalog", 1), unchanged) as catalog:
        refuses(catalog.topics_at, 1)


# -- the catalog's, the order service's and the frontend's node methods -------------------

@EXAMPLES
@given(item=BAD_POSITIVE, qty=BAD_POSITIVE | st.integers(1_000_001, 2**70),
       request_id=BAD_TOKEN, topic=BAD_TEXT, limit=BAD_POSITIVE | st.integers(1001, 2**70),
       offset=BAD_COUNT)
def test_catalog(unchanged: Cluster, item: Any, qty: Any, request_id: Any, topic: Any,
                 limit: Any, offset: Any) -> None:
    with as_node(service(unchanged, "catalog", view(unchanged, "catalog")["primary"]),
                 unchanged) as catalog:
        refuses(catalog.lookup_at, item)
        refuses(catalog.search_at, topic)
        refuses(catalog.search_at, "graduate school", limit, 0)
        refuses(catalog.search_at, "graduate school", 10, offset)
        refuses(catalog.take, item, 1, new_request_id())
        refuses(catalog.take, 999_999, qty, new_request_id())
        refuses(catalog.take, 999_999, 1, request_id)


@EXAMPLES
@given(uri=BAD_URI | st.sampled_from([f"PYRO:pyrostore.frontend.9@{NOWHERE}",
                                      f"PYRO:pyrostore.coordinator.1@{NOWHERE}"]))
def test_cache_lease_goes_to_registered_frontends_only(unchanged: Cluster, uri: Any) -> None:
    with as_node(service(unchanged, "catalog", view(unchanged, "catalog")["primary"]),
                 unchanged) as catalog:
        refuses(catalog.cache_lease, uri)


def test_cache_lease_refuses_the_coordinator_and_serves_a_frontend(unchanged: Cluster) -> None:
    coordinator = unchanged.settings.coordinator_addresses()[0].uri(1)
    with as_node(service(unchanged, "catalog", view(unchanged, "catalog")["primary"]),
                 unchanged) as catalog:
        refuses(catalog.cache_lease, coordinator)
        refuses(catalog.cache_lease, service(unchanged, "catalog", 1))
        assert catalog.cache_lease(service(unchanged, "frontend", 1))["lease"] >= 0


@EXAMPLES
@given(item=BAD_POSITIVE, qty=BAD_POSITIVE, request_id=BAD_TOKEN | st.none(),
       customer=NOT_STR.filter(lambda v: v is not None) | st.text(min_size=65, max_size=100)
       | CONTROL, limit=BAD_POSITIVE, offset=BAD_COUNT)
def test_order(unchanged: Cluster, item: Any, qty: Any, request_id: Any, customer: Any,
               limit: Any, offset: Any) -> None:
    with as_node(service(unchanged, "order", view(unchanged, "order")["primary"]),
                 unchanged) as order:
        refuses(order.buy, item, 1, "r-buy", "")
        refuses(order.buy, 999_999, qty, "r-buy", "")
        refuses(order.buy, 999_999, 1, request_id, "")
        refuses(order.buy, 999_999, 1, "r-buy", customer)
        refuses(order.order, item)
        refuses(order.orders, limit, 0)
        refuses(order.orders, 10, offset)
        refuses(order.orders, 10, 0, customer)


CHANGE = [["item:1"], [0, 5]]
BAD_KEY = NOT_STR | st.sampled_from(["", "item:0", "item:-1", "item:x", "topic:", "topic:UP",
                                     "topic: x", "topics ", "junk", "topic:a\x1b[31m"])
BAD_CHANGES = (JUNK.filter(lambda v: not isinstance(v, list))
               | st.lists(JUNK.filter(lambda v: not (isinstance(v, list) and len(v) == 2)),
                          min_size=1, max_size=3)
               | BAD_KEY.map(lambda key: [[[key], [0, 5]]])
               | st.one_of(BAD_COUNT, st.just(1)).map(lambda e: [[["item:1"], [e, 5]]])
               | BAD_COUNT.map(lambda s: [[["item:1"], [0, s]]])
               | st.just([[["item:1"], [0]]]) | st.just([[["item:1"], [0, 5, 7]]])
               | st.just([[[f"item:{n}" for n in range(1, 1026)], [0, 5]]])
               | st.just([CHANGE] * 1025))


@EXAMPLES
@given(epoch=BAD_COUNT, changes=BAD_CHANGES)
def test_invalidate(unchanged: Cluster, epoch: Any, changes: Any) -> None:
    with as_node(service(unchanged, "frontend", 1), unchanged) as frontend:
        refuses(frontend.invalidate, epoch, [CHANGE])
        refuses(frontend.invalidate, 0, changes)


# -- the coordinators ---------------------------------------------------------------------

RENEWAL = {"group": "catalog", "replica": 77, "incarnation": "x", "seq": 1,
           "uri": f"PYRO:pyrostore.catalog.77@{NOWHERE}", "applied": 0, "epoch": 0,
           "state": "joining"}
REPORT = {"group": "catalog", "epoch": 0, "reporter": 1, "failed": 2}
MEMBER = {"group": "catalog", "epoch": 0, "primary": 1, "joiner": 77, "incarnation": "x"}


@EXAMPLES
@given(renewal=one_wrong(RENEWAL, {
    "group": BAD_GROUP, "replica": BAD_REPLICA, "incarnation": BAD_TOKEN, "seq": BAD_COUNT,
    "applied": BAD_COUNT, "epoch": BAD_COUNT, "state": JUNK.filter(
        lambda v: v not in ("primary", "backup", "joining")),
    "uri": BAD_URI | st.sampled_from([f"PYRO:pyrostore.catalog.78@{NOWHERE}",
                                      f"PYRO:pyrostore.order.77@{NOWHERE}",
                                      f"PYRO:pyrostore.coordinator.1@{NOWHERE}"])}),
       report=one_wrong(REPORT, {"group": BAD_GROUP, "epoch": BAD_COUNT,
                                 "reporter": BAD_REPLICA, "failed": BAD_REPLICA}),
       member=one_wrong(MEMBER, {"group": BAD_GROUP, "epoch": BAD_COUNT,
                                 "primary": BAD_REPLICA, "joiner": BAD_REPLICA,
                                 "incarnation": BAD_TOKEN}),
       group=BAD_GROUP)
def test_coordinator(unchanged: Cluster, renewal: Any, report: Any, member: Any,
                     group: Any) -> None:
    uri = unchanged.settings.coordinator_addresses()[0].uri(1)
    with as_node(uri, unchanged) as coordinator:
        refuses(coordinator.renew, renewal)
        refuses(coordinator.report_failure, report)
        refuses(coordinator.add_member, member)
        refuses(coordinator.view, group)
        refuses(coordinator.views, group)


def test_a_renewal_far_above_every_epoch_is_refused(unchanged: Cluster) -> None:
    """A well-formed heartbeat whose epoch no coordinator issued would push every later epoch
    out of range: the leader refuses it, and records nothing of the replica."""
    epoch = view(unchanged, "catalog")["epoch"] + 10**6
    with tls.acting_as(identity("node")):
        coordinators = Coordinators(unchanged.settings)
        try:
            with pytest.raises(InvalidRequest, match="far above"):
                coordinators.command("renew", {**RENEWAL, "epoch": epoch})
            assert "77" not in coordinators.read("views")["catalog"]["replicas"]
        finally:
            coordinators.close()


def test_every_refusal_is_a_store_error(unchanged: Cluster) -> None:
    """Junk never surfaces as a bare Python error from inside a service."""
    with as_node(peer_uri(service(unchanged, "order", 1)), unchanged) as peer:
        for junk in (None, [], {}, "x", 2**70, {"applied": 0}):
            with pytest.raises(PyrostoreError):
                peer.install_snapshot(0, junk)
