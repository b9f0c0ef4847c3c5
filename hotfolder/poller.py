"""One poller follows every remote task in flight.

With two or more tasks it reads the task list (newest first, 50 a page: one call covers up to 50
tasks) and falls back to ``detail`` only for tasks the list did not show; with one it asks
``detail``. Results move jobs to ``downloading``; a failed task fails its job, unless the API
says the account ran out of balance, which pauses submissions and requeues the job.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any


from hotfolder.chanjing import ChanjingClient
from hotfolder.chanjing.mapping import is_billing_message
from hotfolder.config import Settings
from hotfolder.errors import ApiError, BillingPaused, PermanentError, TaskFailed
from hotfolder.ledger import Job, Ledger
from hotfolder.log import get_logger, job_context
from hotfolder.outcomes import Outcomes
from hotfolder.states import State

if TYPE_CHECKING:
    from hotfolder.metrics import Metrics

log = get_logger("hotfolder.poller")
STATUS_SUCCESS, STATUS_FAILED = 20, 30
PAGE_SIZE = 50


class Poller:
    """Follows tasks in flight; called by the daemon every ``poll_interval``."""

    def __init__(self, settings: Settings, ledger: Ledger, client: ChanjingClient, outcomes: Outcomes,
                 clock: Callable[[], float], metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.ledger = ledger
        self.client = client
        self.outcomes = outcomes
        self.clock = clock
        self.metrics = metrics
        self._hints: set[str] = set()
        self._hints_lock = threading.Lock()

    def hint(self, remote_id: str) -> None:
        """The API says (a callback) that this task ended: check it with ``detail`` at once."""
        with self._hints_lock:
            self._hints.add(str(remote_id))

    def check_hints(self) -> int:
        """Confirm hinted tasks with ``detail`` (a callback is only a hint); returns how many changed.
        A hint for a task no generating job has is logged and dropped."""
        with self._hints_lock:
            hints, self._hints = self._hints, set()
        changed = 0
        for remote_id in sorted(hints):
            job = self.ledger.job_for_remote(remote_id)
            if job is None or job.state != State.GENERATING:
                log.info("callback_ignored", remote_id=remote_id,
                         reason="no job follows this task" if job is None else f"its job is {job.state}")
                continue
            with job_context(job.id, job.name):
                try:
                    task = self.client.task_detail(remote_id)
                except ApiError as exc:
                    log.warning("callback_confirm_failed", remote_id=remote_id, error=str(exc))
                    continue
                changed += self._apply(job, task)
        return changed

    def poll_once(self) -> int:
        """Check every generating job once; returns how many changed state."""
        jobs = [j for j in self.ledger.jobs([State.GENERATING]) if j.remote_id]
        if not jobs:
            return 0
        wanted = {str(j.remote_id): j for j in jobs}
        try:
            tasks = self._via_list(wanted) if len(jobs) >= 2 else {}
            for remote_id in wanted.keys() - tasks.keys():
                try:
                    tasks[remote_id] = self.client.task_detail(remote_id)
                except PermanentError as exc:
                    with job_context(wanted[remote_id].id, wanted[remote_id].name):
                        self.outcomes.defer(wanted[remote_id], exc)
        except ApiError as exc:
            log.warning("poll_failed", error=str(exc))
            return 0
        changed = 0
        for remote_id, task in tasks.items():
            job = wanted[remote_id]
            with job_context(job.id, job.name):
                changed += self._apply(job, task)
        return changed

    def _via_list(self, wanted: dict[str, Job]) -> dict[str, Any]:
        found: dict[str, Any] = {}
        # Tasks in flight are recent, so the first pages hold them; bound the walk all the same.
        max_pages = math.ceil(len(wanted) / PAGE_SIZE) + 2
        page = 1
        while page <= max_pages:
            result = self.client.list_tasks(page=page, page_size=PAGE_SIZE)
            for task in result.tasks:
                if str(task.id) in wanted:
                    found[str(task.id)] = task
            if len(found) == len(wanted) or page >= result.total_page or not result.tasks:
                break
            page += 1
        return found

    def _apply(self, job: Job, task: Any) -> int:
        status = task.status
        if status == STATUS_SUCCESS:
            if self.ledger.advance(job.id, State.GENERATING, State.DOWNLOADING, event="task_succeeded",
                                   video_url=task.video_url, preview_url=task.preview_url, progress=100,
                                   duration_ms=task.duration):
                log.info("task_succeeded", remote_id=job.remote_id)
                if self.metrics is not None and job.create_intent_at:
                    # From the create's intent (just before it was sent) to the first sight of success.
                    self.metrics.observe_stage("generation", max(0.0, self.clock() - job.create_intent_at))
                return 1
            return 0
        if status == STATUS_FAILED:
            msg = task.msg or "the lip-sync task failed without a message"
            if is_billing_message(msg):
                self.outcomes.pause_billing(job, BillingPaused(msg, code=STATUS_FAILED))
            else:
                self.outcomes.fail(job, TaskFailed(f"the API could not make the video: {msg}",
                                                   code=STATUS_FAILED, endpoint="detail"), code="task_failed")
            return 1
        started = job.create_intent_at or job.created_at
        limit_h = self.settings.retry.deadline_hours
        if self.clock() - started > limit_h * 3600:
            self.outcomes.fail(job, TaskFailed(
                f"the API has not finished task {job.remote_id} after {limit_h:g} h (status {status}); "
                f"it may be stuck on their side: retry the job or contact Chanjing support with this id",
                code=status, endpoint="detail"), code="task_stuck")
            return 1
        progress = int(task.progress or 0)
        if progress != job.progress:
            self.ledger.update(job.id, State.GENERATING, progress=progress)
        return 0
