"""Job outcomes that are not a step's success: fail, defer (retry later), pause for billing.

Intake, the pipeline's steps and the poller all end up here, so each outcome is decided in one
place: the message a person reads, the code, the backoff kept in the ledger (so it survives a
restart), the retry deadline and the poison guard, and the account-wide pause when the balance or
a quota runs out. It owns the ``billing_paused_until`` / ``pause_reason`` keys of the ledger.
It must not move files itself (that is :mod:`hotfolder.finish`) nor speak to the API.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any

from hotfolder import finish
from hotfolder.config import Settings
from hotfolder.errors import AuthError, FileRejected, InputError, RetryLater
from hotfolder.ledger import Job, Ledger
from hotfolder.ledger.notices import Notice
from hotfolder.log import get_logger, job_context, scrub
from hotfolder.records import event_body
from hotfolder.retry import JOB_BACKOFF
from hotfolder.states import ACTIVE, State

log = get_logger("hotfolder.outcomes")
BILLING_KEY = "billing_paused_until"
PAUSE_REASON_KEY = "pause_reason"


def paused_until(ledger: Ledger, now: float) -> float | None:
    """When submissions resume, if they are paused for the account's balance or quota."""
    until = float(ledger.get_value(BILLING_KEY) or 0)
    return until if until > now else None


def pause_reason(ledger: Ledger) -> str | None:
    """Why submissions are paused (the API's words), if they are."""
    return ledger.get_value(PAUSE_REASON_KEY)


def account_notice(settings: Settings, kind: str, reason: str) -> Notice:
    """A ``paused``/``resumed`` notification for the targets that want it (maybe none)."""
    return Notice(kind, settings.notify.targets(kind), lambda _job, event_id, at: event_body(kind, event_id, at,
                                                                                              reason=reason))


def lift_pause(ledger: Ledger, settings: Settings, why: str = "a create went through") -> bool:
    """End a billing/quota pause (a create went through, or a person said so); True if one was on.
    Ending it is a ``resumed`` event."""
    if ledger.get_value(BILLING_KEY) is None:
        return False   # the usual case, on every create: no write
    ledger.record_notice(account_notice(settings, "resumed", why), {BILLING_KEY: None, PAUSE_REASON_KEY: None})
    log.info("billing_resumed", why=why)
    return True


class Outcomes:
    """What happens to a job that cannot go on as planned. Shared by every thread."""

    def __init__(self, settings: Settings, ledger: Ledger, *, clock: Callable[[], float] = time.time,
                 rng: random.Random | None = None) -> None:
        self.settings = settings
        self.ledger = ledger
        self.clock = clock
        self.rng = rng or random.Random()

    def fail(self, job: Job, exc: BaseException, code: str | None = None) -> None:
        """End the job as failed with an actionable message; its inputs go to ``failed/``."""
        if code is None:
            raw = getattr(exc, "code", None)
            code = str(raw) if raw is not None else "error"
        message = str(exc)
        if isinstance(exc, FileRejected):
            message += " — the API refused this file; check its content and format, then drop it again"
        log.warning("job_failed", code=code, error=scrub(message))
        finish.end_job(self.ledger, self.settings, job, State.FAILED, error=message, code=code)

    def fail_at_intake(self, job_id: int, exc: InputError) -> None:
        """A job whose inputs are unusable: failed before anything is uploaded."""
        job = self.ledger.get(job_id)
        with job_context(job.id, job.name):
            self.fail(job, exc, code=exc.code)

    def defer(self, job: Job, exc: BaseException) -> None:
        """Schedule another try with capped, jittered backoff, or give up past the deadline."""
        if job.state not in ACTIVE:
            return
        now = self.clock()
        kind = f"{type(exc).__name__}:{getattr(exc, 'code', '')}"
        same = job.same_error_count + 1 if kind == job.last_error_kind else 1
        first = job.first_trouble_at or now
        retry = self.settings.retry
        if now - first > retry.deadline_hours * 3600:
            return self.fail(job, RuntimeError(f"gave up after {job.attempts + 1} attempts over "
                                               f"{(now - first) / 3600:.1f} h; last error: {exc}"), code="gave_up")
        if same >= retry.poison_after and not isinstance(exc, (RetryLater, AuthError, OSError)):
            return self.fail(job, RuntimeError(f"failed the same way {same} times: {exc}"), code="poisoned")
        delay = JOB_BACKOFF.delay(job.attempts, self.rng, getattr(exc, "retry_after", None)) or 0.0
        self.ledger.update(job.id, job.state, event="retry_scheduled",
                           detail={"error": scrub(str(exc)), "in_s": round(delay, 1)},
                           attempts=job.attempts + 1, next_attempt_at=now + delay, first_trouble_at=first,
                           last_error_kind=kind, same_error_count=same, error=scrub(str(exc)))
        log.warning("job_retry_later", error=scrub(str(exc)), in_s=round(delay, 1), attempt=job.attempts + 1)

    def pause_billing(self, job: Job, exc: BaseException) -> None:
        """The account is out of balance (or a quota is used up): not the job's fault. Requeue the
        job and pause creates until ``retry.billing_recheck_seconds`` from now (or `resume`)."""
        until = self.clock() + self.settings.retry.billing_recheck_seconds
        values = {BILLING_KEY: str(until), PAUSE_REASON_KEY: scrub(str(exc))}
        if self.ledger.get_value(BILLING_KEY) is None:
            # The start of a pause (not each recheck that finds it still on) is a `paused` event.
            self.ledger.record_notice(account_notice(self.settings, "paused", scrub(str(exc))), values)
        else:
            for key, value in values.items():
                self.ledger.set_value(key, value)
        current = self.ledger.get(job.id)
        if current.state in (State.SUBMITTING, State.GENERATING):
            self.ledger.advance(current.id, current.state, State.QUEUED, event="billing_paused",
                                detail={"msg": scrub(str(exc))}, remote_id=None, create_intent_at=None,
                                error=f"waiting for account balance: {scrub(str(exc))}")
        log.warning("billing_paused", until=until, error=scrub(str(exc)))

    def describe(self) -> dict[str, Any]:
        """The account-wide pause as status shows it (empty when there is none)."""
        until = paused_until(self.ledger, self.clock())
        return {"until": until, "reason": pause_reason(self.ledger)} if until else {}
