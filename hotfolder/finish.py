"""Ending a job: recording the terminal state with a move plan, then moving its inputs.

A job ends in one transaction that sets its terminal state and records where each input will go
(``outputs["moves"]``, with the indexed ``moves_pending`` column set); the moves and the ``<stem>.error.json`` follow and
are idempotent, so a crash in between is completed by :func:`complete_pending` at the next start.
Intake treats a job with pending moves as still open, so its inputs are never taken twice.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from hotfolder import dedupe, outbox
from hotfolder.config import Settings
from hotfolder.ledger import Job, Ledger
from hotfolder.ledger.notices import Notice
from hotfolder.log import get_logger, scrub
from hotfolder.mounts import folder_available
from hotfolder.records import event_body
from hotfolder.states import TERMINAL, State

log = get_logger("hotfolder.finish")
# A worker ending a job and the main loop finishing held-up moves must never move the same files.
_MOVES_LOCK = threading.Lock()


def _dest_dir(settings: Settings, job: Job, state: State) -> Path:
    root = settings.folders.archive if state == State.DONE else settings.folders.failed
    return outbox.safe_join(root, job.rel_dir) if job.rel_dir else root


def end_job(ledger: Ledger, settings: Settings, job: Job, state: State, *, error: str | None = None,
            code: str | None = None, event: str | None = None, extra: dict[str, Any] | None = None) -> bool:
    """Move ``job`` to the terminal ``state`` and then move its inputs (archive or failed).

    Returns False if the job changed state under us (another thread or the CLI got there first).
    """
    assert state in TERMINAL
    files = {role: path for role, path in job.files.items() if Path(path).exists() or Path(path).is_symlink()}
    moves = outbox.plan_group_move(files, _dest_dir(settings, job, state), job.stem) if files else {}
    outputs = {**job.outputs, **(extra or {}), "moves": moves}
    fields: dict[str, Any] = {"outputs": outputs, "moves_pending": 1}
    if error is not None:
        fields.update(error=scrub(error), error_code=code or "error")
    if state == State.DONE:
        fields.update(error=None, error_code=None, progress=100,
                      content_key=dedupe.content_key(job.inputs, job.params))
    kind = {State.DONE: "done", State.FAILED: "failed"}.get(state)
    notice = job_notice(settings, kind) if kind else None
    ended = ledger.advance(job.id, job.state, state, event=event or str(state), detail=_detail(error, code),
                           notice=notice, **fields)
    if ended is None:
        return False
    complete_moves(ledger, settings, ended)
    return True


def job_notice(settings: Settings, kind: str) -> Notice | None:
    """The notification of a job's end for the targets that want ``kind`` (None if none does)."""
    targets = settings.notify.targets(kind)
    if not targets:
        return None
    return Notice(kind, targets, lambda job, event_id, at: event_body(kind, event_id, at, job=job))


def _detail(error: str | None, code: str | None) -> dict[str, Any] | None:
    return {"code": code, "error": scrub(error)} if error else None


def complete_moves(ledger: Ledger, settings: Settings, job: Job) -> None:
    """Carry out (or finish) a terminal job's recorded input moves and error file."""
    with _MOVES_LOCK:
        job = ledger.get(job.id)   # the truth now, not what the caller saw
        if job.moves_pending:
            _complete_moves(ledger, settings, job)


def _complete_moves(ledger: Ledger, settings: Settings, job: Job) -> None:
    root = settings.folders.archive if job.state == State.DONE else settings.folders.failed
    if not folder_available(root):
        # An archive/failed share that went away: the moves stay pending (recorded) and are done at
        # a later rescan once it is back; the folder is never recreated under its mount point.
        log.warning("move_target_missing", job_id=job.id, job=job.name, folder=str(root))
        return
    moves: dict[str, str] = job.outputs.get("moves", {})
    moved: dict[str, str] = {}
    for role, src in job.files.items():
        dst = moves.get(role)
        if dst is None:
            continue
        try:
            outbox.move(Path(src), Path(dst))
            moved[role] = dst
        except FileNotFoundError:
            log.warning("input_vanished", job_id=job.id, job=job.name, file=src)
        except OSError as exc:
            # Leave it pending: a full or read-only disk must not lose the record of where it goes.
            log.error("move_failed", job_id=job.id, job=job.name, file=src, dst=dst, error=str(exc))
            return
    if job.state in (State.FAILED, State.CANCELLED) and moves:
        video_dst = Path(moves.get("video") or next(iter(moves.values())))
        err_path = video_dst.with_name(video_dst.stem + ".error.json")
        try:
            outbox.write_json(err_path, error_document(job))
        except OSError as exc:
            log.error("error_file_failed", job_id=job.id, job=job.name, error=str(exc))
            return
    _remove_stale_temps(settings, job)
    release_work_files(ledger, settings, [facts.get("sha256", "") for facts in job.inputs.values()],
                       job_id=job.id)
    ledger.update(job.id, job.state, files={**job.files, **moved}, moves_pending=0, event="inputs_moved",
                  detail={"to": sorted(set(str(Path(p).parent) for p in moved.values()))} if moved else None)


