"""Library functions behind the CLI: status rows, retry, cancel, explain, init, doctor.

The CLI stays thin (parse, call, print); the logic lives here so it can be tested without click.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hotfolder import finish, trouble
from hotfolder.config import Settings
from hotfolder.errors import HotfolderError, InputError
from hotfolder.ledger import AmbiguousRef, Job, Ledger, reports
from hotfolder.locks import DaemonLock
from hotfolder.log import scrub
from hotfolder.outcomes import lift_pause, pause_reason, paused_until
from hotfolder.records import iso, job_record, record, summary_of  # noqa: F401 (the CLI's names)
from hotfolder.states import TERMINAL, State



class ControlError(HotfolderError):
    """A CLI request that cannot be carried out (unknown job, wrong state…)."""


# Sent only with a script (the API's tts_config): an audio job speaks with its own voice.
TTS_ONLY = ("audio_man_id", "speed", "pitch")


def sent_params(job: Job) -> dict[str, Any]:
    """The lip-sync parameters recorded for the job (what its create sends), for a person: the
    script itself is summarised, never printed whole; the voice settings of an audio job, which
    its create does not send, are left out."""
    params = dict(job.params)
    text = params.pop("text", None)
    out: dict[str, Any] = {}
    if "audio" in job.files:
        for key in TTS_ONLY:
            params.pop(key, None)
        out["audio"] = Path(job.files["audio"]).name
    if text is not None:
        first = text.splitlines()[0] if text else ""
        out["script"] = f"{len(text)} characters: {first[:40]}{'…' if len(first) > 40 or len(text) > len(first) else ''}"
    if "screen_width" in params and "screen_height" in params:
        out["size"] = f"{params.pop('screen_width')}x{params.pop('screen_height')}"
    for key in ("audio_man_id", "speed", "pitch", "volume", "model", "backway", "drive_mode"):
        if key in params and params[key] not in (None, ""):
            out["voice" if key == "audio_man_id" else key] = params.pop(key)
    out.update({k: v for k, v in params.items() if v not in (None, "")})
    return out


def preset_of(settings: Settings, job: Job) -> str | None:
    """The preset a job uses: its top inbox folder's, or the one `submit --preset` named."""
    return job.outputs.get("preset") or settings.preset_for(job.rel_dir)[0]


def parse_states(values: Iterable[str]) -> list[State]:
    """``--state`` values (case-insensitive, repeatable, comma-separated allowed) as states."""
    out: list[State] = []
    for value in values:
        for part in value.split(","):
            name = part.strip().lower()
            if not name:
                continue
            try:
                out.append(State(name))
            except ValueError:
                raise ControlError(f"unknown state {part.strip()!r}: the states are "
                                   f"{', '.join(s.value for s in State)}") from None
    return out


def iter_status(ledger: Ledger, states: list[State] | None = None, limit: int | None = None) -> Iterator[dict[str, Any]]:
    """Every job (optionally of some states, at most ``limit``) as status records, oldest first,
    streamed: memory stays flat whatever the ledger holds."""
    for row in reports.iter_summaries(ledger, states or None, limit=limit):
        yield record(row)


def iter_status_json(ledger: Ledger, states: list[State] | None = None,
                     limit: int | None = None) -> Iterator[list[str]]:
    """:func:`iter_status` as JSON texts, built by SQLite and streamed in batches (the fast path
    of `status --json`); secrets are masked batch by batch."""
    for batch in reports.iter_status_json(ledger, states or None, limit=limit):
        joined = "\n".join(batch)
        if scrub(joined) != joined:
            batch = [scrub(text) for text in batch]
        yield batch


def status(ledger: Ledger, states: list[str] | None = None) -> list[dict[str, Any]]:
    """Every job (optionally of some states) as status records, oldest first (small ledgers and
    tests; the CLI streams with :func:`iter_status`)."""
    return list(iter_status(ledger, parse_states(states or []) or None))


