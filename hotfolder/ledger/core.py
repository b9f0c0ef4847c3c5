"""The ledger: the single source of truth, and the only code that runs SQL.

SQLite in WAL mode with ``synchronous=FULL``, so a recorded intent survives a power cut. Every
state change is a compare-and-set (``UPDATE … WHERE id=? AND state=?``) in one short
``BEGIN IMMEDIATE`` transaction that also appends to ``events``; a verb returns the updated :class:`Job` (``UPDATE …
RETURNING``), or ``None`` when it lost the race, instead of overwriting. Each thread gets its own connection; the CLI reads while
the daemon writes (busy timeout, short transactions).
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from hotfolder.errors import LedgerError
from hotfolder.ledger import notices
from hotfolder.ledger.job import _JSON_FIELDS, AmbiguousRef, Job
from hotfolder.mounts import filesystem_type
from hotfolder.migrations import MIGRATIONS
from hotfolder.states import TERMINAL, State, check_move

BUSY_TIMEOUT_S = 30.0
# Filesystems on which SQLite's WAL (shared memory + POSIX locks) is unsafe.
NETWORK_FS = {"nfs", "nfs4", "cifs", "smb", "smb2", "smb3", "smbfs", "9p", "afs", "ceph", "glusterfs",
              "fuse.sshfs", "davfs", "fuse.rclone", "lustre", "ncpfs"}


class Ledger:
    """Persistence behind domain verbs. Safe to share between threads."""

    def __init__(self, path: Path, *, clock: Callable[[], float] = time.time) -> None:
        self.path = Path(path)
        self.clock = clock
        self._local = threading.local()
        # Called after each state change made through this object with (job, from_state); the
        # daemon's metrics listen. notice_listeners: a notification was recorded (wake its worker).
        self.listeners: list[Callable[[Job | None, str | None], None]] = []
        self.notice_listeners: list[Callable[[], None]] = []
        fstype = filesystem_type(self.path.parent if self.path.parent.exists() else Path("/"))
        if fstype in NETWORK_FS or (fstype is not None and fstype.startswith("fuse.")):
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
    def conn(self) -> sqlite3.Connection:
        """This thread's connection (autocommit; verbs open their own transactions)."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None,
                                   check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
            self._local.conn = conn
        return conn

    @property
    def db(self) -> Any:
        """This thread's connection wrapped by sqlite-utils (migrations, tests). Imported only here:
        it costs a tenth of a second, which every short command would otherwise pay."""
        import sqlite_utils

        return sqlite_utils.Database(self.conn)

    def _rows(self, sql: str, args: Iterable[Any] = ()) -> list[dict[str, Any]]:
        cur = self.conn.execute(sql, list(args))
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row)) for row in cur.fetchall()]

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One short ``BEGIN IMMEDIATE`` transaction on this thread's connection."""
        # IMMEDIATE takes the write lock up front: a deferred transaction that later upgrades
        # can fail with SQLITE_BUSY without honouring the busy timeout.
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def close(self) -> None:
        """Close this thread's connection."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def migrate(self) -> int:
        """Bring the schema up to date; returns the schema version."""
        # Read first without a write lock, so opening a current ledger never waits on a writer.
        if self.conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS):
            return len(MIGRATIONS)
        with self.transaction() as conn:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > len(MIGRATIONS):
                raise LedgerError(
                    f"the ledger {self.path} has schema version {version}, newer than this hotfolder "
                    f"knows ({len(MIGRATIONS)}): upgrade hotfolder"
                )
            db = self.db
            for index in range(version, len(MIGRATIONS)):
                MIGRATIONS[index](db)
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
        with self.transaction() as conn:
            cur = conn.execute(
                f"INSERT INTO jobs ({', '.join(row)}) VALUES ({', '.join('?' * len(row))}) RETURNING *",
                list(row.values()))
            job = Job.from_row(dict(zip([d[0] for d in cur.description], cur.fetchone())))
            cur.fetchall()
            self._event(conn, job.id, "created", None, str(state), {"error": error} if error else None)
        self._changed(job, None)
        return job.id

    def get(self, job_id: int) -> Job:
        """The job with this id (``KeyError`` if there is none)."""
        rows = self._rows("SELECT * FROM jobs WHERE id = ?", [job_id])
        if not rows:
            raise KeyError(job_id)
        return Job.from_row(rows[0])

    def find(self, ref: str) -> Job:
        """A job by id, by inbox-relative name, or by file name or stem when only one job has it
        (the newest job of that name wins). ``KeyError`` if none; :class:`AmbiguousRef` if several."""
        if ref.isdigit():
            with contextlib.suppress(KeyError):
                return self.get(int(ref))
        rows = self._rows("SELECT * FROM jobs WHERE name = ? ORDER BY id DESC LIMIT 1", [ref])
        if rows:
            return Job.from_row(rows[0])
        # A bare file name ("clip.mp4") or stem ("clip"): through the stem index, never a scan.
        base = ref.rsplit("/", 1)[-1]
        stem, dot, _ext = base.rpartition(".")
        candidates = {stem} if dot and stem else set()
        candidates.add(base)
        hits: dict[str, Job] = {}
        for cand in candidates:
            for row in self._rows("SELECT * FROM jobs WHERE stem = ? ORDER BY id DESC LIMIT 200", [cand]):
                job = Job.from_row(row)
                if (job.name.rsplit("/", 1)[-1] == base or job.stem == base) and job.name not in hits:
                    hits[job.name] = job
        if not hits:
            raise KeyError(ref)
        if len(hits) > 1:
            raise AmbiguousRef(ref, sorted(hits))
        return next(iter(hits.values()))

    def jobs(self, states: Iterable[State | str]) -> list[Job]:
        """The jobs in ``states``, oldest first. Only for states whose jobs are bounded by the
        work in flight (never all ended jobs: see :mod:`hotfolder.ledger.reports`)."""
        wanted = [str(s) for s in states]
        rows = self._rows(
            f"SELECT * FROM jobs WHERE state IN ({', '.join('?' * len(wanted))}) ORDER BY id", wanted
        )
        return [Job.from_row(r) for r in rows]

    def count(self, state: State | str) -> int:
        """How many jobs are in ``state`` (kept by triggers: no scan)."""
        row = self.conn.execute("SELECT n FROM job_counts WHERE state = ?", [str(state)]).fetchone()
        return int(row[0]) if row else 0

    def pending_moves(self) -> list[Job]:
        """Ended jobs whose inputs are not all moved yet (a crash or a full disk held them up)."""
        return [Job.from_row(r) for r in self._rows("SELECT * FROM jobs WHERE moves_pending = 1 ORDER BY id")]

    def open_job_for(self, name: str) -> Job | None:
        """The open job for this inbox-relative video: unfinished, or ended with its inputs not yet moved."""
        terminal = [str(s) for s in TERMINAL]
        rows = self._rows(
            f"SELECT * FROM jobs WHERE name = ? AND (state NOT IN ({', '.join('?' * len(terminal))}) "
            "OR moves_pending = 1) ORDER BY id DESC LIMIT 1", [name, *terminal])
        return Job.from_row(rows[0]) if rows else None

    def done_with_content(self, content_key: str, limit: int = 5) -> list[Job]:
        """The newest done jobs that made this content (indexed), for reusing their result."""
        return [Job.from_row(r) for r in self._rows(
            "SELECT * FROM jobs WHERE content_key = ? AND state = 'done' ORDER BY id DESC LIMIT ?",
            [content_key, limit])]

    def job_for_remote(self, remote_id: str) -> Job | None:
        """The newest job following this remote task, if any (indexed)."""
        rows = self._rows("SELECT * FROM jobs WHERE remote_id = ? ORDER BY id DESC LIMIT 1", [str(remote_id)])
        return Job.from_row(rows[0]) if rows else None

    def unknown_remote_ids(self, remote_ids: Iterable[str]) -> set[str]:
        """Those of ``remote_ids`` that no job has ever recorded (candidates for adoption)."""
        ids = sorted({str(r) for r in remote_ids})
        known: set[str] = set()
        for i in range(0, len(ids), 500):
            chunk = ids[i:i + 500]
            known.update(r[0] for r in self.conn.execute(
                f"SELECT remote_id FROM remote_tasks WHERE remote_id IN ({', '.join('?' * len(chunk))})", chunk))
        return set(ids) - known

    def remember_remote_id(self, job_id: int, remote_id: str, kind: str = "task_orphaned") -> None:
        """Record a task id no job will keep (e.g. created for a job cancelled meanwhile), so no
        lost create ever adopts it."""
        with self.transaction() as conn:
            self._remember_remote(conn, job_id, remote_id)
            self._event(conn, job_id, kind, None, None, {"remote_id": remote_id})

    def advance(self, job_id: int, src: State, dst: State, *, event: str | None = None,
                detail: dict[str, Any] | None = None, notice: notices.Notice | None = None,
                **fields: Any) -> Job | None:
        """Move ``job_id`` from ``src`` to ``dst`` (compare-and-set), setting ``fields`` too; a
        ``notice`` is recorded in the same transaction (delivered later, at least once).

        Returns the updated job, or None (and changes nothing) if the job is no longer in ``src``.
        """
        check_move(src, dst)
        return self._set(job_id, src, dst, event or "state", detail, fields, notice)

    def update(self, job_id: int, state: State, *, event: str | None = None,
               detail: dict[str, Any] | None = None, **fields: Any) -> Job | None:
        """Record a checkpoint (``fields``) on a job that must still be in ``state``; returns the
        updated job, or None if it is no longer in ``state``."""
        return self._set(job_id, state, None, event, detail, fields, None)

    def _set(self, job_id: int, src: State, dst: State | None, event: str | None,
             detail: dict[str, Any] | None, fields: dict[str, Any],
             notice: notices.Notice | None) -> Job | None:
        now = self.clock()
        values = {k: (json.dumps(v) if k in _JSON_FIELDS else v) for k, v in fields.items()}
        if dst is not None:
            values["state"] = str(dst)
            if dst in TERMINAL:
                values["finished_at"] = now
        values["updated_at"] = now
        assignments = ", ".join(f"{k} = ?" for k in values)
        with self.transaction() as conn:
            cur = conn.execute(f"UPDATE jobs SET {assignments} WHERE id = ? AND state = ? RETURNING *",
                               [*values.values(), job_id, str(src)])
            rows = cur.fetchall()
            if len(rows) != 1:
                return None
            job = Job.from_row(dict(zip([d[0] for d in cur.description], rows[0])))
            if fields.get("remote_id"):
                self._remember_remote(conn, job_id, str(fields["remote_id"]))
            if event or dst is not None:
                self._event(conn, job_id, event or "state", str(src), str(dst or src), detail)
            if notice is not None:
                notices.insert(conn, notice, job, self.clock())
        if dst is not None:
            self._changed(job, str(src))
        if notice is not None and notice.targets:
            self._noticed()
        return job

    def _remember_remote(self, conn: sqlite3.Connection, job_id: int, remote_id: str) -> None:
        conn.execute("INSERT OR IGNORE INTO remote_tasks (remote_id, job_id, recorded_at) VALUES (?, ?, ?)",
                     [remote_id, job_id, self.clock()])

    def _event(self, conn: sqlite3.Connection, job_id: int, kind: str, src: str | None, dst: str | None,
               detail: dict[str, Any] | None) -> None:
        conn.execute(
            "INSERT INTO events (job_id, at, kind, from_state, to_state, detail) VALUES (?, ?, ?, ?, ?, ?)",
            [job_id, self.clock(), kind, src, dst, json.dumps(detail, ensure_ascii=False) if detail else None],
        )

    def note(self, job_id: int, kind: str, detail: dict[str, Any] | None = None) -> None:
        """Append an event that does not change the job (e.g. a retry that will happen later)."""
        with self.transaction() as conn:
            self._event(conn, job_id, kind, None, None, detail)

    def events(self, job_id: int, limit: int = 1000) -> list[dict[str, Any]]:
        """The job's history (its last ``limit`` events), oldest first, ``detail`` decoded."""
        out = []
        for row in self._rows("SELECT * FROM (SELECT * FROM events WHERE job_id = ? ORDER BY id DESC LIMIT ?) "
                                 "ORDER BY id", [job_id, limit]):
            row = dict(row)
            row["detail"] = json.loads(row["detail"]) if row["detail"] else None
            out.append(row)
        return out

    def clear_backoff(self, states: Iterable[State]) -> int:
        """Make every job in ``states`` that waits for a later attempt eligible now (a person said
        "go": `hotfolder resume`). Returns how many."""
        wanted = [str(s) for s in states]
        with self.transaction() as conn:
            cur = conn.execute(f"UPDATE jobs SET next_attempt_at = 0 WHERE state IN ({', '.join('?' * len(wanted))}) "
                               "AND next_attempt_at > 0", wanted)
            n = cur.rowcount
        return n

    # -- telling the daemon that something changed --------------------------------------------
    def _changed(self, job: Job | None, src: str | None) -> None:
        for listener in list(self.listeners):
            try:
                listener(job, src)
            except Exception:   # a listener (metrics) must never undo or break a transition
                pass

    def _noticed(self) -> None:
        for listener in list(self.notice_listeners):
            with contextlib.suppress(Exception):
                listener()

    def record_notice(self, notice: notices.Notice, values: dict[str, str | None] | None = None) -> None:
        """Record an account-wide notice (paused, resumed) together with key/value changes, in
        one transaction."""
        with self.transaction() as conn:
            for key, value in (values or {}).items():
                self._set_value(conn, key, value)
            notices.insert(conn, notice, None, self.clock())
        if notice.targets:
            self._noticed()

    def bump_control(self) -> int:
        """Tell a running daemon (another process) to look again now: a person changed something."""
        with self.transaction() as conn:
            conn.execute("INSERT INTO kv (key, value, updated_at) VALUES ('control_seq', '1', ?) ON CONFLICT(key) "
                         "DO UPDATE SET value = CAST(value AS INTEGER) + 1, updated_at = excluded.updated_at",
                         [self.clock()])
            row = conn.execute("SELECT value FROM kv WHERE key = 'control_seq'").fetchone()
        return int(row[0])

    def control_seq(self) -> int:
        """The counter :meth:`bump_control` moves; one indexed read, cheap to poll."""
        row = self.conn.execute("SELECT value FROM kv WHERE key = 'control_seq'").fetchone()
        return int(row[0]) if row else 0

    # -- the upload cache ---------------------------------------------------------------------
    def cached_upload(self, sha256: str, service: str) -> dict[str, Any] | None:
        """A previous upload of identical bytes for this service, if one is recorded."""
        rows = self._rows("SELECT * FROM uploads WHERE sha256 = ? AND service = ?", [sha256, service])
        return rows[0] if rows else None

    def remember_upload(self, sha256: str, service: str, file_id: str, size: int) -> None:
        """Record that these bytes are now ``file_id`` on the API."""
        now = self.clock()
        with self.transaction() as conn:
            conn.execute(
                "INSERT INTO uploads (sha256, service, file_id, bytes, uploaded_at, checked_at) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(sha256, service) DO UPDATE SET "
                "file_id = excluded.file_id, bytes = excluded.bytes, uploaded_at = excluded.uploaded_at, "
                "checked_at = excluded.checked_at", [sha256, service, file_id, size, now, now])

    def touch_upload(self, sha256: str, service: str) -> None:
        """Note that a cached upload was just confirmed usable."""
        with self.transaction() as conn:
            conn.execute("UPDATE uploads SET checked_at = ? WHERE sha256 = ? AND service = ?",
                         [self.clock(), sha256, service])

    def forget_upload(self, sha256: str, service: str) -> None:
        """Drop a cached upload the API no longer has."""
        with self.transaction() as conn:
            conn.execute("DELETE FROM uploads WHERE sha256 = ? AND service = ?", [sha256, service])

    # -- key/value ----------------------------------------------------------------------------
    def get_value(self, key: str) -> str | None:
        rows = self._rows("SELECT value FROM kv WHERE key = ?", [key])
        return rows[0]["value"] if rows else None

    def set_value(self, key: str, value: str | None) -> None:
        """Set (or, with None, delete) a key."""
        with self.transaction() as conn:
            self._set_value(conn, key, value)

    def _set_value(self, conn: sqlite3.Connection, key: str, value: str | None) -> None:
        if value is None:
            conn.execute("DELETE FROM kv WHERE key = ?", [key])
        else:
            conn.execute("INSERT INTO kv (key, value, updated_at) VALUES (?, ?, ?) ON CONFLICT(key) "
                         "DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
                         [key, value, self.clock()])

    def compare_and_set_value(self, key: str, expected: str | None, value: str) -> bool:
        """Set ``key`` to ``value`` only if it currently holds ``expected``."""
        with self.transaction() as conn:
            row = conn.execute("SELECT value FROM kv WHERE key = ?", [key]).fetchone()
            if (row[0] if row else None) != expected:
                return False
            conn.execute("INSERT INTO kv (key, value, updated_at) VALUES (?, ?, ?) ON CONFLICT(key) "
                         "DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
                         [key, value, self.clock()])
        return True

    def integrity(self) -> str:
        """``ok`` or SQLite's description of what is wrong."""
        return str(list(self.conn.execute("PRAGMA integrity_check"))[0][0])

    def counts(self) -> dict[str, int]:
        """Number of jobs per state (kept by triggers: no scan)."""
        return {r[0]: int(r[1]) for r in self.conn.execute("SELECT state, n FROM job_counts WHERE n > 0")}
