"""How long the store stopped answering during each nemesis: the longest stretch, from the
fault until the next one began, in which no client saw an operation of a kind succeed.

A pure function of the history's completions and the nemesis log, so that its arithmetic is
tested on its own; :mod:`verifier.run` feeds it the real ones.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterable, Mapping, Sequence
from typing import Any


def longest_gap(stamps: Sequence[float], start: float, end: float) -> float:
    """The longest time within ``[start, end]`` with none of the sorted ``stamps``."""
    if end <= start:
        return 0.0
    inside = stamps[bisect.bisect_left(stamps, start):bisect.bisect_right(stamps, end)]
    points = [start, *inside, end]
    return max(b - a for a, b in itertools.pairwise(points))


def outages(episodes: Sequence[Mapping[str, Any]], successes: Mapping[str, Iterable[float]],
            *, end: float) -> dict[str, dict[str, float]]:
    """``{kind: {f: seconds}}``: for each nemesis kind, the longest gap in successful
    operations ``f`` (``successes[f]``: their completion times) over its episodes, each
    from the episode's start until the next episode's (or ``end``)."""
    ordered = sorted(episodes, key=lambda e: e["start"])
    stamps = {f: sorted(times) for f, times in successes.items()}
    worst: dict[str, dict[str, float]] = {}
    for n, episode in enumerate(ordered):
        until = ordered[n + 1]["start"] if n + 1 < len(ordered) else end
        kind = worst.setdefault(episode["kind"], {f: 0.0 for f in stamps})
        for f, times in stamps.items():
            kind[f] = max(kind[f], longest_gap(times, episode["start"], until))
    return worst
