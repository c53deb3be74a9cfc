"""Hooks on their own: arming rules, holding one request at a point, release and timeout."""

from __future__ import annotations

import threading
import time

import pytest

from pyrostore.errors import InvalidRequest
from pyrostore.hooks import Hooks
from tests.conftest import wait_until as wait_for

WAIT = 5.0
"""Seconds any test waits for another thread before it calls the wait a failure."""
NAMES = ("before_commit", "after_read")




class PointThread(threading.Thread):
    """A request that calls ``hooks.point(name)`` and records when it got through."""

    def __init__(self, hooks: Hooks, name: str) -> None:
        super().__init__(daemon=True)
        self.hooks, self.name_ = hooks, name
        self.passed = threading.Event()
        self.elapsed = -1.0

    def run(self) -> None:
        start = time.monotonic()
        self.hooks.point(self.name_)
        self.elapsed = time.monotonic() - start
        self.passed.set()


def hold(hooks: Hooks, name: str) -> PointThread:
    """Start a request at ``name`` and return once the hook holds it."""
    request = PointThread(hooks, name)
    request.start()
    wait_for(lambda: hooks.waiting(name), what=f"a request held at {name}")
    assert not request.passed.is_set()
    return request


def test_arm_with_hooks_disabled_is_refused() -> None:
    hooks = Hooks(enabled=False, names=NAMES)
    with pytest.raises(InvalidRequest, match="PYROSTORE_TEST_HOOKS"):
        hooks.arm("before_commit", 1.0)
    # Nothing was armed: a point passes straight through.
    hooks.point("before_commit")
    assert not hooks.waiting("before_commit")


def test_arm_of_unknown_name_is_refused() -> None:
    hooks = Hooks(enabled=True, names=NAMES)
    with pytest.raises(InvalidRequest, match="no_such_point"):
        hooks.arm("no_such_point", 1.0)
    request = PointThread(hooks, "no_such_point")
    request.start()
    assert request.passed.wait(WAIT)


def test_point_with_nothing_armed_returns_at_once() -> None:
    hooks = Hooks(enabled=True, names=NAMES)
    request = PointThread(hooks, "before_commit")
    request.start()
    assert request.passed.wait(WAIT)
    assert request.elapsed < 0.5
    assert not hooks.waiting("before_commit")


def test_point_of_another_name_is_not_held() -> None:
    hooks = Hooks(enabled=True, names=NAMES)
    hooks.arm("before_commit", WAIT)
    request = PointThread(hooks, "after_read")
    request.start()
    assert request.passed.wait(WAIT)
    assert not hooks.waiting("after_read")
    hooks.release("before_commit")


def test_armed_point_holds_until_release() -> None:
    hooks = Hooks(enabled=True, names=NAMES)
    assert not hooks.waiting("before_commit")
    hooks.arm("before_commit", WAIT)
    assert not hooks.waiting("before_commit")  # armed, but nobody is there yet
    request = hold(hooks, "before_commit")
    assert hooks.waiting("before_commit")
    assert not request.passed.wait(0.05)  # still held (bounded wait on the event, not a sleep)
    hooks.release("before_commit")
    assert request.passed.wait(WAIT)
    request.join(WAIT)
    assert not hooks.waiting("before_commit")
    # Release disarmed it: the next request passes.
    after = PointThread(hooks, "before_commit")
    after.start()
    assert after.passed.wait(WAIT)


def test_a_hook_holds_only_one_request() -> None:
    hooks = Hooks(enabled=True, names=NAMES)
    hooks.arm("before_commit", WAIT)
    first = hold(hooks, "before_commit")
    second = PointThread(hooks, "before_commit")
    second.start()
    assert second.passed.wait(WAIT)  # went straight through
    assert hooks.waiting("before_commit")
    assert not first.passed.is_set()
    hooks.release("before_commit")
    assert first.passed.wait(WAIT)
    assert not hooks.waiting("before_commit")


def test_arm_with_short_timeout_releases_by_itself() -> None:
    hooks = Hooks(enabled=True, names=NAMES)
    hooks.arm("before_commit", 0.05)
    request = PointThread(hooks, "before_commit")
    request.start()
    assert request.passed.wait(WAIT)
    assert request.elapsed >= 0.04  # it was held, for about the timeout
    assert not hooks.waiting("before_commit")
    # The timeout disarmed it: the next request passes at once.
    after = PointThread(hooks, "before_commit")
    after.start()
    assert after.passed.wait(WAIT)
    assert after.elapsed < 0.04
    hooks.release("before_commit")  # releasing a hook that is not armed is harmless


def test_release_before_anyone_arrives_disarms() -> None:
    hooks = Hooks(enabled=True, names=NAMES)
    hooks.arm("before_commit", WAIT)
    hooks.release("before_commit")
    request = PointThread(hooks, "before_commit")
    request.start()
    assert request.passed.wait(WAIT)


def test_two_points_held_at_once_and_released_separately() -> None:
    hooks = Hooks(enabled=True, names=NAMES)
    hooks.arm("before_commit", WAIT)
    hooks.arm("after_read", WAIT)
    commit = hold(hooks, "before_commit")
    read = hold(hooks, "after_read")
    hooks.release("after_read")
    assert read.passed.wait(WAIT)
    assert not commit.passed.is_set()
    assert hooks.waiting("before_commit")
    hooks.release("before_commit")
    assert commit.passed.wait(WAIT)


def test_release_after_rearming_lets_the_held_request_go() -> None:
    hooks = Hooks(enabled=True, names=NAMES)
    hooks.arm("before_commit", 1.0)
    held = hold(hooks, "before_commit")
    hooks.arm("before_commit", 1.0)  # a test arms again while the first request is held
    hooks.release("before_commit")
    assert held.passed.wait(0.3), "release() did not let the held request go"


@pytest.mark.parametrize(("name", "seconds"), [(["x"], 1.0), ("hold", True), ("hold", -1),
                                               ("hold", 10**9), ("hold", "1")])
def test_arming_with_junk_is_an_invalid_request(name: object, seconds: object) -> None:
    hooks = Hooks(enabled=True, names=["hold"])
    with pytest.raises(InvalidRequest):
        hooks.arm(name, seconds)  # type: ignore[arg-type]
    with pytest.raises(InvalidRequest):
        hooks.release(["x"])  # type: ignore[arg-type]
    assert not hooks._armed