@dataclass
class Overview:
    """What `status` shows a person: bounded whatever the history."""

    unfinished: list[dict[str, Any]]
    recent: list[dict[str, Any]]
    totals: dict[str, int]
    pause: dict[str, Any]
    trouble: dict[str, Any] | None
    hidden_ended: int


def overview(ledger: Ledger, states: list[State] | None = None, limit: int = 20,
             now: float | None = None) -> Overview:
    """Unfinished jobs, the ``limit`` most recently ended ones, totals per state, and the account's
    condition (billing/quota pause, API trouble). ``states`` narrows both lists."""
    now = time.time() if now is None else now
    wanted = set(states or State)
    open_states = [s for s in State if s not in TERMINAL and s in wanted]
    unfinished = [record(r) for r in reports.iter_summaries(ledger, open_states, limit=limit if states else None)] \
        if open_states else []
    ended = [s for s in TERMINAL if s in wanted]
    recent = [record(r) for r in reports.recent_ended(ledger, limit, ended)]
    totals = ledger.counts()
    shown_ended = sum(totals.get(str(s), 0) for s in ended)
    until = paused_until(ledger, now)
    pause = {"until": until, "reason": pause_reason(ledger)} if until else {}
    return Overview(unfinished, recent, totals, pause, trouble.current(ledger), max(0, shown_ended - len(recent)))


def billing_pause(ledger: Ledger, now: float | None = None) -> float | None:
    """When submissions resume, if they are paused for the account's balance."""
    return paused_until(ledger, time.time() if now is None else now)


def find_job(ledger: Ledger, ref: str) -> Job:
    """A job by id, inbox-relative name, file name or stem (when unique)."""
    try:
        return ledger.find(ref)
    except AmbiguousRef as exc:
        raise ControlError(f"{ref!r} names several jobs ({', '.join(exc.names[:5])}"
                           f"{', …' if len(exc.names) > 5 else ''}): give the job id or the full name") from None
    except KeyError:
        raise ControlError(f"no job {ref!r}: give a job id, an inbox-relative name, a file name or a stem "
                           "(see `hotfolder status`)") from None


def retry(ledger: Ledger, settings: Settings, ref: str) -> Job:
    """failed/cancelled → queued, re-validating the inputs where they now are."""
    from hotfolder.intake import build_params, file_facts

    job = find_job(ledger, ref)
    if job.state not in (State.FAILED, State.CANCELLED):
        raise ControlError(f"job {job.id} ({job.name}) is {job.state}; only failed or cancelled jobs can be retried")
    if job.moves_pending:
        raise ControlError(f"job {job.id}'s inputs are still being moved; try again in a moment")
    files = {role: Path(p) for role, p in job.files.items() if not role.startswith("extra:")}
    missing = [str(p) for p in files.values() if not p.exists()]
    if missing or "video" not in files:
        raise ControlError(f"job {job.id}: input files are gone ({', '.join(missing) or 'no video'}); "
                           "drop them into the inbox again")
    drivers = [r for r in files if r in ("text", "audio")]
    if len(drivers) != 1:
        video = files["video"]
        what = "no script or audio file" if not drivers else "both a script and an audio file"
        raise ControlError(f"job {job.id} ({job.name}) has {what}: put exactly one of {video.stem}.txt (text "
                           f"to speak) or {video.stem}.wav/.mp3/.m4a (speech) beside {video}, then retry; "
                           "or drop the pair into the inbox again")
    chosen = job.outputs.get("preset")   # `submit --preset`: keep it for the retry
    if chosen in settings.presets:
        settings = dataclasses.replace(settings, lipsync={**settings.lipsync, **settings.presets[chosen]})
    try:
        params = build_params(settings, files, job.name)
        inputs = {role: file_facts(p) for role, p in files.items()}
    except InputError as exc:
        raise ControlError(f"job {job.id} would fail again: {exc}") from exc
    except OSError as exc:
        raise ControlError(f"job {job.id}: cannot read its inputs: {exc.strerror or exc}") from exc
    err_file = Path(files["video"]).with_name(Path(files["video"]).stem + ".error.json")
    queued = ledger.advance(job.id, job.state, State.QUEUED, event="retry", files={k: str(v) for k, v in files.items()},
                            inputs=inputs, params=params, outputs={"preset": chosen} if chosen else {}, remote_id=None, create_intent_at=None,
                            video_file_id=None, audio_file_id=None, video_url=None, preview_url=None,
                            attempts=0, next_attempt_at=0.0, first_trouble_at=None, last_error_kind=None,
                            same_error_count=0, error=None, error_code=None, finished_at=None, progress=0)
    if queued is None:
        raise ControlError(f"job {job.id} changed state meanwhile; look again with `hotfolder show {job.id}`")
    if err_file.exists():
        err_file.unlink()   # ours, not an input: it described the failure being retried
    ledger.bump_control()
    return queued


