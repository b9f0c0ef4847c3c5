"""The daemon: threads, the stop event, signals, and resume.

Threads: the main loop (intake + dispatch), one poller, and a small pool per stage (uploads,
the single serialized submitter, downloads). Signal handlers only set the stop event. On start
the daemon takes the ledger's lock, finishes interrupted input moves, and every unfinished job
resumes from its last checkpoint simply because dispatch picks jobs by their recorded state.
Worker threads are daemon threads: on stop, a step cut short (an upload, a download) is resumed
from the ledger at the next start, so shutdown never waits for the network.
"""

from __future__ import annotations

import queue
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

from hotfolder import finish
from hotfolder.chanjing import ChanjingClient, Limits
from hotfolder.config import Settings
from hotfolder.intake import Intake
from hotfolder.ledger import Ledger
from hotfolder.locks import DaemonLock, LedgerTokenStore
from hotfolder.log import get_logger, register_secret
from hotfolder.pipeline import Pipeline
from hotfolder.poller import Poller
from hotfolder.states import TERMINAL, State
from hotfolder.watcher import Watcher

log = get_logger("hotfolder.daemon")
STOP_GRACE_S = 7.0


class StagePool:
    """A fixed set of daemon threads running ``work(job_id)`` for one stage."""

    def __init__(self, name: str, size: int, work: Callable[[int], None], running: set[int],
                 lock: threading.Lock) -> None:
        self.name = name
        self.work = work
        self.running = running
        self.lock = lock
        self.jobs: queue.SimpleQueue[int | None] = queue.SimpleQueue()
        self.threads = [threading.Thread(target=self._loop, name=f"hotfolder-{name}-{i}", daemon=True)
                        for i in range(size)]
        for thread in self.threads:
            thread.start()

    def submit(self, job_id: int) -> None:
        self.jobs.put(job_id)

    def _loop(self) -> None:
        while (job_id := self.jobs.get()) is not None:
            try:
                self.work(job_id)
            except Exception:  # the pipeline handles job errors; this guards the thread itself
                log.exception("worker_crashed", stage=self.name, job_id=job_id)
            finally:
                with self.lock:
                    self.running.discard(job_id)

    def close(self) -> None:
        for _ in self.threads:
            self.jobs.put(None)

    def join(self, deadline: float) -> None:
        for thread in self.threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))


def make_client(settings: Settings, ledger: Ledger, *, stop: threading.Event | None = None,
                **kw: Any) -> ChanjingClient:
    """The API client for these settings, keeping its token in the ledger."""
    register_secret(settings.api.secret_key)
    lim = settings.limits
    return ChanjingClient(
        settings.api.base_url, settings.api.app_id, settings.api.secret_key,
        token_store=LedgerTokenStore(ledger),
        limits=Limits(creates_per_minute=lim.creates_per_minute, file_calls_per_minute=lim.file_calls_per_minute,
                      queries_per_second=lim.queries_per_second, uploads=lim.uploads,
                      tasks_in_flight=lim.tasks_in_flight, downloads=lim.downloads),
        stop=stop, timeout=settings.api.timeout_seconds, **kw,
    )


