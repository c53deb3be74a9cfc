"""Which hosts a partition cuts off, and what must change on the links and filters to get there.

A :class:`Partition` is a plain object: fed ``isolate``/``block``/``heal`` by host name, it
keeps the wanted state and returns the steps that bring the network there: a
:class:`LinkChange` (the host's port on the switch up or down) or a :class:`Ruleset` (the
whole set of sources a host's input filter drops). It runs no command, so a unit test checks
it without root; :mod:`verifier.netns` carries the steps out with ``ip`` and ``nft``.

A block drops packets where they arrive. One way (``block(a, b)``) stops every packet from a
at b: a TCP connect from a to b times out, and so does one from b to a (its answers from a
never arrive), while datagrams from b still reach a.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

TABLE = "pyrostore"
"""The nftables table (family ``inet``) that holds a host's drops; nothing else uses it."""


@dataclass(frozen=True)
class LinkChange:
    """Set the switch port of ``host`` up (joined) or down (isolated)."""

    host: str
    up: bool


@dataclass(frozen=True)
class Ruleset:
    """Replace the input filter of ``host`` by one dropping packets from ``drop_from``
    (addresses, sorted); empty means no filter at all."""

    host: str
    drop_from: tuple[str, ...]


Step = LinkChange | Ruleset


class Partition:
    """The wanted partition between named hosts; every method returns the steps it needs.

    ``addresses`` maps each host name to its IPv4 address. Steps are returned only for what
    changes, so repeating a call returns nothing; :meth:`heal` returns a step for everything
    that was ever touched, so it also repairs a state that an interrupted step left behind.
    """

    def __init__(self, addresses: Mapping[str, str]) -> None:
        self._addresses = dict(addresses)
        self._isolated: set[str] = set()
        self._blocked: set[tuple[str, str]] = set()
        self._linked: set[str] = set()
        self._filtered: set[str] = set()

    def isolate(self, host: str) -> list[Step]:
        """Cut ``host`` off from every other host (its switch port down)."""
        self._known(host)
        if host in self._isolated:
            return []
        self._isolated.add(host)
        self._linked.add(host)
        return [LinkChange(host, up=False)]

    def rejoin(self, host: str) -> list[Step]:
        """Undo :meth:`isolate` for ``host``."""
        self._known(host)
        if host not in self._isolated:
            return []
        self._isolated.discard(host)
        return [LinkChange(host, up=True)]

    def block(self, src: str, dst: str, *, both_ways: bool = False) -> list[Step]:
        """Drop packets from ``src`` at ``dst`` (and from ``dst`` at ``src`` if ``both_ways``)."""
        return self._change(self._directions(src, dst, both_ways), add=True)

    def unblock(self, src: str, dst: str, *, both_ways: bool = False) -> list[Step]:
        """Undo :meth:`block` for the same directions."""
        return self._change(self._directions(src, dst, both_ways), add=False)

    def heal(self) -> list[Step]:
        """Every port up and every filter removed (for every host ever touched)."""
        steps: list[Step] = [LinkChange(host, up=True) for host in sorted(self._linked)]
        steps += [Ruleset(host, ()) for host in sorted(self._filtered)]
        self._isolated.clear()
        self._blocked.clear()
        return steps

    def drops_at(self, host: str) -> tuple[str, ...]:
        """The source addresses whose packets ``host`` drops now, sorted."""
        return tuple(sorted(self._addresses[src] for src, dst in self._blocked if dst == host))

    def status(self) -> dict[str, list[str]]:
        """A flat view: isolated hosts, and blocked directions as ``"src->dst"``."""
        return {"isolated": sorted(self._isolated),
                "blocked": sorted(f"{src}->{dst}" for src, dst in self._blocked)}

    def _change(self, directions: Iterable[tuple[str, str]], *, add: bool) -> list[Step]:
        changed: set[str] = set()
        for direction in directions:
            if add and direction not in self._blocked:
                self._blocked.add(direction)
            elif not add and direction in self._blocked:
                self._blocked.discard(direction)
            else:
                continue
            changed.add(direction[1])
        self._filtered |= changed
        return [Ruleset(host, self.drops_at(host)) for host in sorted(changed)]

    def _directions(self, src: str, dst: str, both_ways: bool) -> list[tuple[str, str]]:
        self._known(src)
        self._known(dst)
        if src == dst:
            raise ValueError(f"cannot block host {src!r} from itself")
        return [(src, dst), (dst, src)] if both_ways else [(src, dst)]

    def _known(self, host: str) -> None:
        if host not in self._addresses:
            raise ValueError(f"unknown host {host!r} (known: {', '.join(sorted(self._addresses))})")


def nft_script(ruleset: Ruleset) -> str:
    """The ``nft -f`` input that makes ``ruleset`` the host's whole filter, atomically.

    Declaring the table before deleting it makes the delete succeed when it is absent.
    """
    lines = [f"table inet {TABLE}", f"delete table inet {TABLE}"]
    if ruleset.drop_from:
        sources = ", ".join(ruleset.drop_from)
        lines += [f"table inet {TABLE} {{",
                  "  chain input {",
                  "    type filter hook input priority filter; policy accept;",
                  f"    ip saddr {{ {sources} }} drop",
                  "  }",
                  "}"]
    return "\n".join(lines) + "\n"
