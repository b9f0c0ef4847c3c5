"""The bounded read-side queries: the SQL-built status JSON, recent history, stats."""

from __future__ import annotations

import json
from pathlib import Path

from helpers import FakeClock
from hotfolder import control
from hotfolder.ledger import Ledger, reports
from hotfolder.states import State

FILES = {"video": "/in/a.mp4", "text": "/in/a.txt"}


def _ledger(tmp_path: Path, clock: FakeClock) -> Ledger:
    return Ledger(tmp_path / "l.db", clock=clock)


def _job(ledger: Ledger, name: str, state: State = State.QUEUED, files: dict[str, str] | None = None) -> int:
    return ledger.add_job(name=name, rel_dir=name.rpartition("/")[0], stem=Path(name).stem, state=state,
                          files=files or FILES, inputs={}, params={})


def _drive(ledger: Ledger, job_id: int, to: State, **fields: object) -> None:
    path = [State.QUEUED, State.UPLOADING, State.SUBMITTING, State.GENERATING, State.DOWNLOADING]
    for src, dst in zip(path, path[1:]):
        if ledger.get(job_id).state == to:
            return
        ledger.advance(job_id, src, dst)
    if to in (State.DONE, State.FAILED, State.CANCELLED):
        ledger.advance(job_id, State.DOWNLOADING, to, **fields)


def test_sql_status_json_equals_the_python_record(tmp_path: Path) -> None:
    clock = FakeClock(1_790_000_000.25)
    ledger = _ledger(tmp_path, clock)
    _job(ledger, "w.mp4", State.WAITING, files={"video": "/in/w.mp4"})
    queued = _job(ledger, "team/q.mp4")
    ledger.update(queued, State.QUEUED, next_attempt_at=clock() + 90.7, attempts=2, error="network 下 down")
    audio = _job(ledger, "a.mp4", files={"video": "/in/a.mp4", "audio": "/in/a.wav"})
    clock.advance(61)
    _drive(ledger, audio, State.DONE, remote_id="t1", progress=100,
           outputs={"video": "/out/a.mp4", "cover": "/out/a.jpg", "moves": {}})
    failed = _job(ledger, "f.mp4")
    _drive(ledger, failed, State.FAILED, error="the API could not make the video: 失败", error_code="task_failed")
    fast = [json.loads(text) for batch in control.iter_status_json(ledger) for text in batch]
    slow = list(control.iter_status(ledger))
    assert fast == slow
    assert [r["state"] for r in fast] == ["waiting", "queued", "done", "failed"]
    assert fast[0]["driver"] is None and fast[2]["driver"] == "audio" and fast[3]["next_attempt_at"] is None
    assert fast[2]["outputs"] == {"video": "/out/a.mp4", "cover": "/out/a.jpg"}
    assert fast[1]["next_attempt_at"].endswith("+00:00")
    only = [json.loads(t) for batch in control.iter_status_json(ledger, [State.DONE, State.FAILED], limit=1) for t in batch]
    assert [r["name"] for r in only] == ["a.mp4"]


def test_recent_ended_is_newest_first_across_states_and_bounded(tmp_path: Path) -> None:
    clock = FakeClock(1_790_000_000.0)
    ledger = _ledger(tmp_path, clock)
    names = []
    for i in range(30):
        job_id = _job(ledger, f"j{i:02d}.mp4")
        clock.advance(10)
        _drive(ledger, job_id, [State.DONE, State.FAILED, State.CANCELLED][i % 3])
        names.append(f"j{i:02d}.mp4")
    _job(ledger, "open.mp4")
    recent = reports.recent_ended(ledger, 20)
    assert [r["name"] for r in recent] == list(reversed(names))[:20]
    view = control.overview(ledger, now=clock())
    assert [r["name"] for r in view.unfinished] == ["open.mp4"]
    assert len(view.recent) == 20 and view.hidden_ended == 10
    assert view.totals == {"done": 10, "failed": 10, "cancelled": 10, "queued": 1}
    only_failed = control.overview(ledger, [State.FAILED], limit=3, now=clock())
    assert [r["state"] for r in only_failed.recent] == ["failed"] * 3 and only_failed.unfinished == []


def test_stats_count_the_window_stages_and_folders(tmp_path: Path) -> None:
    clock = FakeClock(1_790_000_000.0)
    ledger = _ledger(tmp_path, clock)
    old = _job(ledger, "old.mp4")
    _drive(ledger, old, State.DONE)
    clock.advance(30 * 86400)   # far outside a 14-day window
    for i, folder in enumerate(["teamA", "teamA", "teamB"]):
        job_id = _job(ledger, f"{folder}/c{i}.mp4")
        ledger.advance(job_id, State.QUEUED, State.UPLOADING, event="upload_started")
        clock.advance(4)
        ledger.advance(job_id, State.UPLOADING, State.SUBMITTING, event="files_ready")
        ledger.advance(job_id, State.SUBMITTING, State.GENERATING, event="task_created", remote_id=f"t{i}")
        clock.advance(20 + i)
        ledger.advance(job_id, State.GENERATING, State.DOWNLOADING, event="task_succeeded", duration_ms=12_000)
        clock.advance(2)
        ledger.advance(job_id, State.DOWNLOADING, State.DONE, event="done")
    bad = _job(ledger, "teamB/bad.mp4")
    _drive(ledger, bad, State.FAILED, error_code="task_failed", error="no")
    data = reports.stats(ledger, clock(), days=14)
    assert data["totals"] == {"done": 3, "failed": 1, "cancelled": 0}
    assert data["failures_by_code"] == {"task_failed": 1}
    assert data["video_seconds"] == 36.0
    assert data["stage_seconds"]["upload"] == {"count": 3, "median_s": 4.0, "p90_s": 4.0}
    assert data["stage_seconds"]["generation"]["median_s"] == 21.0
    assert data["per_folder"]["teamA"]["done"] == 2 and data["per_folder"]["teamB"]["failed"] == 1
    assert sum(sum(d.values()) for d in data["per_day"].values()) == 4 and len(data["per_day"]) == 14
    assert data["all_time"]["done"] == 4
