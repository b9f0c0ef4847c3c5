"""Read-side queries over the whole history, each bounded, indexed or streamed.

Nothing here loads every job: listings are generators over one cursor (flat memory whatever the
ledger's size), "recent" reads walk the ``finished_at`` index backwards, totals come from the
trigger-kept ``job_counts`` table, and pruning deletes in short batches so a running daemon is
never blocked for long.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from hotfolder.ledger.core import Ledger
from hotfolder.states import TERMINAL, State

# The columns a status listing needs, computed in SQL so no row's JSON is parsed in Python.
def _iso_sql(column: str) -> str:
    # Formatted by SQLite (C) as Python's isoformat(timespec="seconds") would: a status listing
    # of a million jobs must not pay for a million datetime objects.
    return (f"CASE WHEN {column} > 0 THEN strftime('%Y-%m-%dT%H:%M:%S', {column}, 'unixepoch') || '+00:00' END "
            f"AS {column}_iso")


_SUMMARY = (
    "id, name, state, remote_id, error, error_code, progress, attempts, next_attempt_at, "
    "created_at, updated_at, finished_at, driver, out_video, out_cover, reused_from, "
    + ", ".join(_iso_sql(c) for c in ("next_attempt_at", "created_at", "updated_at", "finished_at"))
)
_COLUMNS = ("id", "name", "state", "remote_id", "error", "error_code", "progress", "attempts",
            "next_attempt_at", "created_at", "updated_at", "finished_at", "driver", "out_video", "out_cover",
            "reused_from",
            "next_attempt_at_iso", "created_at_iso", "updated_at_iso", "finished_at_iso")
PRUNE_BATCH = 2000


def _in(states: Iterable[State | str]) -> tuple[str, list[str]]:
    wanted = [str(s) for s in states]
    return f"state IN ({', '.join('?' * len(wanted))})", wanted


def _stream(ledger: Ledger, select: str, states: Iterable[State | str] | None, limit: int | None,
            newest_first: bool = False) -> Iterator[tuple[Any, ...]]:
    """Rows of ``SELECT {select} FROM jobs`` (optionally of ``states``, at most ``limit``) by id,
    from one cursor, a batch at a time: memory stays flat for any ledger size."""
    for batch in _batches(ledger, select, states, limit, newest_first):
        yield from batch


def _batches(ledger: Ledger, select: str, states: Iterable[State | str] | None, limit: int | None,
             newest_first: bool = False) -> Iterator[list[tuple[Any, ...]]]:
    where, args = ("", [])
    if states:
        clause, args = _in(states)
        where = f"WHERE {clause}"
    sql = f"SELECT {select} FROM jobs {where} ORDER BY id {'DESC' if newest_first else 'ASC'}"
    if limit is not None:
        sql += " LIMIT ?"
        args = [*args, int(limit)]
    cursor = ledger.conn.execute(sql, args)
    try:
        while batch := cursor.fetchmany(2000):
            yield batch
    finally:
        cursor.close()


def iter_summaries(ledger: Ledger, states: Iterable[State | str] | None = None,
                   limit: int | None = None, newest_first: bool = False) -> Iterator[dict[str, Any]]:
    """Every job (or those in ``states``) as a flat summary, streamed from one cursor."""
    for row in _stream(ledger, _SUMMARY, states, limit, newest_first):
        yield dict(zip(_COLUMNS, row))


def _iso_expr(column: str) -> str:
    return f"CASE WHEN {column} > 0 THEN strftime('%Y-%m-%dT%H:%M:%S', {column}, 'unixepoch') || '+00:00' END"


# The status object of :func:`hotfolder.records.record`, built by SQLite's json_object (C), so
# `status --json` streams a million jobs in seconds. tests/test_scale.py checks that both agree.
_STATUS_JSON = (
    "json_object('id', id, 'name', name, 'state', state, 'remote_id', remote_id, 'error', error, "
    "'error_code', error_code, 'progress', progress, "
    "'driver', CASE WHEN state = 'waiting' THEN NULL ELSE driver END, "
    "'attempts', attempts, "
    f"'next_attempt_at', CASE WHEN state IN ('done', 'failed', 'cancelled') THEN NULL ELSE {_iso_expr('next_attempt_at')} END, "
    "'outputs', CASE WHEN out_video IS NULL THEN json_object() "
    "ELSE json_object('video', out_video, 'cover', out_cover) END, "
    f"'created_at', {_iso_expr('created_at')}, 'updated_at', {_iso_expr('updated_at')}, "
    f"'finished_at', {_iso_expr('finished_at')}, 'reused_from', reused_from)"
)


def iter_status_json(ledger: Ledger, states: Iterable[State | str] | None = None,
                     limit: int | None = None) -> Iterator[list[str]]:
    """Each job's ``status --json`` object as JSON text, oldest first, streamed in batches (a
    list per batch: the per-row Python cost is what limits a million-job listing)."""
    for batch in _batches(ledger, _STATUS_JSON, states, limit):
        yield [text for (text,) in batch]


def unfinished(ledger: Ledger) -> list[dict[str, Any]]:
    """Summaries of every job that has not ended (bounded by the work in flight)."""
    return list(iter_summaries(ledger, [s for s in State if s not in TERMINAL]))


def recent_ended(ledger: Ledger, limit: int = 20, states: Iterable[State | str] | None = None) -> list[dict[str, Any]]:
    """The ``limit`` most recently ended jobs (optionally only those in ``states``), newest first,
    read backwards along the ``finished_at`` index."""
    wanted = [str(s) for s in (TERMINAL if states is None else states) if State(s) in TERMINAL]
    if not wanted or limit <= 0:
        return []
    # One seek per state along (state, finished_at), then merge: never a sort of every ended job.
    rows = []
    for state in wanted:
        rows += ledger.conn.execute(
            f"SELECT {_SUMMARY} FROM jobs INDEXED BY jobs_state_finished WHERE state = ? "
            "AND finished_at IS NOT NULL ORDER BY finished_at DESC LIMIT ?", [state, int(limit)]).fetchall()
    out = [dict(zip(_COLUMNS, row)) for row in rows]
    out.sort(key=lambda r: r["finished_at"], reverse=True)
    return out[:limit]


def prune(ledger: Ledger, before: float, *, vacuum: bool = False) -> dict[str, int]:
    """Delete ended jobs (and their events) that ended before ``before`` (unix time).

    Never an unfinished job, never one whose input moves are still pending, and never the table
    of known remote task ids (a pruned task must stay known, or a lost create could adopt it).
    Deletes in batches of :data:`PRUNE_BATCH` jobs, one short transaction each.
    """
    terminal = [str(s) for s in TERMINAL]
    jobs = events = 0
    while True:
        with ledger.transaction() as conn:
            ids = [r[0] for r in conn.execute(
                f"SELECT id FROM jobs WHERE finished_at IS NOT NULL AND finished_at < ? AND moves_pending = 0 "
                f"AND state IN ({', '.join('?' * len(terminal))}) ORDER BY finished_at LIMIT ?",
                [before, *terminal, PRUNE_BATCH])]
            if not ids:
                break
            marks = ", ".join("?" * len(ids))
            events += conn.execute(f"DELETE FROM events WHERE job_id IN ({marks})", ids).rowcount
            jobs += conn.execute(f"DELETE FROM jobs WHERE id IN ({marks})", ids).rowcount
    if vacuum:
        ledger.conn.execute("VACUUM")
    return {"jobs": jobs, "events": events}


def oldest_created_at(ledger: Ledger, state: str) -> float | None:
    """When the oldest job now in ``state`` was recorded: one index seek (ids grow with time)."""
    row = ledger.conn.execute("SELECT created_at FROM jobs WHERE state = ? ORDER BY id LIMIT 1", [state]).fetchone()
    return row[0] if row else None


def _percentile(sorted_values: list[float], q: float) -> float | None:
    if not sorted_values:
        return None
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


def stats(ledger: Ledger, now: float, days: int = 14, utc_offset: float = 0.0) -> dict[str, Any]:
    """What the last ``days`` days produced, read only from jobs that ended in that window (the
    ``finished_at`` index) and their events: the cost follows recent volume, never the history.

    Days are local days (``utc_offset`` seconds east of UTC). Stage times come from the events:
    upload = upload_started → files_ready, generation = task created/adopted → task_succeeded,
    download = task_succeeded → done, total = recorded → ended.
    """
    day0 = ((now + utc_offset) // 86400 - (days - 1)) * 86400 - utc_offset
    rows = ledger.conn.execute(
        "SELECT id, state, error_code, rel_dir, duration_ms, created_at, finished_at FROM jobs "
        "WHERE finished_at IS NOT NULL AND finished_at >= ?", [day0]).fetchall()
    per_day: dict[str, dict[str, int]] = {}
    for i in range(days):
        stamp = day0 + i * 86400 + utc_offset
        per_day[_day(stamp)] = {"done": 0, "failed": 0, "cancelled": 0}
    failures: dict[str, int] = {}
    folders: dict[str, dict[str, float]] = {}
    totals = {"done": 0, "failed": 0, "cancelled": 0}
    video_ms = 0
    total_times: list[float] = []
    done_ids: list[int] = []
    for job_id, state, code, rel_dir, duration_ms, created_at, finished_at in rows:
        if state not in totals:
            continue
        totals[state] += 1
        per_day.setdefault(_day(finished_at + utc_offset), {"done": 0, "failed": 0, "cancelled": 0})[state] += 1
        top = (rel_dir or "").split("/", 1)[0] or "(top)"
        folder = folders.setdefault(top, {"done": 0, "failed": 0, "cancelled": 0, "video_seconds": 0.0})
        folder[state] += 1
        if state == "failed":
            failures[code or "error"] = failures.get(code or "error", 0) + 1
        if state == "done":
            done_ids.append(job_id)
            total_times.append(finished_at - created_at)
            if duration_ms:
                video_ms += duration_ms
                folder["video_seconds"] += duration_ms / 1000
    stages: dict[str, list[float]] = {"upload": [], "generation": [], "download": []}
    for i in range(0, len(done_ids), 500):
        chunk = done_ids[i:i + 500]
        marks = ", ".join("?" * len(chunk))
        # The first time each job reached each step (a retried job keeps its last run's steps).
        found: dict[int, dict[str, float]] = {}
        for job_id, kind, at in ledger.conn.execute(
                f"SELECT job_id, kind, MAX(at) FROM events WHERE job_id IN ({marks}) AND kind IN "
                "('upload_started', 'files_ready', 'task_created', 'task_adopted', 'task_succeeded', 'done') "
                "GROUP BY job_id, kind", chunk):
            found.setdefault(job_id, {})[kind] = at
        for marks_of in found.values():
            created = marks_of.get("task_created") or marks_of.get("task_adopted")
            for stage, start, end in (("upload", marks_of.get("upload_started"), marks_of.get("files_ready")),
                                      ("generation", created, marks_of.get("task_succeeded")),
                                      ("download", marks_of.get("task_succeeded"), marks_of.get("done"))):
                if start is not None and end is not None and end >= start:
                    stages[stage].append(end - start)
    stages["total"] = total_times
    timing = {}
    for stage, values in stages.items():
        values.sort()
        timing[stage] = {"count": len(values), "median_s": _percentile(values, 0.5), "p90_s": _percentile(values, 0.9)}
    return {
        "days": days, "since": day0, "totals": totals, "per_day": dict(sorted(per_day.items())),
        "failures_by_code": dict(sorted(failures.items(), key=lambda kv: -kv[1])),
        "video_seconds": video_ms / 1000, "stage_seconds": timing,
        "per_folder": dict(sorted(folders.items())), "all_time": ledger.counts(),
    }


def _day(ts: float) -> str:
    import time

    return time.strftime("%Y-%m-%d", time.gmtime(ts))
