"""The bad-input matrix: each input gets a clear outcome, and the daemon keeps going."""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest

from helpers import MEDIA, FakeClock, all_jobs
from hotfolder.outcomes import Outcomes
from hotfolder.chanjing import ChanjingClient
from hotfolder.intake import Intake
from hotfolder.pairing import classify
from hotfolder.pipeline import Pipeline
from test_daemon import Env, sent_text

VIDEO = (MEDIA / "portrait.mp4").read_bytes()
LONG_NAME = "a very long name " * 11 + "end"          # 190 characters, spaces included

# name -> (files to drop, expected state, words the error must contain)
MATRIX: dict[str, tuple[dict[str, bytes | str], str, list[str]]] = {
    "zero-byte video": ({"zero.mp4": b"", "zero.txt": "hi"}, "failed", ["zero.mp4", "empty"]),
    "not a video": ({"fake.mp4": b"hello, I am text pretending", "fake.txt": "hi"}, "failed", ["fake.mp4"]),
    "truncated mp4": ({"cut.mp4": (MEDIA / "truncated.mp4").read_bytes(), "cut.txt": "hi"}, "failed", ["cut.mp4"]),
    "empty text": ({"blank.mp4": VIDEO, "blank.txt": "  \n\t "}, "failed", ["blank.txt", "empty"]),
    "text over the limit": ({"long.mp4": VIDEO, "long.txt": "字" * 4001}, "failed", ["4001", "4000"]),
    "emoji in text": ({"emo.mp4": VIDEO, "emo.txt": "hello 😀 world"}, "failed", ["emo.txt", "emoji"]),
    "invalid json": ({"js.mp4": VIDEO, "js.txt": "hi", "js.json": "{not json"}, "failed", ["js.json"]),
    "unknown override": ({"uk.mp4": VIDEO, "uk.txt": "hi", "uk.json": '{"colour": 1}'}, "failed", ["colour"]),
    "out-of-range override": ({"rg.mp4": VIDEO, "rg.txt": "hi", "rg.json": '{"speed": 9}'}, "failed", ["speed"]),
    "script and audio": ({"two.mp4": VIDEO, "two.txt": "hi", "two.wav": (MEDIA / "speech.wav").read_bytes()},
                         "failed", ["two.txt", "two.wav"]),
    "audio that is not audio": ({"aud.mp4": VIDEO, "aud.wav": b"definitely not RIFF"}, "failed", ["aud.wav"]),
    # Formats the API does not take: recognised, and failed at once naming the ones it takes.
    "flac audio": ({"flc.mp4": VIDEO, "flc.flac": b"fLaC" + b"\x00" * 60}, "failed", ["flc.flac", ".wav", ".mp3", ".m4a"]),
    "ogg audio": ({"ogg.mp4": VIDEO, "ogg.ogg": b"OggS" + b"\x00" * 60}, "failed", ["ogg.ogg", ".wav", ".mp3", ".m4a"]),
    "opus audio": ({"ops.mp4": VIDEO, "ops.opus": b"OggS" + b"\x00" * 60}, "failed", ["ops.opus", ".wav"]),
    "mkv video": ({"mkv.mkv": b"\x1aE\xdf\xa3" + b"\x00" * 60, "mkv.txt": "hi"}, "failed",
                  ["mkv.mkv", ".mp4", ".mov", ".webm"]),
    "gbk text": ({"gbk.mp4": VIDEO, "gbk.txt": "你好，世界".encode("gbk")}, "done", []),
    "utf-16 text": ({"u16.mp4": VIDEO, "u16.txt": "你好，世界".encode("utf-16")}, "done", []),
    "unicode, spaces, emoji name": ({"会议 记录 🎬.mp4": VIDEO, "会议 记录 🎬.txt": "你好"}, "done", []),
    "very long name": ({f"{LONG_NAME}.mp4": VIDEO, f"{LONG_NAME}.txt": "hi"}, "done", []),
    "upper-case extensions": ({"SHOUT.MP4": VIDEO, "SHOUT.TXT": "hi"}, "done", []),
}


def test_bad_input_matrix(tmp_path: Path, sandbox: Any) -> None:
    env = Env(tmp_path, sandbox)
    for files, _state, _words in MATRIX.values():
        for name, data in files.items():
            env.drop(name, data if isinstance(data, bytes) else data)
    assert env.run_once() == 1   # some failed; the daemon went on and finished the rest
    jobs = {j.name: j for j in all_jobs(env.ledger())}
    failed_dir = env.settings.folders.failed
    report = []
    for case, (files, state, words) in MATRIX.items():
        video = next(n for n in files if classify(n) == "video")
        job = jobs[video]
        assert job.state == state, f"{case}: {job.state} ({job.error})"
        if state == "failed":
            stem = Path(video).stem
            error = json.loads((failed_dir / f"{stem}.error.json").read_text(encoding="utf-8"))
            assert error["code"] == "bad_input", case
            for word in words:
                assert word.lower() in error["message"].lower(), f"{case}: {word!r} not in {error['message']!r}"
            for name in files:
                assert (failed_dir / name).exists(), f"{case}: {name} not moved to failed/"
        else:
            assert (env.settings.folders.outbox / f"{Path(video).stem}.mp4").read_bytes() == VIDEO
        report.append(f"{case}: {job.state}: {job.error or 'ok'}")
    print("\n".join(report))
    assert list(env.inbox.iterdir()) == []
    creates = [t["request"] for t in sandbox.tasks()]
    assert len(creates) == sum(1 for _f, s, _w in MATRIX.values() if s == "done")   # failures cost nothing
    assert sent_text(sandbox, jobs["gbk.mp4"].remote_id) == ["你好，世界"]


