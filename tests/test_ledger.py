"""The ledger: CAS transitions, events, upload cache, kv, lock, migrations."""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest

from helpers import all_jobs, write_config
from hotfolder import config, finish
from hotfolder.errors import LedgerError, LedgerLockedError
from hotfolder.ledger import Ledger, filesystem_type
from hotfolder.locks import DaemonLock
from hotfolder.migrations import MIGRATIONS
from hotfolder.states import State, can_move


def new_job(ledger: Ledger, name: str = "a/clip.mp4", state: State = State.QUEUED) -> int:
    return ledger.add_job(name=name, rel_dir="a", stem="clip", state=state, files={"video": "/x/clip.mp4"},
                          inputs={"video": {"size": 1}}, params={"text": "你好"})


def test_schema_version_and_wal(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "l.db")
    conn = sqlite3.connect(tmp_path / "l.db")
    assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS) >= 3
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert ledger.integrity() == "ok"
    Ledger(tmp_path / "l.db")  # reopening does not re-run migrations


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    Ledger(tmp_path / "l.db")
    conn = sqlite3.connect(tmp_path / "l.db")
    conn.execute("PRAGMA user_version=99")
    conn.close()
    with pytest.raises(LedgerError, match="upgrade hotfolder"):
        Ledger(tmp_path / "l.db")


def test_compare_and_set_transitions_record_events(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "l.db")
    job_id = new_job(ledger)
    assert ledger.advance(job_id, State.QUEUED, State.UPLOADING)
    assert not ledger.advance(job_id, State.QUEUED, State.UPLOADING)  # lost the race: no change
    assert ledger.update(job_id, State.UPLOADING, video_file_id="f1", event="uploaded", detail={"role": "video"})
    assert not ledger.update(job_id, State.QUEUED, video_file_id="f2")
    job = ledger.get(job_id)
    assert job.state == State.UPLOADING and job.video_file_id == "f1" and job.params["text"] == "你好"
    kinds = [e["kind"] for e in ledger.events(job_id)]
    assert kinds == ["created", "state", "uploaded"]
    with pytest.raises(ValueError):
        ledger.advance(job_id, State.UPLOADING, State.DONE)


