"""Book and Order, their plain-dict wire form, and the checks every input passes first.

Only plain values cross the wire (STYLE.md, habit 4): services convert with ``to_wire`` /
``from_wire`` at the edge. The ``check_*`` functions turn anything a caller might send (wrong
types, negative or huge numbers, empty strings) into an :class:`InvalidRequest` before any
state is touched.
"""

from __future__ import annotations

import dataclasses
import math
import uuid
from typing import Any

from pyrostore.errors import InvalidRequest

MAX_QUANTITY = 1_000_000
"""Largest quantity one buy or one stock change may name."""
MAX_STOCK = 1_000_000_000
"""Largest stock a book may hold."""
MAX_COST = 1_000_000.0
"""Largest price of one copy."""
MAX_TEXT = 200
"""Longest title or topic, in characters."""
MAX_PAGE = 1000
"""Largest page a search returns."""


@dataclasses.dataclass(frozen=True)
class Book:
    """One title in the catalog. ``version`` is the sequence number of its last change."""

    item: int
    title: str
    topic: str
    stock: int
    cost: float
    version: int = 0

    def to_wire(self) -> dict[str, Any]:
        """The plain dict that crosses Pyro5."""
        return dataclasses.asdict(self)

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> Book:
        """Rebuild a Book from :meth:`to_wire`'s dict."""
        return cls(**{f.name: data[f.name] for f in dataclasses.fields(cls) if f.name in data})


@dataclasses.dataclass(frozen=True)
class Order:
    """One acknowledged purchase, as the order log keeps it."""

    order_id: int
    item: int
    title: str
    qty: int
    unit_cost: float
    total: float
    request_id: str
    created_at: float
    customer: str = ""
    """The name on the certificate of the shopper who bought it (empty: an operator's or
    an insecure store's order)."""

    def to_wire(self) -> dict[str, Any]:
        """The plain dict that crosses Pyro5."""
        return dataclasses.asdict(self)

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> Order:
        """Rebuild an Order from :meth:`to_wire`'s dict."""
        return cls(**{f.name: data[f.name] for f in dataclasses.fields(cls) if f.name in data})


@dataclasses.dataclass(frozen=True)
class View:
    """Who serves a replica group: decided by the coordinator alone, one epoch at a time."""

    epoch: int = 0
    primary: int | None = None
    backups: tuple[int, ...] = ()
    incarnations: dict[int, str] = dataclasses.field(default_factory=dict, compare=False)
    """The process (incarnation) of each member that the view was made with: a member that has
    restarted since is not the member the view names (it must lead or join anew)."""

    @property
    def members(self) -> tuple[int, ...]:
        """The primary (if any) and the backups."""
        return self.backups if self.primary is None else (self.primary, *self.backups)

    def role_of(self, replica_id: int, incarnation: str | None = None) -> str:
        """``primary``, ``backup`` or ``joining`` (outside the view). With ``incarnation``, a
        member whose process is not the one the view was made with is ``joining`` too."""
        if replica_id not in self.members:
            return "joining"
        known = self.incarnations.get(replica_id, "")
        if incarnation is not None and known and known != incarnation:
            return "joining"
        return "primary" if replica_id == self.primary else "backup"

    def to_wire(self, uris: dict[int, str] | None = None) -> dict[str, Any]:
        """The plain dict that crosses Pyro5, with the members' URIs if known."""
        wire: dict[str, Any] = {"epoch": self.epoch, "primary": self.primary,
                                "backups": list(self.backups),
                                "incarnations": {str(i): c for i, c in self.incarnations.items()}}
        if uris is not None:
            wire["uris"] = {str(i): uris[i] for i in self.members if i in uris}
        return wire

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> View:
        """Rebuild a View from :meth:`to_wire`'s dict (URIs are read with :func:`view_uris`)."""
        return cls(int(data["epoch"]), data["primary"], tuple(data["backups"]),
                   {int(i): str(c) for i, c in data.get("incarnations", {}).items()})


