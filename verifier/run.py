"""One verifier run: clients shop while nemeses strike; then heal, settle, replay, read every
replica, and check.

The steps, in order:

1. fresh books (known initial stock) for the clients to fight over;
2. client processes (:mod:`verifier.clients`) and the nemeses (:mod:`verifier.nemesis`) for
   ``duration`` seconds;
3. the clients stop; every fault is healed (links up, rules gone, paused services resumed,
   dead ones restarted) and the store left to settle every buy it began;
4. every write whose outcome is unknown, and a sample of acknowledged ones, is sent again with
   its own request id: the store deduplicates, so this learns what became of it (and checks
   that a replay changes nothing);
5. every catalog and order replica is read directly, and the history and that final state
   go to the checkers (:mod:`verifier.checks`).
"""

from __future__ import annotations

import dataclasses
import json
import random
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pyrostore.client import Client
from pyrostore.errors import OutOfStock, PyrostoreError, Unavailable
from verifier.availability import outages
from verifier.checks import check_all
from verifier.clients import ClientPool
from verifier.deployment import Deployment
from verifier.final import CheckResult, FinalState
from verifier.history import Event, Operation, operations, read_jsonl, write_jsonl
from verifier.nemesis import Nemesis, Network, Schedule

REPLAYED_OK = 25
"""How many acknowledged writes are replayed, to check that a replay changes nothing."""


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """What a run does: for how long, with how many clients, which faults, on which books."""

    duration: float = 60.0
    clients: int = 6
    kinds: tuple[str, ...] = ("kill", "pause", "coordinator", "nameserver", "clients")
    items: int = 4
    stock: int = 60
    seed: int = 677
    hold: tuple[float, float] = (1.5, 3.0)
    max_steps_per_item: int = 2_000_000


@dataclasses.dataclass
class RunResult:
    """What a run found: the checks' verdicts and the figures of the report."""

    checks: list[CheckResult]
    stats: dict[str, Any]
    outages: dict[str, dict[str, float]]
    episodes: list[dict[str, Any]]


def run(deployment: Deployment, config: RunConfig, out: Path, *,
        network: Network | None = None, say: Callable[[str], None] = lambda _: None
        ) -> RunResult:
    """One whole run against a started deployment; its files go to ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(config.seed)
    initial = _fresh_books(deployment, config)
    say(f"books {sorted(initial)} with {config.stock} copies each")
    pool = ClientPool(deployment.admin, out / "clients", sorted(initial), count=config.clients,
                      seed=rng.randrange(2**32))
    nemesis = Nemesis(deployment, pool, Schedule(config.kinds, rng), network=network,
                      hold=config.hold, healthy=lambda: _serving(deployment))
    pool.start()
    began = time.monotonic()
    try:
        pool.wait_shopping()
        began = time.monotonic()
        nemesis.run(began + config.duration, threading.Event(), progress=lambda e: say(
            f"{e.kind:<11} {e.target}: healed after {e.healed - e.start:.1f} s, serving "
            f"{e.recovered - e.healed:.1f} s later"))
    finally:
        failed = pool.stop()
        ended = time.monotonic()
        say("healing every fault")
        if network is not None:
            network.heal()
        deployment.revive()
    _settle(deployment)
    events = _merged(pool)
    say(f"replaying the writes of unknown outcome ({len(events)} events so far)")
    events += _replays(deployment, operations(events), start=len(events), rng=rng)
    _settle(deployment)
    final = _final_state(deployment, initial)
    write_jsonl(out / "history.jsonl", events)
    (out / "final.json").write_text(json.dumps(final.to_json(), indent=1))
    episodes = [episode.to_json() for episode in nemesis.episodes]
    (out / "nemesis.jsonl").write_text("".join(json.dumps(e) + "\n" for e in episodes))
    ops = operations(events)
    say(f"checking {len(ops)} operations")
    checks = [*check_all(ops, final, max_steps_per_item=config.max_steps_per_item),
              _clients_ran_cleanly(pool, failed)]
    successes = {f: [op.ret for op in ops if op.f == f and op.status == "ok"]
                 for f in ("lookup", "buy")}
    stats = _stats(ops, nemesis, pool, ended - began, failed)
    return RunResult(checks, stats, outages(episodes, successes, end=ended), episodes)


def _fresh_books(deployment: Deployment, config: RunConfig) -> dict[int, int]:
    with Client(settings=deployment.admin) as admin:
        return {admin.add_book(f"Verifier {n}", "verifier", stock=config.stock,
                               cost=1.0)["item"]: config.stock for n in range(config.items)}


def _serving(deployment: Deployment) -> bool:
    """Both groups have a serving primary, and the coordinators a leader."""
    return all(deployment.primary(group) is not None for group in ("catalog", "order")) \
        and deployment.leader() is not None


def _settle(deployment: Deployment, *, timeout: float = 120.0) -> None:
    """Wait until every replica serves, level with its group, with no take left open."""
    def settled() -> bool:
        rows = [row for row in deployment.survey() if row["role"] in ("catalog", "order")]
        if len(rows) < len(deployment.ids("catalog")) + len(deployment.ids("order")):
            return False
        if not all(row.get("serving") for row in rows):
            return False
        catalogs = [row for row in rows if row["role"] == "catalog"]
        if any(row.get("pending_buys") for row in catalogs):
            return False
        return all(len({row.get("applied") for row in rows if row["role"] == group}) == 1
                   for group in ("catalog", "order"))
    deadline = time.monotonic() + timeout
    while not _quietly(settled):
        if time.monotonic() > deadline:
            raise TimeoutError(f"the store did not settle within {timeout:.0f} s")
        time.sleep(0.2)  # polling the store's state; nothing to wait on


def _quietly(condition: Callable[[], bool]) -> bool:
    try:
        return condition()
    except PyrostoreError:
        return False


def _merged(pool: ClientPool) -> list[Event]:
    """Every client's events in time order, indexed; a call left unanswered by a killed client
    gets an ``info`` completion (it may or may not have happened)."""
    raw = [event for path in pool.histories() for event in _read_client_file(path)]
    raw.sort(key=lambda event: event.time)
    events = [dataclasses.replace(event, index=n) for n, event in enumerate(raw)]
    open_calls: dict[int, Event] = {}
    for event in events:
        if event.type == "invoke":
            open_calls[event.process] = event
        else:
            open_calls.pop(event.process, None)
    end = events[-1].time if events else 0.0
    for n, call in enumerate(sorted(open_calls.values(), key=lambda e: e.index)):
        events.append(dataclasses.replace(call, index=len(events), type="info", time=end + n,
                                          error="client killed"))
    return events


def _read_client_file(path: Path) -> list[Event]:
    """A client's history file; a last line cut short by ``kill -9`` is dropped."""
    lines = path.read_text().splitlines()
    if lines and not lines[-1].endswith("}"):
        lines = lines[:-1]
    fixed = path.with_suffix(".indexed")
    fixed.write_text("".join(json.dumps({**json.loads(line), "index": n}) + "\n"
                             for n, line in enumerate(lines)))
    return read_jsonl(fixed)


