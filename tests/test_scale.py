"""Costs that do not grow with history: query plans, a 20,000-job ledger, `status`, pruning.

The ledgers here are built the way bench/ledger_scale.py builds its million: a template of real
jobs is driven through its states with the ledger's verbs (events, counts and remote ids included),
then its rows are copied with SQL inside one transaction. Cost is measured deterministically, never
with a stopwatch: the query plans SQLite chose for the statements the code really ran (captured with
a trace callback, so nothing here is a copy of the SQL), and the number of virtual-machine steps
SQLite took (a progress handler), compared between a small and a ten times larger history.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from helpers import FakeClock, write_config
from hotfolder import config, control
from hotfolder.cli import main
from hotfolder.daemon import STAGE_OF, Daemon
from hotfolder.ledger import Ledger, reports
from hotfolder.states import TERMINAL, State

BIG, SMALL = 20_000, 2_000
TEMPLATE_JOBS = 40
BASE = 1_760_000_000.0          # when the copied history starts (unix time)
STEP = 10.0                     # seconds between two copied jobs' ends
TERMINAL_NAMES = sorted(str(s) for s in TERMINAL)


# -- building a ledger with a long history --------------------------------------------------------
def _template_job(ledger: Ledger, clock: FakeClock, i: int) -> None:
    """One real job, driven with the ledger's verbs from queued to its end."""
    stem = f"clip{i:03d}"
    folder = f"team{i % 3}"
    driver = ("audio", f"{stem}.wav") if i % 2 else ("text", f"{stem}.txt")
    job_id = ledger.add_job(
        name=f"{folder}/{stem}.mp4", rel_dir=folder, stem=stem, state=State.QUEUED,
        files={"video": f"/srv/inbox/{folder}/{stem}.mp4", driver[0]: f"/srv/inbox/{folder}/{driver[1]}"},
        inputs={"video": {"size": 12_345_678, "mtime_ns": 1, "sha256": "ab" * 32},
                driver[0]: {"size": 321, "mtime_ns": 1, "sha256": "cd" * 32}},
        params={"text": "大家好，欢迎收看今天的节目。" * 4, "audio_man_id": "C-voice", "screen_width": 1080,
                "screen_height": 1920})
    if i % 10 == 5:   # cancelled before anything was uploaded
        ledger.advance(job_id, State.QUEUED, State.CANCELLED, event="cancelled", error="cancelled by the user",
                       error_code="cancelled", outputs={"moves": {}})
        return
    path = [State.QUEUED, State.UPLOADING, State.SUBMITTING, State.GENERATING, State.DOWNLOADING]
    for src, dst in zip(path, path[1:]):
        clock.advance(1)
        fields: dict[str, Any] = {}
        if dst == State.GENERATING:
            fields = {"remote_id": f"task-{i:04d}", "video_file_id": "f" * 32, "event": "task_created",
                      "detail": {"remote_id": f"task-{i:04d}"}}
        ledger.advance(job_id, src, dst, **fields)
    final = State.FAILED if i % 10 == 0 else State.DONE
    ledger.advance(job_id, State.DOWNLOADING, final, event=str(final), moves_pending=0,
                   outputs={"video": f"/srv/outbox/{folder}/{stem}.mp4", "cover": f"/srv/outbox/{folder}/{stem}.jpg",
                            "moves": {"video": f"/srv/archive/{folder}/{stem}.mp4"}},
                   error=None if final == State.DONE else "the API could not make the video: 驱动失败",
                   error_code=None if final == State.DONE else "task_failed")


