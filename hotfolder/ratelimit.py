"""Client-side pacing: at most one call every ``period / N`` seconds per class of endpoint.

The API counts calls in windows per account (10 creates a minute, 30 file calls a minute, 10
queries a second). Bursting up to the window and then being refused with 40001 wastes calls and
makes latency lumpy, so every class is paced *evenly* instead: a caller reserves the next free
slot under a lock and sleeps (outside the lock) until it comes. Slots are handed out in order,
so one limiter shared by many worker threads is fair and never lets two calls of a class through
closer than the interval.

The interval carries a small slack (:data:`SLACK`) because the server measures its window at
*arrival*, and arrival jitters with the network: two calls sent exactly ``60/N`` s apart can land
a hair closer together than that.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

SLACK = 0.02  # 2 % longer than the nominal interval: absorbs network jitter at the server's window

# The pacing classes and which endpoints fall into them.
CREATE, FILE, QUERY = "create", "file", "query"
CLASS_OF_ENDPOINT: dict[str, str] = {
    "create": CREATE,
    "create_upload_url": FILE,
    "file_detail": FILE,
    "detail": QUERY,
    "list": QUERY,
    "list_common_audio": QUERY,
}


@dataclass(frozen=True)
class Limits:
    """The ``[limits]`` section of the config; defaults are the account's documented limits.

    The client paces with the first three (0 or less = unpaced); the pipeline bounds its own
    concurrency with ``uploads``, ``tasks_in_flight`` and ``downloads``.
    """

    creates_per_minute: int = 10
    file_calls_per_minute: int = 30   # create_upload_url + file_detail together
    queries_per_second: int = 10      # detail + list + list_common_audio
    uploads: int = 2
    tasks_in_flight: int = 10
    downloads: int = 2

    def intervals(self) -> dict[str, float]:
        """Seconds between two calls of each pacing class (0 = no pacing)."""
        def every(period: float, n: float) -> float:
            return period / n * (1 + SLACK) if n and n > 0 else 0.0

        return {
            CREATE: every(60.0, self.creates_per_minute),
            FILE: every(60.0, self.file_calls_per_minute),
            QUERY: every(1.0, self.queries_per_second),
        }


def pause(seconds: float, *, sleep: Callable[[float], None] = time.sleep,
          stop: threading.Event | None = None) -> bool:
    """Wait ``seconds``; return False at once if ``stop`` is (or becomes) set.

    With the real ``time.sleep`` the wait is ``stop.wait`` so a stop request cuts it short at
    once. An injected ``sleep`` (a test's fake clock) is called as is and ``stop`` is checked
    before and after it.
    """
    if stop is not None and stop.is_set():
        return False
    if seconds <= 0:
        return True
    if stop is None:
        sleep(seconds)
        return True
    if sleep is time.sleep:
        return not stop.wait(seconds)
    sleep(seconds)
    return not stop.is_set()


class Pacer:
    """Evenly spaced admissions for one class: at most one every ``interval`` seconds."""

    def __init__(self, interval: float, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.interval = max(0.0, float(interval))
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._next = float("-inf")  # the earliest time the next call may go
        self._last_now = float("-inf")

    def reserve(self) -> float:
        """Book the next free slot; return how long the caller must wait for it (seconds)."""
        with self._lock:
            now = self._clock()
            if now < self._last_now:
                # A wall clock stepped back: shift the schedule with it rather than stall.
                self._next -= self._last_now - now
            self._last_now = now
            slot = max(now, self._next)
            self._next = slot + self.interval
            return slot - now

    def acquire(self, stop: threading.Event | None = None) -> bool:
        """Wait for this caller's slot; False if ``stop`` was set first (the slot is given up)."""
        if self.interval <= 0:
            return not (stop is not None and stop.is_set())
        # Sleep the reserved duration (not "until a clock reading") so a clock stepping back
        # while we wait cannot stretch the wait.
        return pause(self.reserve(), sleep=self._sleep, stop=stop)


class RateLimiter:
    """One :class:`Pacer` per class (``create``, ``file``, ``query``), shared by all threads."""

    def __init__(self, limits: Limits | None = None, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.limits = limits or Limits()
        self._pacers = {name: Pacer(interval, clock=clock, sleep=sleep)
                        for name, interval in self.limits.intervals().items()}

    def acquire(self, kind: str, stop: threading.Event | None = None) -> bool:
        """Wait until a call of class ``kind`` may go; False if ``stop`` interrupted the wait.

        ``kind`` is a class name or an endpoint name (see :data:`CLASS_OF_ENDPOINT`); an
        unknown one is not paced.
        """
        pacer = self._pacers.get(CLASS_OF_ENDPOINT.get(kind, kind))
        if pacer is None:
            return not (stop is not None and stop.is_set())
        return pacer.acquire(stop)

    def interval(self, kind: str) -> float:
        """The spacing of class (or endpoint) ``kind`` in seconds (0 = unpaced)."""
        pacer = self._pacers.get(CLASS_OF_ENDPOINT.get(kind, kind))
        return pacer.interval if pacer else 0.0
