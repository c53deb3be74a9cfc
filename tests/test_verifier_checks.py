"""The verifier's pure parts on known-good and known-bad histories: linearizability, the
final-state checks and the report. No store runs here."""

from __future__ import annotations

import io
import math
import random
from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console

from verifier import report
from verifier.checks import (
    CheckResult,
    FinalState,
    acknowledged_orders,
    check_all,
    conservation,
    idempotent_replays,
    no_phantom_orders,
    replicas_agree,
    stock_never_negative,
)
from verifier.history import History, Operation, operations
from verifier.linearizability import check_history, check_item

ITEM = 1


class Ops:
    """Builds operations by hand: ``add(p, f, arg, call, ret, ...)`` in call order."""

    def __init__(self) -> None:
        self.ops: list[Operation] = []

    def add(self, process: int, f: str, arg: int | None, call: float, ret: float, *,
            result: int | None = None, status: str = "ok", error: str | None = None,
            order_id: int | None = None, request_id: str | None = None) -> Ops:
        index = len(self.ops)
        if f != "lookup":
            request_id = request_id or f"r{index}"
            result = arg if result is None and status == "ok" else result
            if f == "buy" and status == "ok" and order_id is None:
                order_id = 100 + index
        self.ops.append(Operation(process, f, ITEM, arg, result, call,
                                  math.inf if status == "info" else ret, status, request_id,
                                  order_id, error, index))
        return self

    def lookup(self, p: int, seen: int, call: float, ret: float) -> Ops:
        return self.add(p, "lookup", None, call, ret, result=seen)

    def buy(self, p: int, qty: int, call: float, ret: float, **kw: object) -> Ops:
        return self.add(p, "buy", qty, call, ret, **kw)  # type: ignore[arg-type]

    def restock(self, p: int, delta: int, call: float, ret: float, **kw: object) -> Ops:
        return self.add(p, "restock", delta, call, ret, **kw)  # type: ignore[arg-type]

    def orders(self) -> list[dict[str, object]]:
        """The orders a correct store holds for these operations' acknowledged buys."""
        return [{"id": op.order_id, "request_id": op.request_id, "item": op.item,
                 "qty": op.arg} for op in self.ops if op.f == "buy" and op.status == "ok"]


def verdict(initial: int, ops: Ops, **kw: int) -> str:
    return check_item(initial, ops.ops, **kw).verdict


# linearizability ------------------------------------------------------------------------

def test_a_sequential_history_is_linearizable() -> None:
    ops = Ops().lookup(0, 5, 0, 1).buy(1, 2, 2, 3).lookup(0, 3, 4, 5).restock(2, 4, 6, 7)
    ops.lookup(1, 7, 8, 9).buy(0, 7, 10, 11).lookup(2, 0, 12, 13)
    assert verdict(5, ops) == "ok"


def test_overlapping_buys_pass_in_either_order() -> None:
    for first, second in ((1, 2), (2, 1)):
        ops = Ops().buy(0, first, 0, 10).buy(1, second, 1, 9).lookup(2, 2, 11, 12)
        assert verdict(5, ops) == "ok"
    # a lookup overlapping both may see the stock between them
    ops = Ops().buy(0, 1, 0, 10).buy(1, 2, 1, 9).lookup(2, 3, 2, 8).lookup(3, 5, 2, 8)
    assert verdict(5, ops) == "ok"
    assert verdict(5, ops.lookup(4, 4, 2, 8)) == "bad"


def test_a_stale_read_is_caught_and_explained() -> None:
    ops = Ops().buy(0, 2, 0, 1).lookup(1, 5, 2, 3)
    result = check_item(5, ops.ops)
    assert result.verdict == "bad"
    assert result.stuck is ops.ops[1]
    assert result.state == 3 and result.linearized == 1
    assert "lookup -> ok 5" in result.detail and "leaves stock 3" in result.detail


def test_a_lost_write_is_caught() -> None:
    ops = Ops().buy(0, 2, 0, 1).buy(1, 1, 2, 3).lookup(0, 4, 4, 5)
    assert verdict(5, ops) == "bad"


def test_a_buy_decremented_twice_is_caught() -> None:
    ops = Ops().buy(0, 2, 0, 1).lookup(1, 1, 2, 3)
    assert verdict(5, ops) == "bad"