def _remove_stale_temps(settings: Settings, job: Job) -> None:
    """Partial downloads of an ended job are ours, not the user's: remove them."""
    out_dir = outbox.safe_join(settings.folders.outbox, job.rel_dir) if job.rel_dir else settings.folders.outbox
    if out_dir.is_dir():
        for tmp in out_dir.glob(f".hotfolder-{job.id}-*"):
            try:
                tmp.unlink()
            except OSError as exc:
                log.warning("temp_cleanup_failed", file=str(tmp), error=str(exc))


def release_work_files(ledger: Ledger, settings: Settings, sha256s: list[str], *, job_id: int) -> list[Path]:
    """Remove the local conversions (``<ledger folder>/work``) of these input hashes, except those
    another job still has to upload (queued or uploading with the same content): a job that
    ended, or whose converted input is uploaded and cached, needs them no more. Never touches
    an input itself; a conversion still being written is a temporary file and is left alone."""
    from hotfolder import convert   # not on every command's import path

    work = convert.work_dir(settings)
    wanted = [sha for sha in sha256s if sha and any(work.glob(f"{sha}.*"))] if work.is_dir() else []
    if not wanted:
        return []   # the common case (nothing was converted) costs no query
    in_use = {facts.get("sha256") for other in ledger.jobs([State.QUEUED, State.UPLOADING])
              if other.id != job_id for facts in other.inputs.values()}
    try:
        removed = convert.remove_work_files(work, [sha for sha in wanted if sha not in in_use])
    except OSError as exc:
        log.warning("work_cleanup_failed", job_id=job_id, folder=str(work), error=str(exc))
        return []
    if removed:
        log.debug("work_files_removed", job_id=job_id, files=[p.name for p in removed])
    return removed


def sweep_work_files(ledger: Ledger, settings: Settings) -> list[Path]:
    """At start: remove the conversions no queued or uploading job needs any more (their job
    ended while a conversion was finishing, or the daemon stopped in between)."""
    from hotfolder import convert   # not on every command's import path

    work = convert.work_dir(settings)
    if not work.is_dir():
        return []
    present = {p.name.split(".", 1)[0] for p in work.iterdir() if not p.name.startswith(".")}
    if not present:
        return []
    in_use = {facts.get("sha256") for job in ledger.jobs([State.QUEUED, State.UPLOADING])
              for facts in job.inputs.values()}
    try:
        removed = convert.remove_work_files(work, sorted(present - in_use))
    except OSError as exc:
        log.warning("work_cleanup_failed", folder=str(work), error=str(exc))
        return []
    if removed:
        log.info("work_files_swept", files=len(removed))
    return removed


def error_document(job: Job) -> dict[str, Any]:
    """The ``<stem>.error.json`` body: what went wrong and what to do. Never holds a secret."""
    code = job.error_code or ("cancelled" if job.state == State.CANCELLED else "error")
    message = job.error or ("cancelled by the user" if job.state == State.CANCELLED else "failed")
    return {
        "job_id": job.id,
        "name": job.name,
        "state": str(job.state),
        "code": code,
        "message": scrub(message),
        "remote_id": job.remote_id,
        "hint": hint(code),
        "retry": _retry_advice(job, code),
    }


def _retry_advice(job: Job, code: str) -> str:
    if code == "cancelled":
        return (f"to make it after all, run `hotfolder retry {job.id}`, or drop the files into the inbox "
                "again")
    if code == "bad_input":
        return f"fix the input and drop it into the inbox again, or fix it here and run `hotfolder retry {job.id}`"
    return f"run `hotfolder retry {job.id}` once the cause is fixed, or drop the files into the inbox again"


def hint(code: str) -> str:
    """What a person can do about a failure with this code (error files, the dashboard)."""
    if code == "bad_input":
        return "the input files are unusable as they are; the message says which file and why"
    if code == "cancelled":
        return "the job was cancelled; nothing more will happen to it"
    if code in ("gave_up", "poisoned"):
        return "the API kept failing; check connectivity and the API status, then retry"
    return "the API refused or failed the job; the message is the API's own"


def complete_pending(ledger: Ledger, settings: Settings, skip: set[int] | None = None) -> int:
    """Finish the moves of every terminal job whose moves a crash (or a full disk) interrupted;
    ``skip`` names jobs a worker is ending right now."""
    count = 0
    for job in ledger.pending_moves():   # indexed: costs nothing when there are none
        if job.id not in (skip or set()):
            complete_moves(ledger, settings, job)
            count += 1
    return count
