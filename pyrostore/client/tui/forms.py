"""What the terminal client's forms accept: typed text in, the store's arguments out.

Pure functions: each returns the arguments of one store call, or raises
:class:`~pyrostore.errors.InvalidRequest` whose message says, in plain words, what to type
instead. A dialog shows that message and stays open; nothing reaches the store.
"""

from __future__ import annotations

import math
from typing import Any

from pyrostore.errors import InvalidRequest


def whole_number(text: str, what: str, *, minimum: int | None = None) -> int:
    """``text`` as a whole number (``what`` names it in the message), at least ``minimum``."""
    text = text.strip()
    if not text:
        raise InvalidRequest(f"Type the {what}.")
    try:
        number = int(text)
    except ValueError:
        raise InvalidRequest(f"The {what} must be a whole number, not {text!r}.") from None
    if minimum is not None and number < minimum:
        raise InvalidRequest(f"The {what} must be at least {minimum}.")
    return number


def amount(text: str, what: str) -> float:
    """``text`` as an amount of money, zero or more."""
    text = text.strip()
    if not text:
        raise InvalidRequest(f"Type the {what}.")
    try:
        value = float(text.removeprefix("$"))
    except ValueError:
        raise InvalidRequest(f"The {what} must be a number, not {text!r}.") from None
    if not math.isfinite(value) or value < 0:
        raise InvalidRequest(f"The {what} must be zero or more.")
    return value


def quantity(text: str) -> int:
    """How many copies to buy: one or more."""
    return whole_number(text, "number of copies", minimum=1)


def update_request(item: str, delta: str, cost: str) -> dict[str, Any]:
    """``Client.update``'s arguments: the item, and a stock change, a new cost or both."""
    if not delta.strip() and not cost.strip():
        raise InvalidRequest("Type a stock change (+ or -), a new cost, or both.")
    return {"item": whole_number(item, "item number", minimum=1),
            "stock_delta": whole_number(delta, "stock change") if delta.strip() else None,
            "cost": amount(cost, "new cost") if cost.strip() else None}


def new_book(title: str, topic: str, stock: str, cost: str) -> dict[str, Any]:
    """``Client.add_book``'s arguments: a title, a topic, the stock and the cost."""
    for text, what in ((title, "title"), (topic, "topic")):
        if not text.strip():
            raise InvalidRequest(f"Type the new book's {what}.")
    return {"title": title.strip(), "topic": topic.strip(),
            "stock": whole_number(stock, "stock", minimum=0), "cost": amount(cost, "cost")}
