"""Drives one job through its steps: upload, submit, (the poller follows), download, finish.

Each step is straight-line code that skips what the ledger says is done, records its intent
before the external side effect and its result before the next step, so any step can be cut
anywhere (kill, power cut) and simply run again. Errors are sorted by what to do (see
:mod:`hotfolder.errors`): retry later with a backoff kept in the ledger (so it survives a
restart), pause for billing, or fail with a message a person can act on.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hotfolder import callbacks, dedupe, finish
from hotfolder.downloads import Downloader, NotNow
from hotfolder.chanjing import ChanjingClient, LipSyncRequest
from hotfolder.config import Settings
from hotfolder.errors import (ApiError, AuthError, BillingPaused, InputError, Interrupted, OutcomeUnknown,
                              PermanentError, RetryLater)
from hotfolder.intake import build_params, file_facts
from hotfolder.ledger import Job, Ledger
from hotfolder.log import get_logger, job_context
from hotfolder import convert
from hotfolder.outcomes import Outcomes, lift_pause, paused_until
from hotfolder.states import State

if TYPE_CHECKING:
    from hotfolder.metrics import Metrics

log = get_logger("hotfolder.pipeline")

SERVICES = {"video": "lip_sync_video", "audio": "lip_sync_audio"}
FILE_ID_FIELD = {"video": "video_file_id", "audio": "audio_file_id"}
# Server clocks differ from ours; a task created "before" our intent by less than this is a candidate.
CLOCK_SKEW_S = 300.0
UPLOAD_RECHECK_AGE_S = 6 * 3600.0   # re-check a cached upload older than this before reuse


def _cache_service(job: Job, role: str) -> str:
    """The upload cache's service key for a role: marked when its input is uploaded converted."""
    service = SERVICES[role]
    return service + convert.CACHE_MARK if convert.needs_conversion(job.files[role]) else service


