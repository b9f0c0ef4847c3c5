"""Library functions behind the CLI: status rows, retry, cancel, explain, init, doctor.

The CLI stays thin (parse, call, print); the logic lives here so it can be tested without click.
"""

from __future__ import annotations

import os
import stat
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from hotfolder import finish, pairing
from hotfolder.config import Settings
from hotfolder.errors import HotfolderError, InputError
from hotfolder.intake import build_params, file_facts, group_members
from hotfolder.ledger import Job, Ledger
from hotfolder.locks import DaemonLock
from hotfolder.log import scrub
from hotfolder.pipeline import BILLING_KEY
from hotfolder.states import TERMINAL, State


class ControlError(HotfolderError):
    """A CLI request that cannot be carried out (unknown job, wrong state…)."""


def iso(ts: float | None) -> str | None:
    """ISO 8601 in UTC, or None."""
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="seconds") if ts else None


def job_record(job: Job) -> dict[str, Any]:
    """One job as the contract's ``status --json`` object (a superset of the required keys)."""
    return {
        "id": job.id,
        "name": job.name,
        "state": str(job.state),
        "remote_id": job.remote_id,
        "error": scrub(job.error) if job.error else None,
        "error_code": job.error_code,
        "progress": job.progress,
        "driver": job.driver_kind if job.state != State.WAITING else None,
        "attempts": job.attempts,
        "next_attempt_at": iso(job.next_attempt_at) if job.state not in TERMINAL else None,
        "outputs": {k: v for k, v in job.outputs.items() if k in ("video", "cover")},
        "created_at": iso(job.created_at),
        "updated_at": iso(job.updated_at),
        "finished_at": iso(job.finished_at),
    }


def status(ledger: Ledger, states: list[str] | None = None) -> list[dict[str, Any]]:
    """Every job (optionally of some states) as status records, oldest first."""
    return [job_record(j) for j in ledger.jobs(states or None)]


def billing_pause(ledger: Ledger, now: float | None = None) -> float | None:
    """When submissions resume, if they are paused for the account's balance."""
    until = float(ledger.get_value(BILLING_KEY) or 0)
    return until if until > (now or time.time()) else None


def find_job(ledger: Ledger, ref: str) -> Job:
    try:
        return ledger.find(ref)
    except KeyError:
        raise ControlError(f"no job {ref!r}: give a job id or an inbox-relative name (see `hotfolder status`)")


def retry(ledger: Ledger, settings: Settings, ref: str) -> Job:
    """failed/cancelled → queued, re-validating the inputs where they now are."""
    job = find_job(ledger, ref)
    if job.state not in (State.FAILED, State.CANCELLED):
        raise ControlError(f"job {job.id} ({job.name}) is {job.state}; only failed or cancelled jobs can be retried")
    if job.outputs.get("moves_pending"):
        raise ControlError(f"job {job.id}'s inputs are still being moved; try again in a moment")
    files = {role: Path(p) for role, p in job.files.items() if not role.startswith("extra:")}
    missing = [str(p) for p in files.values() if not p.exists()]
    if missing or not job.inputs and "video" not in files:
        raise ControlError(f"job {job.id}: input files are gone ({', '.join(missing)}); drop them into the inbox again")
    try:
        params = build_params(settings, files, job.name)
        inputs = {role: file_facts(p) for role, p in files.items()}
    except InputError as exc:
        raise ControlError(f"job {job.id} would fail again: {exc}") from exc
    if len([r for r in files if r in ("text", "audio")]) != 1:
        raise ControlError(f"job {job.id} needs exactly one script or audio file beside its video")
    err_file = Path(files["video"]).with_name(Path(files["video"]).stem + ".error.json")
    if not ledger.advance(job.id, job.state, State.QUEUED, event="retry", files={k: str(v) for k, v in files.items()},
                          inputs=inputs, params=params, outputs={}, remote_id=None, create_intent_at=None,
                          video_file_id=None, audio_file_id=None, video_url=None, preview_url=None,
                          attempts=0, next_attempt_at=0.0, first_trouble_at=None, last_error_kind=None,
                          same_error_count=0, error=None, error_code=None, finished_at=None, progress=0):
        raise ControlError(f"job {job.id} changed state meanwhile; look again with `hotfolder show {job.id}`")
    if err_file.exists():
        err_file.unlink()   # ours, not an input: it described the failure being retried
    return ledger.get(job.id)