def test_out_of_stock_while_plentiful_is_caught() -> None:
    refused = Ops().buy(0, 3, 0, 1, status="fail", error="OutOfStock")
    assert verdict(5, refused) == "bad"
    assert verdict(2, refused) == "ok"
    # another definite failure had no effect and observed nothing
    assert verdict(5, Ops().buy(0, 3, 0, 1, status="fail", error="Unavailable")) == "ok"


def test_a_buy_that_drives_stock_negative_is_caught() -> None:
    assert verdict(1, Ops().buy(0, 2, 0, 1)) == "bad"
    assert verdict(3, Ops().buy(0, 2, 0, 1).buy(1, 2, 0.5, 1.5)) == "bad"


def test_an_info_buy_may_take_effect_once_but_not_twice() -> None:
    once = Ops().buy(0, 2, 0, 1, status="info").lookup(1, 3, 5, 6)
    assert verdict(5, once) == "ok"
    never = Ops().buy(0, 2, 0, 1, status="info").lookup(1, 5, 5, 6)
    assert verdict(5, never) == "ok"
    twice = Ops().buy(0, 2, 0, 1, status="info").lookup(1, 1, 5, 6)
    assert verdict(5, twice) == "bad"
    # it takes effect after its call, not before
    early = Ops().lookup(1, 3, 0, 1).buy(0, 2, 2, 3, status="info")
    assert verdict(5, early) == "bad"


def test_info_lookups_and_writes_left_out_where_they_tell_nothing() -> None:
    ops = Ops().add(0, "lookup", None, 0, 1, status="info").restock(1, 3, 0, 1, status="fail",
                                                                   error="Forbidden")
    assert verdict(5, ops.lookup(2, 5, 2, 3)) == "ok"


def test_a_spent_budget_is_unknown_never_ok() -> None:
    ops = Ops()
    for p in range(6):
        ops.buy(p, 1, 0, 10)
    ops.lookup(9, 0, 11, 12)
    result = check_item(6, ops.ops, max_steps=3)
    assert (result.verdict, result.steps) == ("unknown", 3)
    assert check_item(6, ops.ops).verdict == "ok"
    bad = Ops().buy(0, 2, 0, 1).lookup(1, 5, 2, 3)
    assert check_item(5, bad.ops, max_steps=1).verdict == "unknown"


def test_quiescent_parts_start_from_the_stock_the_earlier_part_left() -> None:
    # the lookups start after both writes returned: whatever their order, stock is 5 - 1 + 4
    ops = Ops().buy(0, 1, 0, 2).restock(1, 4, 1, 3).lookup(0, 8, 4, 5).lookup(1, 8, 4.5, 6)
    assert verdict(5, ops) == "ok"
    assert verdict(4, ops) == "bad"
    ops.lookup(0, 7, 7, 8)
    assert verdict(5, ops) == "bad"


def test_operations_that_touch_count_as_concurrent() -> None:
    # the lookup is called the instant the buy returns: either order is allowed
    assert verdict(5, Ops().buy(0, 2, 0, 1).lookup(1, 5, 1, 2)) == "ok"
    assert verdict(5, Ops().buy(0, 2, 0, 1).lookup(1, 5, 1.001, 2)) == "bad"


def concurrent(count: int, *, processes: int = 10, seed: int = 7) -> Ops:
    """``count`` operations of ``processes`` overlapping clients, each taking effect at a
    random moment within its call and return: linearizable by construction."""
    rng, ops, stock = random.Random(seed), Ops(), 50
    free, timed = [0.0] * processes, []
    for n in range(count):
        p = n % processes
        call = free[p] + rng.random() * 0.01
        point = call + rng.random() * 0.05
        free[p] = point + rng.random() * 0.05
        timed.append((point, call, free[p], p))
    for _, call, ret, p in sorted(timed):
        roll, amount = rng.random(), rng.randint(1, 3)
        if roll < 0.4:
            ops.lookup(p, stock, call, ret)
        elif roll < 0.8 and amount <= stock:
            stock -= amount
            ops.buy(p, amount, call, ret)
        elif roll < 0.8:
            ops.buy(p, amount, call, ret, status="fail", error="OutOfStock")
        else:
            stock += amount
            ops.restock(p, amount, call, ret)
    return ops


def test_a_long_concurrent_history_decides_within_its_budget() -> None:
    ops = concurrent(2000)
    result = check_item(50, ops.ops, max_steps=200_000)
    assert (result.verdict, result.ops) == ("ok", 2000)
    lookups = [i for i, op in enumerate(ops.ops) if op.f == "lookup" and i > 1000]
    ops.ops[lookups[0]] = replace(ops.ops[lookups[0]], result=999)
    # refuting takes more: every order of the first thousand operations must fail
    bad = check_item(50, ops.ops)
    assert (bad.verdict, bad.stuck) == ("bad", ops.ops[lookups[0]])


