"""Duplicate drops cost nothing: the same inputs with the same parameters reuse an earlier result.

A job's *content key* is the SHA-256 of its video's and audio's hashes and its effective lip-sync
parameters (the script's text is one of them, so the same words saved in another encoding still
match). A done job records its key; before a new job creates a task, :func:`find_reusable` looks
for a done job with the same key whose result is still there: the outbox files it placed, with
the same bytes (size and hash recorded at placement), or else the remote task's result, when the
API still serves it. Pure except for reading the ledger and the candidate files; the pipeline
decides what to do with the answer. ``[dedupe] mode = "again"`` turns it off.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hotfolder.ledger import Job, Ledger

HASH_CHUNK = 1 << 20


def content_key(inputs: dict[str, dict[str, Any]], params: dict[str, Any]) -> str:
    """The key of what a job makes: input hashes (video, audio) and the effective parameters."""
    basis = {
        "video": inputs.get("video", {}).get("sha256"),
        "audio": inputs.get("audio", {}).get("sha256"),
        "params": params,
    }
    return hashlib.sha256(json.dumps(basis, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class Reusable:
    """An earlier job whose result this job can take instead of paying for a new task."""

    job: Job
    files: dict[str, str]   # role -> outbox path with the recorded bytes (empty: use the remote task)


def outputs_intact(job: Job) -> dict[str, str]:
    """The done job's placed outputs that still hold the bytes recorded at placement."""
    out: dict[str, str] = {}
    for role in ("video", "cover"):
        path, recorded = job.outputs.get(role), job.outputs.get(f"{role}_sha256")
        if not path or not recorded:
            return {}
        try:
            p = Path(path)
            if p.stat().st_size != job.outputs.get(f"{role}_size") or file_sha256(p) != recorded:
                return {}
        except OSError:
            return {}
        out[role] = path
    return out


def find_reusable(ledger: Ledger, key: str, exclude: int) -> Reusable | None:
    """The newest done job with this content key whose outbox files are intact; failing that,
    the newest one with a remote task (whose result the caller must confirm with the API)."""
    remote: Job | None = None
    for job in ledger.done_with_content(key):
        if job.id == exclude:
            continue
        files = outputs_intact(job)
        if files:
            return Reusable(job, files)
        if remote is None and job.remote_id:
            remote = job
    return Reusable(remote, {}) if remote is not None else None
