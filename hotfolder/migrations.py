"""Schema migrations of the ledger, applied in order; ``PRAGMA user_version`` is the index.

Each migration is a function of a ``sqlite_utils.Database`` run inside one transaction by
:meth:`hotfolder.ledger.Ledger.migrate`. Append new ones; never edit a released one. From v2 on a
migration is plain SQL (:func:`_sql`): the schema is then read exactly as SQLite will run it.

v2 makes every periodic or interactive query independent of history: interrupted input moves
become an indexed column (they were a flag inside the ``outputs`` JSON, so finding them parsed
every ended job), job counts per state are kept by triggers, every remote task id ever seen gets
a table of its own (reconciliation read it out of every event), and ended jobs are indexed by when
they ended (recent history, pruning).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:   # imported by the ledger only when a migration runs: it costs every command 0.1 s
    import sqlite_utils


def _v1(db: sqlite_utils.Database) -> None:
    db["jobs"].create(  # type: ignore[union-attr]
        {
            "id": int,
            "name": str,           # inbox-relative video path, '/' separators, original case
            "rel_dir": str,        # inbox-relative folder ('' at the top)
            "stem": str,
            "state": str,
            "files": str,          # JSON: role -> current absolute path (moves update it)
            "inputs": str,         # JSON: role -> {size, mtime_ns, sha256} as taken
            "params": str,         # JSON: the lip-sync request parameters (text included)
            "video_file_id": str,
            "audio_file_id": str,
            "remote_id": str,
            "create_intent_at": float,   # unix time a create was about to be sent
            "progress": int,
            "video_url": str,
            "preview_url": str,
            "outputs": str,        # JSON: role -> final outbox path, recorded before placing
            "attempts": int,
            "next_attempt_at": float,
            "first_trouble_at": float,
            "last_error_kind": str,
            "same_error_count": int,
            "error": str,
            "error_code": str,
            "created_at": float,
            "updated_at": float,
            "finished_at": float,
        },
        pk="id",
        not_null={"name", "rel_dir", "stem", "state", "files", "inputs", "params", "created_at", "updated_at"},
        defaults={"attempts": 0, "progress": 0, "same_error_count": 0, "next_attempt_at": 0.0},
    )
    db["jobs"].create_index(["state"])  # type: ignore[union-attr]
    db["jobs"].create_index(["name"])  # type: ignore[union-attr]
    db["jobs"].create_index(["remote_id"])  # type: ignore[union-attr]
    db["events"].create(  # type: ignore[union-attr]
        {"id": int, "job_id": int, "at": float, "kind": str, "from_state": str, "to_state": str, "detail": str},
        pk="id",
        foreign_keys=[("job_id", "jobs", "id")],
        not_null={"job_id", "at", "kind"},
    )
    db["events"].create_index(["job_id"])  # type: ignore[union-attr]
    db["uploads"].create(  # type: ignore[union-attr]
        {"sha256": str, "service": str, "file_id": str, "bytes": int, "uploaded_at": float, "checked_at": float},
        pk=("sha256", "service"),
        not_null={"file_id", "uploaded_at"},
    )
    db["kv"].create({"key": str, "value": str, "updated_at": float}, pk="key")  # type: ignore[union-attr]


def _sql(script: str) -> Callable[[sqlite_utils.Database], None]:
    """A migration made of SQL statements (run one by one inside the caller's transaction:
    ``executescript`` would commit it)."""
    def run(db: sqlite_utils.Database) -> None:
        for statement in _statements(script):
            db.conn.execute(statement)
    return run


def _statements(script: str) -> list[str]:
    """Split on ``;`` at line ends, keeping trigger bodies (``BEGIN … END;``) whole."""
    out: list[str] = []
    current: list[str] = []
    depth = 0
    for line in script.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("--"):
            continue
        current.append(line)
        upper = stripped.upper()
        if upper.endswith(" BEGIN") or upper == "BEGIN":
            depth += 1
        if stripped.endswith(";"):
            if upper == "END;":
                depth -= 1
            if depth == 0:
                out.append("\n".join(current))
                current = []
    return out


_V2 = """
ALTER TABLE jobs ADD COLUMN moves_pending INTEGER NOT NULL DEFAULT 0;
UPDATE jobs SET moves_pending = 1 WHERE json_extract(outputs, '$.moves_pending') = 1;
UPDATE jobs SET outputs = json_remove(outputs, '$.moves_pending') WHERE instr(outputs, 'moves_pending') > 0;
CREATE INDEX jobs_moves_pending ON jobs (id) WHERE moves_pending = 1;
CREATE INDEX jobs_finished_at ON jobs (finished_at) WHERE finished_at IS NOT NULL;
CREATE INDEX jobs_state_finished ON jobs (state, finished_at);
CREATE INDEX jobs_stem ON jobs (stem);
CREATE TABLE job_counts (state TEXT PRIMARY KEY, n INTEGER NOT NULL) WITHOUT ROWID;
INSERT INTO job_counts (state, n) SELECT state, COUNT(*) FROM jobs GROUP BY state;
CREATE TRIGGER jobs_counted_insert AFTER INSERT ON jobs BEGIN
  INSERT INTO job_counts (state, n) VALUES (NEW.state, 1) ON CONFLICT (state) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER jobs_counted_delete AFTER DELETE ON jobs BEGIN
  UPDATE job_counts SET n = n - 1 WHERE state = OLD.state;
