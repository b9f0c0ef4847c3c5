"""Jobs as people and scripts see them: the ``status --json`` object and the event bodies.

One definition, used by the CLI (``status --json``, ``show``), the notifications (webhook/exec
bodies), the listener and the dashboard. Pure: no I/O. Never holds a secret (errors are scrubbed).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

from hotfolder.ledger.job import Job
from hotfolder.log import scrub
from hotfolder.states import TERMINAL, State

TERMINAL_NAMES = frozenset(str(s) for s in TERMINAL)


def iso(ts: float | None) -> str | None:
    """ISO 8601 in UTC, or None."""
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="seconds") if ts else None


def _iso_of(row: Mapping[str, Any], key: str) -> str | None:
    pre = row.get(f"{key}_iso", False)
    return pre if pre is not False else iso(row[key])


def record(row: Mapping[str, Any]) -> dict[str, Any]:
    """One job as the contract's ``status --json`` object (a superset of the required keys), from
    a summary row of :mod:`hotfolder.ledger.reports` (times already formatted by SQLite) or
    :func:`summary_of`."""
    state = row["state"]
    video, cover = row["out_video"], row["out_cover"]
    return {
        "id": row["id"],
        "name": row["name"],
        "state": state,
        "remote_id": row["remote_id"],
        "error": scrub(row["error"]) if row["error"] else None,
        "error_code": row["error_code"],
        "progress": row["progress"],
        "driver": row["driver"] if state != "waiting" else None,
        "attempts": row["attempts"],
        "next_attempt_at": _iso_of(row, "next_attempt_at") if state not in TERMINAL_NAMES else None,
        "outputs": ({"video": video, "cover": cover} if video and cover else
                    {k: v for k, v in (("video", video), ("cover", cover)) if v}),
        "created_at": _iso_of(row, "created_at"),
        "updated_at": _iso_of(row, "updated_at"),
        "finished_at": _iso_of(row, "finished_at"),
        "reused_from": row.get("reused_from"),   # the job whose result this one reused (no new task)
    }


def summary_of(job: Job) -> dict[str, Any]:
    """A :class:`Job` as the summary row :func:`record` takes."""
    return {
        "id": job.id, "name": job.name, "state": str(job.state), "remote_id": job.remote_id,
        "error": job.error, "error_code": job.error_code, "progress": job.progress, "attempts": job.attempts,
        "next_attempt_at": job.next_attempt_at, "created_at": job.created_at, "updated_at": job.updated_at,
        "finished_at": job.finished_at, "driver": next((r for r in ("audio", "text") if r in job.files), None) if job.state != State.WAITING else None,
        "out_video": job.outputs.get("video"), "out_cover": job.outputs.get("cover"),
        "reused_from": job.outputs.get("reused_from"),
    }


def job_record(job: Job) -> dict[str, Any]:
    """One job as the contract's ``status --json`` object."""
    return record(summary_of(job))


def event_body(kind: str, event_id: str, at: float, job: Job | None = None,
               reason: str | None = None) -> dict[str, Any]:
    """An event as webhooks and exec hooks receive it (the contract's format)."""
    body: dict[str, Any] = {"id": event_id, "event": kind, "at": iso(at)}
    if job is not None:
        body["job"] = {**job_record(job), "duration_ms": job.duration_ms}
    else:
        body["reason"] = scrub(reason or "")
    return body