def resume(ledger: Ledger, settings: Settings) -> dict[str, Any]:
    """Lift a billing/quota pause now (after a top-up) and make every waiting job due at once."""
    was = lift_pause(ledger, settings, "`hotfolder resume`")
    due = ledger.clear_backoff([State.QUEUED, State.UPLOADING, State.SUBMITTING, State.DOWNLOADING])
    ledger.bump_control()
    return {"was_paused": was, "jobs_due_now": due}


def stats(ledger: Ledger, days: int = 14, now: float | None = None) -> dict[str, Any]:
    """`hotfolder stats`: the last ``days`` local days (see :func:`reports.stats`)."""
    now = time.time() if now is None else now
    offset = time.localtime(now).tm_gmtoff
    return reports.stats(ledger, now, days=days, utc_offset=float(offset))


def prune_history(ledger: Ledger, older_than: str, vacuum: bool = False, now: float | None = None) -> dict[str, int]:
    """Delete ended jobs older than ``older_than`` (e.g. ``90d``, ``12h``); see :func:`reports.prune`."""
    seconds = parse_age(older_than)
    return reports.prune(ledger, (time.time() if now is None else now) - seconds, vacuum=vacuum)


def parse_age(text: str) -> float:
    """``90d``, ``12h``, ``30m``, ``2w`` (or a bare number of days) as seconds."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
    raw = text.strip().lower()
    unit = raw[-1] if raw and raw[-1] in units else "d"
    number = raw[:-1] if raw and raw[-1] in units else raw
    try:
        value = float(number)
    except ValueError:
        raise ControlError(f"cannot read the age {text!r}: write e.g. 90d, 12h or 2w") from None
    if value <= 0:
        raise ControlError(f"the age must be more than 0, got {text!r}")
    return value * units[unit]


def cancel(ledger: Ledger, settings: Settings, ref: str) -> Job:
    """Any unfinished state → cancelled; inputs go to ``failed/`` with an error file."""
    for _ in range(5):
        job = find_job(ledger, ref)
        if job.state in TERMINAL:
            raise ControlError(f"job {job.id} ({job.name}) is already {job.state}")
        note = " (the remote task cannot be stopped; its result is ignored)" if job.remote_id else ""
        if finish.end_job(ledger, settings, job, State.CANCELLED, error=f"cancelled by the user{note}",
                          code="cancelled", event="cancelled"):
            ledger.bump_control()
            return ledger.get(job.id)
    raise ControlError(f"job {ref} kept changing state; try again")


@dataclass
class Explanation:
    path: str
    # ignored | missing | not_in_inbox | folder | link | job | unsettled | waiting | orphan | ambiguous |
    # unusable | bad_input | ready
    verdict: str
    message: str


def explain(settings: Settings, ledger: Ledger | None, raw: str, now: float | None = None) -> Explanation:
    """Why a file in the inbox has not been taken (yet). ``ledger`` is None on a fresh install
    (no job was ever recorded): explaining only looks, it never creates one."""
    from hotfolder import pairing
    from hotfolder.intake import build_params, group_members
    from hotfolder import convert

    inbox = settings.folders.inbox
    path = Path(raw)
    abs_path = (path if path.is_absolute() else (Path.cwd() / path if path.exists() else inbox / path))
    abs_path = Path(os.path.abspath(abs_path))
    try:
        rel = abs_path.relative_to(inbox).as_posix()
    except ValueError:
        return Explanation(raw, "not_in_inbox", f"{abs_path} is not inside the inbox {inbox}")
    if rel == ".":
        return Explanation(raw, "folder", f"the inbox itself ({inbox}): explain one of the files in it")
    reason = pairing.is_ignored(rel)
    if reason:
        return Explanation(rel, "ignored", f"never taken: {reason}")
    if abs_path.is_symlink():
        return Explanation(rel, "link", "a symbolic link: links are never followed; copy or move the real file in")
    if not abs_path.exists():
        return Explanation(rel, "missing", f"no such file in the inbox ({abs_path})")
    if abs_path.is_dir():
        return Explanation(rel, "folder", "a folder: the files in it pair with each other (outputs keep the "
                           "folder); explain one of its files")
    if not abs_path.is_file():
        return Explanation(rel, "ignored", "not a regular file (a device, a pipe or a socket): never taken")
    folder = abs_path.parent
    siblings = [f"{Path(rel).parent.as_posix()}/{p.name}".lstrip("./") if "/" in rel else p.name
                for p in folder.iterdir() if p.is_file() and not p.is_symlink()]
    group = next((g for g in pairing.pair(siblings).groups if rel in group_members(g)), None)
    video = getattr(group, "video", None) if group is not None else None
    if video and ledger is not None:
        job = ledger.open_job_for(video)
        if job is not None and job.state != State.WAITING:
            return Explanation(rel, "job", f"already job {job.id} ({job.state}); see `hotfolder show {job.id}`")
    age = (now or time.time()) - abs_path.stat().st_mtime
    if age < settings.watch.settle_seconds:
        return Explanation(rel, "unsettled", f"still changing: modified {age:.1f}s ago; a file is taken once "
                           f"unchanged for {settings.watch.settle_seconds:g}s")
    if isinstance(group, pairing.Ambiguous):
        return Explanation(rel, "ambiguous", f"will fail when taken: {group.reason}")
    if isinstance(group, pairing.Waiting):
        problem = convert.conversion_problem(rel)
        if problem:
            return Explanation(rel, "unusable", f"will fail once its sidecar comes: {problem}")
        return Explanation(rel, "waiting", group.reason)
    if isinstance(group, pairing.Orphan) or group is None:
        return Explanation(rel, "orphan", group.reason if group is not None else
                           "not an input hotfolder takes (an unknown kind of file): it is left alone")
    files = {"video": inbox / group.video, group.driver_kind: inbox / group.driver}
    if group.overrides:
        files["overrides"] = inbox / group.overrides
    try:
        build_params(settings, files, group.video)
    except InputError as exc:
        return Explanation(rel, "bad_input", f"will fail when taken (nothing is uploaded): {exc}")
    except OSError as exc:
        return Explanation(rel, "bad_input", f"cannot be read: {exc.strerror or exc}")
    pid = daemon_pid(settings)
    preset, _values = settings.preset_for(group.video.rpartition("/")[0])
    pair = f"a complete pair ({', '.join(sorted(group_members(group)))}; " + \
        (f"preset {preset!r})" if preset else "the [lipsync] defaults)")
    if pid:
        return Explanation(rel, "ready", f"{pair}: the running daemon (pid {pid}) takes it at its next scan")
    return Explanation(rel, "ready", f"{pair}, but no daemon is running: start `hotfolder run` (or "
                       "`hotfolder run --once`)")


def daemon_pid(settings: Settings) -> str | None:
    """The pid of the daemon holding the ledger's lock, or None if none runs."""
    lock = DaemonLock(settings.ledger_path)
    if not lock.path.exists():
        return None   # no daemon ever ran here (and looking must not create the lock file)
    try:
        lock.acquire()
    except HotfolderError:
        try:
            return lock.path.read_text().strip() or "?"
        except OSError:
            return "?"
    lock.release()
    return None
