"""Test hooks: named points in a request's path where a test can hold it, on purpose.

A service lists its points; a test arms one (``set_hook``) only when the service runs with
``PYROSTORE_TEST_HOOKS=1``. The next request to reach an armed point waits there until the test
releases it (``release_hook``) or the given seconds pass; ``hook_waiting`` tells the test that
a request is being held, so that it can act in exactly that window. Each arming holds one
request. With hooks off (the default) a point costs one dictionary lookup.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

from pyrostore.errors import InvalidRequest


class Hooks:
    """The hook points of one service."""

    def __init__(self, *, enabled: bool, names: Iterable[str]) -> None:
        self.enabled = enabled
        self.names = frozenset(names)
        self._lock = threading.Lock()
        self._armed: dict[str, tuple[float, threading.Event]] = {}
        self._waiting: set[str] = set()

    def arm(self, name: str, seconds: float) -> None:
        """Hold the next request that reaches ``name`` for up to ``seconds``."""
        if not isinstance(name, str) or not self.enabled or name not in self.names:
            raise InvalidRequest(f"no test hook {name!r} here (hooks: {sorted(self.names)}; "
                                 "they need PYROSTORE_TEST_HOOKS=1)")
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) \
                or not 0 <= seconds <= 600:
            raise InvalidRequest("a test hook holds a request for 0 to 600 seconds")
        with self._lock:
            if name not in self._waiting:  # a held request keeps the arming it waits on
                self._armed[name] = (float(seconds), threading.Event())

    def release(self, name: str) -> None:
        """Let the request held at ``name`` go on (and disarm it)."""
        _check_name(name)
        with self._lock:
            armed = self._armed.pop(name, None)
        if armed is not None:
            armed[1].set()

    def waiting(self, name: str) -> bool:
        """Whether a request is held at ``name`` now."""
        _check_name(name)
        with self._lock:
            return name in self._waiting

    def point(self, name: str) -> None:
        """Called where the point is: hold here if armed."""
        if not self._armed:
            return
        with self._lock:
            armed = self._armed.get(name)
            if armed is None or name in self._waiting:
                return
            self._waiting.add(name)
        try:
            armed[1].wait(armed[0])
        finally:
            with self._lock:
                self._waiting.discard(name)
                if self._armed.get(name) is armed:
                    del self._armed[name]


def _check_name(name: object) -> None:
    if not isinstance(name, str) or len(name) > 64:
        raise InvalidRequest("a test hook's name is a string of at most 64 characters")