def cancel(ledger: Ledger, settings: Settings, ref: str) -> Job:
    """Any unfinished state → cancelled; inputs go to ``failed/`` with an error file."""
    for _ in range(5):
        job = find_job(ledger, ref)
        if job.state in TERMINAL:
            raise ControlError(f"job {job.id} ({job.name}) is already {job.state}")
        note = " (the remote task cannot be stopped; its result is ignored)" if job.remote_id else ""
        if finish.end_job(ledger, settings, job, State.CANCELLED, error=f"cancelled by the user{note}",
                          code="cancelled", event="cancelled"):
            return ledger.get(job.id)
    raise ControlError(f"job {ref} kept changing state; try again")


@dataclass
class Explanation:
    path: str
    verdict: str      # ignored | missing | not_in_inbox | link | job | unsettled | waiting | orphan | ambiguous | ready
    message: str


def explain(settings: Settings, ledger: Ledger, raw: str, now: float | None = None) -> Explanation:
    """Why a file in the inbox has not been taken (yet)."""
    inbox = settings.folders.inbox
    path = Path(raw)
    abs_path = (path if path.is_absolute() else (Path.cwd() / path if path.exists() else inbox / path))
    abs_path = Path(os.path.abspath(abs_path))
    try:
        rel = abs_path.relative_to(inbox).as_posix()
    except ValueError:
        return Explanation(raw, "not_in_inbox", f"{abs_path} is not inside the inbox {inbox}")
    reason = pairing.is_ignored(rel)
    if reason:
        return Explanation(rel, "ignored", f"never taken: {reason}")
    if abs_path.is_symlink():
        return Explanation(rel, "link", "a symbolic link: links are never followed; copy or move the real file in")
    if not abs_path.exists():
        return Explanation(rel, "missing", f"no such file in the inbox ({abs_path})")
    folder = abs_path.parent
    siblings = [f"{Path(rel).parent.as_posix()}/{p.name}".lstrip("./") if "/" in rel else p.name
                for p in folder.iterdir() if p.is_file() and not p.is_symlink()]
    group = next((g for g in pairing.pair(siblings).groups if rel in group_members(g)), None)
    video = getattr(group, "video", None) if group is not None else None
    if video:
        job = ledger.open_job_for(video)
        if job is not None and job.state != State.WAITING:
            return Explanation(rel, "job", f"already job {job.id} ({job.state}); see `hotfolder show {job.id}`")
    age = (now or time.time()) - abs_path.stat().st_mtime
    if age < settings.watch.settle_seconds:
        return Explanation(rel, "unsettled", f"still changing: modified {age:.1f}s ago; a file is taken once "
                           f"unchanged for {settings.watch.settle_seconds:g}s")
    if isinstance(group, pairing.Ambiguous):
        return Explanation(rel, "ambiguous", group.reason)
    if isinstance(group, pairing.Waiting):
        return Explanation(rel, "waiting", f"waiting for its sidecar: {group.reason}")
    if isinstance(group, pairing.Orphan):
        stem = Path(rel).stem
        return Explanation(rel, "orphan", f"a sidecar without its video: drop {stem}.mp4 (or .mov/.webm) beside it")
    return Explanation(rel, "ready", "ready: the running daemon takes it at its next scan "
                       "(is `hotfolder run` running?)")


def daemon_pid(settings: Settings) -> str | None:
    """The pid of the daemon holding the ledger's lock, or None if none runs."""
    lock = DaemonLock(settings.ledger_path)
    try:
        lock.acquire()
    except HotfolderError:
        try:
            return lock.path.read_text().strip() or "?"
        except OSError:
            return "?"
    lock.release()
    return None


def secret_file_warnings(settings: Settings) -> list[str]:
    """Files holding the secret that others can read."""
    warnings = []
    candidates = []
    if settings.config_path is not None and settings.api.secret_source == "config":
        candidates.append(settings.config_path)
    if settings.api.secret_source not in ("config", "env"):
        candidates.append(Path(settings.api.secret_source))
    for path in candidates:
        try:
            mode = path.stat().st_mode
        except OSError:
            continue
        if mode & (stat.S_IRGRP | stat.S_IROTH):
            warnings.append(f"{path} holds the secret_key and is readable by others "
                            f"(mode {stat.filemode(mode)}): run `chmod 600 {path}`")
    return warnings