def test_only_one_of_many_threads_claims_a_job(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "l.db")
    job_id = new_job(ledger)
    wins: list[bool] = []
    barrier = threading.Barrier(8)

    def claim() -> None:
        barrier.wait()
        wins.append(ledger.advance(job_id, State.QUEUED, State.UPLOADING))
        ledger.close()

    threads = [threading.Thread(target=claim) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(1 for w in wins if w is not None) == 1


def test_open_job_and_known_remote_ids(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "l.db")
    job_id = new_job(ledger)
    assert ledger.open_job_for("a/clip.mp4").id == job_id
    ended = ledger.advance(job_id, State.QUEUED, State.FAILED, moves_pending=1)
    assert ended is not None and ended.moves_pending and ended.state == State.FAILED   # RETURNING
    assert ledger.open_job_for("a/clip.mp4").id == job_id   # inputs not moved yet: still open
    assert [j.id for j in ledger.pending_moves()] == [job_id]
    ledger.update(job_id, State.FAILED, moves_pending=0)
    assert ledger.open_job_for("a/clip.mp4") is None and ledger.pending_moves() == []
    other = new_job(ledger, "b.mp4", State.SUBMITTING)
    ledger.advance(other, State.SUBMITTING, State.GENERATING, event="task_created",
                   detail={"remote_id": "r1"}, remote_id="r1")
    ledger.advance(other, State.GENERATING, State.QUEUED, remote_id=None)
    assert ledger.unknown_remote_ids(["r1", "r2"]) == {"r2"}   # r1 stays known after the job lets go of it


def test_upload_cache_and_kv(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "l.db")
    assert ledger.cached_upload("abc", "lip_sync_video") is None
    ledger.remember_upload("abc", "lip_sync_video", "f1", 10)
    assert ledger.cached_upload("abc", "lip_sync_video")["file_id"] == "f1"
    assert ledger.cached_upload("abc", "lip_sync_audio") is None
    ledger.forget_upload("abc", "lip_sync_video")
    assert ledger.cached_upload("abc", "lip_sync_video") is None
    ledger.set_value("k", "v")
    assert ledger.get_value("k") == "v"
    assert not ledger.compare_and_set_value("k", "x", "w")
    assert ledger.compare_and_set_value("k", "v", "w") and ledger.get_value("k") == "w"


def test_second_daemon_is_refused(tmp_path: Path) -> None:
    with DaemonLock(tmp_path / "l.db"):
        with pytest.raises(LedgerLockedError, match="already using the ledger"):
            DaemonLock(tmp_path / "l.db").acquire()
    DaemonLock(tmp_path / "l.db").acquire()


def test_network_filesystem_detection(tmp_path: Path) -> None:
    mounts = tmp_path / "mounts"
    mounts.write_text("/dev/vda / ext4 rw 0 0\nserver:/x /mnt/nas nfs4 rw 0 0\n")
    assert filesystem_type(Path("/mnt/nas/db"), str(mounts)) == "nfs4"
    assert filesystem_type(Path("/var/lib"), str(mounts)) == "ext4"


def test_reader_while_writer_holds_a_transaction(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "l.db")
    new_job(ledger)
    writer = sqlite3.connect(tmp_path / "l.db", isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")
    writer.execute("UPDATE jobs SET progress = 5")
    try:
        assert len(all_jobs(Ledger(tmp_path / "l.db"))) == 1   # WAL: readers are not blocked
    finally:
        writer.execute("ROLLBACK")


def test_state_rules() -> None:
    assert can_move("queued", "cancelled") and can_move("generating", "failed")
    assert not can_move("done", "failed") and not can_move("waiting", "generating")
    assert can_move("failed", "queued")


# -- migrating a ledger written by the first release ----------------------------------------------
def build_v1(path: Path, rows: list[dict[str, Any]], events: list[dict[str, Any]]) -> None:
    """A ledger exactly as the v1 code left it: only the first migration, user_version 1, rows
    inserted as that code wrote them (the move flag inside ``outputs``, task ids in events)."""
    import sqlite_utils

    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite_utils.Database(path)
    MIGRATIONS[0](db)
    db.conn.execute("PRAGMA user_version=1")
    for row in rows:
        row = {k: (json.dumps(v) if k in ("files", "inputs", "params", "outputs") else v) for k, v in row.items()}
        db.conn.execute(f"INSERT INTO jobs ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})", list(row.values()))
    for event in events:
        event = {**event, "detail": json.dumps(event["detail"]) if event.get("detail") is not None else None}
        db.conn.execute(f"INSERT INTO events ({', '.join(event)}) VALUES ({', '.join('?' * len(event))})",
                        list(event.values()))
    db.conn.commit()
    db.conn.close()


def test_a_v1_ledger_is_migrated_and_its_interrupted_moves_completed(tmp_path: Path) -> None:
    settings = config.load(write_config(tmp_path, "http://127.0.0.1:9"), env={})
    inbox = settings.folders.inbox
    archive, failed = settings.folders.archive, settings.folders.failed
    for name in ("talk.mp4", "talk.txt", "bad.mp4", "bad.wav"):
        (inbox / name).write_bytes(name.encode())
    t = 1_750_000_000.0
    common = {"inputs": {"video": {"size": 8, "mtime_ns": 1, "sha256": "ab" * 32}}, "params": {"text": "你好"},
              "rel_dir": "", "created_at": t, "updated_at": t}
    rows = [
        # 1: done, crashed between recording the end and moving its inputs
        {**common, "id": 1, "name": "talk.mp4", "stem": "talk", "state": "done", "remote_id": "task-aaa",
         "files": {"video": str(inbox / "talk.mp4"), "text": str(inbox / "talk.txt")},
         "outputs": {"video": "/out/talk.mp4", "cover": "/out/talk.jpg", "moves_pending": True,
                     "moves": {"video": str(archive / "talk.mp4"), "text": str(archive / "talk.txt")}},
         "progress": 100, "finished_at": t + 100},
        # 2: done, its inputs moved
        {**common, "id": 2, "name": "old.mp4", "stem": "old", "state": "done", "remote_id": "task-bbb",
         "files": {"video": str(archive / "old.mp4")},
         "outputs": {"video": "/out/old.mp4", "moves": {"video": str(archive / "old.mp4")}, "moves_pending": False},
         "finished_at": t + 50},
        # 3: its task was let go (billing requeue), then it failed: the id is only in an event
        {**common, "id": 3, "name": "lost.mp4", "stem": "lost", "state": "failed", "remote_id": None,
         "files": {"video": str(failed / "lost.mp4")}, "outputs": {"moves": {}, "moves_pending": False},
         "error": "gave up", "error_code": "gave_up", "finished_at": t + 60},
        # 4: failed at intake, crashed before its inputs went to failed/ (its error file is due too)
        {**common, "id": 4, "name": "bad.mp4", "stem": "bad", "state": "failed",
         "files": {"video": str(inbox / "bad.mp4"), "audio": str(inbox / "bad.wav")},
         "outputs": {"moves": {"video": str(failed / "bad.mp4"), "audio": str(failed / "bad.wav")},
                     "moves_pending": True},
         "error": "bad.mp4 is not a video", "error_code": "bad_input", "finished_at": t + 70},
        # 5: in flight
        {**common, "id": 5, "name": "wip.mp4", "stem": "wip", "state": "generating", "remote_id": "task-ddd",
         "files": {"video": str(inbox / "wip.mp4")}, "outputs": {}, "progress": 40},
        # 6: waiting for its sidecar
        {**common, "id": 6, "name": "lonely.mp4", "stem": "lonely", "state": "waiting",
         "files": {"video": str(inbox / "lonely.mp4")}, "outputs": {}, "inputs": {}, "params": {}},
        # 7: cancelled while its create was in flight: the task it got is orphaned
        {**common, "id": 7, "name": "gone.mp4", "stem": "gone", "state": "cancelled", "remote_id": None,
         "files": {"video": str(failed / "gone.mp4")}, "outputs": {"moves": {}}, "finished_at": t + 80},
    ]
    events = [
        {"job_id": 1, "at": t, "kind": "created", "to_state": "queued"},
        {"job_id": 1, "at": t + 1, "kind": "uploaded", "detail": {"role": "video", "file_id": "f-1"}},
        {"job_id": 1, "at": t + 2, "kind": "task_created", "from_state": "submitting", "to_state": "generating",
         "detail": {"remote_id": "task-aaa"}},
        {"job_id": 3, "at": t + 3, "kind": "task_created", "detail": {"remote_id": "task-ccc"}},
        {"job_id": 3, "at": t + 4, "kind": "billing_paused", "detail": {"msg": "余额不足"}},
        {"job_id": 3, "at": t + 5, "kind": "reconciled", "detail": {"remote_id": None}},
        {"job_id": 5, "at": t + 6, "kind": "task_adopted", "detail": {"remote_id": "task-ddd"}},
        {"job_id": 7, "at": t + 7, "kind": "task_orphaned", "detail": {"remote_id": "task-eee"}},
    ]
    build_v1(settings.ledger_path, rows, events)

    ledger = Ledger(settings.ledger_path)
    conn = ledger.conn
    assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    assert ledger.integrity() == "ok"
    # The move flag left the JSON for its indexed column.
    flags = dict(conn.execute("SELECT id, moves_pending FROM jobs").fetchall())
    assert flags == {1: 1, 2: 0, 3: 0, 4: 1, 5: 0, 6: 0, 7: 0}
    for job_id, outputs in conn.execute("SELECT id, outputs FROM jobs"):
        assert "moves_pending" not in json.loads(outputs), job_id
    assert ledger.get(1).outputs["moves"] == rows[0]["outputs"]["moves"] and ledger.get(1).outputs["video"]
    # Counts per state equal a GROUP BY over the jobs.
    group_by = dict(conn.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state").fetchall())
    assert ledger.counts() == group_by == {"done": 2, "failed": 2, "generating": 1, "waiting": 1, "cancelled": 1}
    # Every task id ever seen, from the jobs and from the events' details alike.
    known = dict(conn.execute("SELECT remote_id, job_id FROM remote_tasks").fetchall())
    assert known == {"task-aaa": 1, "task-bbb": 2, "task-ccc": 3, "task-ddd": 5, "task-eee": 7}
    assert ledger.unknown_remote_ids(["task-aaa", "task-ccc", "task-eee", "task-new"]) == {"task-new"}
    indexes = {r[1] for r in conn.execute("PRAGMA index_list(jobs)")}
    assert {"jobs_moves_pending", "jobs_finished_at", "jobs_stem"} <= indexes
    # The interrupted jobs are found (and still hold their videos' names), and finished as the
    # daemon does at start.
    assert [j.id for j in ledger.pending_moves()] == [1, 4]
    assert ledger.open_job_for("talk.mp4").id == 1 and ledger.open_job_for("old.mp4") is None
    assert finish.complete_pending(ledger, settings) == 2
    assert ledger.pending_moves() == [] and ledger.open_job_for("talk.mp4") is None
    assert sorted(p.name for p in inbox.iterdir()) == []
    assert (archive / "talk.mp4").read_bytes() == b"talk.mp4" and (archive / "talk.txt").exists()
    assert ledger.get(1).files == {"video": str(archive / "talk.mp4"), "text": str(archive / "talk.txt")}
    error = json.loads((failed / "bad.error.json").read_text(encoding="utf-8"))
    assert error["code"] == "bad_input" and error["job_id"] == 4 and (failed / "bad.wav").exists()
    assert [e["kind"] for e in ledger.events(1)][-1] == "inputs_moved"
    # The new code goes on from there: transitions keep the counts, new task ids are recorded.
    assert ledger.advance(5, State.GENERATING, State.DOWNLOADING)
    new = ledger.add_job(name="next.mp4", rel_dir="", stem="next", state=State.SUBMITTING, files={}, inputs={},
                         params={})
    ledger.advance(new, State.SUBMITTING, State.GENERATING, remote_id="task-fff")
    assert ledger.counts() == dict(conn.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state").fetchall())
    assert ledger.unknown_remote_ids(["task-fff"]) == set()
    assert ledger.find("talk").id == 1 and ledger.find("bad.mp4").id == 4
