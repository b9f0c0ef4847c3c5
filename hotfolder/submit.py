"""`hotfolder submit`: one job from anywhere on disk, through the same ledger and pipeline.

The inputs are linked (or copied) into a staging folder beside the ledger, never into the inbox,
so a running daemon can never mistake them for a half-written drop; the originals are never
touched. The job is recorded as queued under the name ``submit/<file>`` (its outputs land in
``outbox/submit/``). A running daemon is told at once (the control counter) and drives it;
without one, :func:`drive` runs a daemon for this job alone. :func:`follow` reports progress
(upload %, generation %, download bytes) by reading the ledger, so it works either way.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from hotfolder.config import Settings
from hotfolder.errors import HotfolderError, InputError
from hotfolder.ledger import Job, Ledger
from hotfolder.states import TERMINAL, State

SUBMIT_DIR = "submit"   # rel_dir of submitted jobs: outbox/submit/, archive/submit/, failed/submit/


class SubmitError(HotfolderError):
    """A submit request that cannot become a job (the message says what to change)."""


def _stage(src: Path, dest: Path) -> None:
    """``src`` at ``dest``: a hard link when they share a filesystem (instant, no space), else a copy."""
    try:
        os.link(src, dest)
    except OSError:
        shutil.copyfile(src, dest)


def create(settings: Settings, ledger: Ledger, video: Path, *, text_file: Path | None = None,
           text: str | None = None, audio: Path | None = None, preset: str | None = None) -> Job:
    """Validate the inputs, stage them and record a queued job; returns it."""
    from hotfolder.intake import build_params, file_facts

    drivers = [d for d in (text_file, text, audio) if d is not None]
    if len(drivers) != 1:
        raise SubmitError("give exactly one of --text FILE, --text-string S or --audio FILE")
    for path in (video, text_file, audio):
        if path is not None and not path.is_file():
            raise SubmitError(f"{path} is not a file")
    if preset is not None and preset not in settings.presets:
        known = ", ".join(sorted(settings.presets)) or "none are configured"
        raise SubmitError(f"no preset {preset!r} in the config ([presets.NAME]); the presets: {known}")
    if preset is not None:
        settings = dataclasses.replace(settings, lipsync={**settings.lipsync, **settings.presets[preset]})
    stem = video.stem
    staging = settings.ledger_path.parent / "submitted" / uuid.uuid4().hex
    staging.mkdir(parents=True)
    files: dict[str, Path] = {"video": staging / f"{stem}{video.suffix.lower()}"}
    try:
        _stage(video, files["video"])
        if text is not None:
            files["text"] = staging / f"{stem}.txt"
            files["text"].write_text(text, encoding="utf-8")
        elif text_file is not None:
            files["text"] = staging / f"{stem}.txt"
            _stage(text_file, files["text"])
        else:
            assert audio is not None
            files["audio"] = staging / f"{stem}{audio.suffix.lower()}"
            _stage(audio, files["audio"])
        name = f"{SUBMIT_DIR}/{video.name}"
        params = build_params(settings, files, name)
        inputs = {role: file_facts(path) for role, path in files.items()}
    except (InputError, OSError) as exc:
        shutil.rmtree(staging, ignore_errors=True)
        if isinstance(exc, InputError):
            raise SubmitError(str(exc)) from exc
        raise SubmitError(f"cannot stage {video.name}: {exc.strerror or exc}") from exc
    job_id = ledger.add_job(name=name, rel_dir=SUBMIT_DIR, stem=stem, state=State.QUEUED,
                            files={role: str(path) for role, path in files.items()}, inputs=inputs, params=params)
    if preset is not None:
        ledger.update(job_id, State.QUEUED, event="submitted", detail={"preset": preset},
                      outputs={"preset": preset})
    ledger.bump_control()   # a running daemon takes it within a second
    return ledger.get(job_id)


def drive(settings: Settings, job_id: int, stop: threading.Event) -> int | None:
    """Run a daemon for this job alone, to its end; None when another daemon holds the ledger (it
    drives the job: follow it instead)."""
    from hotfolder.daemon import Daemon
    from hotfolder.errors import LedgerLockedError

    daemon = Daemon(settings, once=True, stop=stop, jobs_only={job_id})
    try:
        return daemon.run()
    except LedgerLockedError:
        return None


@dataclasses.dataclass(frozen=True)
class Progress:
    """Where a job is, for a progress line."""

    state: str
    percent: int
    detail: str


def progress_of(ledger: Ledger, job: Job) -> Progress:
    """The job's stage and how far it is (upload %, generation %, download bytes)."""
    state = str(job.state)
    if job.state == State.DOWNLOADING and job.outputs.get("video"):
        final = Path(job.outputs["video"])
        part = final.with_name(f".hotfolder-{job.id}-video.mp4.part")
        got = part.stat().st_size if part.exists() else (final.stat().st_size if final.exists() else 0)
        return Progress(state, job.progress, f"{got / 2**20:.1f} MiB downloaded")
    if job.state == State.UPLOADING:
        size = sum(int(f.get("size", 0)) for f in job.inputs.values())
        return Progress(state, job.progress, f"{size / 2**20:.1f} MiB to upload")
    if job.state == State.GENERATING:
        return Progress(state, job.progress, f"task {job.remote_id}")
    return Progress(state, job.progress, job.error or "")


def follow(ledger: Ledger, job_id: int, show: Callable[[Progress], None], stop: threading.Event,
           interval: float = 0.3) -> Job:
    """Report the job's progress until it ends (or ``stop`` is set); returns the last snapshot."""
    last: Progress | None = None
    while True:
        job = ledger.get(job_id)
        now = progress_of(ledger, job)
        if now != last:
            show(now)
            last = now
        if (job.state in TERMINAL and not job.moves_pending) or stop.is_set():
            return job
        stop.wait(interval)


def place_copy(job: Job, out: Path) -> Path:
    """Copy the job's video to ``out`` (a file path, or a folder to put ``<stem>.mp4`` in), never
    over an existing file; returns where it went."""
    video = Path(job.outputs["video"])
    dest = out / video.name if out.is_dir() else out
    if dest.exists():
        raise SubmitError(f"{dest} already exists: choose another --out (nothing is ever overwritten)")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.hotfolder-{time.monotonic_ns()}")
    shutil.copyfile(video, tmp)
    try:
        os.link(tmp, dest)   # atomic and never replaces: fails if dest appeared meanwhile
    except FileExistsError:
        raise SubmitError(f"{dest} appeared meanwhile: choose another --out") from None
    except OSError:
        os.replace(tmp, dest)
        return dest
    tmp.unlink()
    return dest
