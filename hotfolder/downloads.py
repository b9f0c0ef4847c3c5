"""The download step: results fetched, checked, placed atomically in the outbox; the job done.

A result counts only once checked (:mod:`hotfolder.media.results`): a broken download is kept,
the URLs are fetched afresh and it is downloaded once more; broken twice, the job fails naming the
task. A result reused from an earlier job (:mod:`hotfolder.dedupe`) is copied from that job's
intact outbox files instead, or downloaded from the API when they are gone. Each placed file's
size and hash are recorded, so a later duplicate can reuse it. It owns the download slots.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hotfolder import dedupe, finish, outbox
from hotfolder.chanjing import ChanjingClient
from hotfolder.config import Settings
from hotfolder.errors import RetryLater, TaskFailed, UrlExpired
from hotfolder.ledger import Job, Ledger
from hotfolder.log import get_logger
from hotfolder.media import results
from hotfolder.mounts import folder_available
from hotfolder.outcomes import Outcomes
from hotfolder.states import State

if TYPE_CHECKING:
    from hotfolder.metrics import Metrics

log = get_logger("hotfolder.downloads")


class NotNow(Exception):
    """Not a fault: the step must wait (a limit, a pause); retry at ``at`` without counting."""

    def __init__(self, reason: str, at: float) -> None:
        super().__init__(reason)
        self.at = at


class Downloader:
    """Downloads of every job; one instance shared by the download workers."""

    def __init__(self, settings: Settings, ledger: Ledger, client: ChanjingClient, outcomes: Outcomes, *,
                 clock: Callable[[], float], metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.ledger = ledger
        self.client = client
        self.outcomes = outcomes
        self.clock = clock
        self.metrics = metrics
        self.download_slots = threading.BoundedSemaphore(settings.limits.downloads)

    def reconfigure(self, settings: Settings) -> None:
        """New limits for downloads that start from now on."""
        self.settings = settings
        self.download_slots = threading.BoundedSemaphore(settings.limits.downloads)

    def download(self, job: Job) -> None:
        """downloading → done: results placed atomically in the outbox, inputs archived."""
        stage_started = time.monotonic()
        if not folder_available(self.settings.folders.outbox):
            # A share that went away: never recreate it empty on the disk under its mount point.
            log.warning("outbox_missing", outbox=str(self.settings.folders.outbox),
                        hint="is the share mounted? downloads wait and resume when it is back")
            raise NotNow("the outbox is missing (unmounted share?)", self.clock() + 30.0)
        out_dir = outbox.safe_join(self.settings.folders.outbox, job.rel_dir) if job.rel_dir \
            else self.settings.folders.outbox
        if "video" not in job.outputs:
            stem = outbox.free_stem(out_dir, job.stem, [".mp4", ".jpg"])
            planned = {**job.outputs, "video": str(out_dir / f"{stem}.mp4"), "cover": str(out_dir / f"{stem}.jpg")}
            planned_job = self.ledger.update(job.id, State.DOWNLOADING, event="outputs_planned", outputs=planned)
            if planned_job is None:
                return
            job = planned_job
        min_free = self.settings.disk.min_free_mb * 2**20
        if outbox.free_bytes(out_dir) < min_free:
            log.warning("outbox_low_on_space", free_mb=outbox.free_bytes(out_dir) // 2**20,
                        min_free_mb=self.settings.disk.min_free_mb)
            raise NotNow("the outbox is low on space", self.clock() + 60.0)
        placed: dict[str, dict[str, Any]] = {}
        for role, ext in (("video", ".mp4"), ("cover", ".jpg")):
            final = Path(job.outputs[role])
            tmp = out_dir / f".hotfolder-{job.id}-{role}{ext}"
            if final.exists() and (not tmp.exists() or os.path.samefile(tmp, final)):
                if tmp.exists():
                    tmp.unlink()   # linked into place before a crash; only the unlink was left
                continue
            copied = self._copy_reused(job, role, tmp)
            if copied:
                placed[role] = copied
                outbox.place(tmp, final)
                log.info("output_placed", role=role, path=str(final), reused_from=job.outputs.get("reused_from"))
                continue
            url = job.video_url if role == "video" else job.preview_url
            if not url and role == "video":
                job = self._refresh_urls(job)
                url = job.video_url
                if not url:
                    raise RetryLater("the task succeeded but the API gave no video_url yet")
            if not url:
                log.warning("result_missing", role=role)
                continue
            checked = self._fetch_checked(job, role, url, tmp)
            if checked is None:
                return   # the result is broken: the job failed with a message naming the task
            job = checked
            if self.ledger.get(job.id).state != State.DOWNLOADING:
                tmp.unlink(missing_ok=True)   # cancelled while it downloaded: its result is ignored
                log.info("download_dropped", role=role, reason="the job ended while its results were fetched")
                return
            placed[role] = {f"{role}_sha256": dedupe.file_sha256(tmp), f"{role}_size": tmp.stat().st_size}
            outbox.place(tmp, final)
            log.info("output_placed", role=role, path=str(final))
        current = self.ledger.get(job.id)
        if current.state != State.DOWNLOADING:
            return   # cancelled (or ended by another worker) while downloading: nothing to finish
        recorded = {k: v for meta in placed.values() for k, v in meta.items()}
        finish.end_job(self.ledger, self.settings, current, State.DONE, event="done", extra=recorded)
        if self.metrics is not None:
            self.metrics.observe_stage("download", time.monotonic() - stage_started)
        log.info("job_done")

    def _fetch_checked(self, job: Job, role: str, url: str, tmp: Path) -> Job | None:
        """Download one result into ``tmp`` and check it (a video that parses and lasts as long as
        the task said, a cover that is a JPEG). A broken one is kept beside the failed inputs, the
        URLs are fetched afresh and it is downloaded once more; broken twice (counted in the
        ledger, so a restart does not reset it), the job fails naming the task. Returns the job,
        or None when it failed."""
        while True:
            with self.download_slots:
                try:
                    size = self.client.download(url, tmp)
                except UrlExpired:
                    job = self._refresh_urls(job)
                    url = (job.video_url if role == "video" else job.preview_url) or url
                    size = self.client.download(url, tmp)
            if self.metrics is not None:
                self.metrics.observe_bytes("download", size)
            problem = results.video_problem(tmp, job.duration_ms) if role == "video" else results.cover_problem(tmp)
            if problem is None:
                return job
            broken = int(job.outputs.get("broken_results", 0)) + 1
            kept = self._keep_broken(job, role, tmp)
            log.warning("result_broken", role=role, problem=problem, kept=str(kept), attempt=broken)
            updated = self.ledger.update(job.id, State.DOWNLOADING, event="result_broken",
                                         detail={"role": role, "problem": problem, "kept": str(kept)},
                                         outputs={**job.outputs, "broken_results": broken})
            if updated is None:
                return None
            job = updated
            if broken >= 2:
                self.outcomes.fail(job, TaskFailed(
                    f"the API's {'video' if role == 'video' else 'cover'} for task {job.remote_id} is broken "
                    f"({problem}), twice: nothing was placed in the outbox. The broken download is kept as "
                    f"{kept}. Retry the job (`hotfolder retry {job.id}`) or send the task id to Chanjing "
                    "support", endpoint="download"), code="broken_result")
                return None
            job = self._refresh_urls(job)
            url = (job.video_url if role == "video" else job.preview_url) or url

    def _copy_reused(self, job: Job, role: str, tmp: Path) -> dict[str, Any] | None:
        """Copy an earlier job's intact output into ``tmp`` (a reused result); None when there is
        none or it changed meanwhile (the caller then downloads it from the API)."""
        source = job.outputs.get("reuse_files", {}).get(role)
        if not source:
            return None
        try:
            tmp.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, tmp)
            digest = dedupe.file_sha256(tmp)
        except OSError as exc:
            log.warning("reuse_copy_failed", role=role, source=source, error=str(exc))
            tmp.unlink(missing_ok=True)
            return None
        problem = results.video_problem(tmp, None) if role == "video" else results.cover_problem(tmp)
        if problem is not None:
            tmp.unlink(missing_ok=True)
            return None
        return {f"{role}_sha256": digest, f"{role}_size": tmp.stat().st_size}

    def _keep_broken(self, job: Job, role: str, tmp: Path) -> Path:
        """Move a broken download next to where the job's inputs go when it fails: a paid result
        is never thrown away, even a broken one."""
        folder = outbox.safe_join(self.settings.folders.failed, job.rel_dir) if job.rel_dir \
            else self.settings.folders.failed
        ext = ".mp4" if role == "video" else ".jpg"
        stem = outbox.free_stem(folder, f"{job.stem}.broken-{role}", [ext])
        dest = folder / f"{stem}{ext}"
        outbox.move(tmp, dest)
        return dest

    def _refresh_urls(self, job: Job) -> Job:
        assert job.remote_id
        task = self.client.task_detail(job.remote_id)
        return self.ledger.update(job.id, State.DOWNLOADING, event="urls_refreshed",
                                  video_url=task.video_url, preview_url=task.preview_url) or self.ledger.get(job.id)