def test_check_history_partitions_by_item_and_needs_initial_stock() -> None:
    stale = Ops().buy(0, 2, 0, 1).lookup(1, 5, 2, 3).ops
    fine = [replace(op, item=2) for op in Ops().buy(0, 1, 0, 1).lookup(1, 4, 2, 3).ops]
    lost = [replace(op, item=3) for op in fine]
    results = check_history({1: 5, 2: 5}, [*stale, *fine, *lost])
    assert [(r.item, r.verdict) for r in results] == [(1, "bad"), (2, "ok"), (3, "unknown")]


def simulate(initial: int, actions: list[tuple[str, int]]) -> Ops:
    """A sequential history the model itself produces."""
    ops, stock = Ops(), initial
    for n, (f, amount) in enumerate(actions):
        t = 2.0 * n
        if f == "lookup":
            ops.lookup(n % 3, stock, t, t + 1)
        elif f == "buy" and amount <= stock:
            stock -= amount
            ops.buy(n % 3, amount, t, t + 1)
        elif f == "buy":
            ops.buy(n % 3, amount, t, t + 1, status="fail", error="OutOfStock")
        else:
            stock += amount
            ops.restock(n % 3, amount, t, t + 1)
    return ops


ACTIONS = st.lists(st.tuples(st.sampled_from(["lookup", "buy", "restock"]),
                             st.integers(1, 4)), min_size=1, max_size=40)


@settings(max_examples=60, deadline=None)
@given(initial=st.integers(0, 10), actions=ACTIONS)
def test_simulated_sequential_histories_are_linearizable(initial: int,
                                                         actions: list[tuple[str, int]]) -> None:
    assert verdict(initial, simulate(initial, actions)) == "ok"


@settings(max_examples=60, deadline=None)
@given(initial=st.integers(0, 10), actions=ACTIONS, which=st.integers(0), delta=st.integers(1, 5))
def test_a_mutated_lookup_makes_a_sequential_history_bad(
        initial: int, actions: list[tuple[str, int]], which: int, delta: int) -> None:
    ops = simulate(initial, [*actions, ("lookup", 0)])
    lookups = [i for i, op in enumerate(ops.ops) if op.f == "lookup"]
    i = lookups[which % len(lookups)]
    ops.ops[i] = replace(ops.ops[i], result=ops.ops[i].result + delta)  # type: ignore[operator]
    assert verdict(initial, ops) == "bad"


# final-state checks ---------------------------------------------------------------------

def shop() -> Ops:
    """Two acknowledged buys and a restock from stock 10: 10 - 2 - 3 + 4 = 9."""
    return Ops().buy(0, 2, 0, 1).buy(1, 3, 0.5, 1.5).restock(2, 4, 2, 3).lookup(0, 9, 4, 5)


def final(ops: Ops, *, stock: int = 9, orders: list[dict[str, object]] | None = None,
          replicas: int = 2) -> FinalState:
    orders = ops.orders() if orders is None else orders
    return FinalState(initial={ITEM: 10},
                      catalog={f"catalog-{n}": {ITEM: stock} for n in range(replicas)},
                      orders={f"order-{n}": [dict(o) for o in orders] for n in range(replicas)})


def test_a_correct_run_passes_every_check() -> None:
    ops = shop()
    results = check_all(ops.ops, final(ops))
    assert [(r.name, r.verdict) for r in results] == [
        ("linearizable", "pass"), ("replicas_agree", "pass"), ("stock_never_negative", "pass"),
        ("conservation", "pass"), ("acknowledged_orders", "pass"),
        ("no_phantom_orders", "pass"), ("idempotent_replays", "pass")]
    assert results[0].counts["ops_checked"] == 4 and results[0].counts["steps"] > 0
    assert report.exit_code(results) == 0


def test_replicas_that_disagree_fail() -> None:
    ops = shop()
    state = final(ops)
    state.catalog["catalog-1"][ITEM] = 8
    state.orders["order-1"].pop()
    result = replicas_agree(ops.ops, state)
    assert result.verdict == "fail" and len(result.problems) == 2


