"""What ``/healthz`` reports: the health body and the ledger-writability probe behind it.

Blocking (the ledger, the disk): :class:`hotfolder.server.Listener` runs :func:`health_report`
on its I/O thread, under :data:`HEALTH_TIMEOUT_S`. :class:`LedgerProbe` caches
:func:`ledger_write_problem`, which takes the ledger's write lock and rolls back at once (nothing
is written), so however often ``/healthz`` is asked the disk is probed at most once a second.
"""

from __future__ import annotations

import shutil
import sqlite3
import threading
import time
from typing import Any

from hotfolder import __version__
from hotfolder.ledger import Ledger
from hotfolder.log import scrub
from hotfolder.outcomes import pause_reason, paused_until
from hotfolder.records import iso
from hotfolder.trouble import current as current_trouble

HEALTH_TIMEOUT_S = 5.0           # /healthz answers 503 rather than hang when the disk or ledger hangs
PROBE_BUSY_S = 0.5               # the write probe waits this long for a writer's lock, then counts it busy
PROBE_CACHE_S = 1.0              # probes at most once a second, however often /healthz is asked
LEDGER_MIN_FREE_BYTES = 1 << 20  # below this, SQLite cannot be trusted to commit (WAL pages, checkpoints)


def health_report(ledger: Ledger, reasons: list[str], now: float, started_at: float) -> dict[str, Any]:
    """The ``/healthz`` body, given the ``reasons`` found so far (already scrubbed). ``status`` is
    ``ok`` or ``unhealthy`` with ``reasons``; a billing pause and API trouble are reported but are
    not unhealthy (the daemon is doing the right thing about them, and a restart would not help)."""
    body: dict[str, Any] = {"status": "ok", "reasons": reasons, "version": __version__,
                            "uptime_s": round(max(0.0, now - started_at), 1)}
    try:
        body["jobs"] = ledger.counts()
        until = paused_until(ledger, now)
        body["billing_paused"] = ({"until": iso(until), "reason": scrub(pause_reason(ledger) or "")}
                                  if until else None)
        trouble = current_trouble(ledger)
        body["api_trouble"] = ({"kind": str(trouble.get("kind")), "message": scrub(str(trouble.get("message"))),
                                "since": iso(trouble.get("since"))} if trouble else None)
    except Exception as exc:
        reasons.append(scrub(f"the ledger {ledger.path} cannot be read: {exc}"))
    if reasons:
        body["status"] = "unhealthy"
    return body


class LedgerProbe:
    """:func:`ledger_write_problem`, cached for :data:`PROBE_CACHE_S` (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last: tuple[float, str | None] = (float("-inf"), None)

    def problem(self, ledger: Ledger) -> str | None:
        """Why ``ledger`` cannot take a write now, or None."""
        with self._lock:
            at, found = self._last
            if time.monotonic() - at < PROBE_CACHE_S:
                return found
            found = ledger_write_problem(ledger)
            self._last = (time.monotonic(), found)
            return found


def ledger_write_problem(ledger: Ledger) -> str | None:
    """Why a write to the ledger would fail now, or None.

    "Writable" for SQLite in WAL mode means: the database file is still there (a deleted or
    unmounted file keeps taking writes through the open descriptors, into nothing that survives),
    its disk has room (a commit appends to the WAL, a checkpoint writes pages back), and the write
    lock can be taken (a read-only file or mount, a broken ``-shm``, an I/O error all surface as
    ``BEGIN IMMEDIATE`` failing). The probe opens its own short-lived connection (never creating
    the file: ``mode=rw``), takes the write lock and rolls back at once: nothing is written.
    A lock held by another writer (SQLITE_BUSY) means writes are happening: that is healthy.
    """
    path = ledger.path
    if not path.exists():
        return f"the ledger {path} is gone (deleted, or its disk unmounted): restore it and restart hotfolder"
    try:
        free = shutil.disk_usage(path.parent).free
    except OSError as exc:
        return f"the ledger's folder {path.parent} cannot be read: {exc.strerror or exc}"
    if free < LEDGER_MIN_FREE_BYTES:
        return f"the ledger's disk is full ({free // 1024} KiB free at {path.parent}): free some space"
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=rw", uri=True, timeout=PROBE_BUSY_S,
                               isolation_level=None, check_same_thread=False)
    except sqlite3.Error as exc:
        return f"the ledger {path} cannot be opened for writing: {exc}"
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("ROLLBACK")
    except sqlite3.OperationalError as exc:
        if getattr(exc, "sqlite_errorname", "").startswith(("SQLITE_BUSY", "SQLITE_LOCKED")) or "locked" in str(exc):
            return None
        return f"the ledger {path} is not writable: {exc}"
    except sqlite3.Error as exc:
        return f"the ledger {path} is not writable: {exc}"
    finally:
        conn.close()
    return None
