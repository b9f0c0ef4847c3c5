"""Schema migrations of the ledger, applied in order; ``PRAGMA user_version`` is the index.

Each migration is a function of a ``sqlite_utils.Database`` run inside one transaction by
:meth:`hotfolder.ledger.Ledger.migrate`. Append new ones; never edit a released one.
"""

from __future__ import annotations

from collections.abc import Callable

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


MIGRATIONS: list[Callable[[sqlite_utils.Database], None]] = [_v1]
