"""The daemon: threads, the stop event, signals, and resume.

Threads: the main loop (intake + dispatch), one poller, and a small pool per stage (uploads,
the single serialized submitter, downloads). Signal handlers only set flags. On start the daemon
takes the ledger's lock, finishes interrupted input moves, and every unfinished job resumes from
its last checkpoint simply because dispatch picks jobs by their recorded state. Worker threads
are daemon threads: on stop, a step cut short (an upload, a download) is resumed from the ledger
at the next start, so shutdown never waits for the network.

Each turn of the main loop is a few named steps (:meth:`Daemon._scan`, :meth:`Daemon._dispatch`,
:meth:`Daemon._housekeeping`); none of them costs in proportion to the jobs ever recorded. A
person's command in another process (`retry`, `cancel`, `resume`) bumps a counter in the ledger
that the loop reads every :data:`CONTROL_POLL_S`, so it is acted on within about a second.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import TYPE_CHECKING

from hotfolder import config, finish, reload
from hotfolder.chanjing import CallRecord, ChanjingClient
from hotfolder.config import Settings
from hotfolder.errors import ConfigError
from hotfolder.intake import Intake, ScanResult, list_inbox, make_preset_folders
from hotfolder.ledger import Ledger
from hotfolder.ledger.reports import prune
from hotfolder.liveness import Liveness, WatchdogPinger, folder_present, folder_writable, start_watchdog, status_line
from hotfolder.locks import DaemonLock, LedgerTokenStore
from hotfolder.log import get_logger, register_secret
from hotfolder.metrics import Metrics
from hotfolder.mounts import remember_folder
from hotfolder.notify import NotifyWorker
from hotfolder.once import EXIT_FAILED, EXIT_INBOX_MISSING, EXIT_OK, OnceRun  # noqa: F401 (re-exported)
from hotfolder.outbox import free_bytes
from hotfolder.outcomes import Outcomes
from hotfolder.pipeline import Pipeline
from hotfolder.outcomes import pause_reason, paused_until
from hotfolder.poller import Poller
from hotfolder.sdnotify import Notifier
from hotfolder.states import ACTIVE, State
from hotfolder.trouble import ApiTrouble, current
from hotfolder.watcher import make_watcher
from hotfolder.workers import StagePool

if TYPE_CHECKING:   # starlette/uvicorn are imported only when the listener is on
    from hotfolder.server import Listener

log = get_logger("hotfolder.daemon")
STOP_GRACE_S = 7.0
CONTROL_POLL_S = 1.0          # how often the loop looks for a person's command from another process
ONCE_INBOX_GRACE_S = 10.0     # `run --once`: how long a missing inbox may take to come back
PRUNE_EVERY_S = 86400.0
MAIN_LOOP_MAX_SILENCE_S = 90.0   # one turn may take this long beyond its planned wait
NOTIFY_DRAIN_S = 10.0   # `run --once`: how long its notifications may take to go out before it exits
STAGE_OF = {State.QUEUED: "upload", State.UPLOADING: "upload", State.SUBMITTING: "submit",
            State.DOWNLOADING: "download"}


def make_client(settings: Settings, ledger: Ledger, *, stop: threading.Event | None = None,
                observer: Callable[[CallRecord], None] | None = None, **kw: object) -> ChanjingClient:
    """The API client for these settings, keeping its token in the ledger."""
    register_secret(settings.api.secret_key)
    return ChanjingClient(
        settings.api.base_url, settings.api.app_id, settings.api.secret_key,
        token_store=LedgerTokenStore(ledger), limits=settings.limits,
        stop=stop, timeout=settings.api.timeout_seconds, observer=observer, **kw,  # type: ignore[arg-type]
    )


class Daemon:
    """Runs hotfolder until stopped (or, with ``once``, until the jobs it found are finished)."""

    def __init__(self, settings: Settings, *, once: bool = False, stop: threading.Event | None = None,
                 clock: Callable[[], float] = time.time, client: ChanjingClient | None = None,
                 inbox_grace: float = ONCE_INBOX_GRACE_S, notifier: Notifier | None = None,
                 liveness: Liveness | None = None, loop_max_silence: float = MAIN_LOOP_MAX_SILENCE_S,
                 jobs_only: set[int] | None = None) -> None:
        self.settings = settings
        self.once = once
        self.stop = stop or threading.Event()
        self.clock = clock
        self.inbox_grace = inbox_grace
        self.loop_max_silence = loop_max_silence
        # `hotfolder submit` without a running daemon: drive these jobs only, take nothing new.
        self.jobs_only = jobs_only
        self._wake = threading.Event()
        self._client = client
        self._running: set[int] = set()
        self._running_lock = threading.Lock()
        self._was_low = False
        self.first_scan_done = False
        self.notifier = notifier or Notifier({})
        self.liveness = liveness or Liveness()
        self._pinger: WatchdogPinger | None = None
        self._reload_requested = False
        self._ready_sent = False
        self._poll_wake = threading.Event()   # set by stop, a callback, or a reload
        self.listener: Listener | None = None
        self._callbacks_seen_at = 0.0

    def wake(self) -> None:
        self._wake.set()

    def install_signal_handlers(self) -> None:
        """SIGTERM/SIGINT only set the stop flag, SIGHUP the reload flag; the loop does the rest."""
        def handler(signum: int, _frame: FrameType | None) -> None:
            self.stop.set()
            self._wake.set()

        def on_hup(signum: int, _frame: FrameType | None) -> None:
            self.request_reload()
        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)
        signal.signal(signal.SIGHUP, on_hup)

    def request_reload(self) -> None:
        """Re-read the config at the loop's next turn (what SIGHUP does)."""
        self._reload_requested = True
        self._wake.set()

    def run(self) -> int:
        """Run to the end; returns the process exit code."""
        lock = DaemonLock(self.settings.ledger_path)
        lock.acquire()
        try:
            return self._run()
        finally:
            lock.release()

    # -- start and stop -----------------------------------------------------------------------
    def _start(self) -> None:
        s = self.settings
        for folder in (s.folders.outbox, s.folders.archive, s.folders.failed):
            folder.mkdir(parents=True, exist_ok=True)
            remember_folder(folder)   # a share that goes away later pauses placement, see mounts
        make_preset_folders(self.settings)
        for secret in (s.api.secret_key, s.server.token, s.notify.webhook_secret):
            register_secret(secret)
        self.ledger = ledger = Ledger(s.ledger_path, clock=self.clock)
        self.metrics = Metrics(ledger, clock=self.clock)
        ledger.listeners.append(self.metrics.on_transition)
        self.trouble = ApiTrouble(ledger, s.api.base_url, clock=self.clock)
        self.client = self._client or make_client(s, ledger, stop=self.stop, observer=self._observe_call)
        self.outcomes = Outcomes(s, ledger, clock=self.clock)
        self.notify = NotifyWorker(s, ledger, self.stop, clock=self.clock, metrics=self.metrics)
        ledger.notice_listeners.append(self.notify.wake)
        self.notify.start()
        self.pipeline = Pipeline(s, ledger, self.client, stop=self.stop, clock=self.clock, wake=self.wake,
                                 outcomes=self.outcomes, metrics=self.metrics)
        self.poller = Poller(s, ledger, self.client, self.outcomes, self.clock, metrics=self.metrics)
        self.once_state = OnceRun(self.inbox_grace, jobs_only=self.jobs_only is not None)
        only: set[str] | None = None
        first_listing = False
        if self.jobs_only is not None:
            only = set()
            self.once_state.tracked = set(self.jobs_only)
        elif self.once:
            listing = list_inbox(s.folders.inbox)
            only = {rel for rel, _size, _mtime in listing or []}
            first_listing = listing is None   # no inbox yet: take what is there when it appears
            self.once_state.tracked = {j.id for j in ledger.jobs(ACTIVE)}
        self.intake = Intake(s, ledger, clock=self.clock, on_failed=self.outcomes.fail_at_intake, stop=self.stop,
                             only=only, only_first_listing=first_listing)
        moved = finish.complete_pending(ledger, s)
        from hotfolder import convert

        log.info("daemon_start", once=self.once, inbox=str(s.folders.inbox), ledger=str(s.ledger_path),
                 api=s.api.base_url, jobs=ledger.counts(), finished_interrupted_moves=moved,
                 ffmpeg=convert.find_ffmpeg() or "none: mkv, avi, flac, ogg… fail at intake")
        self.pools = {
            "upload": StagePool("upload", s.limits.uploads + 2, self.pipeline.run, self._running, self._running_lock),
            "submit": StagePool("submit", 1, self.pipeline.run, self._running, self._running_lock),
            "download": StagePool("download", s.limits.downloads, self.pipeline.run, self._running,
                                  self._running_lock),
        }
        self.poll_thread = threading.Thread(target=self._poll_loop, name="hotfolder-poller", daemon=True)
        self.poll_thread.start()
        self.watcher = make_watcher(s.folders.inbox, self.wake, s.watch.mode, s.watch.poll_seconds)
        self.liveness.register("main_loop", max_silence=self.loop_max_silence)
        self.liveness.register("poller", max_silence=self.loop_max_silence + self.settings.api.timeout_seconds * 3)
        for pool in self.pools.values():
            self.liveness.register_threads(pool.threads)
        self.liveness.register_thread(self.poll_thread)
        if self.notify.thread is not None:
            self.liveness.register_thread(self.notify.thread)
        self.liveness.add_check(folder_present(s.folders.inbox, "inbox"))
        self.liveness.add_check(folder_writable(s.ledger_path.parent, "ledger folder"))
        self._pinger = start_watchdog(self.notifier, self.liveness, self.stop)
        self.listener = self._start_listener()
        self.control_seq = ledger.control_seq()
        self.next_rescan = 0.0
        self.next_control = 0.0
        self.next_prune = self.clock() + 60.0   # not in the start-up path

    def _shutdown(self) -> None:
        if self.once and not self.stop.is_set():
            # `run --once` ends after its jobs: let their notifications go out first (what cannot
            # go now stays in the ledger for the next run).
            self.notify.drain(NOTIFY_DRAIN_S)
        self.notifier.stopping()
        self.stop.set()
        self._poll_wake.set()
        deadline = time.monotonic() + STOP_GRACE_S   # the listener's stop comes out of the same grace
        if self.listener is not None:
            self.listener.stop()   # at most ~2.5 s; callbacks are pointless now
        self.watcher.stop()
        for pool in self.pools.values():
            pool.close()
        for pool in self.pools.values():
            pool.join(deadline)
        self.poll_thread.join(timeout=max(0.0, deadline - time.monotonic()))
        self.notify.join(timeout=max(0.0, min(1.5, deadline - time.monotonic())))
        if self._pinger is not None:
            self._pinger.join(timeout=1.0)
        log.info("daemon_stop", jobs=self.ledger.counts())

    def _observe_call(self, record: CallRecord) -> None:
        """The client's observer: API trouble (for status) and metrics both see every call."""
        for observe in (self.trouble.record, self.metrics.observe_call):
            try:
                observe(record)
            except Exception:   # one observer's bug must not hide the call from the other
                log.exception("api_observer_failed", endpoint=record.endpoint)

    def _start_listener(self) -> Listener | None:
        """The HTTP listener (health, metrics, callbacks), or None when it is off or cannot bind
        (logged by the listener; the daemon goes on without it)."""
        if not self.settings.server.listen:
            return None
        from hotfolder.server import Listener

        listener = Listener(self.settings, self.ledger, self.liveness, self.metrics, self.task_hint, self.clock,
                            wake=self.wake)
        return listener if listener.start() else None

    def _run(self) -> int:
        self._start()
        try:
            while not self.stop.is_set():
                code = self._turn()
                if code is not None:
                    return code
            return EXIT_OK
        finally:
            self._shutdown()

    # -- one turn of the main loop ---------------------------------------------------------------
    def _turn(self) -> int | None:
        """Scan if anything may have changed, dispatch due jobs, then wait; an exit code ends `--once`."""
        now = self.clock()
        if self._reload_requested:
            self._reload()
        wait_for = [now + self.settings.watch.rescan_seconds]
        woken_by_person = self._control_changed(now)
        changed = bool(self.watcher.drain()) or woken_by_person
        if changed or now >= self.next_rescan or self.once:
            result = self._scan(now)
            if result is not None and not self.first_scan_done:
                self.first_scan_done = True
                log.info("first_scan_done", files=len(result.files), jobs_recorded=len(result.created),
                         inbox_ok=result.inbox_ok)
            if result is not None:
                code = self._once_progress(result, now)
                if code is not None:
                    return code
                if result.next_check is not None:
                    wait_for.append(result.next_check)
        self._dispatch(now, wait_for)
        self._housekeeping(now)
        timeout = min(max(0.05, min(wait_for) - self.clock()), CONTROL_POLL_S)
        self._report(timeout)
        self._wake.wait(timeout=timeout)
        self._wake.clear()
        return None

    def _report(self, wait: float) -> None:
        """Tell systemd how things are (READY once the first scan is done), and that the loop lives."""
        if self.first_scan_done:
            line = self.status_text()
            if not self._ready_sent:
                self.notifier.ready(line)
                self._ready_sent = True
            else:
                self.notifier.status(line)   # sent only when it changed
        self.liveness.beat("main_loop", expect_wait=wait)

    def status_text(self) -> str:
        """The one-line summary (systemd's STATUS=): counts, and a pause or API trouble."""
        line = status_line(self.ledger.counts(), self.liveness.check())
        if paused_until(self.ledger, self.clock()):
            line += f"; submissions paused ({pause_reason(self.ledger) or 'billing'})"
        trouble = current(self.ledger)
        if trouble:
            line += f"; API trouble: {trouble['kind'].replace('_', ' ')}"
        return line

    def _reload(self) -> None:
        """Re-read the config; a valid one applies to everything not yet submitted, an invalid one
        is refused (the key in the log and STATUS) and the old one stays."""
        self._reload_requested = False
        self.notifier.reloading()
        try:
            new = config.load(self.settings.config_path)
        except ConfigError as exc:
            log.error("reload_refused", key=exc.key, error=str(exc), hint="the previous config stays in effect")
            self.notifier.ready(f"reload refused ({exc.key or 'config'}): {exc} | {self.status_text()}")
            return
        reload.apply(self, new)
        self.notifier.ready(self.status_text())

    def _control_changed(self, now: float) -> bool:
        """Whether a person changed something from another process since the last look."""
        if now < self.next_control:
            return False
        self.next_control = now + CONTROL_POLL_S
        seq = self.ledger.control_seq()
        if seq == self.control_seq:
            return False
        self.control_seq = seq
        log.info("control_noticed")
        return True

    def _scan(self, now: float) -> ScanResult | None:
        """Look at the inbox (and finish moves a full disk held up); None while space is short."""
        if self._low_on_space():
            return None
        self.watcher.ensure()   # (re)start it first, then scan: nothing slips between
        try:
            if now >= self.next_rescan:
                with self._running_lock:
                    busy = set(self._running)
                finish.complete_pending(self.ledger, self.settings, skip=busy)   # moves a full disk held up
            result = self.intake.scan()
        except Exception:   # one bad scan must not end the daemon: log, look again later
            log.exception("intake_failed")
            self.next_rescan = now + self.settings.watch.rescan_seconds
            return None
        self.next_rescan = now + self.settings.watch.rescan_seconds
        if result.next_check is not None:
            self.next_rescan = min(self.next_rescan, result.next_check)
        if self.once:
            self.once_state.tracked.update(result.created)
        return result

    def _once_progress(self, result: ScanResult, now: float) -> int | None:
        """`run --once`: the exit code once everything it drives has ended, else None."""
        if not self.once:
            return None
        return self.once_state.progress(self.ledger, result, now, str(self.settings.folders.inbox))

    def _dispatch(self, now: float, wait_for: list[float]) -> None:
        """Hand every due job of an active stage to its pool (each job to one worker at a time)."""
        for job in self.ledger.jobs(STAGE_OF):
            if job.next_attempt_at > now:
                wait_for.append(job.next_attempt_at)
                continue
            if job.moves_pending:
                continue
            with self._running_lock:
                if job.id in self._running:
                    continue
                self._running.add(job.id)
            self.pools[STAGE_OF[job.state]].submit(job.id)

    def _housekeeping(self, now: float) -> None:
        """Daily pruning when ``[ledger] keep_days`` asks for it."""
        keep_days = self.settings.ledger.keep_days
        if keep_days <= 0 or now < self.next_prune:
            return
        self.next_prune = now + PRUNE_EVERY_S
        try:
            removed = prune(self.ledger, now - keep_days * 86400)
            log.info("ledger_pruned", keep_days=keep_days, **removed)
        except Exception:
            log.exception("prune_failed")

    def _low_on_space(self) -> bool:
        """Intake pauses while the outbox's disk is below ``disk.min_free_mb`` (and says so once)."""
        free = free_bytes(self.settings.folders.outbox)
        low = free < self.settings.disk.min_free_mb * 2**20
        if low != self._was_low:
            (log.warning if low else log.info)("intake_paused_low_space" if low else "intake_resumed_space",
                                               free_mb=free // 2**20, min_free_mb=self.settings.disk.min_free_mb)
            self._was_low = low
        return low

    def task_hint(self, remote_id: str) -> None:
        """A callback said this task ended: the poller confirms it with ``detail`` now."""
        self.poller.hint(remote_id)
        self._callbacks_seen_at = self.clock()
        self._poll_wake.set()

    def _poll_interval(self) -> float:
        """``poll_interval``, stretched (at most 3x, at most 60 s) while callbacks arrive: the
        poller stays the source of truth, callbacks only make it act sooner."""
        base = self.settings.watch.poll_interval
        if self._callbacks_seen_at and self.clock() - self._callbacks_seen_at < 3600:
            return max(base, min(base * 3, 60.0))
        return base

    def _poll_loop(self) -> None:
        next_poll = 0.0
        while not self.stop.is_set():
            try:
                changed = self.poller.check_hints()
                if time.monotonic() >= next_poll:
                    changed += self.poller.poll_once()
                    next_poll = time.monotonic() + self._poll_interval()
                if changed:
                    self.wake()
            except Exception:
                log.exception("poller_crashed")
            self.liveness.beat("poller", expect_wait=max(0.0, next_poll - time.monotonic()))
            self._poll_wake.wait(max(0.0, next_poll - time.monotonic()))
            self._poll_wake.clear()