def test_a_lost_write_fails_conservation() -> None:
    ops = shop()
    result = conservation(ops.ops, final(ops, stock=11))
    assert result.verdict == "fail"
    assert "off by 2" in result.problems[0]


def test_a_doubled_buy_fails_conservation_and_no_phantom_orders() -> None:
    ops = shop()
    orders = ops.orders()
    doubled = [*orders, {**orders[0], "id": 999}]
    state = final(ops, stock=7, orders=doubled)
    assert conservation(ops.ops, state).verdict == "pass"  # the units are all accounted for
    phantom = no_phantom_orders(ops.ops, state)
    assert phantom.verdict == "fail"
    assert any("has orders" in p for p in phantom.problems)
    assert acknowledged_orders(ops.ops, state).verdict == "pass"
    # stock decremented twice for one order: conservation is off
    assert conservation(ops.ops, final(ops, stock=7)).verdict == "fail"


def test_a_restock_of_unknown_outcome_makes_conservation_unknown_not_pass() -> None:
    ops = Ops().buy(0, 2, 0, 1).restock(1, 4, 2, 3, status="info")
    took_effect = conservation(ops.ops, final(ops, stock=12))
    assert took_effect.verdict == "unknown" and "unknown restocks" in took_effect.summary
    assert conservation(ops.ops, final(ops, stock=8)).verdict == "unknown"
    assert conservation(ops.ops, final(ops, stock=10)).verdict == "fail"


def test_a_missing_acknowledged_order_fails() -> None:
    ops = shop()
    state = final(ops)
    state.orders["order-1"].pop(0)
    result = acknowledged_orders(ops.ops, state)
    assert result.verdict == "fail"
    assert "order replica order-1" in result.problems[0] and "0 times" in result.problems[0]


def test_phantom_orders_fail() -> None:
    ops = shop()
    unknown = {"id": 7, "request_id": "nobody", "item": ITEM, "qty": 1}
    assert no_phantom_orders(ops.ops, final(ops, orders=[*ops.orders(), unknown])).verdict \
        == "fail"
    refused = Ops().buy(0, 2, 0, 1, status="fail", error="OutOfStock", request_id="r-x")
    order = {"id": 8, "request_id": "r-x", "item": ITEM, "qty": 2}
    result = no_phantom_orders(refused.ops, final(refused, orders=[order]))
    assert result.verdict == "fail" and "definitely failed" in result.problems[0]
    other_qty = [{**ops.orders()[0], "qty": 5}, *ops.orders()[1:]]
    assert no_phantom_orders(ops.ops, final(ops, orders=other_qty)).verdict == "fail"


def test_negative_stock_fails() -> None:
    ops = Ops().lookup(0, -1, 0, 1)
    assert stock_never_negative(ops.ops, final(ops, stock=-2)).counts == {"lookups": 1}
    assert len(stock_never_negative(ops.ops, final(ops, stock=-2)).problems) == 3


def test_replays_must_answer_as_the_original() -> None:
    history = History(clock=iter(range(100)).__next__)
    buy = history.invoke(0, "buy", ITEM, 2, request_id="r-1")
    history.complete(buy, "ok", order_id=5)
    history.replay(buy, "ok", order_id=5)
    assert idempotent_replays(operations(history.events()), final(Ops())).verdict == "pass"
    history.replay(buy, "ok", order_id=6)
    history.replay(buy, "fail", error="OutOfStock")
    result = idempotent_replays(operations(history.events()), final(Ops()))
    assert result.verdict == "fail" and len(result.problems) == 2


# report -----------------------------------------------------------------------------------

def test_the_report_shows_each_verdict_and_the_exit_code_follows_the_worst() -> None:
    results = [CheckResult("linearizable", "pass", "every item's history is linearizable"),
               CheckResult("conservation", "unknown", "undecided: a restock"),
               CheckResult("no_phantom_orders", "fail", "5 problem(s)",
                           [f"phantom order {n}" for n in range(5)])]
    out = io.StringIO()
    Console(file=out, width=100, color_system=None).print(
        report.render(results, title="run 1", stats={"operations": 12345, "nemesis": "kill"}))
    text = out.getvalue()
    for expected in ("run 1", "PASS", "UNKNOWN", "FAIL", "phantom order 2", "2 more", "12,345",
                     "overall: FAIL"):
        assert expected in text, expected
    assert "phantom order 3" not in text
    assert report.exit_code(results) == 1
    assert report.exit_code(results[:2]) == 2
    assert report.exit_code(results[:1]) == 0