def _replays(deployment: Deployment, ops: list[Operation], *, start: int,
             rng: random.Random) -> list[Event]:
    """Send again every write of unknown outcome, and a sample of acknowledged ones, each
    with its own request id; one replay event per answer."""
    unknown = [op for op in ops if op.f != "lookup" and op.status == "info"]
    acknowledged = [op for op in ops if op.f != "lookup" and op.status == "ok"]
    chosen = unknown + rng.sample(acknowledged, min(REPLAYED_OK, len(acknowledged)))
    replays: list[Event] = []
    with Client(settings=deployment.admin) as client:
        for op in chosen:
            kind, order_id, error = "ok", None, None
            try:
                if op.f == "buy":
                    order_id = client.buy(op.item, op.arg or 1,
                                          request_id=op.request_id)["order_id"]
                else:
                    client.update(op.item, stock_delta=op.arg, request_id=op.request_id)
            except (OutOfStock, Unavailable) as exc:
                kind, error = "fail", type(exc).__name__
            replays.append(Event(index=start + len(replays), process=op.process, type=kind,
                                 f=op.f, item=op.item, value=op.arg, time=time.monotonic(),
                                 request_id=op.request_id, order_id=order_id, error=error,
                                 replays=op.index))
    return replays


def _final_state(deployment: Deployment, initial: dict[int, int]) -> FinalState:
    """Each catalog replica's stock of the run's books, and each order replica's orders."""
    catalog, orders = {}, {}
    for replica_id in deployment.ids("catalog"):
        with deployment.proxy("catalog", replica_id, fresh=True) as replica:
            catalog[f"catalog {replica_id}"] = {item: replica.lookup(item)["stock"]
                                                for item in initial}
    for replica_id in deployment.ids("order"):
        log: list[dict[str, Any]] = []
        with deployment.proxy("order", replica_id, fresh=True) as replica:
            while page := replica.orders(1000, len(log)):
                log += page
        orders[f"order {replica_id}"] = [
            {"id": o["order_id"], "request_id": o["request_id"], "item": o["item"],
             "qty": o["qty"]} for o in log if o["item"] in initial]
    return FinalState(initial=initial, catalog=catalog, orders=orders)


def _clients_ran_cleanly(pool: ClientPool, failed: list[int]) -> CheckResult:
    """A client that crashed met an error the store's API should have typed."""
    problems = [f"client {n}: {pool.log_tail(n, 1)}" for n in failed]
    return CheckResult("clients ran cleanly", "fail" if failed else "pass",
                       f"{len(failed)} client(s) crashed" if failed else
                       "every client stopped cleanly", problems,
                       {"clients": pool.next_process, "crashed": len(failed)})


def _stats(ops: list[Operation], nemesis: Nemesis, pool: ClientPool, seconds: float,
           failed: list[int]) -> dict[str, Any]:
    by_status = {status: sum(op.status == status for op in ops)
                 for status in ("ok", "fail", "info")}
    kinds = sorted({episode.kind for episode in nemesis.episodes})
    return {"operations checked": len(ops), "ok": by_status["ok"], "fail": by_status["fail"],
            "unknown after replay": by_status["info"],
            "buys acknowledged": sum(op.f == "buy" and op.status == "ok" for op in ops),
            "faults applied": len(nemesis.episodes), "nemesis kinds": ", ".join(kinds),
            "clients killed": pool.killed, "clients that crashed": len(failed),
            "seconds of faults": round(seconds, 1)}