def _copy_history(ledger: Ledger, n: int) -> None:
    """Copies of the template's rows (fresh ids, names and task ids) until ``n`` jobs exist, in one
    transaction; then the copies end one after another, ``STEP`` seconds apart."""
    conn = ledger.conn
    job_cols = [r[1] for r in conn.execute("PRAGMA table_info(jobs)") if r[1] != "id"]
    renamed = {
        "name": "rel_dir || '/' || stem || '_' || (id + :off) || '.mp4'",
        "stem": "stem || '_' || (id + :off)",
        "remote_id": "CASE WHEN remote_id IS NULL THEN NULL ELSE remote_id || '-' || (id + :off) END",
    }
    ev_cols = [r[1] for r in conn.execute("PRAGMA table_info(events)") if r[1] not in ("id", "job_id")]
    with ledger.transaction():
        while (count := conn.execute("SELECT MAX(id) FROM jobs").fetchone()[0]) < n:
            take = min(count, n - count)
            conn.execute(f"INSERT INTO jobs (id, {', '.join(job_cols)}) SELECT id + :off, "
                         f"{', '.join(renamed.get(c, c) for c in job_cols)} FROM jobs WHERE id <= :take",
                         {"off": count, "take": take})
            conn.execute(f"INSERT INTO events (job_id, {', '.join(ev_cols)}) SELECT job_id + ?, "
                         f"{', '.join(ev_cols)} FROM events WHERE job_id <= ?", [count, take])
            conn.execute("INSERT OR IGNORE INTO remote_tasks (remote_id, job_id, recorded_at) "
                         "SELECT remote_id, id, updated_at FROM jobs WHERE id > ? AND remote_id IS NOT NULL", [count])
        conn.execute("UPDATE jobs SET finished_at = ? + id * ?, updated_at = ? + id * ?, "
                     "created_at = ? + id * ? - 300", [BASE, STEP] * 3)


@dataclass
class History:
    path: Path
    n: int                 # jobs in the copied history
    now: float             # the clock after the live jobs were recorded
    live: dict[str, int]   # what the jobs recorded after the history are (name -> id)
    sample_stem: str = ""  # a job in the middle of the history, to look up
    sample_name: str = ""
    sample_remote_ids: tuple[str, ...] = ()