def _queued_job(env: Env, files: dict[str, bytes | str]) -> tuple[Pipeline, int, ChanjingClient]:
    from hotfolder.daemon import make_client

    for name, data in files.items():
        env.drop(name, data)
    ledger = env.ledger()
    intake = Intake(env.settings, ledger, clock=lambda: 100.0)
    intake.scan()
    intake.clock = lambda: 200.0
    (job_id,) = intake.scan().created
    client = make_client(env.settings, ledger)
    return Pipeline(env.settings, ledger, client), job_id, client


def test_input_deleted_before_upload_fails_clearly(tmp_path: Path, sandbox: Any) -> None:
    env = Env(tmp_path, sandbox)
    pipeline, job_id, client = _queued_job(env, {"gone.mp4": VIDEO, "gone.txt": "hi"})
    (env.inbox / "gone.mp4").unlink()
    with client:
        pipeline.run(job_id)
    job = env.ledger().get(job_id)
    assert job.state == "failed" and "vanished" in job.error
    assert (env.settings.folders.failed / "gone.txt").exists()


def test_input_replaced_after_intake_starts_over_with_the_new_content(tmp_path: Path, sandbox: Any) -> None:
    env = Env(tmp_path, sandbox)
    pipeline, job_id, client = _queued_job(env, {"swap.mp4": VIDEO, "swap.txt": "old words"})
    (env.inbox / "swap.txt").write_text("new words, longer than before")
    with client:
        for _ in range(40):
            pipeline.run(job_id)
            if env.ledger().get(job_id).state != "submitting":
                break
    job = env.ledger().get(job_id)
    assert any(e["kind"] == "inputs_changed" for e in env.ledger().events(job_id))
    assert job.state == "generating"
    assert sent_text(sandbox, job.remote_id) == ["new words, longer than before"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_video_fails_clearly(tmp_path: Path, sandbox: Any) -> None:
    env = Env(tmp_path, sandbox)
    env.drop("locked.mp4", VIDEO).chmod(0)
    env.drop("locked.txt", "hi")
    assert env.run_once() == 1
    assert "permission" in env.jobs()["locked.mp4"].error


def test_low_disk_pauses_intake_and_loses_nothing(tmp_path: Path, sandbox: Any) -> None:
    env = Env(tmp_path, sandbox, disk={"min_free_mb": 10**9})   # more than any disk here has
    env.drop("wait.mp4", VIDEO)
    env.drop("wait.txt", "hi")
    from test_daemon import Running

    with Running(env) as running:
        import time

        time.sleep(1.5)   # several loop turns: intake must stay paused, not fail or move anything
    assert running.result == [0]
    assert sorted(p.name for p in env.inbox.iterdir()) == ["wait.mp4", "wait.txt"]
    assert all_jobs(env.ledger()) == []


def test_ledger_locked_by_another_process_only_delays(tmp_path: Path, sandbox: Any) -> None:
    env = Env(tmp_path, sandbox)
    env.ledger()   # create the schema
    env.drop("lk.mp4", VIDEO)
    env.drop("lk.txt", "hi")
    other = sqlite3.connect(env.settings.ledger_path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")   # another writer (a stuck CLI, a backup tool) holds the lock
    release = threading.Timer(1.5, lambda: other.execute("ROLLBACK"))
    release.start()
    try:
        assert env.run_once() == 0
    finally:
        release.join()
        other.close()
    assert (env.settings.folders.outbox / "lk.mp4").exists()


def test_transient_trouble_past_the_deadline_fails_the_job(tmp_path: Path, sandbox: Any) -> None:
    from hotfolder.errors import RetryLater

    env = Env(tmp_path, sandbox, retry={"deadline_hours": 1})
    pipeline, job_id, client = _queued_job(env, {"late.mp4": VIDEO, "late.txt": "hi"})
    client.close()
    clock = FakeClock(1000.0)
    outcomes = Outcomes(env.settings, env.ledger(), clock=clock)
    outcomes.defer(env.ledger().get(job_id), RetryLater("network down"))
    job = env.ledger().get(job_id)
    assert job.state == "queued" and job.attempts == 1 and job.next_attempt_at > 1000.0
    clock.advance(3601.0)
    outcomes.defer(env.ledger().get(job_id), RetryLater("still down"))
    job = env.ledger().get(job_id)
    assert job.state == "failed" and job.error_code == "gave_up" and "still down" in job.error
    error = json.loads((env.settings.folders.failed / "late.error.json").read_text(encoding="utf-8"))
    assert error["code"] == "gave_up"


def test_the_same_failure_again_and_again_is_poisoned(tmp_path: Path, sandbox: Any) -> None:
    env = Env(tmp_path, sandbox, retry={"poison_after": 3})
    pipeline, job_id, client = _queued_job(env, {"bug.mp4": VIDEO, "bug.txt": "hi"})
    client.close()
    for _ in range(3):
        pipeline.outcomes.defer(env.ledger().get(job_id), ValueError("a bug that never goes away"))
    job = env.ledger().get(job_id)
    assert job.state == "failed" and job.error_code == "poisoned"
