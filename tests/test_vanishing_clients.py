"""Atomic buys under chaos: shoppers' processes are killed mid-buy (``kill -9``, never
retried) while replicas and coordinators are killed and paused; an admin restocks meanwhile.
Now and then every caller of the buys in flight vanishes at once: the order primary is paused
mid-buy, the shoppers and the frontend that carried their buys are killed, and the order
primary, resumed, has been replaced: no one is left to finish those buys but the store.
After healing, stock and orders must agree exactly, on every replica:

    initial stock + restocks - final stock = copies in orders      (for every item)

No tolerance: a take whose buy vanished must have become an order, or been given back.
"""

from __future__ import annotations

import itertools
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from pyrostore.client import Client
from pyrostore.config import ENV_PREFIX, Settings
from pyrostore.errors import OutcomeUnknown, Unavailable
from pyrostore.launcher import Cluster
from pyrostore.models import new_request_id
from tests.buyer import read_journal
from tests.conftest import settled, start_cluster, wait_until
from tests.shopping import add_books, hold
from tests.test_chaos import coordinator_victim
from tests.test_replication import info, level, orders_on, proxy, restart, serving

CHAOS_SECONDS = 25.0
BUYERS = 3
STOCKS = (5000, 5000, 60)
"""Two books that last the whole run, and one that sells out and is restocked now and then."""
ROOT = Path(__file__).resolve().parent.parent


class Buyers:
    """``BUYERS`` shopper processes (:mod:`tests.buyer`); one is killed with -9 and replaced
    every fraction of a second while :meth:`vanishing` runs."""

    def __init__(self, settings: Settings, items: list[int], directory: Path) -> None:
        directory.mkdir()
        self.directory, self.items = directory, items
        self.env = {**{k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)},
                    **settings.dump()}
        self.processes: list[subprocess.Popen[bytes]] = []
        self.killed = 0
        self._seeds = itertools.count(1)
        self._lock = threading.Lock()  # one killer at a time
        self._stop = threading.Event()
        self._killer = threading.Thread(target=self._kill_and_replace, daemon=True)

    def spawn(self) -> None:
        seed = next(self._seeds)
        with (self.directory / f"buyer-{seed}.log").open("wb") as log:
            self.processes.append(subprocess.Popen(
                [sys.executable, "-m", "tests.buyer", str(self.directory / f"{seed}.jsonl"),
                 str(seed), *map(str, self.items)],
                cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True))

    def __enter__(self) -> Buyers:
        for _ in range(BUYERS):
            self.spawn()
        wait_until(lambda: sum(e["event"] == "ok" for e in self.events()) >= BUYERS,
                   timeout=60, what="the buyers' first orders")
        self._killer.start()
        return self

    def _kill_and_replace(self) -> None:
        rng = random.Random(5)
        while not self._stop.wait(rng.uniform(0.2, 0.8)):
            with self._lock:
                self._replace(rng.choice([p for p in self.processes if p.poll() is None]))

    def _replace(self, victim: subprocess.Popen[bytes]) -> None:
        victim.kill()  # SIGKILL: whatever it was doing, mid-buy or not, it never retries
        victim.wait()
        self.killed += 1
        self.spawn()

    def replace_all(self) -> None:
        """Kill every live buyer at once, and start as many new ones."""
        with self._lock:
            for victim in [p for p in self.processes if p.poll() is None]:
                self._replace(victim)

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        if self._killer.is_alive():
            self._killer.join(30)
        for process in self.processes:
            if process.poll() is None:
                process.kill()
                process.wait()

    def events(self) -> list[dict[str, Any]]:
        return [event for path in sorted(self.directory.glob("*.jsonl"))
                for event in read_journal(path)]


class Restocker:
    """An admin restocking the item that sells out, each restock retried with its own request
    id until it is acknowledged: afterwards every restock's outcome is known."""

    def __init__(self, settings: Settings, item: int) -> None:
        self.settings, self.item = settings, item
        self.restocked = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Restocker:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(120)
        assert not self._thread.is_alive(), "a restock never got an answer"

    def _run(self) -> None:
        with Client(settings=self.settings) as admin:
            while not self._stop.wait(0.5):
                request_id = new_request_id()
                while True:
                    try:
                        admin.update(self.item, stock_delta=5, request_id=request_id)
                        break
                    except (OutcomeUnknown, Unavailable):
                        continue  # the same id again: it applies once, whatever happened
                self.restocked += 5


