"""The primary's side of bringing a replica level, on a real SQLite file, with the peer calls
recorded (and refused where a test says): catch-up in bounded forwards, a snapshot when the
log has a gap or the replica refuses a logged write, and a transfer stopped when superseded."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pyrostore.errors import InvalidRequest, Unavailable
from pyrostore.hooks import Hooks
from pyrostore.limits import MAX_MESSAGE_SIZE
from pyrostore.schemas import CatalogStore
from pyrostore.store import Write
from pyrostore.transfers import FORWARD_BYTES, MAX_FORWARD, Sender

URI = "PYRO:pyrostore.catalog.2.peer@127.0.0.1:1"
TOKEN = "a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5"


class Peer:
    """Records what the sender calls; refuses ``catch_up`` with InvalidRequest if told to."""

    def __init__(self, *, refuse_catch_up: bool = False) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.refuse_catch_up = refuse_catch_up

    def call(self, uri: str, method: str, *args: Any) -> None:
        assert uri == URI
        self.calls.append((method, args))
        if method == "catch_up" and self.refuse_catch_up:
            raise InvalidRequest("a write of an older form")

    def caught_up(self) -> list[dict[str, Any]]:
        return [write for method, args in self.calls if method == "catch_up"
                for write in args[2]]


@pytest.fixture
def db(tmp_path: Path) -> Iterator[CatalogStore]:
    """A catalog with 1,200 writes of epoch 3, each a large one (a note of 3,000 bytes)."""
    store = CatalogStore(tmp_path / "catalog-1.sqlite3")
    writes = [Write({"op": "update", "item": 1, "note": f"{n:04d}" + "x" * 3_000}, f"r{n:04d}",
                    lambda conn, seq: {"seq": seq}, epoch=3) for n in range(1_200)]
    for start in range(0, len(writes), 300):
        store.execute_many(writes[start:start + 300])
    yield store
    store.close()


def sender(db: CatalogStore, peer: Peer, *, limit: int = 100_000) -> Sender:
    return Sender(db, lambda op, result: [f"item:{op['item']}"], peer,  # type: ignore[arg-type]
                  hooks=Hooks(enabled=False, names=()), behind_limit=lambda: limit)


def test_a_replica_behind_gets_the_writes_it_missed_in_bounded_forwards(
        db: CatalogStore) -> None:
    peer = Peer()
    assert sender(db, peer).bring_up(URI, TOKEN, 100, ("r0099", 3), lambda: 4) == 1_200
    sent = peer.caught_up()
    assert [w["seq"] for w in sent] == list(range(101, 1_201))
    assert {w["epoch"] for w in sent} == {3} and sent[0]["request_id"] == "r0100"
    assert sent[0]["op"] == json.loads(json.dumps(
        {"op": "update", "item": 1, "note": "0100" + "x" * 3_000}))
    for method, args in peer.calls:
        assert method == "catch_up" and args[:2] == (4, TOKEN)
        size = len(json.dumps(args[2]).encode())
        assert len(args[2]) <= MAX_FORWARD and size <= FORWARD_BYTES + 4_000 < MAX_MESSAGE_SIZE


def test_a_gap_in_the_log_turns_the_catch_up_into_a_snapshot(db: CatalogStore) -> None:
    with db.transaction() as conn:  # a request id forgotten after the plan was made
        conn.execute("DELETE FROM requests WHERE seq=900")
    peer = Peer()
    assert sender(db, peer).send_log(URI, TOKEN, 100, 1_200, {"rows": 0, "writes": 0},
                                     lambda: 4) == 1_200
    methods = [method for method, _ in peer.calls]
    assert "install_snapshot" in methods and methods[0] == "catch_up"
    assert peer.caught_up()[0]["seq"] == 101


def test_a_logged_write_the_replica_refuses_turns_into_a_snapshot(db: CatalogStore) -> None:
    peer = Peer(refuse_catch_up=True)
    figures = {"rows": 0, "writes": 0}
    assert sender(db, peer).send_log(URI, TOKEN, 100, 1_200, figures, lambda: 4) == 1_200
    assert [method for method, _ in peer.calls][-1] == "install_snapshot"
    assert figures["rows"] > 0


def test_too_far_behind_or_with_another_write_it_gets_a_snapshot(db: CatalogStore) -> None:
    for limit, theirs in ((50, ("r0099", 3)), (100_000, ("r0099", 2))):
        peer = Peer()
        assert sender(db, peer, limit=limit).bring_up(URI, TOKEN, 100, theirs,
                                                      lambda: 4) == 1_200
        assert {method for method, _ in peer.calls} == {"install_snapshot"}
        assert {args[1]["transfer"] for _, args in peer.calls} == {TOKEN}


def test_a_superseded_transfer_stops_before_its_next_call(db: CatalogStore) -> None:
    peer, asked = Peer(), []

    def wanted() -> int:
        asked.append(True)
        if len(asked) > 2:
            raise Unavailable("a newer request to join took over")
        return 4

    with pytest.raises(Unavailable):
        sender(db, peer).bring_up(URI, TOKEN, 100, ("r0099", 3), wanted)
    assert len(peer.calls) == 2