END;
CREATE TRIGGER jobs_counted_update AFTER UPDATE OF state ON jobs WHEN OLD.state <> NEW.state BEGIN
  UPDATE job_counts SET n = n - 1 WHERE state = OLD.state;
  INSERT INTO job_counts (state, n) VALUES (NEW.state, 1) ON CONFLICT (state) DO UPDATE SET n = n + 1;
END;
-- Every task id the API ever gave us: a lost create adopts only a task not in here. Kept when
-- jobs are pruned (a row is tiny), so pruning can never make an old task look adoptable.
CREATE TABLE remote_tasks (remote_id TEXT PRIMARY KEY, job_id INTEGER, recorded_at REAL NOT NULL) WITHOUT ROWID;
INSERT OR IGNORE INTO remote_tasks (remote_id, job_id, recorded_at)
  SELECT remote_id, id, updated_at FROM jobs WHERE remote_id IS NOT NULL;
INSERT OR IGNORE INTO remote_tasks (remote_id, job_id, recorded_at)
  SELECT CAST(json_extract(detail, '$.remote_id') AS TEXT), job_id, at FROM events
  WHERE instr(detail, 'remote_id') > 0 AND json_extract(detail, '$.remote_id') IS NOT NULL;
"""

# v3: notifications recorded in the same transaction as the transition that causes them (one row
# per event and target, delivered at least once by their own worker), the length of the video
# the API made (for stats and the event body), and the content key of a done job (its inputs'
# hashes and effective parameters) so that the same drop again reuses its result.
# The plain columns status listings read, from a row's JSON (``{row}`` is NEW in the triggers).
_SHOWN = ("driver = CASE WHEN json_extract({row}.files, '$.audio') IS NOT NULL THEN 'audio' "
          "WHEN json_extract({row}.files, '$.text') IS NOT NULL THEN 'text' END, "
          "out_video = json_extract({row}.outputs, '$.video'), out_cover = json_extract({row}.outputs, '$.cover'), "
          "reused_from = json_extract({row}.outputs, '$.reused_from')")
_V3 = f"""
ALTER TABLE jobs ADD COLUMN duration_ms INTEGER;
ALTER TABLE jobs ADD COLUMN content_key TEXT;
CREATE INDEX jobs_content_key ON jobs (content_key) WHERE content_key IS NOT NULL;
CREATE TABLE notifications (
  id INTEGER PRIMARY KEY,
  event_id TEXT NOT NULL,
  target TEXT NOT NULL,
  kind TEXT NOT NULL,
  job_id INTEGER,
  body TEXT NOT NULL,
  created_at REAL NOT NULL,
  attempts INTEGER NOT NULL DEFAULT 0,
  next_at REAL NOT NULL,
  last_error TEXT,
  delivered_at REAL,
  gave_up_at REAL,
  UNIQUE (event_id, target)
);
CREATE INDEX notifications_due ON notifications (next_at) WHERE delivered_at IS NULL AND gave_up_at IS NULL;
CREATE INDEX notifications_created ON notifications (created_at);
-- What status listings show of the JSON columns, kept in plain columns by triggers: a listing of
-- a million jobs must not parse a million JSON texts.
ALTER TABLE jobs ADD COLUMN driver TEXT;
ALTER TABLE jobs ADD COLUMN out_video TEXT;
ALTER TABLE jobs ADD COLUMN out_cover TEXT;
ALTER TABLE jobs ADD COLUMN reused_from INTEGER;
UPDATE jobs SET {_SHOWN.format(row='jobs')};
CREATE TRIGGER jobs_shown_insert AFTER INSERT ON jobs BEGIN
  UPDATE jobs SET {_SHOWN.format(row='NEW')} WHERE id = NEW.id;
END;
CREATE TRIGGER jobs_shown_update AFTER UPDATE OF files, outputs ON jobs BEGIN
  UPDATE jobs SET {_SHOWN.format(row='NEW')} WHERE id = NEW.id;
END;
"""

MIGRATIONS: list[Callable[[Any], None]] = [_v1, _sql(_V2), _sql(_V3)]
