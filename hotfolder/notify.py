"""The notification delivery worker: pending rows of the ledger → webhook, exec hook, apprise.

A job's end (and an account-wide pause or resume) is recorded as one ``notifications`` row per
target in the same transaction as the transition (:mod:`hotfolder.ledger.notices`), so nothing
is lost however the process dies. This worker only reads those rows and records each attempt:

* **At least once.** A row is marked delivered after its receiver accepted it; a delivery cut
  short (stop, crash, power cut) stays undelivered and is sent again, so a receiver may see an
  event twice (each has a unique ``id`` to deduplicate on), never zero times.
* **In order, per target.** The oldest undelivered row of a target goes first; rows behind a
  failing one wait for it (it is retried with backoff and eventually given up), while the other
  targets go on: a dead webhook never holds up the exec hook.
* **Backoff survives restarts.** A failed attempt writes its next time into the row
  (``next_at``); after a restart the worker finds each target's head row and honours it.
* **Given up after ``notify.give_up_hours``.** A row that old whose attempt fails is given up
  (a ``notification_given_up`` line with the last error, and the metric).
* **Never blind sleeps.** The thread waits on an event until the next row is due, a new row is
  recorded in this process (:meth:`NotifyWorker.wake`, a ledger notice listener) or every
  :data:`LOOK_EVERY_S` for rows recorded by another process (``hotfolder resume``). It checks the
  stop flag at least every :data:`STOP_SLICE_S`, so it ends within a second of it.

No secret reaches a log line, an error stored in the ledger or an exec hook's environment:
the webhook secret, the API secret key and the notification URLs (which may hold tokens) are
registered with :func:`hotfolder.log.register_secret`, URLs are logged as ``scheme://host:port``
only, and error texts are masked against the parts of the configured URLs.

This module owns the scheduling (order per target, backoff, give-up, waking, draining); how a
row actually reaches its receiver (webhook POST and signature, exec hook, apprise) is
:mod:`hotfolder.notify_targets`. Its public helpers are re-exported here.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

import httpx

from hotfolder.config import NotifySettings, Settings
from hotfolder.ledger import notices
from hotfolder.log import get_logger, register_secret, scrub
from hotfolder.notify_targets import APPRISE_INSTALL_HINT, STOP_SLICE_S, _one_line, hook_environment, off_thread
from hotfolder.notify_targets import Stopped as _Stopped
from hotfolder.notify_targets import post_webhook, run_exec, send_apprise, signature
from hotfolder.retry import Backoff

if TYPE_CHECKING:
    from hotfolder.ledger import Ledger

__all__ = ["LOOK_EVERY_S", "NOTIFY_BACKOFF", "NotifyMetrics", "NotifyWorker", "hook_environment", "signature"]

log = get_logger("hotfolder.notify")

LOOK_EVERY_S = 5.0          # rows recorded by another process are noticed within this long
BATCH = 100                 # due rows read per round (more are read when held-up rows fill it)
MIN_RETRY_S = 1.0           # never schedule a retry sooner than this
LEDGER_TROUBLE_PAUSE_S = 5.0  # after an unexpected error (ledger busy past its timeout, full disk)

# 5 s doubling to 10 min. Half-jitter: a retry never comes back at once, and several targets (or
# several daemons behind one receiver) that failed together do not come back together.
NOTIFY_BACKOFF = Backoff(base=5.0, cap=600.0, max_retries=1 << 30, max_wait=float("inf"), min_fraction=0.5)


class NotifyMetrics(Protocol):
    """What the worker tells the daemon's metrics (any object with these methods)."""

    def notification_delivered(self, target: str) -> None: ...

    def notification_given_up(self, target: str) -> None: ...


# -- settings -------------------------------------------------------------------------------------
def _register_secrets(settings: Settings | NotifySettings) -> None:
    """Make sure no log line (and no exec hook's environment) can carry a credential."""
    api = getattr(settings, "api", None)
    if api is not None:
        register_secret(api.secret_key)
    server = getattr(settings, "server", None)
    if server is not None:
        register_secret(server.token)
    notify = _notify_of(settings)
    register_secret(notify.webhook_secret)
    for url in (notify.webhook, *notify.apprise):
        register_secret(url)
        with contextlib.suppress(ValueError):
            register_secret(urlsplit(url).password)


def _notify_of(settings: Settings | NotifySettings) -> NotifySettings:
    return settings if isinstance(settings, NotifySettings) else settings.notify