class Havoc:
    """Faults one after another: kill -9 (then restart) or pause (SIGSTOP, then SIGCONT) a
    random catalog replica, order replica or coordinator; never two at once, and a replica
    only when both of its group serve (so a group always keeps a live member)."""

    def __init__(self, cluster: Cluster, buyers: Buyers, rng: random.Random) -> None:
        self.cluster, self.buyers, self.rng = cluster, buyers, rng
        self.events: list[str] = []
        self.paused: tuple[str, int] | None = None

    def run(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        deck = itertools.cycle(["catalog", "order", "coordinator", "callers"])
        while time.monotonic() < deadline:
            role = next(deck)
            wait_until(lambda: serving(self.cluster, "catalog") and serving(self.cluster, "order"),
                       timeout=60, what="both groups serving")
            if role == "callers":
                self.callers_vanish()
                continue
            if role == "coordinator":
                victim, state = coordinator_victim(self.cluster, self.rng)
            else:
                victim = self.rng.choice([1, 2])
                state = info(self.cluster, role, victim)["state"]
            if self.rng.random() < 0.5:
                self.cluster.kill(role, victim, signal.SIGKILL)
                hold(self.rng.uniform(0.2, 1.5))  # how long it stays down is the experiment
                restart(self.cluster, role, victim)
                self.events.append(f"killed {role} {victim} ({state})")
            else:
                self.cluster.kill(role, victim, signal.SIGSTOP)
                self.paused = (role, victim)
                hold(self.rng.uniform(0.3, 2.5))  # past a lease: it is replaced meanwhile
                self.resume()
                self.events.append(f"paused {role} {victim} ({state})")

    def callers_vanish(self) -> None:
        """Pause the order primary mid-buy; kill the shoppers and the frontend; resume it once
        it has been replaced (a lease and more later)."""
        primary = next(replica_id for replica_id in (1, 2)
                       if info(self.cluster, "order", replica_id)["state"] == "primary")
        self.cluster.kill("order", primary, signal.SIGSTOP)
        self.paused = ("order", primary)
        hold(0.2)  # the buys in flight pile up at the paused primary, some of them taken
        self.buyers.replace_all()
        self.cluster.kill("frontend", 1, signal.SIGKILL)
        hold(self.cluster.settings.lease * 2)
        self.resume()
        restart(self.cluster, "frontend", 1)
        self.events.append(f"paused order {primary} (primary) and killed every caller")

    def resume(self) -> None:
        if self.paused is not None:
            self.cluster.kill(*self.paused, signal.SIGCONT)
            self.paused = None


def check_conservation(cluster: Cluster, items: list[int], initial: dict[int, int],
                       events: list[dict[str, Any]]) -> dict[str, int]:
    """Every property of the module's docstring, on every replica; what became of the buys."""
    logs = [orders_on(cluster, replica_id) for replica_id in (1, 2)]
    assert logs[0] == logs[1], "the order replicas differ"
    orders = {order["request_id"]: order for order in logs[0]}
    assert len(orders) == len(logs[0]), "a request id has two orders"
    sold: Counter[int] = Counter()
    for order in logs[0]:
        sold[order["item"]] += order["qty"]
    for replica_id in (1, 2):
        with proxy(cluster, "catalog", replica_id) as catalog:
            for item in items:
                stock = catalog.lookup(item)["stock"]
                assert initial[item] - stock == sold[item], (
                    f"catalog {replica_id}, item {item}: {initial[item]} in stock and restocked,"
                    f" {stock} left, but {sold[item]} in orders")
    begun = {e["request_id"]: e for e in events if e["event"] == "begin"}
    ended = {e["request_id"]: e for e in events if e["event"] != "begin"}
    shelf = set(items)
    assert {rid for rid, o in orders.items() if o["item"] in shelf} <= set(begun), \
        "an order no buyer asked for"
    for request_id, answer in ended.items():
        if answer["event"] == "ok":
            assert orders.get(request_id) == answer["order"], f"acknowledged {request_id} lost"
        elif answer["event"] in ("refused", "unavailable"):
            assert request_id not in orders, f"{request_id} was refused but has an order"
    vanished = set(begun) - set(ended)
    return {"orders": len(orders), "acknowledged": sum(e["event"] == "ok" for e in ended.values()),
            "vanished mid-buy": len(vanished),
            "vanished, then ordered by the store": len(vanished & set(orders)),
            "unknown to their client": sum(e["event"] == "unknown" for e in ended.values())}


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_every_take_ends_in_one_order_when_clients_vanish_under_chaos(tmp_path: Path) -> None:
    cluster = start_cluster(tmp_path / "store")
    havoc: Havoc | None = None
    try:
        items = add_books(cluster.settings, STOCKS)
        buyers = Buyers(cluster.settings, items, tmp_path / "buyers")
        havoc = Havoc(cluster, buyers, random.Random(1207))
        with buyers, Restocker(cluster.settings, items[-1]) as restocker:
            havoc.run(CHAOS_SECONDS)
        wait_until(lambda: level(cluster, "catalog") and level(cluster, "order"), timeout=60,
                   what="both groups level after the chaos")
        settled(cluster, timeout=60)
        initial = dict(zip(items, STOCKS, strict=True))
        initial[items[-1]] += restocker.restocked
        outcome = check_conservation(cluster, items, initial, buyers.events())
        print(f"vanishing clients: {buyers.killed} buyers killed; {outcome}; "
              f"{restocker.restocked} restocked; {len(havoc.events)} faults: {havoc.events}")
        assert buyers.killed >= 10 and outcome["vanished mid-buy"] >= 5, \
            f"too few clients vanished mid-buy to mean anything: {outcome}"
        assert {event.split()[0] for event in havoc.events} == {"killed", "paused"}
        assert any("every caller" in event for event in havoc.events)
    finally:
        if havoc is not None:
            havoc.resume()
        cluster.stop()
