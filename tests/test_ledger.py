"""The ledger: CAS transitions, events, upload cache, kv, lock, migrations."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from helpers import all_jobs
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
    assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS) == 3
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