def build_history(path: Path, n: int) -> History:
    """A ledger of ``n`` ended jobs, then a handful of live ones recorded through the verbs."""
    clock = FakeClock(BASE - 86400)
    ledger = Ledger(path, clock=clock)
    ledger.conn.execute("PRAGMA synchronous=OFF")   # a test's build, not a daemon's durability
    for i in range(min(n, TEMPLATE_JOBS)):
        _template_job(ledger, clock, i)
    _copy_history(ledger, n)
    clock.now = BASE + (n + 100) * STEP
    live: dict[str, int] = {}

    def add(name: str, state: State = State.QUEUED) -> int:
        clock.advance(5)
        live[name] = ledger.add_job(name=name, rel_dir="live", stem=Path(name).stem, state=state,
                                    files={"video": f"/srv/inbox/{name}", "text": f"/srv/inbox/{name}.txt"},
                                    inputs={}, params={"text": "hi"})
        return live[name]

    add("live/waiting.mp4", State.WAITING)
    add("live/queued1.mp4")
    add("live/queued2.mp4")
    ledger.advance(add("live/uploading.mp4"), State.QUEUED, State.UPLOADING)
    gen = add("live/generating.mp4")
    for src, dst in ((State.QUEUED, State.UPLOADING), (State.UPLOADING, State.SUBMITTING),
                     (State.SUBMITTING, State.GENERATING)):
        ledger.advance(gen, src, dst, **({"remote_id": "live-task"} if dst == State.GENERATING else {}))
    for name, final in (("live/done.mp4", State.DONE), ("live/failed.mp4", State.FAILED),
                        ("live/cancelled.mp4", State.CANCELLED)):
        job_id = add(name)
        if final == State.DONE:
            for src, dst in zip([State.QUEUED, State.UPLOADING, State.SUBMITTING, State.GENERATING],
                                [State.UPLOADING, State.SUBMITTING, State.GENERATING, State.DOWNLOADING]):
                ledger.advance(job_id, src, dst)
            ledger.advance(job_id, State.DOWNLOADING, State.DONE)
        else:
            ledger.advance(job_id, State.QUEUED, final, error="x", error_code="x")
    # Ended, but its inputs are not moved yet (a crash or a full disk held them up).
    ledger.advance(add("live/held.mp4"), State.QUEUED, State.FAILED, moves_pending=1, error="x", error_code="x",
                   outputs={"moves": {}})
    stem, name = ledger.conn.execute("SELECT stem, name FROM jobs WHERE id = ?", [n // 2 + 1]).fetchone()
    remote_ids = tuple(r[0] for r in ledger.conn.execute(
        "SELECT remote_id FROM jobs WHERE remote_id IS NOT NULL AND id > ? ORDER BY id LIMIT 30", [n // 2]))
    ledger.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    ledger.close()
    return History(path, n, clock.now, live, stem, name, remote_ids)


def copy_ledger(src: Path, dst: Path) -> Path:
    """A consistent copy of a ledger (SQLite's backup API: WAL included)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(src) as a, sqlite3.connect(dst) as b:
        a.backup(b)
    a.close()
    b.close()
    return dst


@pytest.fixture(scope="module")
def histories(tmp_path_factory: pytest.TempPathFactory) -> dict[str, History]:
    root = tmp_path_factory.mktemp("histories")
    return {"small": build_history(root / "small.db", SMALL), "big": build_history(root / "big.db", BIG)}


@pytest.fixture
def big(histories: dict[str, History]) -> History:
    return histories["big"]


# -- measuring ----------------------------------------------------------------------------------
def traced(ledger: Ledger, fn: Callable[[], Any]) -> list[str]:
    """The SQL statements ``fn`` ran on this thread's connection (with their values inlined)."""
    seen: list[str] = []
    ledger.conn.set_trace_callback(seen.append)
    try:
        result = fn()
        if isinstance(result, Iterator):
            list(result)
    finally:
        ledger.conn.set_trace_callback(None)
    return [s for s in seen if s.split(None, 1)[:1] and s.split(None, 1)[0].upper() in ("SELECT", "WITH", "UPDATE",
                                                                                         "DELETE", "INSERT")]


def plan(ledger: Ledger, sql: str) -> list[str]:
    return [row[3] for row in ledger.conn.execute("EXPLAIN QUERY PLAN " + sql)]


# Partial indexes hold only the rows that need attention, so walking one costs nothing extra.
PARTIAL = ("jobs_moves_pending", "notifications_due")


def history_scans(sql: str, details: list[str]) -> list[str]:
    """The steps of a plan whose cost grows with the history: a scan of a table that grows with it
    (jobs, events, known task ids, notifications), through the table or through a whole index
    without a LIMIT to stop it."""
    bad = []
    for detail in details:
        m = re.match(r"SCAN (jobs|events|remote_tasks|notifications)\b(.*)", detail)
        if not m:
            continue
        rest = m.group(2)
        if "INDEX" in rest and (any(p in rest for p in PARTIAL) or " LIMIT " in sql.upper()):
            continue
        bad.append(detail)
    return bad


def vm_steps(ledger: Ledger, fn: Callable[[], Any], every: int = 1) -> int:
    """How many SQLite virtual-machine steps ``fn`` took on this thread's connection
    (deterministic: the same data and the same statements always take the same number)."""
    ticks = [0]

    def tick() -> int:
        ticks[0] += 1
        return 0

    ledger.conn.set_progress_handler(tick, every)
    try:
        result = fn()
        if isinstance(result, Iterator):
            list(result)
    finally:
        ledger.conn.set_progress_handler(None, every)
    return ticks[0] * every


def interactive_calls(h: History) -> dict[str, Callable[[Ledger], Any]]:
    """Every periodic (daemon) and interactive (CLI) read whose cost must not follow the history."""
    return {
        "pending_moves": lambda lg: lg.pending_moves(),
        "open_job_for": lambda lg: lg.open_job_for("live/queued1.mp4"),
        "open_job_for_unknown": lambda lg: lg.open_job_for("nobody/new.mp4"),
        "recent_ended": lambda lg: reports.recent_ended(lg, 20),
        "recent_failed": lambda lg: reports.recent_ended(lg, 20, [State.FAILED]),
        "counts": lambda lg: lg.counts(),
        "count_generating": lambda lg: lg.count(State.GENERATING),
        "unknown_remote_ids": lambda lg: lg.unknown_remote_ids([*h.sample_remote_ids, "never-seen"]),
        "find_by_stem": lambda lg: lg.find(h.sample_stem),
        "find_by_file_name": lambda lg: lg.find(h.sample_name.rsplit("/", 1)[-1]),
        "find_by_id": lambda lg: lg.find(str(h.n // 3)),
        "find_by_name": lambda lg: lg.find("live/generating.mp4"),
        "job_for_remote": lambda lg: lg.job_for_remote("live-task"),
        "dispatch_jobs": lambda lg: lg.jobs(STAGE_OF),
        "poller_jobs": lambda lg: lg.jobs([State.GENERATING]),
        "waiting_jobs": lambda lg: lg.jobs([State.WAITING]),
        "events_of_a_job": lambda lg: lg.events(h.live["live/generating.mp4"]),
        "overview": lambda lg: control.overview(lg, now=h.now),
        "overview_failed": lambda lg: control.overview(lg, [State.FAILED], limit=5, now=h.now),
        "unfinished": lambda lg: reports.unfinished(lg),
        "prune_nothing": lambda lg: reports.prune(lg, BASE - 86400 * 365),
        "control_seq": lambda lg: lg.control_seq(),
    }


CALLS = sorted(interactive_calls(History(Path(), 0, 0.0, {})))


# -- plans and costs ------------------------------------------------------------------------------
@pytest.mark.parametrize("what", CALLS)
def test_periodic_and_interactive_queries_use_indexes(big: History, what: str) -> None:
    ledger = Ledger(big.path)
    call = interactive_calls(big)[what]
    statements = traced(ledger, lambda: call(ledger))
    assert statements, f"{what} ran no SQL?"
    for sql in statements:
        details = plan(ledger, sql)
        assert not history_scans(sql, details), f"{what}: {sql[:200]} → {details}"
        if "ORDER BY finished_at DESC" in sql:
            # The newest N ended jobs: a walk down an index, never a sort of every ended job.
            assert not any("TEMP B-TREE" in d for d in details), f"{what}: {sql[:200]} → {details}"


@pytest.mark.parametrize("what", CALLS)
def test_cost_does_not_grow_with_the_history(histories: dict[str, History], what: str) -> None:
    """Ten times the history, (almost) the same number of SQLite steps: a B-tree one level deeper
    at most, never a pass over every job."""
    cost = {}
    for size, h in histories.items():
        ledger = Ledger(copy_ledger(h.path, h.path.with_name(f"cost-{what}-{size}.db")))
        call = interactive_calls(h)[what]
        call(ledger)   # warm: the schema is read once per connection
        cost[size] = vm_steps(ledger, lambda: call(ledger))
    assert cost["big"] <= cost["small"] * 1.2 + 50, f"{what}: {cost}"
    # A pass over the big history alone would take more steps than there are jobs.
    assert cost["big"] < BIG, f"{what}: {cost}"


def test_status_json_reads_are_a_plain_stream(big: History) -> None:
    """`status --json` (all jobs) is the one read that visits every job: one pass in id order,
    without a sort (so it streams from the first row), filtered through the state index."""
    ledger = Ledger(big.path)
    statements = traced(ledger, lambda: reports.iter_status_json(ledger, None, None))
    assert len(statements) == 1
    assert not any("TEMP B-TREE" in d for d in plan(ledger, statements[0]))
    statements = traced(ledger, lambda: reports.iter_status_json(ledger, [State.QUEUED], 3))
    assert all(not history_scans(s, plan(ledger, s)) for s in statements)


def test_a_daemon_turn_on_a_long_history_scans_nothing(tmp_path: Path, big: History) -> None:
    """Every statement one turn of the daemon's main loop runs (scan, dispatch, housekeeping) on a
    20,000-job ledger, captured as it ran, uses an index."""
    path = write_config(tmp_path, "http://127.0.0.1:9", ledger={"path": "state/ledger.db", "keep_days": 36500})
    settings = config.load(path, env={})
    copy_ledger(big.path, settings.ledger_path)
    clock = FakeClock(big.now)
    daemon = Daemon(settings, clock=clock)
    daemon._start()
    try:
        # Jobs in flight must wait (not dispatched to workers that would call the unreachable API).
        with daemon.ledger.transaction() as conn:
            conn.execute("UPDATE jobs SET next_attempt_at = ? WHERE state IN ('queued', 'uploading', 'submitting', "
                         "'generating', 'downloading')", [clock() + 3600])
        statements: list[str] = []
        for _ in range(3):
            clock.advance(61)        # past the first prune and the next rescan
            daemon.wake()            # the turn's wait returns at once
            statements += traced(daemon.ledger, daemon._turn)
    finally:
        daemon._shutdown()
    assert any("moves_pending" in s for s in statements), "the turn did not look for held-up moves"
    assert any("finished_at <" in s for s in statements), "the turn did not prune"
    assert any("state IN" in s for s in statements), "the turn did not dispatch"
    for sql in statements:
        details = plan(daemon.ledger, sql)
        assert not history_scans(sql, details), f"{sql[:200]} → {details}"


# -- what a person sees on a long history -----------------------------------------------------------
def _oracle(ledger: Ledger) -> dict[str, Any]:
    """The plain, unbounded answers (full scans on purpose), to check the bounded ones against."""
    conn = ledger.conn
    marks = ", ".join("?" * len(TERMINAL_NAMES))
    return {
        "counts": dict(conn.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state").fetchall()),
        "recent": [r[0] for r in conn.execute(f"SELECT id FROM jobs WHERE state IN ({marks}) "
                                              "ORDER BY finished_at DESC, id DESC LIMIT 20", TERMINAL_NAMES)],
        "recent_failed": [r[0] for r in conn.execute("SELECT id FROM jobs WHERE state = 'failed' "
                                                     "ORDER BY finished_at DESC LIMIT 5")],
        "unfinished": [r[0] for r in conn.execute(f"SELECT id FROM jobs WHERE state NOT IN ({marks}) ORDER BY id",
                                                  TERMINAL_NAMES)],
        "ids": [r[0] for r in conn.execute("SELECT id FROM jobs ORDER BY id")],
        "failed": [r[0] for r in conn.execute("SELECT id FROM jobs WHERE state = 'failed' ORDER BY id")],
    }


def test_overview_of_a_long_history(big: History) -> None:
    ledger = Ledger(big.path)
    truth = _oracle(ledger)
    assert sum(truth["counts"].values()) == big.n + len(big.live)
    view = control.overview(ledger, now=big.now)
    assert [r["id"] for r in view.recent] == truth["recent"] and len(view.recent) == 20
    # The jobs recorded last ended last: they lead the recent list.
    assert {r["name"] for r in view.recent[:4]} == {"live/done.mp4", "live/failed.mp4", "live/cancelled.mp4",
                                                    "live/held.mp4"}
    assert [r["id"] for r in view.unfinished] == truth["unfinished"]
    assert {r["state"] for r in view.unfinished} == {"waiting", "queued", "uploading", "generating"}
    assert view.totals == truth["counts"]
    ended = sum(n for s, n in truth["counts"].items() if s in TERMINAL_NAMES)
    assert view.hidden_ended == ended - 20
    failed = control.overview(ledger, [State.FAILED], limit=5, now=big.now)
    assert [r["id"] for r in failed.recent] == truth["recent_failed"] and failed.unfinished == []
    assert failed.hidden_ended == truth["counts"]["failed"] - 5
    queued = control.overview(ledger, [State.QUEUED], now=big.now)
    assert [r["name"] for r in queued.unfinished] == ["live/queued1.mp4", "live/queued2.mp4"]


def test_overview_of_unfinished_states_only_lists_no_ended_jobs(big: History) -> None:
    """`status --state queued` shows queued jobs and no ended ones (an empty list of ended states
    is not "every ended state")."""
    ledger = Ledger(big.path)
    queued = control.overview(ledger, [State.QUEUED], now=big.now)
    assert queued.recent == [] and queued.hidden_ended == 0
    assert reports.recent_ended(ledger, 20, []) == []


def _status_json(config_path: Path, *args: str) -> tuple[list[dict[str, Any]], str]:
    env = {**os.environ, "HOTFOLDER_CONFIG": str(config_path)}
    out = subprocess.run([sys.executable, "-m", "hotfolder", "status", "--json", *args], env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout), out.stdout


@pytest.mark.slow
def test_status_json_streams_every_job_with_state_and_limit(tmp_path: Path, big: History) -> None:
    path = write_config(tmp_path, "http://127.0.0.1:9")
    settings = config.load(path, env={})
    copy_ledger(big.path, settings.ledger_path)
    ledger = Ledger(settings.ledger_path)
    truth = _oracle(ledger)
    rows, text = _status_json(path)
    assert [r["id"] for r in rows] == truth["ids"] and len(rows) == big.n + len(big.live)
    # Streamed: the array is written an object per line, never built whole first.
    lines = text.splitlines()
    assert lines[0].startswith("[{") and lines[-1] == "]" and len(lines) == len(rows) + 1
    # Every row is what the Python record of the same job says.
    assert rows == list(control.iter_status(ledger))
    failed, _ = _status_json(path, "--state", "FAILED")
    assert [r["id"] for r in failed] == truth["failed"] and {r["state"] for r in failed} == {"failed"}
    first, _ = _status_json(path, "--limit", "7")
    assert [r["id"] for r in first] == truth["ids"][:7]
    some, _ = _status_json(path, "--state", "failed,queued", "--limit", "3")
    assert [r["id"] for r in some] == sorted(truth["failed"] + [big.live["live/queued1.mp4"],
                                                                big.live["live/queued2.mp4"]])[:3]
    none, text = _status_json(path, "--state", "downloading")
    assert none == [] and text.strip() == "[]"


# -- pruning ------------------------------------------------------------------------------------
DAY = 86400.0


def _drive(ledger: Ledger, job_id: int, to: State, **fields: Any) -> None:
    path = [State.QUEUED, State.UPLOADING, State.SUBMITTING, State.GENERATING, State.DOWNLOADING]
    for src, dst in zip(path, path[1:]):
        extra = {"remote_id": f"task-of-{job_id}"} if dst == State.GENERATING else {}
        ledger.advance(job_id, src, dst, **extra)
    ledger.advance(job_id, State.DOWNLOADING, to, **fields)


def pruning_ledger(path: Path, now: float) -> tuple[Ledger, dict[str, int]]:
    """Jobs that ended 200, 100 and 10 days ago; one ended long ago whose input move keeps failing
    (its target folder cannot be made), one recorded long ago that never finished, one waiting."""
    clock = FakeClock(now - 200 * DAY)
    ledger = Ledger(path, clock=clock)
    ids: dict[str, int] = {}

    def add(name: str, **files: str) -> int:
        ids[name] = ledger.add_job(name=f"{name}.mp4", rel_dir="", stem=name, state=State.QUEUED,
                                   files=files or {"video": f"/srv/inbox/{name}.mp4"}, inputs={}, params={})
        return ids[name]

    _drive(ledger, add("ancient_done"), State.DONE)
    ledger.advance(add("ancient_failed"), State.QUEUED, State.FAILED, error="x", error_code="x")
    held = path.parent / "held" / "ancient_held.mp4"
    held.parent.mkdir(parents=True, exist_ok=True)
    held.write_bytes(b"video")
    (path.parent / "blocker").write_text("a file where the failed folder should be")
    ledger.advance(add("ancient_held", video=str(held)), State.QUEUED, State.FAILED, moves_pending=1,
                   error="x", error_code="x",
                   outputs={"moves": {"video": str(path.parent / "blocker" / "ancient_held.mp4")}})
    # Recorded 200 days ago and never finished: it waits out a very long backoff.
    ledger.update(add("ancient_queued"), State.QUEUED, next_attempt_at=now + 1000 * DAY)
    ids["ancient_waiting"] = ledger.add_job(name="ancient_waiting.mp4", rel_dir="", stem="ancient_waiting",
                                            state=State.WAITING, files={"video": "/srv/inbox/ancient_waiting.mp4"},
                                            inputs={}, params={})
    ledger.remember_remote_id(ids["ancient_failed"], "orphan-of-ancient")
    clock.advance(100 * DAY)
    _drive(ledger, add("old_done"), State.DONE)
    ledger.advance(add("old_cancelled"), State.QUEUED, State.CANCELLED, error="x", error_code="cancelled")
    clock.advance(90 * DAY)
    _drive(ledger, add("recent_done"), State.DONE)
    return ledger, ids


def _exists(ledger: Ledger, job_id: int) -> bool:
    return ledger.conn.execute("SELECT 1 FROM jobs WHERE id = ?", [job_id]).fetchone() is not None


def _events_of(ledger: Ledger, job_id: int) -> int:
    return ledger.conn.execute("SELECT COUNT(*) FROM events WHERE job_id = ?", [job_id]).fetchone()[0]


def test_prune_history_keeps_what_must_stay(tmp_path: Path) -> None:
    now = 1_790_000_000.0
    ledger, ids = pruning_ledger(tmp_path / "l.db", now)
    gone = {"ancient_done", "ancient_failed", "old_done", "old_cancelled"}
    events_before = {name: _events_of(ledger, ids[name]) for name in gone}
    assert all(events_before.values())
    removed = control.prune_history(ledger, "90d", now=now)
    assert removed == {"jobs": 4, "events": sum(events_before.values())}
    for name, job_id in ids.items():
        assert _exists(ledger, job_id) == (name not in gone), name
        if name in gone:
            assert _events_of(ledger, job_id) == 0, name
    # Never an unfinished job, never one whose inputs are still to be moved.
    assert ledger.get(ids["ancient_queued"]).state == State.QUEUED
    assert ledger.get(ids["ancient_waiting"]).state == State.WAITING
    assert [j.id for j in ledger.pending_moves()] == [ids["ancient_held"]]
    # A pruned job's task stays known: a lost create can never adopt it.
    assert ledger.unknown_remote_ids([f"task-of-{ids['ancient_done']}", f"task-of-{ids['old_done']}",
                                      "orphan-of-ancient", "brand-new"]) == {"brand-new"}
    # The counts kept by triggers follow the deletions.
    assert ledger.counts() == dict(ledger.conn.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state").fetchall())
    assert control.prune_history(ledger, "90d", now=now) == {"jobs": 0, "events": 0}
    # Once its moves are done, the held job goes at the next prune.
    ledger.update(ids["ancient_held"], State.FAILED, moves_pending=0)
    assert control.prune_history(ledger, "2w", now=now)["jobs"] == 1
    assert not _exists(ledger, ids["ancient_held"])
    with pytest.raises(control.ControlError, match="90d"):
        control.prune_history(ledger, "ninety days", now=now)


def test_prune_command_and_vacuum(tmp_path: Path) -> None:
    import time

    path = write_config(tmp_path, "http://127.0.0.1:9")
    settings = config.load(path, env={})
    settings.ledger_path.parent.mkdir(parents=True, exist_ok=True)
    ledger, ids = pruning_ledger(settings.ledger_path, time.time())
    # Some bulk for VACUUM to give back: many old jobs' events.
    with ledger.transaction() as conn:
        conn.executemany("INSERT INTO events (job_id, at, kind, detail) VALUES (?, 0, 'note', ?)",
                         [(ids["ancient_done"], "x" * 500)] * 4000)
    pages_before = ledger.conn.execute("PRAGMA page_count").fetchone()[0]
    ledger.close()
    env = {"HOTFOLDER_CONFIG": str(path)}
    result = CliRunner().invoke(main, ["prune", "--older-than", "90d", "--vacuum"], env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "deleted 4 ended job(s)" in result.output and "vacuumed" in result.output
    ledger = Ledger(settings.ledger_path)
    assert ledger.conn.execute("PRAGMA freelist_count").fetchone()[0] == 0
    assert ledger.conn.execute("PRAGMA page_count").fetchone()[0] < pages_before / 4
    assert ledger.integrity() == "ok"
    assert {j.id for j in ledger.pending_moves()} == {ids["ancient_held"]}
    assert ledger.get(ids["ancient_queued"]).state == State.QUEUED and ledger.get(ids["recent_done"])
    result = CliRunner().invoke(main, ["prune", "--older-than", "soon"], env=env)
    assert result.exit_code == 1 and "90d" in result.output


@pytest.mark.slow
def test_pruning_a_long_history_costs_in_proportion_to_what_goes(histories: dict[str, History],
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Batches must each cost a batch, not a pass over every prunable job (which, with many small
    batches, would make a first prune of a long history quadratic)."""
    monkeypatch.setattr(reports, "PRUNE_BATCH", 200)
    cost = {}
    for size, h in histories.items():
        ledger = Ledger(copy_ledger(h.path, h.path.with_name(f"prune-{size}.db")))
        before = ledger.conn.execute("SELECT COUNT(*) FROM jobs").fetchone()[0]
        cost[size] = vm_steps(ledger, lambda: reports.prune(ledger, BASE + (h.n + 50) * STEP), every=1000)
        assert before - ledger.conn.execute("SELECT COUNT(*) FROM jobs").fetchone()[0] == h.n
    # Ten times the jobs to delete: about ten times the work, never a hundred.
    assert cost["big"] <= cost["small"] * 15, cost


def test_keep_days_prunes_from_a_running_daemon(tmp_path: Path) -> None:
    """`[ledger] keep_days` prunes from the main loop of a running daemon, not at start-up and not at
    every turn: first a minute after the start, then once a day (time is a FakeClock here)."""
    import threading
    import time

    from helpers import wait_for

    path = write_config(tmp_path, "http://127.0.0.1:9", ledger={"path": "state/ledger.db", "keep_days": 90})
    settings = config.load(path, env={})
    settings.ledger_path.parent.mkdir(parents=True, exist_ok=True)
    now = time.time()
    ledger, ids = pruning_ledger(settings.ledger_path, now)
    (settings.folders.inbox / "ancient_waiting.mp4").write_bytes(b"a video whose sidecar never came")
    clock = FakeClock(now)
    stop = threading.Event()
    daemon = Daemon(settings, stop=stop, clock=clock)
    thread = threading.Thread(target=daemon.run, name="test-daemon")
    thread.start()
    try:
        wait_for(lambda: daemon.first_scan_done, message="the daemon's first scan")
        # Not in the start-up path: nothing is pruned before a minute has passed.
        assert _exists(ledger, ids["ancient_done"]) and _exists(ledger, ids["old_done"])
        clock.advance(61)
        daemon.wake()
        wait_for(lambda: not _exists(ledger, ids["ancient_done"]), message="the daily prune")
        assert not _exists(ledger, ids["old_cancelled"]) and not _exists(ledger, ids["ancient_failed"])
        for kept in ("ancient_held", "ancient_queued", "ancient_waiting", "recent_done"):
            assert _exists(ledger, ids[kept]), kept
        assert ledger.unknown_remote_ids([f"task-of-{ids['ancient_done']}"]) == set()
        # 89 days later the recent job is 179 days old, but the next prune is a day after the last.
        clock.advance(89 * DAY)
        ledger.update(ids["ancient_held"], State.FAILED, moves_pending=0)
        pruned_at = daemon.next_prune
        daemon.wake()
        wait_for(lambda: not _exists(ledger, ids["recent_done"]), message="the next day's prune")
        assert not _exists(ledger, ids["ancient_held"]) and daemon.next_prune > pruned_at
    finally:
        stop.set()
        daemon.wake()
        thread.join(timeout=15)
    assert not thread.is_alive()
