"""The original Flask/HTTP store's figures (its report, 2020), to print beside ours.

Means in milliseconds, as its tables give them; ``None`` where it gives none (a query never
reaches the order service). Its hit and miss were logged by the frontend.
"""

from __future__ import annotations

TIERS = ("client", "frontend", "catalog", "order")

TABLES: dict[tuple[bool, int], dict[str, tuple[float | None, ...]]] = {
    (True, 1): {"search": (67.2, 15.9, 2.9, None), "lookup": (90.1, 38.8, 1.8, None),
                "buy": (396.5, 346.0, 2.5, 278.2)},
    (False, 1): {"search": (110.2, 55.3, 2.6, None), "lookup": (100.8, 52.1, 1.96, None),
                 "buy": (373.9, 321.0, 2.61, 255.7)},
    (True, 5): {"search": (92.9, 22.4, 3.0, None), "lookup": (103.3, 44.6, 2.19, None),
                "buy": (400.8, 341.0, 2.9, 271.3)},
    (False, 5): {"search": (103.4, 59.9, 3.6, None), "lookup": (120.3, 60.9, 2.2, None),
                 "buy": (404.1, 325.0, 2.6, 260.4)},
    (True, 10): {"search": (70.7, 14.5, 4.2, None), "lookup": (99.6, 46.1, 2.29, None),
                 "buy": (463.3, 374.0, 3.1, 301.2)},
    (False, 10): {"search": (118.3, 66.2, 4.4, None), "lookup": (129.1, 67.4, 2.5, None),
                  "buy": (437.0, 360.0, 3.2, 288.3)},
}
"""``(cache, clients) -> {op: (client, frontend, catalog, order)}``, mean ms."""

HIT_MS = 1.9
MISS_MS = 9.04
CRASH_FINAL_STOCK = 1
CRASH_BUYS = 9


def original_mean(cache: bool, clients: int, op: str, tier: str) -> float | None:
    """The original report's mean for that cell, or None if it has none."""
    row = TABLES.get((cache, clients), {}).get(op)
    return None if row is None else row[TIERS.index(tier)]
