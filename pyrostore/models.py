"""Book and Order, their plain-dict wire form, and the checks every input passes first.

Only plain values cross the wire: services convert with ``to_wire`` / ``from_wire`` at the
edge. The ``check_*`` functions turn anything a caller might send (wrong types, negative or
huge numbers, empty strings) into an :class:`InvalidRequest` before any state is touched.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import os
import re
import time
from collections.abc import Callable, Mapping
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
MAX_POSITION = 2**62
"""Largest epoch, sequence number or id a message may name (far beyond any real one)."""
MAX_REPLICA = 9999
"""Largest replica id."""
MAX_TIME = 1e11
"""Latest time (seconds since 1970, about the year 5138) a message may name."""
MAX_TOKEN = 64
"""Longest request id, incarnation or shopper name, in characters."""


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


SERVICE_PREFIX = "pyrostore."
"""What every service's name in the name server (and its Pyro5 object id) begins with."""


def service_name(role: str, replica_id: int) -> str:
    """The name a service registers under: ``pyrostore.<role>.<id>``."""
    return f"{SERVICE_PREFIX}{role}.{replica_id}"


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
OUTBOX_KEY = "outbox"
"""The read key of the catalog's open takes (every take and every settlement changes it).
Never cached: it orders the outbox's readers after the writes in flight."""
CACHE_KEY_PREFIXES = ("item:", "topic:", TOPICS_KEY)
"""The read keys that a frontend's cache holds (only these are sent to it)."""


def check_int(value: Any, name: str, *, low: int, high: int) -> int:
    """``value`` as an int in ``[low, high]``; bools and floats are refused."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRequest(f"{name} must be an integer, not {type(value).__name__}", field=name)
    if not low <= value <= high:
        raise InvalidRequest(f"{name} must be between {low} and {high}, not {value}", field=name)
    return value


def check_count(value: Any, name: str) -> int:
    """An epoch, sequence number or position: 0..MAX_POSITION."""
    return check_int(value, name, low=0, high=MAX_POSITION)


def check_replica_id(value: Any) -> int:
    """A replica id: 1..MAX_REPLICA."""
    return check_int(value, "replica", low=1, high=MAX_REPLICA)


def check_time(value: Any, name: str) -> float:
    """A wall-clock time (seconds since 1970): a finite number in [0, MAX_TIME]."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidRequest(f"{name} must be a number, not {type(value).__name__}", field=name)
    if not 0 <= value <= MAX_TIME or not math.isfinite(value):
        raise InvalidRequest(f"{name} must be a time between 0 and {MAX_TIME:g}", field=name)
    return float(value)


def check_item(value: Any) -> int:
    """A book's item number: a positive integer."""
    return check_int(value, "item", low=1, high=MAX_POSITION)


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


def check_token(value: Any, name: str, *, empty: bool = False) -> str:
    """An opaque name (request id, incarnation, shopper): at most MAX_TOKEN printable
    characters, taken as it is (not trimmed); empty only if ``empty``."""
    if (not isinstance(value, str) or len(value) > MAX_TOKEN or not value.isprintable()
            or not (value or empty)):
        low = 0 if empty else 1
        raise InvalidRequest(f"{name} must be a string of {low} to {MAX_TOKEN} printable "
                             "characters", field=name)
    return value


def check_customer(value: Any) -> str:
    """A shopper's name as its certificate gives it (empty: no shopper): 0..64 printable
    characters."""
    return check_token(value, "customer", empty=True)


_REQUEST_ID = re.compile(r"[0-9a-f]{12}7[0-9a-f]{3}[89ab][0-9a-f]{15}")


def new_request_id(now: float | None = None) -> str:
    """A fresh request id: a UUIDv7 (RFC 9562) as 32 hex digits, whose first 48 bits are its
    creation time in milliseconds (so ids sort by age and say when they were made), then the
    version, the variant and 74 random bits."""
    millis = int((time.time() if now is None else now) * 1000)
    random = int.from_bytes(os.urandom(10), "big")
    value = (millis & (2**48 - 1)) << 80 | 0x7 << 76 | (random >> 68) << 64 | 0b10 << 62 \
        | (random & (2**62 - 1))
    return f"{value:032x}"


