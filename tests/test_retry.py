"""The retry loop around one call: which errors, how long, how often."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable

import pytest

from hotfolder.errors import (Interrupted, OutcomeUnknown, PermanentError, RateLimited, RetryLater,
                              UrlExpired)
from hotfolder.retry import Backoff, call_with_retry, retryable


class Recorder:
    def __init__(self) -> None:
        self.sleeps: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)


def failing(errors: list[BaseException], result: str = "ok") -> Callable[[], str]:
    """A call that raises each of ``errors`` in turn, then returns ``result``."""
    queue = list(errors)

    def call() -> str:
        if queue:
            raise queue.pop(0)
        return result

    return call


def test_delay_is_full_jitter_under_a_capped_exponential() -> None:
    policy = Backoff(base=1.0, cap=8.0)
    rng = random.Random(1)
    for retry in range(10):
        ceiling = min(8.0, 2.0 ** retry)
        draws = [policy.delay(retry, rng) for _ in range(200)]
        assert all(0 <= d <= ceiling for d in draws)  # type: ignore[operator]
        assert max(draws) > ceiling * 0.8  # type: ignore[type-var]  # the whole range is used


def test_delay_is_reproducible_with_a_seed() -> None:
    policy = Backoff()
    a = [policy.delay(n, random.Random(7)) for n in range(5)]
    b = [policy.delay(n, random.Random(7)) for n in range(5)]
    assert a == b


def test_retry_after_is_a_floor_and_too_long_is_handed_back() -> None:
    policy = Backoff(base=0.1, cap=1.0, max_wait=60.0)
    assert policy.delay(0, random.Random(0), retry_after=5.0) == 5.0
    assert policy.delay(0, random.Random(0), retry_after=61.0) is None


@pytest.mark.parametrize("exc, expected", [
    (RetryLater("x"), True), (RateLimited("x"), True),
    (OutcomeUnknown("x"), False), (UrlExpired("x"), False), (Interrupted("x"), False),
    (PermanentError("x"), False), (ValueError("x"), False),
])
def test_what_is_retryable(exc: BaseException, expected: bool) -> None:
    assert retryable(exc) is expected


def test_transient_errors_are_retried_until_success() -> None:
    rec = Recorder()
    call = failing([RetryLater("a"), RateLimited("b"), RetryLater("c")])
    assert call_with_retry(call, backoff=Backoff(max_retries=5), rng=random.Random(0), sleep=rec.sleep) == "ok"
    assert len(rec.sleeps) == 3


def test_gives_up_after_max_retries_with_the_last_error() -> None:
    rec = Recorder()
    errors: list[BaseException] = [RetryLater(f"try {n}") for n in range(10)]
    with pytest.raises(RetryLater, match="try 3"):
        call_with_retry(failing(errors), backoff=Backoff(max_retries=3), rng=random.Random(0), sleep=rec.sleep)
    assert len(rec.sleeps) == 3


@pytest.mark.parametrize("exc", [PermanentError("no"), OutcomeUnknown("lost"), UrlExpired("old"),
                                 KeyError("bug")])
def test_other_errors_are_raised_at_once(exc: BaseException) -> None:
    rec = Recorder()
    with pytest.raises(type(exc)):
        call_with_retry(failing([exc]), rng=random.Random(0), sleep=rec.sleep)
    assert rec.sleeps == []


def test_retry_after_is_honoured() -> None:
    rec = Recorder()
    call = failing([RateLimited("slow down", retry_after=7.5)])
    call_with_retry(call, backoff=Backoff(base=0.01, cap=0.02), rng=random.Random(0), sleep=rec.sleep)
    assert rec.sleeps == [7.5]


def test_a_retry_after_beyond_max_wait_is_raised_for_the_caller_to_schedule() -> None:
    rec = Recorder()
    call = failing([RateLimited("come back tomorrow", retry_after=86400)])
    with pytest.raises(RateLimited) as info:
        call_with_retry(call, backoff=Backoff(max_wait=60), rng=random.Random(0), sleep=rec.sleep)
    assert info.value.retry_after == 86400
    assert rec.sleeps == []


def test_progress_resets_the_retry_budget() -> None:
    rec = Recorder()
    done = [0]
    calls = [0]

    def call() -> str:
        calls[0] += 1
        if calls[0] <= 6:
            done[0] += 10  # each try gets further before being cut
            raise RetryLater("cut")
        return "whole"

    out = call_with_retry(call, backoff=Backoff(max_retries=2), rng=random.Random(0), sleep=rec.sleep,
                          progress=lambda: done[0])
    assert out == "whole" and calls[0] == 7


def test_stop_ends_the_wait_with_the_last_error() -> None:
    rec = Recorder()
    stop = threading.Event()
    stop.set()
    with pytest.raises(RetryLater, match="flaky"):
        call_with_retry(failing([RetryLater("flaky")]), rng=random.Random(0), sleep=rec.sleep, stop=stop)
    assert rec.sleeps == []
