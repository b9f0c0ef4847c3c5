"""What the dashboard shows, read with bounded queries only. Every function here blocks (SQLite):
the listener runs them on its I/O thread.

Nothing here lists all jobs. The queue is the counts (the trigger-kept ``job_counts`` table),
the unfinished jobs (bounded by the work in flight, capped at :data:`MAX_UNFINISHED`) and one page
of ended jobs read backwards along the ``(state, finished_at)`` index
(:func:`hotfolder.ledger.reports.recent_ended`). Pages go back at most :data:`MAX_PAGE` pages;
beyond that ``hotfolder status --all`` streams everything. A job page reads one row and its last
:data:`MAX_EVENTS` events; the stats read only the jobs that ended in the window.

No secret reaches a page: every text that comes from the ledger or the API goes through
:func:`hotfolder.log.scrub`, the config's secrets are never read here, and output files are
offered as links to ``/files/<id>/…`` (served only from the outbox), never as server paths.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

from hotfolder import control, finish, trouble
from hotfolder.config import Settings
from hotfolder.ledger import Ledger, reports
from hotfolder.log import scrub
from hotfolder.outcomes import pause_reason, paused_until
from hotfolder.records import iso, job_record, record
from hotfolder.states import TERMINAL, State

PAGE_SIZE = 20
MAX_PAGE = 49                    # 50 pages of 20: the 1,000 most recent ended jobs
MAX_UNFINISHED = 300
MAX_EVENTS = 300
SHOW = {"all": tuple(TERMINAL), "done": (State.DONE,), "failed": (State.FAILED,),
        "cancelled": (State.CANCELLED,)}
# The unfinished jobs, furthest along first: what is about to come out is at the top.
OPEN_ORDER = [State.DOWNLOADING, State.GENERATING, State.SUBMITTING, State.UPLOADING, State.QUEUED, State.WAITING]
STATE_ORDER = [str(s) for s in State]
ENDED = frozenset(str(s) for s in TERMINAL)


def hint(code: str | None, state: str) -> str | None:
    """What a person can do about a failed or cancelled job (as in ``<stem>.error.json``)."""
    if state not in ("failed", "cancelled"):
        return None
    # finish's hint is the one written into <stem>.error.json: one wording everywhere.
    return finish.hint(code or ("cancelled" if state == "cancelled" else "error"))


def job_view(settings: Settings, rec: dict[str, Any]) -> dict[str, Any]:
    """A ``status --json`` record as the dashboard shows it: where it came from (folder, preset),
    what can be done with it, and links instead of server paths."""
    name = rec["name"]
    folder, _, file = name.rpartition("/")
    preset = settings.preset_for(folder)[0]
    state = rec["state"]
    outputs = rec.get("outputs") or {}
    links = {"page": f"/jobs/{rec['id']}"}
    if state == "done" and outputs.get("video"):
        links["video"] = f"/files/{rec['id']}/video"
    if state == "done" and outputs.get("cover"):
        links["cover"] = f"/files/{rec['id']}/cover"
    return {
        "id": rec["id"], "name": scrub(name), "file": scrub(file), "folder": scrub(folder), "preset": preset,
        "state": state, "progress": rec["progress"] or 0, "remote_id": rec["remote_id"],
        "error": scrub(rec["error"]) if rec["error"] else None, "error_code": rec["error_code"],
        "hint": hint(rec["error_code"], state), "driver": rec["driver"], "attempts": rec["attempts"],
        "next_attempt_at": rec["next_attempt_at"], "created_at": rec["created_at"],
        "updated_at": rec["updated_at"], "finished_at": rec["finished_at"], "links": links,
        "can_retry": state in ("failed", "cancelled"), "can_cancel": state not in ENDED,
    }


def account(ledger: Ledger, now: float) -> dict[str, Any]:
    """The billing/quota pause and API trouble, as the banner shows them."""
    until = paused_until(ledger, now)
    pause = {"until": iso(until), "reason": scrub(pause_reason(ledger) or "")} if until else None
    found = trouble.current(ledger)
    api = ({"kind": str(found.get("kind") or ""), "message": scrub(str(found.get("message") or "")),
            "since": iso(found.get("since"))} if found else None)
    return {"pause": pause, "trouble": api}


def fingerprint(ledger: Ledger, settings: Settings, page: int = 0, show: str = "all",
                now: float | None = None) -> str:
    """A digest of everything :func:`queue`'s answer depends on, several times cheaper to compute
    than the answer: a poll that finds it unchanged is answered 304 without building anything.

    Any change to an unfinished job moves its ``updated_at``; a job that ends, is retried, added
    or pruned changes the counts (and so the pages of ended jobs); the banner depends on the
    pause and trouble records; the presets come from the (reloadable) config."""
    now = time.time() if now is None else now
    open_states = [s for s in State if s not in TERMINAL]
    marks = [(r["id"], r["state"], r["updated_at"], r["progress"])
             for r in reports.iter_summaries(ledger, open_states, limit=MAX_UNFINISHED)]
    found = trouble.current(ledger)
    basis = (marks, sorted(ledger.counts().items()), paused_until(ledger, now), pause_reason(ledger),
             json.dumps(found, sort_keys=True, default=str) if found else None, page, show, sorted(settings.presets))
    return hashlib.sha1(repr(basis).encode("utf-8")).hexdigest()[:24]


def queue(ledger: Ledger, settings: Settings, page: int = 0, show: str = "all",
          now: float | None = None) -> dict[str, Any]:
    """The dashboard's live data: counts, the unfinished jobs and one page of ended ones."""
    now = time.time() if now is None else now
    page = max(0, min(page, MAX_PAGE))
    show = show if show in SHOW else "all"
    counts = ledger.counts()
    open_states = [s for s in State if s not in TERMINAL]
    unfinished = [job_view(settings, record(r))
                  for r in reports.iter_summaries(ledger, open_states, limit=MAX_UNFINISHED)]
    unfinished.sort(key=lambda j: (OPEN_ORDER.index(State(j["state"])), j["id"]))
    open_total = sum(counts.get(str(s), 0) for s in open_states)
    wanted = (page + 1) * PAGE_SIZE
    rows = reports.recent_ended(ledger, wanted + 1, SHOW[show])
    finished = [job_view(settings, record(r)) for r in rows[page * PAGE_SIZE:wanted]]
    shown_total = sum(counts.get(str(s), 0) for s in SHOW[show])
    return {
        "now": iso(now), "counts": {k: counts[k] for k in sorted(counts, key=STATE_ORDER.index)},
        "total": sum(counts.values()),
        **account(ledger, now),
        "unfinished": unfinished, "unfinished_more": max(0, open_total - len(unfinished)),
        "finished": finished, "show": show, "page": page, "page_size": PAGE_SIZE,
        "finished_total": shown_total, "has_more": len(rows) > wanted and page < MAX_PAGE,
    }