CONFIG_TEMPLATE = '''# hotfolder configuration. Relative paths resolve against this file's folder.
# Keys and defaults: see the README. Keep this file private (chmod 600): it holds the secret.

[api]
base_url = "https://open-api.chanjing.cc"   # env CHANJING_BASE_URL overrides
app_id = ""                                  # env CHANJING_APP_ID overrides
secret_key = ""                              # env CHANJING_SECRET_KEY overrides (or secret_key_file)
callback_url = ""                            # optional public URL the API POSTs to when a task ends

[folders]
inbox = "inbox"       # drop <stem>.mp4 + <stem>.txt (script) or <stem>.wav/.mp3/.m4a here
outbox = "outbox"     # <stem>.mp4 and <stem>.jpg appear here
archive = "archive"   # inputs of finished jobs
failed = "failed"     # inputs of failed jobs + <stem>.error.json

[ledger]
path = "state/ledger.db"   # must be on a local disk (not NFS/SMB)

[watch]
settle_seconds = 5    # a file must be unchanged this long before it is taken
poll_interval = 10    # seconds between remote status checks
rescan_seconds = 60   # full inbox rescan, in case a file event was missed

[limits]
creates_per_minute = 10
file_calls_per_minute = 30
queries_per_second = 10
uploads = 2
tasks_in_flight = 10
downloads = 2

[lipsync]             # defaults; a <stem>.json sidecar overrides them per job
model = 0
# audio_man_id = "C-..."   # the voice for .txt scripts: `hotfolder voices` lists them
speed = 1.0
pitch = 1.0
volume = 100
backway = 1
drive_mode = ""
'''


def init(folder: Path) -> Path:
    """Write a commented config into ``folder`` and create its folders; never overwrites."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "hotfolder.toml"
    if path.exists():
        raise ControlError(f"{path} already exists; edit it, or choose another folder")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(CONFIG_TEMPLATE)
    for name in ("inbox", "outbox", "archive", "failed", "state"):
        (folder / name).mkdir(exist_ok=True)
    return path


def doctor(settings: Settings) -> list[tuple[str, bool, str]]:
    """Checks a person runs before trusting the daemon: (check, ok, message) each."""
    from hotfolder.daemon import make_client
    from hotfolder.outbox import free_bytes

    results: list[tuple[str, bool, str]] = [("config", True, f"valid ({settings.config_path})")]
    for name in ("inbox", "outbox", "archive", "failed"):
        folder: Path = getattr(settings.folders, name)
        if not folder.is_dir():
            results.append((f"folder {name}", False, f"{folder} does not exist: create it (or run `hotfolder init`)"))
        elif not os.access(folder, os.W_OK | os.X_OK):
            results.append((f"folder {name}", False, f"{folder} is not writable by this user"))
        else:
            results.append((f"folder {name}", True, f"{folder} ({free_bytes(folder) // 2**20} MiB free)"))
    for warning in secret_file_warnings(settings):
        results.append(("secret permissions", False, warning))
    try:
        ledger = Ledger(settings.ledger_path)
        integrity = ledger.integrity()
        results.append(("ledger", integrity == "ok", f"{settings.ledger_path}: integrity {integrity}, "
                        f"jobs {ledger.counts() or 'none'}"))
    except HotfolderError as exc:
        results.append(("ledger", False, str(exc)))
        return results
    pid = daemon_pid(settings)
    results.append(("daemon", True, f"running (pid {pid})" if pid else "not running"))
    try:
        client = make_client(settings, ledger)
        try:
            voices = client.list_voices(page=1, size=1)
        finally:
            client.close()
        results.append(("credentials", True, f"the API at {settings.api.base_url} accepted them "
                        f"({getattr(voices, 'total_count', '?')} public voices)"))
    except HotfolderError as exc:
        results.append(("credentials", False, f"{settings.api.base_url}: {scrub(str(exc))}"))
    if not settings.lipsync.get("audio_man_id"):
        results.append(("voice", False, "[lipsync] audio_man_id is not set: .txt scripts need a voice "
                        "(`hotfolder voices` lists them), unless each job's .json names one"))
    return results
