"""Pacing: evenly spaced calls per class, thread-safe, interruptible, with an injectable clock."""

from __future__ import annotations

import threading
import time

import pytest

from helpers import FakeClock
from hotfolder.ratelimit import SLACK, Limits, Pacer, RateLimiter, pause


def test_limits_defaults_are_the_contracts() -> None:
    lim = Limits()
    assert (lim.creates_per_minute, lim.file_calls_per_minute, lim.queries_per_second) == (10, 30, 10)
    assert (lim.uploads, lim.tasks_in_flight, lim.downloads) == (2, 10, 2)
    intervals = lim.intervals()
    assert intervals["create"] == pytest.approx(6.0 * (1 + SLACK))
    assert intervals["file"] == pytest.approx(2.0 * (1 + SLACK))
    assert intervals["query"] == pytest.approx(0.1 * (1 + SLACK))


def test_zero_means_unpaced() -> None:
    clock = FakeClock(1000.0)
    limiter = RateLimiter(Limits(creates_per_minute=0), clock=clock, sleep=clock.sleep)
    for _ in range(5):
        assert limiter.acquire("create")
    assert clock.sleeps == []
    assert limiter.interval("create") == 0


def test_calls_are_evenly_spaced() -> None:
    clock = FakeClock(1000.0)
    pacer = Pacer(2.0, clock=clock, sleep=clock.sleep)
    admitted = []
    for _ in range(4):
        assert pacer.acquire()
        admitted.append(clock())
    assert admitted == [1000.0, 1002.0, 1004.0, 1006.0]


def test_an_idle_pacer_admits_at_once_and_does_not_bank_credit() -> None:
    clock = FakeClock(1000.0)
    pacer = Pacer(2.0, clock=clock, sleep=clock.sleep)
    pacer.acquire()
    clock.now += 100.0  # idle for a long time: the next call goes at once...
    pacer.acquire()
    assert clock.sleeps == []
    pacer.acquire()  # ...but the one after is spaced again (no burst from the idle time)
    assert clock.sleeps == [2.0]


def test_endpoints_map_to_independent_classes() -> None:
    clock = FakeClock(1000.0)
    limiter = RateLimiter(Limits(creates_per_minute=1, file_calls_per_minute=60, queries_per_second=4),
                          clock=clock, sleep=clock.sleep)
    limiter.acquire("create")
    limiter.acquire("create_upload_url")
    limiter.acquire("detail")
    assert clock.sleeps == []  # three classes, one call each: nobody waits
    limiter.acquire("file_detail")  # same class as create_upload_url
    assert clock.sleeps == [pytest.approx(1.0 * (1 + SLACK))]
    limiter.acquire("list")
    limiter.acquire("list_common_audio")
    assert limiter.interval("list_common_audio") == pytest.approx(0.25 * (1 + SLACK))
    assert limiter.interval("access_token") == 0  # not paced
    assert limiter.acquire("access_token")


def test_concurrent_reservations_get_distinct_slots() -> None:
    clock = FakeClock()  # frozen: every thread reserves at the same instant
    pacer = Pacer(0.5, clock=clock, sleep=clock.sleep)
    waits: list[float] = []
    lock = threading.Lock()
    barrier = threading.Barrier(16)

    def worker() -> None:
        barrier.wait()
        for _ in range(5):
            wait = pacer.reserve()
            with lock:
                waits.append(wait)

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(waits) == [pytest.approx(i * 0.5) for i in range(80)]


def test_threads_sharing_a_limiter_are_paced_in_real_time() -> None:
    limiter = RateLimiter(Limits(queries_per_second=100))  # 10.2 ms apart
    interval = limiter.interval("query")
    count = 24
    started = time.monotonic()

    def worker() -> None:
        for _ in range(count // 6):
            limiter.acquire("detail")

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert time.monotonic() - started >= (count - 1) * interval


def test_stop_interrupts_a_wait() -> None:
    pacer = Pacer(60.0)
    stop = threading.Event()
    assert pacer.acquire(stop)  # the first slot is free
    timer = threading.Timer(0.05, stop.set)
    started = time.monotonic()
    timer.start()
    assert pacer.acquire(stop) is False  # would have waited a minute
    timer.join()
    assert time.monotonic() - started < 5
    assert pacer.acquire(stop) is False  # already stopped: refuses at once


def test_pause_with_injected_sleep_checks_stop() -> None:
    clock = FakeClock(1000.0)
    stop = threading.Event()
    assert pause(1.0, sleep=clock.sleep, stop=stop)
    assert pause(0, sleep=clock.sleep)
    stop.set()
    assert not pause(1.0, sleep=clock.sleep, stop=stop)
    assert clock.sleeps == [1.0]


def test_a_clock_stepping_back_does_not_stall() -> None:
    clock = FakeClock(10_000.0)
    pacer = Pacer(2.0, clock=clock, sleep=clock.sleep)
    pacer.acquire()
    clock.now -= 3600.0  # wall clock corrected by an hour
    pacer.acquire()
    assert clock.sleeps == [pytest.approx(2.0)]
