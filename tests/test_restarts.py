"""The restart decisions of ``pyrostore up``, stepped with made-up times."""

from __future__ import annotations

import signal

import pytest

from pyrostore.errors import ConfigError
from pyrostore.restarts import NEVER, RestartPlan, RestartPolicy, describe_exit, failed

KILLED = -signal.SIGKILL
POLICY = RestartPolicy(first_delay=0.5, max_delay=4.0, burst=5, interval=60.0)


def test_exits_are_named_by_code_or_signal() -> None:
    assert describe_exit(-9) == "killed by SIGKILL"
    assert describe_exit(-signal.SIGSEGV) == "killed by SIGSEGV"
    assert describe_exit(2) == "exited with code 2"
    assert describe_exit(0) == "exited with code 0"
    assert describe_exit(-200) == "killed by signal 200"


def test_failures_are_non_zero_exits_and_unclean_signals() -> None:
    assert failed(1) and failed(-signal.SIGKILL) and failed(-signal.SIGABRT)
    assert not failed(0)
    assert not any(failed(-sig) for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP,
                                            signal.SIGPIPE))


def test_a_failed_service_restarts_after_the_first_delay() -> None:
    plan = RestartPlan(POLICY)
    decision = plan.died("pyrostore.catalog.1", KILLED, now=100.0)
    assert decision.restart and decision.at == 100.5
    assert decision.why.startswith("killed by SIGKILL; restarting in 0.5 s")
    assert plan.due(100.4) == []
    assert plan.next_due() == 100.5
    assert plan.due(100.5) == ["pyrostore.catalog.1"]
    assert plan.restarted("pyrostore.catalog.1", 100.5) == 1
    assert plan.due(200.0) == [] and plan.next_due() is None
    assert plan.restarts("pyrostore.catalog.1") == 1
    assert plan.restarts("pyrostore.order.1") == 0


def test_a_clean_stop_is_not_restarted() -> None:
    plan = RestartPlan(POLICY)
    decision = plan.died("pyrostore.catalog.1", -signal.SIGTERM, now=1.0)
    assert not decision.restart and "a clean stop" in decision.why
    assert not plan.died("pyrostore.catalog.1", 0, now=2.0).restart
    assert plan.next_due() is None


def test_never_restarts_nothing() -> None:
    decision = RestartPlan(NEVER).died("pyrostore.order.2", 3, now=0.0)
    assert not decision.restart
    assert decision.why == "exited with code 3; not restarted (--restart never)"


def crash_loop(plan: RestartPlan, now: float, times: int) -> tuple[list[float], float]:
    """Kill the service as soon as it is restarted, ``times`` times: the delays it waited."""
    delays = []
    for _ in range(times):
        decision = plan.died("svc", KILLED, now)
        assert decision.at is not None
        delays.append(decision.at - now)
        now = decision.at
        assert plan.due(now) == ["svc"]
        plan.restarted("svc", now)
    return delays, now


def test_the_backoff_doubles_up_to_its_cap() -> None:
    plan = RestartPlan(RestartPolicy(first_delay=0.5, max_delay=4.0, burst=10, interval=60.0))
    delays, _ = crash_loop(plan, 0.0, 6)
    assert delays == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]


def test_past_the_limit_the_service_stays_down() -> None:
    plan = RestartPlan(POLICY)
    _, now = crash_loop(plan, 0.0, 5)
    decision = plan.died("svc", KILLED, now + 1.0)
    assert not decision.restart
    assert "NOT restarted: 5 restarts within 60 s" in decision.why
    assert "stays down" in decision.why
    assert plan.next_due() is None and plan.restarts("svc") == 5


def test_a_quiet_interval_forgets_old_restarts() -> None:
    plan = RestartPlan(POLICY)
    _, now = crash_loop(plan, 0.0, 5)
    later = now + 60.0  # every restart is now older than the interval
    decision = plan.died("svc", KILLED, later)
    assert decision.at == later + 0.5  # the limit and the backoff start over
    assert plan.restarted("svc", later + 0.5) == 6  # the count since start-up goes on


def test_services_are_counted_apart() -> None:
    plan = RestartPlan(POLICY)
    crash_loop(plan, 0.0, 5)
    assert plan.died("other", KILLED, 10.0).at == 10.5


def test_bad_policies_are_refused() -> None:
    with pytest.raises(ConfigError):
        RestartPolicy(first_delay=0)
    with pytest.raises(ConfigError):
        RestartPolicy(first_delay=5, max_delay=1)
    with pytest.raises(ConfigError):
        RestartPolicy(burst=-1)