def job_detail(ledger: Ledger, settings: Settings, job_id: int) -> dict[str, Any] | None:
    """One job as ``hotfolder show`` tells it: the record, the parameters sent, its history."""
    try:
        job = ledger.get(job_id)
    except KeyError:
        return None
    view = job_view(settings, job_record(job))
    params = {k: scrub(str(v)) for k, v in control.sent_params(job).items()}
    events = []
    for e in ledger.events(job.id, limit=MAX_EVENTS):
        detail = json.dumps(e["detail"], ensure_ascii=False, sort_keys=True) if e["detail"] else ""
        events.append({"at": iso(e["at"]), "kind": e["kind"], "from": e["from_state"], "to": e["to_state"],
                       "detail": scrub(detail)})
    advice = None
    if job.state in (State.FAILED, State.CANCELLED):
        advice = scrub(finish.error_document(job)["retry"])
    return {"job": view, "params": params, "events": events, "advice": advice,
            "inputs": {role: _where(settings, path) for role, path in sorted(job.files.items())
                       if not role.startswith("extra:")},
            "duration_s": job.duration_ms / 1000 if job.duration_ms else None}


def _where(settings: Settings, path: str) -> str:
    """A job's file as ``inbox/…``, ``archive/…``, ``failed/…`` (the folder's role, then the
    relative path): what a person needs to find it, without the server's layout."""
    p = Path(path)
    for role in ("inbox", "archive", "failed", "outbox"):
        root = getattr(settings.folders, role)
        try:
            return f"{role}/{p.relative_to(root).as_posix()}"
        except ValueError:
            continue
    return p.name


def output_path(ledger: Ledger, settings: Settings, job_id: int, kind: str) -> Path | None:
    """The job's output file ``kind`` (video, cover), only if it is a regular file inside the
    outbox (symbolic links resolved first): nothing else on the disk can be served."""
    try:
        job = ledger.get(job_id)
    except KeyError:
        return None
    raw = job.outputs.get(kind)
    if job.state != State.DONE or not isinstance(raw, str) or not raw:
        return None
    outbox = settings.folders.outbox.resolve()
    try:
        real = Path(raw).resolve(strict=True)
    except (OSError, RuntimeError):
        return None
    if outbox not in real.parents or not real.is_file():
        return None
    return real


class StatsCache:
    """``hotfolder stats`` for the page, computed at most every :attr:`ttl` seconds: a page left
    open, or ten of them, costs one computation per minute whatever the history."""

    def __init__(self, ttl: float = 60.0) -> None:
        self.ttl = ttl
        self._cached: dict[int, tuple[float, dict[str, Any]]] = {}

    def get(self, ledger: Ledger, days: int, now: float | None = None) -> dict[str, Any]:
        mono = time.monotonic()
        hit = self._cached.get(days)
        if hit is not None and mono - hit[0] < self.ttl:
            return hit[1]
        data = control.stats(ledger, days=days, now=now)
        data["failures_by_code"] = {scrub(str(k)): v for k, v in data["failures_by_code"].items()}
        data["since"] = iso(data["since"])
        data["per_folder"] = {scrub(k): v for k, v in data["per_folder"].items()}
        self._cached = {days: (mono, data)} if len(self._cached) > 8 else {**self._cached, days: (mono, data)}
        return data