class Pipeline:
    """The steps of a job. One instance is shared by all worker threads."""

    def __init__(self, settings: Settings, ledger: Ledger, client: ChanjingClient, *,
                 stop: threading.Event | None = None, clock: Callable[[], float] = time.time,
                 rng: random.Random | None = None, wake: Callable[[], None] | None = None,
                 outcomes: Outcomes | None = None, metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.ledger = ledger
        self.client = client
        self.stop = stop or threading.Event()
        self.clock = clock
        self.wake = wake or (lambda: None)
        self.metrics = metrics
        self.outcomes = outcomes or Outcomes(settings, ledger, clock=clock, rng=rng or random.Random())
        self.upload_slots = threading.BoundedSemaphore(settings.limits.uploads)
        self.downloader = Downloader(settings, ledger, client, self.outcomes, clock=clock, metrics=metrics)
        self.create_lock = threading.Lock()   # creates are serialized: reconciliation depends on it
        # One upload per distinct content at a time: identical files dropped together upload once.
        self._content_locks: dict[tuple[str, str], threading.Lock] = {}
        self._content_locks_guard = threading.Lock()
        # Formats the API does not take are converted in the upload stage, in the worker that
        # uploads them, at most limits.uploads at a time; checkpoints in <ledger folder>/work.
        self.converter = convert.Converter(convert.work_dir(settings), settings.limits.uploads, self.stop)
        finish.sweep_work_files(ledger, settings)   # conversions whose job ended while we were away

    def reconfigure(self, settings: Settings) -> None:
        """A reloaded config: new limits and defaults for steps that start from now on (a step
        already holding a slot finishes on the old one)."""
        self.settings = settings
        self.outcomes.settings = settings
        self.upload_slots = threading.BoundedSemaphore(settings.limits.uploads)
        self.downloader.reconfigure(settings)
        self.converter.set_slots(settings.limits.uploads)
        self.client.set_limits(settings.limits)

    # -- the driver ---------------------------------------------------------------------------
    def run(self, job_id: int) -> None:
        """Run the job's next step (whatever its state says), handling every error."""
        job = self.ledger.get(job_id)
        with job_context(job.id, job.name):
            try:
                if job.state in (State.QUEUED, State.UPLOADING):
                    job = self.upload(job)
                if job.state == State.SUBMITTING:
                    job = self.submit(job)
                if job.state == State.DOWNLOADING:
                    self.download(job)
            except NotNow as exc:
                self.ledger.update(job.id, self.ledger.get(job.id).state, next_attempt_at=exc.at)
                log.debug("job_not_now", reason=str(exc))
            except Interrupted:
                log.debug("job_interrupted_by_stop")   # resumes from its checkpoint at the next start
            except BillingPaused as exc:
                self.outcomes.pause_billing(job, exc)
            except (PermanentError, InputError) as exc:
                self.outcomes.fail(self.ledger.get(job.id), exc)
            except (RetryLater, AuthError, OSError) as exc:
                self.outcomes.defer(self.ledger.get(job.id), exc)
            except Exception as exc:  # a bug must not kill the daemon; the poison guard ends it
                log.exception("job_step_crashed")
                self.outcomes.defer(self.ledger.get(job.id), exc)
            finally:
                self.wake()

    # -- upload -------------------------------------------------------------------------------
    def upload(self, job: Job) -> Job:
        """queued/uploading → submitting: every input uploaded (or reused) and ready."""
        # Timed only when the whole stage runs in this call (not a step resumed after a restart).
        stage_started = time.monotonic() if job.state == State.QUEUED else None
        if job.state == State.QUEUED:
            started = self.ledger.advance(job.id, State.QUEUED, State.UPLOADING, event="upload_started")
            if started is None:
                return self.ledger.get(job.id)
            job = started
        job = self._verify_inputs(job)
        roles = [role for role in ("video", "audio") if role in job.files and not getattr(job, FILE_ID_FIELD[role])]
        # Conversions first: an input ffmpeg cannot convert fails the job before anything is uploaded.
        converted = {role: self._convert(job, role) for role in roles if self._must_convert(job, role)}
        for role in roles:
            file_id = self._upload_one(job, role, converted.get(role))
            uploaded = self.ledger.update(job.id, State.UPLOADING, event="uploaded",
                                          detail={"role": role, "file_id": file_id}, **{FILE_ID_FIELD[role]: file_id})
            if uploaded is None:
                return self.ledger.get(job.id)
            job = uploaded
        for role in ("video", "audio"):
            file_id = getattr(job, FILE_ID_FIELD[role])
            if file_id:
                self.client.wait_file_ready(file_id, timeout=self.settings.retry.file_ready_timeout, stop=self.stop)
        ready = self.ledger.advance(job.id, State.UPLOADING, State.SUBMITTING, event="files_ready")
        if ready is not None and stage_started is not None and self.metrics is not None:
            self.metrics.observe_stage("upload", time.monotonic() - stage_started)
        return ready or self.ledger.get(job.id)

    def _verify_inputs(self, job: Job) -> Job:
        """Re-hash the inputs: a file changed since it was taken starts the job over."""
        changed = []
        for role, facts in job.inputs.items():
            path = Path(job.files[role])
            try:
                st = path.stat()
            except FileNotFoundError as exc:
                raise InputError(f"{path.name} vanished from the inbox before it was uploaded: drop the "
                                 "files again", path=path.name) from exc
            if st.st_size != facts["size"] or st.st_mtime_ns != facts["mtime_ns"]:
                if file_facts(path, self.stop)["sha256"] != facts["sha256"]:
                    changed.append(role)
        if not changed:
            return job
        params = build_params(self.settings, {r: Path(p) for r, p in job.files.items()}, job.name)
        inputs = {role: file_facts(Path(p), self.stop) for role, p in job.files.items()}
        updated = self.ledger.update(job.id, State.UPLOADING, event="inputs_changed", detail={"changed": changed},
                                     inputs=inputs, params=params, video_file_id=None, audio_file_id=None)
        log.info("inputs_changed_start_over", changed=changed)
        return updated or self.ledger.get(job.id)

    def _upload_one(self, job: Job, role: str, converted: tuple[Path, str] | None = None) -> str:
        key = (job.inputs[role]["sha256"], _cache_service(job, role))
        with self._content_locks_guard:
            lock = self._content_locks.setdefault(key, threading.Lock())
        with lock:
            return self._upload_content(job, role, converted)

    def _must_convert(self, job: Job, role: str) -> bool:
        """Whether a role's input needs converting: a format the API does not take, not known
        to be uploaded already (a stale cache entry is found out, and converted, at upload)."""
        cache_service = _cache_service(job, role)
        return cache_service != SERVICES[role] and \
            self.ledger.cached_upload(job.inputs[role]["sha256"], cache_service) is None

    def _upload_content(self, job: Job, role: str, converted: tuple[Path, str] | None = None) -> str:
        service = SERVICES[role]
        # A converted input is cached under its original's hash with a marker: the same original
        # dropped again is neither converted nor uploaded twice.
        cache_service = _cache_service(job, role)
        facts = job.inputs[role]
        cached = self.ledger.cached_upload(facts["sha256"], cache_service)
        if cached is not None:
            file_id = self._reuse(cached, facts["sha256"], cache_service)
            if file_id:
                log.info("upload_reused", role=role, file_id=file_id)
                return file_id
        path = Path(job.files[role])
        upload_path, upload_name = path, f"{job.stem}{path.suffix.lower()}"
        if cache_service != service:
            upload_path, upload_name = converted or self._convert(job, role)
        with self.upload_slots:
            if self.stop.is_set():
                raise NotNow("stopping", self.clock())
            file_id = self.client.upload(upload_path, service, name=upload_name,
                                         on_progress=self._upload_progress(job, role))
        size = upload_path.stat().st_size if upload_path != path else int(facts["size"])
        if self.metrics is not None:
            self.metrics.observe_bytes("upload", size)
        st = path.stat()
        if st.st_size != facts["size"] or st.st_mtime_ns != facts["mtime_ns"]:
            raise RetryLater(f"{path.name} changed while it was uploading; it will be uploaded again")
        self.ledger.remember_upload(facts["sha256"], cache_service, file_id, size)
        if upload_path != path:
            # Uploaded and cached: the conversion is only needed again if the API loses the file.
            finish.release_work_files(self.ledger, self.settings, [facts["sha256"]], job_id=job.id)
        log.info("uploaded", role=role, file_id=file_id, size=size)
        return file_id

    def _convert(self, job: Job, role: str) -> tuple[Path, str]:
        """The converted form of a role's input (made now or reused) and its upload name. The
        original is only read; a change to it meanwhile discards the conversion."""
        path = Path(job.files[role])
        facts = job.inputs[role]
        kind = convert.needs_conversion(path.name)
        assert kind is not None
        try:
            result = self.converter.convert(path, facts["sha256"], kind, name=path.name)
            st = path.stat()
        except FileNotFoundError as exc:
            raise InputError(f"{path.name} vanished from the inbox before it was converted: drop the files "
                             "again", path=path.name) from exc
        if st.st_size != facts["size"] or st.st_mtime_ns != facts["mtime_ns"]:
            self.converter.discard(facts["sha256"])
            raise RetryLater(f"{path.name} changed while it was being converted; it will be converted again")
        self.ledger.note(job.id, "converted", {"role": role, **result.detail()})
        log.info("converted", role=role, **result.detail())
        return result.path, f"{job.stem}.{result.ext}"

    def _upload_progress(self, job: Job, role: str) -> Callable[[int, int], None]:
        """Record how far an upload is (the job's ``progress``, in %) at most once a second, so
        `submit` and the dashboard can show it from any process; the video counts for 90 %."""
        share, offset = ((90, 0) if role == "video" else (10, 90)) if "audio" in job.files else (100, 0)
        last = [0.0]

        def report(sent: int, total: int) -> None:
            now = time.monotonic()
            if total <= 0 or (now - last[0] < 1.0 and sent < total):
                return
            last[0] = now
            self.ledger.update(job.id, State.UPLOADING, progress=offset + share * sent // total)
        return report

    def _reuse(self, cached: dict[str, Any], sha256: str, service: str) -> str | None:
        if self.clock() - (cached.get("checked_at") or 0) < UPLOAD_RECHECK_AGE_S:
            return str(cached["file_id"])
        try:
            info = self.client.file_detail(cached["file_id"])
        except PermanentError:
            info = None
        if info is not None and info.status in (0, 1):
            self.ledger.touch_upload(sha256, service)
            return str(cached["file_id"])
        # Deleted after 30 days, cleaned up, or unknown: upload the bytes again.
        self.ledger.forget_upload(sha256, service)
        return None

    # -- submit -------------------------------------------------------------------------------
    def submit(self, job: Job) -> Job:
        """submitting → generating: exactly one remote task, never paid for twice."""
        pause_end = paused_until(self.ledger, self.clock())
        if pause_end is not None:
            raise NotNow("billing paused", pause_end)
        with self.create_lock:
            in_flight = self.ledger.count(State.GENERATING)
            if in_flight >= self.settings.limits.tasks_in_flight:
                raise NotNow("tasks_in_flight limit", self.clock() + self.settings.watch.poll_interval)
            job = self.ledger.get(job.id)
            if job.state != State.SUBMITTING:
                return job
            if job.create_intent_at is not None:
                adopted = self._reconcile(job)
                if adopted:
                    moved = self.ledger.advance(job.id, State.SUBMITTING, State.GENERATING, event="task_adopted",
                                                detail={"remote_id": adopted}, remote_id=adopted, progress=0)
                    log.info("task_adopted", remote_id=adopted)
                    return moved or self.ledger.get(job.id)
            unresolved = [j.id for j in self.ledger.jobs([State.SUBMITTING])
                          if j.create_intent_at is not None and j.id != job.id]
            if unresolved:
                # Another create's outcome is unknown: a new task now could be mistaken for it.
                raise NotNow(f"waiting for job {unresolved[0]}'s lost create to be reconciled",
                             self.clock() + self.settings.watch.poll_interval)
            if self.settings.dedupe.mode == "reuse":
                reused = self._reuse_result(job)
                if reused is not None:
                    return reused
            request = self._request(job)
            # The intent, durable before the create leaves: after a crash we reconcile, not resend.
            if not self.ledger.update(job.id, State.SUBMITTING, event="create_intent",
                                      create_intent_at=self.clock()):
                return self.ledger.get(job.id)   # cancelled meanwhile: nothing sent, nothing paid
            try:
                remote_id = self.client.create_lip_sync(request)
            except OutcomeUnknown:
                raise   # intent kept: the next attempt reconciles with the task list
            except ApiError:
                self.ledger.update(job.id, State.SUBMITTING, create_intent_at=None)
                raise
            created = self.ledger.advance(job.id, State.SUBMITTING, State.GENERATING, event="task_created",
                                          detail={"remote_id": remote_id}, remote_id=remote_id, progress=0)
            if created is None:
                # Cancelled while the create was in flight: keep the id known so no job adopts it.
                self.ledger.remember_remote_id(job.id, remote_id)
                return self.ledger.get(job.id)
            lift_pause(self.ledger, self.settings)
            log.info("task_created", remote_id=remote_id)
        return created

    def _reuse_result(self, job: Job) -> Job | None:
        """The same inputs and parameters were made before and the result is still there: take it
        (submitting → generating → downloading) instead of paying for a new task."""
        found = dedupe.find_reusable(self.ledger, dedupe.content_key(job.inputs, job.params), job.id)
        if found is None:
            return None
        source = found.job
        urls: dict[str, Any] = {}
        if not found.files:
            try:
                task = self.client.task_detail(str(source.remote_id))
            except ApiError:
                return None   # the API no longer serves it: pay for a new one
            if task.status != 20 or not task.video_url:
                return None
            urls = {"video_url": task.video_url, "preview_url": task.preview_url}
        origin = source.outputs.get("reused_from") or source.id   # the job that paid for it
        outputs = {**job.outputs, "reused_from": origin, "reuse_files": found.files}
        moved = self.ledger.advance(job.id, State.SUBMITTING, State.GENERATING, event="result_reused",
                                    detail={"from_job": origin, "remote_id": source.remote_id,
                                            "from": "outbox files" if found.files else "the API"},
                                    remote_id=source.remote_id, progress=100, outputs=outputs,
                                    duration_ms=source.duration_ms)
        if moved is None:
            return None
        log.info("result_reused", from_job=origin, remote_id=source.remote_id, files=bool(found.files))
        return self.ledger.advance(job.id, State.GENERATING, State.DOWNLOADING, event="task_succeeded",
                                   **urls) or self.ledger.get(job.id)

    def _reconcile(self, job: Job) -> str | None:
        """The task a lost create made, if the API has one the ledger does not know."""
        assert job.create_intent_at is not None
        since = job.create_intent_at - CLOCK_SKEW_S
        candidates = []
        page = 1
        while True:
            result = self.client.list_tasks(page=page, page_size=50)
            recent = [t for t in result.tasks if (t.create_time or 0) >= since]
            unknown = self.ledger.unknown_remote_ids(str(t.id) for t in recent)
            candidates.extend(t for t in recent if str(t.id) in unknown)
            oldest = min((t.create_time or 0 for t in result.tasks), default=0)
            if page >= result.total_page or not result.tasks or oldest < since:
                break
            page += 1
        if not candidates:
            # A create sent just before a crash may still be in the server's hands (queued,
            # slow): only once no request could still be pending is "no task" the truth.
            settle_at = job.create_intent_at + self.settings.api.timeout_seconds + 5.0
            if self.clock() < settle_at:
                raise NotNow("a lost create may still be in flight; reconciling again shortly", settle_at)
            self.ledger.note(job.id, "reconciled", {"found": None})
            return None
        # Creates are serialized, so the first unknown task at or after the intent is ours.
        candidates.sort(key=lambda t: (abs((t.create_time or 0) - job.create_intent_at), t.id))
        return str(candidates[0].id)

    def _request(self, job: Job) -> LipSyncRequest:
        p = job.params
        common: dict[str, Any] = dict(
            video_file_id=job.video_file_id, screen_width=p.get("screen_width"), screen_height=p.get("screen_height"),
            backway=p.get("backway"), drive_mode=p.get("drive_mode"), model=p.get("model"),
            volume=p.get("volume"),
            callback=callbacks.url_with_token(self.settings.api.callback_url, self.ledger)
            if self.settings.api.callback_url else None)
        if "audio" in job.files:
            return LipSyncRequest(audio_type="audio", audio_file_id=job.audio_file_id, **common)
        return LipSyncRequest(audio_type="tts", text=p["text"], audio_man_id=p["audio_man_id"],
                              speed=p.get("speed"), pitch=p.get("pitch"), **common)

    # -- download -----------------------------------------------------------------------------
    def download(self, job: Job) -> None:
        """downloading → done (see :class:`hotfolder.downloads.Downloader`)."""
        self.downloader.download(job)
