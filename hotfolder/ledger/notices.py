"""Pending notifications: recorded with the transition that causes them, delivered later.

A :class:`Notice` names the event (``done``, ``failed``, ``paused``, ``resumed``), the targets
that want it (``webhook``, ``exec``, ``apprise``) and how to build its body from the job as the
transition left it. :func:`insert` runs inside the ledger's transaction, so a committed transition
always has its notification rows, and a crash can never lose one. The delivery worker
(:mod:`hotfolder.notify`) reads due rows with :func:`due` and records each attempt.
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hotfolder.ledger.core import Ledger
    from hotfolder.ledger.job import Job


@dataclass(frozen=True)
class Notice:
    """An event to tell the ``targets`` about; ``body(job, event_id, at)`` builds what they get."""

    kind: str
    targets: tuple[str, ...]
    body: Callable[["Job | None", str, float], dict[str, Any]]
    event_id: str = field(default_factory=lambda: uuid.uuid4().hex)


def insert(conn: sqlite3.Connection, notice: Notice, job: "Job | None", now: float) -> None:
    """One row per target, inside the caller's transaction."""
    if not notice.targets:
        return
    body = json.dumps(notice.body(job, notice.event_id, now), ensure_ascii=False)
    for target in notice.targets:
        conn.execute(
            "INSERT OR IGNORE INTO notifications (event_id, target, kind, job_id, body, created_at, next_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            [notice.event_id, target, notice.kind, job.id if job is not None else None, body, now, now])


_COLUMNS = ("id", "event_id", "target", "kind", "job_id", "body", "created_at", "attempts", "next_at", "last_error")


def due(ledger: "Ledger", now: float, limit: int = 50) -> list[dict[str, Any]]:
    """Undelivered notifications whose next attempt is due, oldest first (indexed)."""
    rows = ledger.conn.execute(
        f"SELECT {', '.join(_COLUMNS)} FROM notifications WHERE delivered_at IS NULL AND gave_up_at IS NULL "
        "AND next_at <= ? ORDER BY next_at, id LIMIT ?", [now, limit]).fetchall()
    return [dict(zip(_COLUMNS, r)) for r in rows]


def next_due_at(ledger: "Ledger") -> float | None:
    """When the earliest undelivered notification is due, or None when none waits."""
    row = ledger.conn.execute("SELECT MIN(next_at) FROM notifications WHERE delivered_at IS NULL "
                              "AND gave_up_at IS NULL").fetchone()
    return row[0] if row and row[0] is not None else None


def delivered(ledger: "Ledger", notification_id: int) -> None:
    """Record a successful delivery."""
    with ledger.transaction() as conn:
        conn.execute("UPDATE notifications SET delivered_at = ?, attempts = attempts + 1, last_error = NULL "
                     "WHERE id = ?", [ledger.clock(), notification_id])


def attempt_failed(ledger: "Ledger", notification_id: int, error: str, next_at: float) -> None:
    """Record a failed attempt and when to try again."""
    with ledger.transaction() as conn:
        conn.execute("UPDATE notifications SET attempts = attempts + 1, last_error = ?, next_at = ? WHERE id = ?",
                     [error[:2000], next_at, notification_id])


def gave_up(ledger: "Ledger", notification_id: int, error: str) -> None:
    """Stop trying (the receiver kept failing past the deadline)."""
    with ledger.transaction() as conn:
        conn.execute("UPDATE notifications SET attempts = attempts + 1, last_error = ?, gave_up_at = ? WHERE id = ?",
                     [error[:2000], ledger.clock(), notification_id])


def pending_count(ledger: "Ledger") -> int:
    """Notifications not yet delivered nor given up (bounded by receivers' outages)."""
    row = ledger.conn.execute("SELECT COUNT(*) FROM notifications WHERE delivered_at IS NULL "
                              "AND gave_up_at IS NULL").fetchone()
    return int(row[0])
