"""API trouble as a person should see it in ``status``: unreachable, credentials refused, rate-limited.

The client reports every call (:class:`~hotfolder.chanjing.CallRecord`); this module turns the
stream into one account-wide condition and records it in the ledger's key/value store only when
the condition changes (never per call), so ``status`` in another process can show it the way the
billing pause is shown. It never touches a job and never speaks to the API itself.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from hotfolder.errors import AuthError, RateLimited
from hotfolder.ledger import Ledger
from hotfolder.log import get_logger, scrub

if TYPE_CHECKING:   # the client (and httpx) stay out of `hotfolder status`
    from hotfolder.chanjing import CallRecord

log = get_logger("hotfolder.trouble")
TROUBLE_KEY = "api_trouble"
# One failed call is noise (the retry layer absorbs it); trouble is failing this many in a row,
# or for this long.
MIN_FAILURES = 3
MIN_SECONDS = 10.0


def _kind(record: CallRecord, base_url: str) -> tuple[str, str] | None:
    """(kind, what a person reads) for a failed call that says something about the service."""
    exc = record.error
    if exc is None:
        return None
    if isinstance(exc, AuthError) and record.endpoint == "access_token":
        return "auth", f"the API refuses the credentials (app_id/secret_key): {exc}"
    if isinstance(exc, RateLimited):
        return "rate_limited", "the API keeps answering 40001 (over the rate limit): calls are slowed down"
    if record.http_status is None and record.code is None:
        return "unreachable", f"the API at {base_url} cannot be reached: {exc}"
    if record.http_status is not None and record.http_status >= 500:
        return "unreachable", f"the API answers HTTP {record.http_status}: {exc}"
    return None


class ApiTrouble:
    """Folds call records into the current condition; thread-safe (every worker's calls land here)."""

    def __init__(self, ledger: Ledger, base_url: str, *, clock: Callable[[], float] = time.time) -> None:
        self.ledger = ledger
        self.base_url = base_url
        self.clock = clock
        self._lock = threading.Lock()
        self._failures = 0
        self._first_failure: float | None = None
        self._current: str | None = None
        ledger.set_value(TROUBLE_KEY, None)   # a fresh start knows nothing bad yet

    def record(self, call: CallRecord) -> None:
        """Observe one call (the client's ``observer``)."""
        found = _kind(call, self.base_url)
        now = self.clock()
        with self._lock:
            if call.error is None:
                self._failures, self._first_failure = 0, None
                if self._current is not None:
                    self._set(None, None, now)
                return
            if found is None:
                return   # the request was at fault, not the service
            self._failures += 1
            self._first_failure = self._first_failure or now
            kind, message = found
            persistent = self._failures >= MIN_FAILURES or now - self._first_failure >= MIN_SECONDS
            if (persistent or kind == "auth") and kind != self._current:
                self._set(kind, message, now)

    def _set(self, kind: str | None, message: str | None, now: float) -> None:
        self._current = kind
        if kind is None:
            log.info("api_trouble_over")
            self.ledger.set_value(TROUBLE_KEY, None)
            return
        log.warning("api_trouble", kind=kind, error=scrub(message or ""))
        self.ledger.set_value(TROUBLE_KEY, json.dumps({"kind": kind, "message": scrub(message or ""), "since": now}))


def current(ledger: Ledger) -> dict[str, Any] | None:
    """The recorded condition (``kind``, ``message``, ``since``), or None when all is well."""
    raw = ledger.get_value(TROUBLE_KEY)
    if not raw:
        return None
    try:
        data = json.loads(raw)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None