def request_time(request_id: str) -> float | None:
    """When a request id (as :func:`check_request_id` returns it) was made, in seconds since
    1970; ``None`` for an id of another form (a file written before ids carried their time)."""
    if _REQUEST_ID.fullmatch(request_id) is None:
        return None
    return int(request_id[:12], 16) / 1000


def check_request_id(value: Any) -> str:
    """A request id as :func:`new_request_id` makes it: a UUIDv7, as 32 hex digits or in the
    8-4-4-4-12 form, either case; returned as 32 lowercase hex digits. It must carry its
    creation time, for the store keeps ids only for ``request_retention``
    (:class:`Retention`)."""
    if isinstance(value, str) and len(value) <= 36:
        text = value.replace("-", "").lower() if len(value) == 36 else value.lower()
        if _REQUEST_ID.fullmatch(text) and (len(value) == 32 or _is_dashed(value)):
            return text
    raise InvalidRequest("request_id must be a UUIDv7 (32 hex digits, or 8-4-4-4-12), as "
                         "pyrostore's clients make; a request id carries its creation time",
                         field="request_id")


def _is_dashed(value: str) -> bool:
    return [len(part) for part in value.split("-")] == [8, 4, 4, 4, 12]


def request_id_or_new(value: Any) -> str:
    """The caller's request id, checked, or a fresh one for a caller that gave none."""
    return new_request_id() if value is None else check_request_id(value)


@dataclasses.dataclass(frozen=True)
class Retention:
    """How long the store remembers request ids: ``keep`` seconds (``request_retention``),
    while the machines' clocks differ by at most ``skew`` seconds (``clock_skew``).

    An id older than ``keep`` that a replica does not remember is refused
    (:meth:`expired_by`); a replica forgets an id only once it is older than ``keep + skew``
    (:meth:`forgettable`), when every replica, whatever its clock, refuses it as new. So no id
    is ever applied twice: while any replica would take it as new, every replica remembers it.
    """

    keep: float
    skew: float

    def expired_by(self, request_id: str, now: float) -> float | None:
        """How many seconds past ``keep`` ``request_id`` is at ``now``; ``None`` while it is
        younger (and for an id without a time: only older files hold those)."""
        made = request_time(request_id)
        if made is None or now - made <= self.keep:
            return None
        return now - made - self.keep

    def forgettable(self, request_id: str, now: float) -> bool:
        """Whether every replica may have forgotten ``request_id`` at ``now``."""
        made = request_time(request_id)
        return made is not None and now - made > self.keep + self.skew

    def oldest_kept(self, now: float) -> str:
        """The 12-hex-digit time prefix below which ids are forgettable at ``now`` (ids sort by
        their time)."""
        return new_request_id(now - self.keep - self.skew)[:12]


def check_page(limit: Any, offset: Any) -> tuple[int, int]:
    """A search page: ``limit`` in 1..MAX_PAGE, ``offset`` >= 0."""
    return (
        check_int(limit, "limit", low=1, high=MAX_PAGE),
        check_int(offset, "offset", low=0, high=MAX_POSITION),
    )


# --- messages between the store's own services -------------------------------------------

MAX_STORED_TEXT = 4096
"""Longest text a snapshot's row may carry (older data was checked less strictly)."""
MAX_STORED_JSON = 256 * 1024
"""Longest operation or result (as JSON text) a snapshot's request row may carry: a
settlement of the outbox names up to a thousand request ids."""
_URI = re.compile(r"PYRO:(?P<object>[A-Za-z0-9_.-]{1,100})@(?:\[[0-9A-Fa-f:.]{2,45}\]"
                  r"|[A-Za-z0-9_.-]{1,100}):(?P<port>[0-9]{1,5})")
_READ_KEY = re.compile(r"(?:topics|orders|outbox|(?:item|order):[1-9][0-9]{0,18}"
                       r"|topic:(?P<topic>.+))", re.DOTALL)