# -- the worker -------------------------------------------------------------------------------------
class NotifyWorker:
    """Delivers the ledger's pending notifications in one daemon thread ("hotfolder-notify").

    ``settings`` is the daemon's :class:`~hotfolder.config.Settings` (a bare
    :class:`~hotfolder.config.NotifySettings` works too). ``clock`` must be the clock the ledger
    records rows with. ``backoff``, ``rng`` and ``look_every`` are for tests.
    """

    def __init__(self, settings: Settings | NotifySettings, ledger: "Ledger", stop: threading.Event,
                 clock: Callable[[], float] = time.time, metrics: NotifyMetrics | None = None, *,
                 backoff: Backoff = NOTIFY_BACKOFF, rng: random.Random | None = None,
                 look_every: float = LOOK_EVERY_S) -> None:
        self.ledger = ledger
        self.stop = stop
        self.clock = clock
        self.metrics = metrics
        self.backoff = backoff
        self.rng = rng or random.Random()
        self.look_every = look_every
        self._settings = settings
        _register_secrets(settings)
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._client: httpx.Client | None = None
        # Only the worker thread touches what follows (no locks needed).
        self._applied: Settings | NotifySettings = settings
        self._heads: dict[str, dict[str, Any]] = {}   # target -> its oldest undelivered row, which goes first
        self._streak: dict[str, int] = {}             # target -> consecutive failed attempts
        self._failing: dict[str, str] = {}            # target -> last error, while it keeps failing
        self._apprise_sent: dict[int, set[str]] = {}  # row id -> apprise URLs that already took it
        self._apprise_missing_logged = False
        # drain(): the worker counts the rounds after which nothing was left to do now.
        self._idle = threading.Condition()
        self._idle_rounds = 0
        self._busy = False

    # -- the daemon's side ------------------------------------------------------------------------
    @property
    def thread(self) -> threading.Thread | None:
        """The worker thread once started (for the daemon's liveness checks)."""
        return self._thread

    def start(self) -> None:
        """Start the thread (once)."""
        if self._thread is not None:
            raise RuntimeError("the notification worker is already started")
        self._thread = threading.Thread(target=self._run, name="hotfolder-notify", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """Look at the ledger now: a notification was recorded (a ``ledger.notice_listeners`` entry)."""
        self._wake.set()

    def reconfigure(self, settings: Settings | NotifySettings) -> None:
        """Use ``settings`` (a config reload) for every attempt from now on. A target whose
        configuration changed is retried at once: its receiver may be the fixed one."""
        _register_secrets(settings)
        self._settings = settings   # one reference swap: the worker reads it once per round
        self._wake.set()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the thread to end (after ``stop`` was set); True if it did."""
        self._wake.set()
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def drain(self, timeout: float) -> int:
        """Wait (up to ``timeout`` seconds) until nothing is due now: every row delivered, given
        up, or waiting for a later retry. For ``run --once`` before it stops. Returns how many
        rows are still pending."""
        deadline = time.monotonic() + timeout
        with self._idle:
            # A round in progress may have read the ledger before the caller's rows: then the
            # one after it is needed (the wake below makes it start at once).
            target = self._idle_rounds + (2 if self._busy else 1)
        self._wake.set()
        with self._idle:
            while self._idle_rounds < target and self._thread is not None and self._thread.is_alive():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._idle.wait(remaining)
        return notices.pending_count(self.ledger)

    # -- the thread -------------------------------------------------------------------------------
    def _run(self) -> None:
        learned = False
        try:
            while not self.stop.is_set():
                # Cleared before looking, so a row recorded during the round wakes the next one.
                self._wake.clear()
                with self._idle:
                    self._busy = True
                try:
                    if not learned:
                        self._learn_heads()
                        learned = True
                    more = self._round()
                    deadline = None if more else self._next_look()
                except Exception as exc:   # the ledger busy past its timeout, a full disk: try later
                    log.error("notify_round_failed", error=_one_line(scrub(f"{type(exc).__name__}: {exc}")),
                              retry_in_s=LEDGER_TROUBLE_PAUSE_S)
                    deadline = self.clock() + LEDGER_TROUBLE_PAUSE_S
                if deadline is None:
                    continue
                with self._idle:
                    self._busy = False
                    self._idle_rounds += 1
                    self._idle.notify_all()
                self._wait_until(deadline)
        finally:
            if self._client is not None:
                self._client.close()
            self.ledger.close()   # this thread's connection
            with self._idle:
                self._idle.notify_all()

    def _wait_until(self, deadline: float) -> None:
        """Wait until ``deadline`` (the worker's clock), a wake or stop; at most ``look_every``."""
        seconds = min(max(0.0, deadline - self.clock()), self.look_every)
        end = time.monotonic() + seconds
        while not self.stop.is_set():
            remaining = end - time.monotonic()
            if remaining <= 0 or self._wake.wait(min(remaining, STOP_SLICE_S)):
                return

    def _next_look(self) -> float:
        """When to look again: the earliest retry of a held-up target, the next due row, or the
        periodic look for rows another process recorded."""
        now = self.clock()
        times = [now + self.look_every]
        times += [row["next_at"] for row in self._heads.values()]
        nxt = notices.next_due_at(self.ledger)
        # A row due now that this round left alone waits behind a head row (covered above).
        if nxt is not None and nxt > now:
            times.append(nxt)
        return min(times)

    def _learn_heads(self) -> None:
        """After a (re)start: each target's oldest undelivered row goes first, even when its
        retry time (``next_at``, in the ledger) is later than that of the rows behind it."""
        pending = notices.pending_count(self.ledger)
        if not pending:
            return
        seen: set[str] = set()
        for row in sorted(notices.due(self.ledger, float("inf"), limit=pending), key=lambda r: r["id"]):
            if row["target"] in seen:
                continue
            seen.add(row["target"])
            if row["attempts"] > 0:   # never tried: its next_at is its creation, the order is right
                self._heads[row["target"]] = row

    def _apply_settings(self) -> NotifySettings:
        """The settings for this round; a target whose configuration changed is tried again now."""
        settings = self._settings
        if settings is not self._applied:
            old, new = _notify_of(self._applied), _notify_of(settings)
            pairs = (("webhook", (old.webhook, old.webhook_secret), (new.webhook, new.webhook_secret)),
                     ("exec", old.exec, new.exec), ("apprise", old.apprise, new.apprise))
            changed = {target for target, before, after in pairs if before != after}
            if new.timeout_seconds != old.timeout_seconds:
                changed |= {"webhook", "exec", "apprise"}
            for target in changed:
                self._streak.pop(target, None)
                self._failing.pop(target, None)
                if target in self._heads:
                    self._heads[target] = {**self._heads[target], "next_at": 0.0}
            self._applied = settings
        return _notify_of(settings)

    def _round(self) -> bool:
        """Attempt every row that may go now; True if more may be due at once (a full batch)."""
        settings = self._apply_settings()
        now = self.clock()
        rows = notices.due(self.ledger, now, limit=BATCH)
        if len(rows) >= BATCH and any(r["target"] in self._heads for r in rows):
            # Rows waiting behind a failing head fill the batch (they are due, and oldest): read
            # them all so the other targets' rows are seen. Bounded by the give-up deadline.
            rows = notices.due(self.ledger, now, limit=max(BATCH, notices.pending_count(self.ledger)))
        by_target: dict[str, list[dict[str, Any]]] = {}
        for row in rows:
            by_target.setdefault(row["target"], []).append(row)
        attempted = False
        for target in sorted(set(by_target) | set(self._heads)):
            queue = by_target.get(target, [])
            head = self._heads.get(target)
            if head is not None:
                if head["next_at"] > now:
                    continue   # held: its rows wait for its retry, in order
                queue = [head, *(r for r in queue if r["id"] != head["id"])]
            for row in sorted(queue, key=lambda r: r["id"]):
                if self.stop.is_set():
                    return False
                attempted = True
                if not self._handle(row, settings):
                    break   # failed (now the head, held) or stopped: the rest of this target waits
        return attempted and len(rows) >= BATCH

    # -- one row ----------------------------------------------------------------------------------
    def _handle(self, row: dict[str, Any], settings: NotifySettings) -> bool:
        """Deliver one row; True if its target's line moves on (delivered or given up)."""
        target = row["target"]
        deadline = row["created_at"] + settings.give_up_hours * 3600.0
        if not self._configured(target, settings):
            self._give_up(row, f"notify.{target} is no longer configured")
            return True
        if self.clock() >= deadline and target in self._failing and row["attempts"] == 0:
            # It waited behind rows its receiver kept failing, until past its own deadline: give
            # it up with them instead of paying one more timeout per row of the backlog.
            self._give_up(row, f"the receiver is still failing: {self._failing[target]}")
            return True
        try:
            error, output = self._deliver(target, row, settings)
        except _Stopped:
            log.info("notification_interrupted", target=target, event_id=row["event_id"],
                     hint="it stays pending and is sent again at the next start")
            return False
        if error is None:
            notices.delivered(self.ledger, row["id"])
            self._heads.pop(target, None)
            self._streak.pop(target, None)
            self._failing.pop(target, None)
            self._apprise_sent.pop(row["id"], None)
            log.info("notification_delivered", target=target, kind=row["kind"], event_id=row["event_id"],
                     job_id=row["job_id"], attempts=row["attempts"] + 1, **output)
            self._count("notification_delivered", target)
            return True
        self._failing[target] = error
        now = self.clock()
        if now >= deadline:
            self._give_up(row, error)
            return True
        streak = self._streak.get(target, 0)
        self._streak[target] = streak + 1
        wait = self.backoff.delay(streak, self.rng) or self.backoff.cap
        # Never past the deadline: the last attempt happens when the row is due to be given up.
        next_at = max(now + MIN_RETRY_S, min(now + wait, deadline))
        notices.attempt_failed(self.ledger, row["id"], error, next_at)
        self._heads[target] = {**row, "attempts": row["attempts"] + 1, "next_at": next_at, "last_error": error}
        log.warning("notification_failed", target=target, kind=row["kind"], event_id=row["event_id"],
                    job_id=row["job_id"], attempts=row["attempts"] + 1, error=error,
                    retry_in_s=round(next_at - now, 1), **output)
        return False

    def _give_up(self, row: dict[str, Any], error: str) -> None:
        notices.gave_up(self.ledger, row["id"], error)
        self._heads.pop(row["target"], None)   # the next row of its target goes now
        self._apprise_sent.pop(row["id"], None)
        log.error("notification_given_up", target=row["target"], kind=row["kind"], event_id=row["event_id"],
                  job_id=row["job_id"], attempts=row["attempts"] + 1, error=error,
                  age_hours=round((self.clock() - row["created_at"]) / 3600.0, 2))
        self._count("notification_given_up", row["target"])

    def _count(self, name: str, target: str) -> None:
        if self.metrics is None:
            return
        with contextlib.suppress(Exception):   # a metrics bug must never stop deliveries
            getattr(self.metrics, name)(target)

    @staticmethod
    def _configured(target: str, settings: NotifySettings) -> bool:
        return bool({"webhook": settings.webhook, "exec": settings.exec, "apprise": settings.apprise}.get(target))

    def _deliver(self, target: str, row: dict[str, Any],
                 settings: NotifySettings) -> tuple[str | None, dict[str, str]]:
        """(None, log fields) when delivered; (the error, log fields) when not. Raises
        :class:`_Stopped` when stop cut it short."""
        if target == "webhook":
            return off_thread(lambda: self._post(row, settings), settings.timeout_seconds, self.stop), {}
        if target == "exec":
            return self._exec(row, settings)
        if target == "apprise":
            return self._apprise(row, settings), {}
        return f"unknown notification target {target!r}", {}

    # -- the transports (hotfolder.notify_targets) ------------------------------------------------
    def _post(self, row: dict[str, Any], settings: NotifySettings) -> str | None:
        if self._client is None:
            self._client = httpx.Client(follow_redirects=False)
        return post_webhook(self._client, row, settings)

    def _exec(self, row: dict[str, Any], settings: NotifySettings) -> tuple[str | None, dict[str, str]]:
        return run_exec(row, settings, self.stop)

    def _apprise(self, row: dict[str, Any], settings: NotifySettings) -> str | None:
        try:
            import apprise  # noqa: F401 (optional: hotfolder[apprise])
        except ImportError:
            if not self._apprise_missing_logged:
                self._apprise_missing_logged = True
                log.error("notify_apprise_missing", hint=APPRISE_INSTALL_HINT,
                          detail="notify.apprise is set but the apprise library is not installed; "
                                 "those notifications are retried until it is, then given up")
            return f"the apprise library is not installed: {APPRISE_INSTALL_HINT}"
        urls = list(settings.apprise)
        sent = self._apprise_sent.setdefault(row["id"], set())
        return off_thread(lambda: send_apprise(row, urls, sent), settings.timeout_seconds, self.stop)
