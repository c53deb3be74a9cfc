"""The checks of a run: the final state of every replica against the history's operations,
plus linearizability folded into one :class:`CheckResult`. Each check is a pure function
``(operations, final) -> CheckResult``; :func:`check_all` runs them all.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from typing import Any

from verifier.final import CheckResult, FinalState, order_key
from verifier.history import Operation
from verifier.linearizability import DEFAULT_MAX_STEPS, ItemResult, check_history

__all__ = ["CHECKS", "CheckResult", "FinalState", "acknowledged_orders", "check_all",
           "conservation", "idempotent_replays", "linearizable", "no_phantom_orders",
           "replicas_agree", "stock_never_negative"]

Ops = Sequence[Operation]


def _result(name: str, problems: list[str], counts: dict[str, int], what: str, *,
            unknown: Sequence[str] = ()) -> CheckResult:
    """Fail if there are problems, else unknown if anything is undecided, else pass (the
    summary then says ``what`` holds)."""
    if problems:
        undecided = f", {len(unknown)} undecided" if unknown else ""
        return CheckResult(name, "fail", f"{len(problems)} problem(s){undecided}",
                           problems + list(unknown), counts)
    if unknown:
        return CheckResult(name, "unknown", f"undecided: {unknown[0]}", list(unknown), counts)
    return CheckResult(name, "pass", what, [], counts)


def replicas_agree(ops: Ops, final: FinalState) -> CheckResult:
    """Every catalog replica holds the same stock per item; every order replica the same
    set of orders (by id, request id, item and qty)."""
    problems = []
    for kind, views in (("catalog", {n: sorted(s.items()) for n, s in final.catalog.items()}),
                        ("orders", {n: sorted(map(order_key, o), key=repr)
                                    for n, o in final.orders.items()})):
        names = sorted(views)
        for name in names[1:]:
            if views[name] != views[names[0]]:
                diff = set(views[name]) ^ set(views[names[0]])
                problems.append(f"{kind} replicas {names[0]} and {name} differ: "
                                f"{sorted(diff, key=repr)[:5]}")
    counts = {"catalog_replicas": len(final.catalog), "order_replicas": len(final.orders)}
    unknown = [] if final.catalog and final.orders else ["no replica state to compare"]
    return _result("replicas_agree", problems, counts, "every replica holds the same state",
                   unknown=unknown)


def stock_never_negative(ops: Ops, final: FinalState) -> CheckResult:
    """No replica ends with a negative stock, and no successful lookup saw one."""
    problems = [f"catalog {name}: item {item} ends at {stock}"
                for name, stocks in sorted(final.catalog.items())
                for item, stock in sorted(stocks.items()) if stock < 0]
    lookups = [op for op in ops if op.f == "lookup" and op.status == "ok"]
    problems += [f"{op.describe()} saw a negative stock" for op in lookups
                 if op.result is not None and op.result < 0]
    return _result("stock_never_negative", problems, {"lookups": len(lookups)},
                   "no negative stock seen or left")


def conservation(ops: Ops, final: FinalState) -> CheckResult:
    """For every item, catalog replica and order replica, exactly: initial + restocks that
    took effect - final stock == units ordered. An item with a restock of unknown outcome is
    ``unknown`` if some subset of those restocks balances it, ``fail`` if none does."""
    restocked: Counter[int] = Counter()
    pending: dict[int, list[int]] = defaultdict(list)
    for op in ops:
        if op.f == "restock" and op.arg is not None:
            if op.status == "ok":
                restocked[op.item] += op.arg
            elif op.status == "info":
                pending[op.item].append(op.arg)
    ordered: dict[str, Counter[Any]] = {name: Counter() for name in final.orders}
    for name, orders in final.orders.items():
        for order in orders:
            ordered[name][order.get("item")] += order.get("qty") or 0
    items = set(final.initial) | {i for s in final.catalog.values() for i in s}
    items |= {i for c in ordered.values() for i in c}
    problems, unknown = [], []
    for item in sorted(items, key=repr):
        if item not in final.initial:
            problems.append(f"item {item}: no initial stock, yet it has stock or orders")
            continue
        for catalog, stocks in sorted(final.catalog.items()):
            if item not in stocks:
                problems.append(f"item {item}: missing from catalog {catalog}")
                continue
            for order_replica, units in sorted(ordered.items()):
                gap = units[item] + stocks[item] - final.initial[item] - restocked[item]
                where = (f"item {item} ({catalog}, {order_replica}): initial "
                         f"{final.initial[item]} + restocked {restocked[item]} - final "
                         f"{stocks[item]} vs {units[item]} units ordered")
                if gap == 0 and not pending[item]:
                    continue
                if gap in _subset_sums(pending[item]):
                    unknown.append(f"{where}: balances only if {gap} of "
                                   f"{sum(pending[item])} units of unknown restocks took effect")
                else:
                    problems.append(f"{where}: off by {gap}")
    counts = {"items": len(items), "ok_restocks": sum(restocked.values())}
    return _result("conservation", problems, counts, "every unit is in stock or in an order",
                   unknown=unknown)


def _subset_sums(amounts: list[int]) -> set[int]:
    sums = {0}
    for amount in amounts:
        sums |= {s + amount for s in sums}
    return sums


def acknowledged_orders(ops: Ops, final: FinalState) -> CheckResult:
    """Every acknowledged buy's order (order id, request id, item, qty) is on every order
    replica exactly once."""
    buys = [op for op in ops if op.f == "buy" and op.status == "ok"]
    problems = []
    for name, orders in sorted(final.orders.items()):
        present = Counter(map(order_key, orders))
        for op in buys:
            times = present[(op.order_id, op.request_id, op.item, op.arg)]
            if times != 1:
                problems.append(f"order replica {name}: the order of {op.describe()} is "
                                f"there {times} times")
    unknown = [] if final.orders else ["no order replica state"]
    return _result("acknowledged_orders", problems, {"acknowledged_buys": len(buys)},
                   "every acknowledged buy has its order everywhere", unknown=unknown)


def no_phantom_orders(ops: Ops, final: FinalState) -> CheckResult:
    """Every order answers some buy invocation (same request id, item and qty); no request
    id has two orders; no order answers a buy that definitely failed."""
    buys = {op.request_id: op for op in ops if op.f == "buy" and op.request_id is not None}
    problems = []
    orders_of: dict[Any, set[Any]] = defaultdict(set)
    for name, orders in sorted(final.orders.items()):
        for order in orders:
            order_id, request_id, item, qty = order_key(order)
            orders_of[request_id].add(order_id)
            op = buys.get(request_id)
            if op is None:
                problems.append(f"order replica {name}: order {order_id} answers no buy "
                                f"(request id {request_id!r})")
            elif (op.item, op.arg) != (item, qty):
                problems.append(f"order replica {name}: order {order_id} is item {item} qty "
                                f"{qty}, but its request asked {op.describe()}")
            elif op.status == "fail":
                problems.append(f"order replica {name}: order {order_id} answers "
                                f"{op.describe()}, which definitely failed")
    problems += [f"request id {request_id!r} has orders {sorted(ids, key=repr)}"
                 for request_id, ids in orders_of.items() if len(ids) > 1]
    return _result("no_phantom_orders", problems, {"orders": len(orders_of)},
                   "every order answers one buy")


def idempotent_replays(ops: Ops, final: FinalState) -> CheckResult:
    """For every request id answered more than once (a replay), the ``ok`` answers agree (same
    value and order id); an ``ok`` followed by a ``fail`` means the replay ran anew."""
    answers: dict[str, list[tuple[Operation, Any]]] = defaultdict(list)
    for op in ops:
        if op.request_id is not None:
            answers[op.request_id] += [(op, outcome) for outcome in op.outcomes]
    problems = []
    replayed = {rid: found for rid, found in answers.items() if len(found) > 1}
    for request_id, found in sorted(replayed.items()):
        oks = {(o.value, o.order_id) for _, o in found if o.status == "ok"}
        if len(oks) > 1:
            problems.append(f"request id {request_id!r}: ok answers differ {sorted(oks, key=repr)}")
        if oks and any(o.status == "fail" for _, o in found):
            problems.append(f"request id {request_id!r}: acknowledged, then refused on replay")
    return _result("idempotent_replays", problems, {"replayed_requests": len(replayed)},
                   "every replay answered as the original")


def linearizable(results: Sequence[ItemResult]) -> CheckResult:
    """Fold the per-item searches: fail if any item is bad, else unknown if any is unknown."""
    counts = {"items": len(results), "ops_checked": sum(r.ops for r in results),
              "steps": sum(r.steps for r in results)}
    problems = [f"item {r.item}: {r.detail}" for r in results if r.verdict == "bad"]
    unknown = [f"item {r.item}: {r.detail}" for r in results if r.verdict == "unknown"]
    return _result("linearizable", problems, counts,
                   "every item's history is linearizable", unknown=unknown)


CHECKS: tuple[Callable[[Ops, FinalState], CheckResult], ...] = (
    replicas_agree, stock_never_negative, conservation, acknowledged_orders,
    no_phantom_orders, idempotent_replays)
"""The checks of the final state, in the order a report lists them."""


def check_all(history_ops: Ops, final: FinalState, *,
              max_steps_per_item: int = DEFAULT_MAX_STEPS) -> list[CheckResult]:
    """Linearizability first, then every check of :data:`CHECKS`."""
    items = check_history(final.initial, history_ops, max_steps_per_item=max_steps_per_item)
    return [linearizable(items), *(check(history_ops, final) for check in CHECKS)]
