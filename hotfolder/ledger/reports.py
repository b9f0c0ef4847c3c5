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
_SUMMARY = (
    "id, name, state, remote_id, error, error_code, progress, attempts, next_attempt_at, "
    "created_at, updated_at, finished_at, "
    "CASE WHEN json_extract(files, '$.audio') IS NOT NULL THEN 'audio' "
    "     WHEN json_extract(files, '$.text') IS NOT NULL THEN 'text' END AS driver, "
    "json_extract(outputs, '$.video') AS out_video, json_extract(outputs, '$.cover') AS out_cover"
)
_COLUMNS = ("id", "name", "state", "remote_id", "error", "error_code", "progress", "attempts",
            "next_attempt_at", "created_at", "updated_at", "finished_at", "driver", "out_video", "out_cover")
PRUNE_BATCH = 2000


def _in(states: Iterable[State | str]) -> tuple[str, list[str]]:
    wanted = [str(s) for s in states]
    return f"state IN ({', '.join('?' * len(wanted))})", wanted


def iter_summaries(ledger: Ledger, states: Iterable[State | str] | None = None,
                   limit: int | None = None, newest_first: bool = False) -> Iterator[dict[str, Any]]:
    """Every job (or those in ``states``) as a flat summary, streamed from one cursor."""
    where, args = ("", [])
    if states:
        clause, args = _in(states)
        where = f"WHERE {clause}"
    order = "DESC" if newest_first else "ASC"
    sql = f"SELECT {_SUMMARY} FROM jobs {where} ORDER BY id {order}"
    if limit is not None:
        sql += " LIMIT ?"
        args = [*args, int(limit)]
    # fetchmany: rows are decoded a batch at a time, so memory stays flat for any ledger size.
    cursor = ledger.conn.execute(sql, args)
    try:
        while batch := cursor.fetchmany(1000):
            for row in batch:
                yield dict(zip(_COLUMNS, row))
    finally:
        cursor.close()


def unfinished(ledger: Ledger) -> list[dict[str, Any]]:
    """Summaries of every job that has not ended (bounded by the work in flight)."""
    return list(iter_summaries(ledger, [s for s in State if s not in TERMINAL]))


def recent_ended(ledger: Ledger, limit: int = 20, states: Iterable[State | str] | None = None) -> list[dict[str, Any]]:
    """The ``limit`` most recently ended jobs (optionally only those in ``states``), newest first,
    read backwards along the ``finished_at`` index."""
    wanted = [str(s) for s in (states or TERMINAL) if State(s) in TERMINAL]
    if not wanted or limit <= 0:
        return []
    clause, args = _in(wanted)
    rows = ledger.conn.execute(
        f"SELECT {_SUMMARY} FROM jobs WHERE finished_at IS NOT NULL AND {clause} "
        "ORDER BY finished_at DESC LIMIT ?", [*args, int(limit)]).fetchall()
    return [dict(zip(_COLUMNS, row)) for row in rows]


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