def check_fields(data: Any, what: str, names: tuple[str, ...]) -> dict[str, Any]:
    """``data`` as a dict holding exactly ``names``: a named message checked at the edge."""
    if not isinstance(data, dict):
        raise InvalidRequest(f"a {what} must be a dict, not {type(data).__name__}")
    missing = [n for n in names if n not in data]
    extra = sorted(repr(k)[:40] for k in data if k not in names)
    if missing or extra:
        raise InvalidRequest(f"a {what} needs {', '.join(names)}"
                             + (f"; missing {', '.join(missing)}" if missing else "")
                             + (f"; unknown {', '.join(extra[:5])}" if extra else ""))
    return dict(data)


def check_record(data: Any, what: str,
                 checks: Mapping[str, Callable[[Any], Any]]) -> dict[str, Any]:
    """``data`` as a dict holding exactly the fields of ``checks``, each passing its check;
    returned as it came."""
    fields = check_fields(data, what, tuple(checks))
    for name, check in checks.items():
        check(fields[name])
    return fields


def check_uri(value: Any, name: str = "uri", *, object_name: str | None = None) -> str:
    """A store service's Pyro5 URI, ``PYRO:<object>@<host>:<port>`` (of ``object_name``, if
    given): what a peer may be told to call back."""
    if not isinstance(value, str) or len(value) > MAX_TEXT:
        raise InvalidRequest(f"{name} must be a string of at most {MAX_TEXT} characters",
                             field=name)
    match = _URI.fullmatch(value)
    if match is None or not 0 < int(match["port"]) < 65536:
        raise InvalidRequest(f"{name} must be a URI PYRO:<object>@<host>:<port>", field=name)
    if object_name is not None and match["object"] != object_name:
        raise InvalidRequest(f"{name} must be the URI of {object_name}", field=name)
    return value


def check_read_key(value: Any) -> str:
    """A read key as :func:`item_key`, :func:`topic_key`, :data:`TOPICS_KEY`,
    :func:`order_key`, :data:`ORDERS_KEY` or :data:`OUTBOX_KEY` make them."""
    match = _READ_KEY.fullmatch(value) if isinstance(value, str) else None
    topic = match["topic"] if match is not None else None
    if match is None or (topic is not None and (len(topic) > 3 * MAX_TEXT or not topic.isprintable()
                                                or topic != topic.strip().lower())):
        raise InvalidRequest(f"{str(value)[:40]!r} is not a read key", field="keys")
    return value


def check_version(value: Any) -> tuple[int, int]:
    """A cache version ``[epoch, seq]``."""
    if not isinstance(value, list | tuple) or len(value) != 2:
        raise InvalidRequest("a version is [epoch, seq]", field="version")
    return check_count(value[0], "epoch"), check_count(value[1], "seq")


def check_stored_text(value: Any, name: str, limit: int = MAX_STORED_TEXT) -> str:
    """Text as a database holds it: a string of at most ``limit`` characters (what it shows
    is sanitized where it is shown)."""
    if not isinstance(value, str) or len(value) > limit:
        raise InvalidRequest(f"{name} must be a string of at most {limit} characters",
                             field=name)
    return value


def check_op(op: Any, kinds: Mapping[str, Callable[..., dict[str, Any]]]) -> dict[str, Any]:
    """A forwarded operation, checked by the very function that builds it from a caller's
    arguments (``kinds``: operation name -> builder): it must name one of them, hold exactly
    the builder's arguments, and be what the builder makes of them."""
    kind = op.get("op") if isinstance(op, dict) else None
    if not isinstance(kind, str) or kind not in kinds:
        raise InvalidRequest(f"an operation is a dict whose op is one of {', '.join(kinds)}",
                             field="op")
    build = kinds[kind]
    fields = check_fields(op, f"{kind} operation",
                          ("op", *inspect.signature(build).parameters))
    del fields["op"]
    if build(**fields) != op:
        raise InvalidRequest(f"a {kind} operation must be in the form the store makes",
                             field="op")
    return op
