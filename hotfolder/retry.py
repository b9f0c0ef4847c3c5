"""Backoff policy and the retry loop around ONE call.

Only transient trouble is retried here: :class:`~hotfolder.errors.RetryLater` and its subclasses,
except :class:`~hotfolder.errors.OutcomeUnknown` (a create whose answer was lost must be
reconciled, never resent blindly) and :class:`~hotfolder.errors.UrlExpired` (the same URL will
be refused again; the caller must get a fresh one). Waits are capped exponential backoff with
"full jitter" (a uniform draw between 0 and the cap, so many clients that failed together do not
come back together), never shorter than the server's ``Retry-After``. A ``Retry-After`` longer
than ``max_wait`` is not waited out in a worker thread: the error is raised so the caller can
schedule the retry (the pipeline keeps it in the ledger).

This is the short, in-process layer. The pipeline's backoff across attempts of a job (minutes to
hours, surviving restarts) is a separate, outer layer.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from hotfolder.errors import Interrupted, OutcomeUnknown, RetryLater, UrlExpired
from hotfolder.log import get_logger
from hotfolder.ratelimit import pause

log = get_logger("hotfolder.retry")
T = TypeVar("T")


@dataclass(frozen=True)
class Backoff:
    """Capped exponential backoff with full jitter.

    Retry ``n`` (0-based) waits ``uniform(0, min(cap, base * 2**n))``, raised to the server's
    ``Retry-After`` when it gave one. ``max_retries`` retries follow the first try.
    """

    base: float = 0.5
    cap: float = 30.0
    max_retries: int = 5
    max_wait: float = 120.0  # a Retry-After beyond this is handed back to the caller
    min_fraction: float = 0.0   # the draw is uniform(min_fraction * ceiling, ceiling)

    def delay(self, retry: int, rng: random.Random, retry_after: float | None = None) -> float | None:
        """Seconds to wait before retry number ``retry`` (0-based); None = do not wait, give up."""
        ceiling = min(self.cap, self.base * (2 ** min(retry, 62)))
        wait = rng.uniform(self.min_fraction * ceiling, ceiling)
        if retry_after is not None and retry_after > 0:
            if retry_after > self.max_wait:
                return None
            wait = max(wait, retry_after)
        return wait


# The outer layer: a job's attempts across minutes to hours (kept in the ledger). Half-jitter:
# a job that failed must not come back at once, but jobs that failed together spread out.
JOB_BACKOFF = Backoff(base=2.0, cap=900.0, max_retries=1 << 30, max_wait=float("inf"), min_fraction=0.5)


def retryable(exc: BaseException) -> bool:
    """Whether retrying the very same call can help (see the module docstring)."""
    return isinstance(exc, RetryLater) and not isinstance(exc, (OutcomeUnknown, UrlExpired, Interrupted))


def call_with_retry(
    fn: Callable[[], T],
    *,
    backoff: Backoff | None = None,
    rng: random.Random | None = None,
    sleep: Callable[[float], None] = time.sleep,
    stop: threading.Event | None = None,
    should_retry: Callable[[BaseException], bool] = retryable,
    progress: Callable[[], int] | None = None,
    what: str = "call",
) -> T:
    """Call ``fn`` and retry it on transient errors, per ``backoff``.

    ``progress``, if given, reports how far the work has got (e.g. bytes on disk): a failed try
    that moved it forward does not use up a retry, so a long download that keeps being cut but
    keeps advancing is not abandoned. ``stop`` (a shutdown request) ends the waiting at once by
    raising the last error. ``what`` names the call in log lines.
    """
    backoff = backoff or Backoff()
    rng = rng or random.Random()
    retries = 0
    mark = progress() if progress else 0
    while True:
        try:
            return fn()
        except Exception as exc:
            if not should_retry(exc):
                raise
            if progress is not None:
                now_at = progress()
                if now_at > mark:
                    retries, mark = 0, now_at
            if retries >= backoff.max_retries:
                raise
            wait = backoff.delay(retries, rng, getattr(exc, "retry_after", None))
            if wait is None:
                raise
            log.debug("retrying", what=what, retry=retries + 1, wait_s=round(wait, 3),
                      error=type(exc).__name__, code=getattr(exc, "code", None))
            if not pause(wait, sleep=sleep, stop=stop):
                raise
            retries += 1
