"""MethodStats figures, nearest-rank percentiles, and the timed_methods class decorator."""

from __future__ import annotations

import threading
from typing import Any

import Pyro5.api
import Pyro5.server
import pytest

from pyrostore.metrics import MethodStats, percentile, timed_methods


class FakeClock:
    """A clock that moves only when told to."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def test_timed_records_the_injected_clock() -> None:
    clock = FakeClock()
    stats = MethodStats(clock=clock)

    def lookup(item: int, *, delay: float) -> str:
        clock.advance(delay)
        return f"book {item}"

    timed = stats.timed("lookup", lookup)
    assert timed(1, delay=0.010) == "book 1"
    assert timed(2, delay=0.030) == "book 2"
    assert timed.__name__ == "lookup"
    figures = stats.snapshot()["lookup"]
    assert figures["count"] == 2
    assert figures["mean_ms"] == pytest.approx(20.0)
    assert figures["p50_ms"] == pytest.approx(10.0)
    assert figures["p99_ms"] == pytest.approx(30.0)


def test_timed_records_a_call_that_raises() -> None:
    clock = FakeClock()
    stats = MethodStats(clock=clock)

    def fail() -> None:
        clock.advance(0.5)
        raise ValueError("boom")

    timed = stats.timed("fail", fail)
    with pytest.raises(ValueError, match="boom"):
        timed()
    assert stats.snapshot()["fail"]["count"] == 1
    assert stats.snapshot()["fail"]["mean_ms"] == pytest.approx(500.0)


def test_snapshot_of_one_to_a_hundred_milliseconds() -> None:
    stats = MethodStats()
    for ms in range(100, 0, -1):
        stats.record("buy", ms / 1000)
    figures = stats.snapshot()["buy"]
    assert figures["count"] == 100
    assert figures["mean_ms"] == pytest.approx(50.5)
    assert figures["p50_ms"] == pytest.approx(50.0)
    assert figures["p99_ms"] == pytest.approx(99.0)


def test_methods_are_kept_apart() -> None:
    stats = MethodStats()
    stats.record("buy", 0.002)
    stats.record("lookup", 0.004)
    stats.record("lookup", 0.006)
    snapshot = stats.snapshot()
    assert set(snapshot) == {"buy", "lookup"}
    assert snapshot["buy"]["count"] == 1
    assert snapshot["lookup"]["count"] == 2
    assert snapshot["lookup"]["mean_ms"] == pytest.approx(5.0)


def test_percentiles_cover_only_the_window_but_mean_covers_all() -> None:
    stats = MethodStats(window=3)
    stats.record("buy", 1.000)
    for ms in (1, 2, 3):
        stats.record("buy", ms / 1000)
    figures = stats.snapshot()["buy"]
    assert figures["count"] == 4
    assert figures["mean_ms"] == pytest.approx(1006 / 4)
    assert figures["p99_ms"] == pytest.approx(3.0)
    assert figures["p50_ms"] == pytest.approx(2.0)


def test_reset_forgets_everything() -> None:
    stats = MethodStats()
    stats.record("buy", 0.1)
    stats.reset()
    assert stats.snapshot() == {}
    stats.record("buy", 0.003)
    assert stats.snapshot()["buy"]["count"] == 1
    assert stats.snapshot()["buy"]["mean_ms"] == pytest.approx(3.0)


def test_an_empty_stats_has_an_empty_snapshot() -> None:
    assert MethodStats().snapshot() == {}


def test_records_from_many_threads_are_all_counted() -> None:
    stats = MethodStats(window=100)

    def work() -> None:
        for _ in range(500):
            stats.record("buy", 0.001)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    figures = stats.snapshot()["buy"]
    assert figures["count"] == 4000
    assert figures["mean_ms"] == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("ordered", "pct", "expected"),
    [
        ([], 50, 0.0),
        ([], 99, 0.0),
        ([7.0], 0, 7.0),
        ([7.0], 50, 7.0),
        ([7.0], 100, 7.0),
        ([1.0, 2.0], 50, 1.0),
        ([1.0, 2.0], 51, 2.0),
        ([1.0, 2.0, 3.0], 50, 2.0),
        ([1.0, 2.0, 3.0, 4.0], 0, 1.0),
        ([1.0, 2.0, 3.0, 4.0], 25, 1.0),
        ([1.0, 2.0, 3.0, 4.0], 26, 2.0),
        ([1.0, 2.0, 3.0, 4.0], 100, 4.0),
        ([float(i) for i in range(1, 11)], 50, 5.0),
        ([float(i) for i in range(1, 11)], 99, 10.0),
        ([float(i) for i in range(1, 201)], 99, 198.0),
        ([float(i) for i in range(1, 201)], 99.5, 199.0),
    ],
)
def test_percentile_nearest_rank(ordered: list[float], pct: float, expected: float) -> None:
    assert percentile(ordered, pct) == expected


@timed_methods
class Shop:
    """A service-like class: some methods exposed, some not."""

    def __init__(self) -> None:
        self.metrics = MethodStats()

    @Pyro5.api.expose
    def buy(self, item: int, qty: int = 1) -> dict[str, int]:
        """Buy."""
        return {"item": item, "qty": qty}

    @Pyro5.api.expose
    def fail(self) -> None:
        raise RuntimeError("out of luck")

    @Pyro5.api.expose
    def stats(self) -> dict[str, Any]:
        return self.metrics.snapshot()

    def helper(self) -> int:
        return 1


@timed_methods
@Pyro5.api.expose
class WholeClassExposed:
    """Exposed as a class, as Pyro5 allows."""

    def __init__(self) -> None:
        self.metrics = MethodStats()

    def lookup(self, item: int) -> int:
        return item

    def stats(self) -> dict[str, Any]:
        return self.metrics.snapshot()


def test_timed_methods_times_only_exposed_methods() -> None:
    shop = Shop()
    assert shop.buy(3, qty=2) == {"item": 3, "qty": 2}
    assert shop.buy(4) == {"item": 4, "qty": 1}
    assert shop.helper() == 1
    figures = shop.stats()
    assert set(figures) == {"buy"}
    assert figures["buy"]["count"] == 2
    assert figures["buy"]["mean_ms"] >= 0


def test_timed_methods_leaves_stats_untimed() -> None:
    shop = Shop()
    shop.stats()
    shop.stats()
    assert shop.stats() == {}


def test_timed_methods_records_a_method_that_raises() -> None:
    shop = Shop()
    with pytest.raises(RuntimeError, match="out of luck"):
        shop.fail()
    assert shop.stats()["fail"]["count"] == 1


def test_timed_methods_keeps_methods_exposed_to_pyro() -> None:
    assert Shop.buy.__name__ == "buy"
    assert Shop.buy.__doc__ == "Buy."
    exposed = Pyro5.server._get_exposed_members(Shop())
    assert {"buy", "fail", "stats"} <= exposed["methods"]
    assert "helper" not in exposed["methods"]


def test_timed_methods_on_a_class_exposed_whole() -> None:
    service = WholeClassExposed()
    assert service.lookup(5) == 5
    assert set(service.stats()) == {"lookup"}
    assert service.stats()["lookup"]["count"] == 1


def test_timed_methods_uses_the_stats_clock() -> None:
    clock = FakeClock()

    @timed_methods
    class Slow:
        def __init__(self) -> None:
            self.metrics = MethodStats(clock=clock)

        @Pyro5.api.expose
        def work(self) -> None:
            clock.advance(0.25)

    slow = Slow()
    slow.work()
    assert slow.metrics.snapshot()["work"]["mean_ms"] == pytest.approx(250.0)