class Daemon:
    """Runs hotfolder until stopped (or, with ``once``, until the jobs it found are finished)."""

    def __init__(self, settings: Settings, *, once: bool = False, stop: threading.Event | None = None,
                 clock: Callable[[], float] = time.time, client: ChanjingClient | None = None) -> None:
        self.settings = settings
        self.once = once
        self.stop = stop or threading.Event()
        self.clock = clock
        self._wake = threading.Event()
        self._client = client
        self._running: set[int] = set()
        self._running_lock = threading.Lock()

    def wake(self) -> None:
        self._wake.set()

    def install_signal_handlers(self) -> None:
        """SIGTERM/SIGINT only set the stop flag; the loops notice and wind down."""
        def handler(signum: int, _frame: FrameType | None) -> None:
            self.stop.set()
            self._wake.set()
        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)

    def run(self) -> int:
        """Run to the end; returns the process exit code."""
        lock = DaemonLock(self.settings.ledger_path)
        lock.acquire()
        try:
            return self._run()
        finally:
            lock.release()

    def _run(self) -> int:
        s = self.settings
        for folder in (s.folders.outbox, s.folders.archive, s.folders.failed):
            folder.mkdir(parents=True, exist_ok=True)
        ledger = Ledger(s.ledger_path, clock=self.clock)
        client = self._client or make_client(s, ledger, stop=self.stop)
        pipeline = Pipeline(s, ledger, client, stop=self.stop, clock=self.clock, wake=self.wake)
        poller = Poller(ledger, client, pipeline)
        intake = Intake(s, ledger, clock=self.clock, on_failed=pipeline.fail_at_intake)
        intake.stop = self.stop
        moved = finish.complete_pending(ledger, s)
        counts = ledger.counts()
        log.info("daemon_start", once=self.once, inbox=str(s.folders.inbox), ledger=str(s.ledger_path),
                 api=s.api.base_url, jobs=counts, finished_interrupted_moves=moved)

        tracked: set[int] = set()
        if self.once:
            listing = intake.list_inbox() or []
            intake.only = {rel for rel, _size, _mtime in listing}
            tracked = {j.id for j in ledger.jobs() if j.state not in TERMINAL and j.state != State.WAITING}

        pools = {
            "upload": StagePool("upload", s.limits.uploads + 2, pipeline.run, self._running, self._running_lock),
            "submit": StagePool("submit", 1, pipeline.run, self._running, self._running_lock),
            "download": StagePool("download", s.limits.downloads, pipeline.run, self._running, self._running_lock),
        }
        stage_of = {State.QUEUED: "upload", State.UPLOADING: "upload", State.SUBMITTING: "submit",
                    State.DOWNLOADING: "download"}
        poll_thread = threading.Thread(target=self._poll_loop, args=(poller,), name="hotfolder-poller", daemon=True)
        poll_thread.start()
        watcher = Watcher(s.folders.inbox, self.wake)
        exit_code = 0
        next_rescan = 0.0
        try:
            while not self.stop.is_set():
                now = self.clock()
                changed = watcher.drain()
                wait_for: list[float] = [now + s.watch.rescan_seconds]
                result = None
                if (changed or now >= next_rescan or self.once) and not self._low_on_space():
                    watcher.ensure()   # (re)start it first, then scan: nothing slips between
                    try:
                        if now >= next_rescan:
                            with self._running_lock:
                                busy = set(self._running)
                            finish.complete_pending(ledger, s, skip=busy)   # moves a full disk held up
                        result = intake.scan()
                    except Exception:   # one bad scan must not end the daemon: log, look again later
                        log.exception("intake_failed")
                        next_rescan = now + s.watch.rescan_seconds
                        result = None
                if result is not None:
                    next_rescan = now + s.watch.rescan_seconds
                    tracked.update(result.created)
                    if result.next_check is not None:
                        wait_for.append(result.next_check)
                        next_rescan = min(next_rescan, result.next_check)
                    if self.once and result.inbox_ok and not result.unsettled \
                            and self._once_finished(ledger, tracked):
                        exit_code = self._once_exit_code(ledger, tracked)
                        break
                for job in ledger.jobs(stage_of):
                    if job.next_attempt_at > now:
                        wait_for.append(job.next_attempt_at)
                        continue
                    if job.outputs.get("moves_pending"):
                        continue
                    with self._running_lock:
                        if job.id in self._running:
                            continue
                        self._running.add(job.id)
                    pools[stage_of[job.state]].submit(job.id)
                timeout = max(0.05, min(wait_for) - self.clock())
                self._wake.wait(timeout=min(timeout, 1.0 if self.once else timeout))
                self._wake.clear()
        finally:
            self.stop.set()
            watcher.stop()
            deadline = time.monotonic() + STOP_GRACE_S
            for pool in pools.values():
                pool.close()
            for pool in pools.values():
                pool.join(deadline)
            poll_thread.join(timeout=max(0.0, deadline - time.monotonic()))
            log.info("daemon_stop", jobs=ledger.counts())
        return exit_code

    def _low_on_space(self) -> bool:
        """Intake pauses while the outbox's disk is below ``disk.min_free_mb`` (and says so once)."""
        from hotfolder.outbox import free_bytes

        free = free_bytes(self.settings.folders.outbox)
        low = free < self.settings.disk.min_free_mb * 2**20
        if low != getattr(self, "_was_low", False):
            (log.warning if low else log.info)("intake_paused_low_space" if low else "intake_resumed_space",
                                               free_mb=free // 2**20, min_free_mb=self.settings.disk.min_free_mb)
            self._was_low = low
        return low

    def _poll_loop(self, poller: Poller) -> None:
        interval = self.settings.watch.poll_interval
        while not self.stop.is_set():
            try:
                if poller.poll_once():
                    self.wake()
            except Exception:
                log.exception("poller_crashed")
            self.stop.wait(interval)

    @staticmethod
    def _once_finished(ledger: Ledger, tracked: set[int]) -> bool:
        for job_id in tracked:
            job = ledger.get(job_id)
            if job.state == State.WAITING:
                continue
            if job.state not in TERMINAL or job.outputs.get("moves_pending"):
                return False
        return True

    @staticmethod
    def _once_exit_code(ledger: Ledger, tracked: set[int]) -> int:
        states = [ledger.get(j).state for j in tracked]
        return 1 if any(st in (State.FAILED, State.CANCELLED) for st in states) else 0
