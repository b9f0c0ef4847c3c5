"""The hotfolder exception tree.

Errors are grouped by what the caller must *do*, not by where they came from::

    HotfolderError
    ├── ConfigError              bad config: exit 2 naming the key
    ├── InputError               a dropped file is unusable (code ``bad_input``): fail the job
    │                            before anything is uploaded
    ├── LedgerError              the SQLite ledger cannot be used
    │   └── LedgerLockedError    another daemon holds the ledger
    └── ApiError                 anything the Chanjing API (or the way to it) said
        ├── RetryLater           transient: back off and try again
        │   ├── RateLimited      40001, or HTTP 429
        │   ├── OutcomeUnknown   a create whose answer was lost: reconcile, never resend blindly
        │   ├── UrlExpired       a signed upload/result URL was refused: get a fresh one
        │   └── Interrupted      a wait (pacing, backoff, file readiness) was cut short by a
        │                        stop request: nothing failed, resume after the restart
        ├── AuthError            10400/10401, or bad credentials: re-authenticate (once)
        ├── BillingPaused        account out of balance: pause submissions, retry later
        └── PermanentError       the request itself is at fault: fail the job with the message
            ├── FileRejected     uploaded file status 98/99/100
            └── TaskFailed       the task ended with status 30

Every ``ApiError`` carries the API's ``code``, ``msg`` and ``trace_id`` (``None`` where the
error did not come from an API envelope, e.g. a timeout). Foreign exceptions (httpx, OSError)
are mapped to these at the edge with ``raise ... from exc``.
"""

from __future__ import annotations


class HotfolderError(Exception):
    """Base of every error hotfolder raises on purpose."""


class ConfigError(HotfolderError):
    """The configuration is invalid. ``key`` names the offending key (``section.name``)."""

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


class InputError(HotfolderError):
    """A dropped input cannot become a job. ``path`` is the file at fault (if one is)."""

    code = "bad_input"

    def __init__(self, message: str, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path


class LedgerError(HotfolderError):
    """The ledger cannot be opened or used."""


class LedgerLockedError(LedgerError):
    """Another process (a second daemon) holds the ledger's lock."""


class ApiError(HotfolderError):
    """An answer (or the lack of one) from the Chanjing API.

    ``code`` is the API's envelope code (or the HTTP status for non-envelope answers, or
    ``None``), ``msg`` the API's message, ``trace_id`` the API's trace id for support requests.
    """

    def __init__(
        self,
        msg: str,
        *,
        code: int | None = None,
        trace_id: str | None = None,
        endpoint: str | None = None,
    ) -> None:
        super().__init__(msg)
        self.msg = msg
        self.code = code
        self.trace_id = trace_id
        self.endpoint = endpoint

    def __str__(self) -> str:
        parts = [self.msg]
        if self.code is not None:
            parts.append(f"code {self.code}")
        if self.endpoint:
            parts.append(f"on {self.endpoint}")
        if self.trace_id:
            parts.append(f"trace_id {self.trace_id}")
        return parts[0] if len(parts) == 1 else f"{parts[0]} ({', '.join(parts[1:])})"


class RetryLater(ApiError):
    """Transient trouble: the same call may succeed later.

    ``retry_after`` is the server's hint in seconds (Retry-After), if it gave one.
    """

    def __init__(self, msg: str, *, retry_after: float | None = None, **kw: object) -> None:
        super().__init__(msg, **kw)  # type: ignore[arg-type]
        self.retry_after = retry_after


class RateLimited(RetryLater):
    """The API said we are over its rate limit (40001)."""


class OutcomeUnknown(RetryLater):
    """A non-idempotent call (create) may or may not have taken effect: reconcile first."""


class UrlExpired(RetryLater):
    """A signed URL (upload target or result) was refused; fetch a fresh one and retry."""


class Interrupted(RetryLater):
    """A wait inside the client was cut short because the daemon is stopping; nothing failed."""


class AuthError(ApiError):
    """The access token is invalid or the credentials are wrong."""


class BillingPaused(ApiError):
    """The account has no balance: not the job's fault; pause and retry once it is back."""


class PermanentError(ApiError):
    """The request is at fault; retrying the same thing will fail the same way."""


class FileRejected(PermanentError):
    """An uploaded file ended in status 98 (content check failed), 99 (deleted) or 100
    (cleaned up)."""


class TaskFailed(PermanentError):
    """A lip-sync task ended with status 30."""
