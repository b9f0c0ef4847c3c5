"""The ledger: the single source of truth, and the only code that runs SQL.

SQLite in WAL mode with ``synchronous=FULL``, so a recorded intent survives a power cut. Every
state change is a compare-and-set (``UPDATE … WHERE id=? AND state=?``) in one short
``BEGIN IMMEDIATE`` transaction that also appends to ``events``; a verb that loses the race
returns ``False`` instead of overwriting. Each thread gets its own connection; the CLI reads while
the daemon writes (busy timeout, short transactions).
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlite_utils

from hotfolder.errors import LedgerError
from hotfolder.migrations import MIGRATIONS
from hotfolder.states import TERMINAL, State, check_move

BUSY_TIMEOUT_S = 30.0
# Filesystems on which SQLite's WAL (shared memory + POSIX locks) is unsafe.
NETWORK_FS = {"nfs", "nfs4", "cifs", "smb", "smb2", "smb3", "smbfs", "9p", "afs", "ceph", "glusterfs",
              "fuse.sshfs", "davfs", "fuse.rclone", "lustre", "ncpfs"}
_JSON_FIELDS = ("files", "inputs", "params", "outputs")


@dataclass(frozen=True)
class Job:
    """A snapshot of one row of ``jobs`` with its JSON columns decoded."""

    id: int
    name: str
    rel_dir: str
    stem: str
    state: State
    files: dict[str, str]
    inputs: dict[str, dict[str, Any]]
    params: dict[str, Any]
    outputs: dict[str, str] = field(default_factory=dict)
    video_file_id: str | None = None
    audio_file_id: str | None = None
    remote_id: str | None = None
    create_intent_at: float | None = None
    progress: int = 0
    video_url: str | None = None
    preview_url: str | None = None
    attempts: int = 0
    next_attempt_at: float = 0.0
    first_trouble_at: float | None = None
    last_error_kind: str | None = None
    same_error_count: int = 0
    error: str | None = None
    error_code: str | None = None
    created_at: float = 0.0
    updated_at: float = 0.0
    finished_at: float | None = None

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> "Job":
        data = dict(row)
        for key in _JSON_FIELDS:
            data[key] = json.loads(data[key]) if data.get(key) else {}
        data["state"] = State(data["state"])
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})

    @property
    def driver_kind(self) -> str:
        return "audio" if "audio" in self.files else "text"


def filesystem_type(path: Path, mounts_file: str = "/proc/mounts") -> str | None:
    """The filesystem type of the mount holding ``path`` (Linux), or None if unknown."""
    try:
        lines = Path(mounts_file).read_text().splitlines()
    except OSError:
        return None
    target = str(path.resolve())
    best, best_type = "", None
    for line in lines:
        parts = line.split()
        if len(parts) < 3:
            continue
        mnt = parts[1].replace("\\040", " ")
        if (target == mnt or target.startswith(mnt.rstrip("/") + "/")) and len(mnt) >= len(best):
            best, best_type = mnt, parts[2]
    return best_type


class Ledger:
    """Persistence behind domain verbs. Safe to share between threads."""

    def __init__(self, path: Path, *, clock: Callable[[], float] = time.time) -> None:
        self.path = Path(path)
        self.clock = clock
        self._local = threading.local()
        fstype = filesystem_type(self.path.parent if self.path.parent.exists() else Path("/"))
        if fstype in NETWORK_FS:
            raise LedgerError(
                f"the ledger {self.path} is on a network filesystem ({fstype}); SQLite's WAL mode "
                "is not safe there. Set [ledger] path to a local disk (e.g. /var/lib/hotfolder/ledger.db)"
            )
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.migrate()
        except sqlite3.DatabaseError as exc:
            raise LedgerError(f"cannot open the ledger {self.path}: {exc}") from exc
        except OSError as exc:
            raise LedgerError(f"cannot create the ledger folder {self.path.parent}: {exc.strerror}") from exc

    # -- connection and transactions --------------------------------------------------------
    @property
    def db(self) -> sqlite_utils.Database:
        db = getattr(self._local, "db", None)
        if db is None:
            conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None,
                                   check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
            db = sqlite_utils.Database(conn)
            self._local.db = db
        return db

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        # IMMEDIATE takes the write lock up front: a deferred transaction that later upgrades
        # can fail with SQLITE_BUSY without honouring the busy timeout.
        conn = self.db.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def close(self) -> None:
        """Close this thread's connection."""
        db = getattr(self._local, "db", None)
        if db is not None:
            db.conn.close()
            self._local.db = None

    def migrate(self) -> int:
        """Bring the schema up to date; returns the schema version."""
        # Read first without a write lock, so opening a current ledger never waits on a writer.
        if self.db.conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS):
            return len(MIGRATIONS)
        with self._tx() as conn:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > len(MIGRATIONS):
                raise LedgerError(
                    f"the ledger {self.path} has schema version {version}, newer than this hotfolder "
                    f"knows ({len(MIGRATIONS)}): upgrade hotfolder"
                )
            for index in range(version, len(MIGRATIONS)):
                MIGRATIONS[index](self.db)
                conn.execute(f"PRAGMA user_version={index + 1}")
        return len(MIGRATIONS)

    # -- jobs ---------------------------------------------------------------------------------
    def add_job(self, *, name: str, rel_dir: str, stem: str, state: State, files: dict[str, str],
                inputs: dict[str, Any], params: dict[str, Any], error: str | None = None,
                error_code: str | None = None) -> int:
        """Insert a new job and its first event; returns the job id."""
        now = self.clock()
        row = {
            "name": name, "rel_dir": rel_dir, "stem": stem, "state": str(state),
            "files": json.dumps(files), "inputs": json.dumps(inputs), "params": json.dumps(params),
            "outputs": "{}", "error": error, "error_code": error_code,
            "created_at": now, "updated_at": now,
            "finished_at": now if state in TERMINAL else None,
        }
        with self._tx() as conn:
            cur = conn.execute(
                f"INSERT INTO jobs ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})", list(row.values())
            )
            job_id = int(cur.lastrowid or 0)
            self._event(conn, job_id, "created", None, str(state), {"error": error} if error else None)
        return job_id

    def get(self, job_id: int) -> Job:
        """The job with this id (``KeyError`` if there is none)."""
        rows = list(self.db.query("SELECT * FROM jobs WHERE id = ?", [job_id]))
        if not rows:
            raise KeyError(job_id)
        return Job.from_row(rows[0])

    def find(self, ref: str) -> Job:
        """A job by id or by name (the newest job of that name)."""
        if ref.isdigit():
            with contextlib.suppress(KeyError):
                return self.get(int(ref))
        rows = list(self.db.query("SELECT * FROM jobs WHERE name = ? ORDER BY id DESC LIMIT 1", [ref]))
        if not rows:
            raise KeyError(ref)
        return Job.from_row(rows[0])

    def jobs(self, states: Iterable[State | str] | None = None) -> list[Job]:
        """All jobs (optionally only in ``states``), oldest first."""
        if states is None:
            rows = self.db.query("SELECT * FROM jobs ORDER BY id")
        else:
            wanted = [str(s) for s in states]
            rows = self.db.query(
                f"SELECT * FROM jobs WHERE state IN ({', '.join('?' * len(wanted))}) ORDER BY id", wanted
            )
        return [Job.from_row(r) for r in rows]

    def open_job_for(self, name: str) -> Job | None:
        """The open job for this inbox-relative video: unfinished, or ended with its inputs not yet moved."""
        terminal = [str(s) for s in TERMINAL]
        rows = list(self.db.query(
            f"SELECT * FROM jobs WHERE name = ? AND (state NOT IN ({', '.join('?' * len(terminal))}) "
            "OR json_extract(outputs, '$.moves_pending') = 1) ORDER BY id DESC LIMIT 1", [name, *terminal]))
        return Job.from_row(rows[0]) if rows else None

    def known_remote_ids(self) -> set[str]:
        """Every remote task id any job has ever recorded."""
        # Events too: a task given up on (e.g. failed for billing) is no longer on its job.
        rows = self.db.query(
            "SELECT remote_id AS rid FROM jobs WHERE remote_id IS NOT NULL UNION "
            "SELECT json_extract(detail, '$.remote_id') FROM events "
            "WHERE detail IS NOT NULL AND json_extract(detail, '$.remote_id') IS NOT NULL")
        return {str(r["rid"]) for r in rows}

    def advance(self, job_id: int, src: State, dst: State, *, event: str | None = None,
                detail: dict[str, Any] | None = None, **fields: Any) -> bool:
        """Move ``job_id`` from ``src`` to ``dst`` (compare-and-set), setting ``fields`` too.

        Returns False (and changes nothing) if the job is no longer in ``src``.
        """
        check_move(src, dst)
        return self._set(job_id, src, dst, event or "state", detail, fields)

    def update(self, job_id: int, state: State, *, event: str | None = None,
               detail: dict[str, Any] | None = None, **fields: Any) -> bool:
        """Record a checkpoint (``fields``) on a job that must still be in ``state``."""
        return self._set(job_id, state, None, event, detail, fields)

    def _set(self, job_id: int, src: State, dst: State | None, event: str | None,
             detail: dict[str, Any] | None, fields: dict[str, Any]) -> bool:
        now = self.clock()
        values = {k: (json.dumps(v) if k in _JSON_FIELDS else v) for k, v in fields.items()}
        if dst is not None:
            values["state"] = str(dst)
            if dst in TERMINAL:
                values["finished_at"] = now
        values["updated_at"] = now
        assignments = ", ".join(f"{k} = ?" for k in values)
        with self._tx() as conn:
            cur = conn.execute(f"UPDATE jobs SET {assignments} WHERE id = ? AND state = ?",
                               [*values.values(), job_id, str(src)])
            if cur.rowcount != 1:
                return False
            if event or dst is not None:
                self._event(conn, job_id, event or "state", str(src), str(dst or src), detail)
        return True

    def _event(self, conn: sqlite3.Connection, job_id: int, kind: str, src: str | None, dst: str | None,
               detail: dict[str, Any] | None) -> None:
        conn.execute(
            "INSERT INTO events (job_id, at, kind, from_state, to_state, detail) VALUES (?, ?, ?, ?, ?, ?)",
            [job_id, self.clock(), kind, src, dst, json.dumps(detail, ensure_ascii=False) if detail else None],
        )

    def note(self, job_id: int, kind: str, detail: dict[str, Any] | None = None) -> None:
        """Append an event that does not change the job (e.g. a retry that will happen later)."""
        with self._tx() as conn:
            self._event(conn, job_id, kind, None, None, detail)

    def events(self, job_id: int) -> list[dict[str, Any]]:
        """The job's history, oldest first, ``detail`` decoded."""
        out = []
        for row in self.db.query("SELECT * FROM events WHERE job_id = ? ORDER BY id", [job_id]):
            row = dict(row)
            row["detail"] = json.loads(row["detail"]) if row["detail"] else None
            out.append(row)
        return out

    # -- the upload cache ---------------------------------------------------------------------
    def cached_upload(self, sha256: str, service: str) -> dict[str, Any] | None:
        """A previous upload of identical bytes for this service, if one is recorded."""
        rows = list(self.db.query("SELECT * FROM uploads WHERE sha256 = ? AND service = ?", [sha256, service]))
        return rows[0] if rows else None

    def remember_upload(self, sha256: str, service: str, file_id: str, size: int) -> None:
        """Record that these bytes are now ``file_id`` on the API."""
        now = self.clock()
        with self._tx() as conn:
            conn.execute(
                "INSERT INTO uploads (sha256, service, file_id, bytes, uploaded_at, checked_at) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(sha256, service) DO UPDATE SET "
                "file_id = excluded.file_id, bytes = excluded.bytes, uploaded_at = excluded.uploaded_at, "
                "checked_at = excluded.checked_at", [sha256, service, file_id, size, now, now])

    def touch_upload(self, sha256: str, service: str) -> None:
        """Note that a cached upload was just confirmed usable."""
        with self._tx() as conn:
            conn.execute("UPDATE uploads SET checked_at = ? WHERE sha256 = ? AND service = ?",
                         [self.clock(), sha256, service])

    def forget_upload(self, sha256: str, service: str) -> None:
        """Drop a cached upload the API no longer has."""
        with self._tx() as conn:
            conn.execute("DELETE FROM uploads WHERE sha256 = ? AND service = ?", [sha256, service])

    # -- key/value ----------------------------------------------------------------------------
    def get_value(self, key: str) -> str | None:
        rows = list(self.db.query("SELECT value FROM kv WHERE key = ?", [key]))
        return rows[0]["value"] if rows else None

    def set_value(self, key: str, value: str | None) -> None:
        with self._tx() as conn:
            if value is None:
                conn.execute("DELETE FROM kv WHERE key = ?", [key])
            else:
                conn.execute("INSERT INTO kv (key, value, updated_at) VALUES (?, ?, ?) ON CONFLICT(key) "
                             "DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
                             [key, value, self.clock()])

    def compare_and_set_value(self, key: str, expected: str | None, value: str) -> bool:
        """Set ``key`` to ``value`` only if it currently holds ``expected``."""
        with self._tx() as conn:
            row = conn.execute("SELECT value FROM kv WHERE key = ?", [key]).fetchone()
            if (row[0] if row else None) != expected:
                return False
            conn.execute("INSERT INTO kv (key, value, updated_at) VALUES (?, ?, ?) ON CONFLICT(key) "
                         "DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
                         [key, value, self.clock()])
        return True

    def integrity(self) -> str:
        """``ok`` or SQLite's description of what is wrong."""
        return str(list(self.db.conn.execute("PRAGMA integrity_check"))[0][0])

    def counts(self) -> dict[str, int]:
        """Number of jobs per state."""
        return {r["state"]: r["n"] for r in self.db.query("SELECT state, COUNT(*) AS n FROM jobs GROUP BY state")}