def view_uris(data: dict[str, Any]) -> dict[int, str]:
    """``{replica id: uri}`` of a wire view."""
    return {int(i): uri for i, uri in data.get("uris", {}).items()}


TOPICS_KEY = "topics"
"""The read key of the list of topics."""


def item_key(item: int) -> str:
    """The read key of one book: what a write to it changes and caches invalidate."""
    return f"item:{item}"


def topic_key(topic: str) -> str:
    """The read key of a topic's search (topics match in any case)."""
    return f"topic:{topic.lower()}"


def order_key(order_id: int) -> str:
    """The read key of one order."""
    return f"order:{order_id}"


ORDERS_KEY = "orders"
"""The read key of the order log."""


def check_int(value: Any, name: str, *, low: int, high: int) -> int:
    """``value`` as an int in ``[low, high]``; bools and floats are refused."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRequest(f"{name} must be an integer, not {type(value).__name__}", field=name)
    if not low <= value <= high:
        raise InvalidRequest(f"{name} must be between {low} and {high}, not {value}", field=name)
    return value


def check_item(value: Any) -> int:
    """A book's item number: a positive integer."""
    return check_int(value, "item", low=1, high=2**62)


def check_quantity(value: Any) -> int:
    """How many copies one buy takes: 1..MAX_QUANTITY."""
    return check_int(value, "qty", low=1, high=MAX_QUANTITY)


def check_stock_delta(value: Any) -> int:
    """A stock change: a non-zero integer, at most MAX_QUANTITY either way."""
    delta = check_int(value, "stock_delta", low=-MAX_QUANTITY, high=MAX_QUANTITY)
    if delta == 0:
        raise InvalidRequest("stock_delta must not be 0", field="stock_delta")
    return delta


def check_stock(value: Any) -> int:
    """A book's whole stock: 0..MAX_STOCK."""
    return check_int(value, "stock", low=0, high=MAX_STOCK)


def check_cost(value: Any) -> float:
    """A price: a finite number in [0, MAX_COST], kept to the cent."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidRequest(f"cost must be a number, not {type(value).__name__}", field="cost")
    if not 0 <= value <= MAX_COST or not math.isfinite(value):
        raise InvalidRequest(f"cost must be between 0 and {MAX_COST:g}, not {value}", field="cost")
    return round(float(value), 2)


def check_text(value: Any, name: str) -> str:
    """A title or topic: a non-empty string of at most MAX_TEXT printable characters (no
    control characters: no escape sequence or NUL ever reaches a terminal), trimmed."""
    if not isinstance(value, str):
        raise InvalidRequest(f"{name} must be a string, not {type(value).__name__}", field=name)
    text = value.strip()
    if not text or len(text) > MAX_TEXT:
        raise InvalidRequest(f"{name} must have 1 to {MAX_TEXT} characters", field=name)
    if not text.isprintable():
        raise InvalidRequest(f"{name} must not contain control characters", field=name)
    return text


def check_customer(value: Any) -> str:
    """A shopper's name as its certificate gives it (empty: no shopper): 0..64 printable
    characters."""
    if not isinstance(value, str) or len(value) > 64 or not value.isprintable():
        raise InvalidRequest("customer must be a string of at most 64 printable characters",
                             field="customer")
    return value


def check_request_id(value: Any) -> str:
    """A client-made request id (a UUID in practice): 1..64 printable characters."""
    if not isinstance(value, str) or not 0 < len(value) <= 64 or not value.isprintable():
        raise InvalidRequest(
            "request_id must be a string of 1 to 64 printable characters", field="request_id"
        )
    return value


def request_id_or_new(value: Any) -> str:
    """The caller's request id, checked, or a fresh UUID for a caller that gave none."""
    return uuid.uuid4().hex if value is None else check_request_id(value)


def check_page(limit: Any, offset: Any) -> tuple[int, int]:
    """A search page: ``limit`` in 1..MAX_PAGE, ``offset`` >= 0."""
    return (
        check_int(limit, "limit", low=1, high=MAX_PAGE),
        check_int(offset, "offset", low=0, high=2**62),
    )
