"""What the runner reads from every replica once the cluster has healed and settled, and the
verdict of one check on it.

In JSON (``to_json``/``from_json``) item numbers are object keys, hence strings; they become
ints again on the way in.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

VERDICTS = ("pass", "fail", "unknown")


@dataclass(frozen=True)
class FinalState:
    """``initial``: item -> stock at the start; ``catalog``: catalog replica name -> item ->
    stock at the end; ``orders``: order replica name -> its orders, each a dict with ``id``,
    ``request_id``, ``item`` and ``qty``."""

    initial: dict[int, int]
    catalog: dict[str, dict[int, int]]
    orders: dict[str, list[dict[str, Any]]]

    def to_json(self) -> dict[str, Any]:
        """A plain dict that :meth:`from_json` turns back into this state."""
        return {"initial": {str(k): v for k, v in self.initial.items()},
                "catalog": {name: {str(k): v for k, v in stock.items()}
                            for name, stock in self.catalog.items()},
                "orders": {name: [dict(order) for order in orders]
                           for name, orders in self.orders.items()}}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> FinalState:
        """Rebuild a state from :meth:`to_json`'s dict (item keys may be strings)."""
        return cls(initial={int(k): int(v) for k, v in data["initial"].items()},
                   catalog={name: {int(k): int(v) for k, v in stock.items()}
                            for name, stock in data["catalog"].items()},
                   orders={name: [dict(order) for order in orders]
                           for name, orders in data["orders"].items()})


@dataclass(frozen=True)
class CheckResult:
    """One check's verdict (``pass``, ``fail`` or ``unknown``), a one-line summary, what
    went wrong (one line per problem, most telling first) and a few counts."""

    name: str
    verdict: str
    summary: str
    problems: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, not {self.verdict!r}")


def order_key(order: Mapping[str, Any]) -> tuple[Any, Any, Any, Any]:
    """What identifies an order across replicas: (id, request_id, item, qty)."""
    return order.get("id"), order.get("request_id"), order.get("item"), order.get("qty")
