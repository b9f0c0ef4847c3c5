"""How fast the dashboard answers on a ledger of N jobs (default 1,000,000).

The history is built by bench/ledger_scale.py's :func:`build` (real jobs driven through the
ledger's verbs, then copied), or reused with ``--keep DIR``. On top of it goes what a busy shop
has *now*, so the pages have something real to read: the newest ``--recent`` jobs (default
14,000: a thousand a day) are moved into the last 14 days (their events with them), which is
what the stats read, and ``--unfinished`` jobs (default 150: waiting, queued, uploading,
generating) are recorded through the ledger's verbs, which is what the queue shows.

A :class:`hotfolder.server.Listener` is started in this process (loopback, no daemon) and asked
over real HTTP, ``--requests`` times each after two warm-ups: the page, the live JSON (first,
a deep and a filtered page, and the 304 a poll gets when nothing changed), a job's page and
its JSON, and the stats (computed each time, and as a page left open gets them: cached for a
minute). Printed: p50 / p95 / max per endpoint, and the CPU one poll costs (client included),
i.e. what a tab left open for an hour costs the daemon.

Usage: ``python bench/dashboard_scale.py [--jobs N] [--keep DIR] [--recent R] [--unfinished U]``.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import httpx  # noqa: E402

from hotfolder import config  # noqa: E402
from hotfolder.ledger import Ledger  # noqa: E402
from hotfolder.liveness import Liveness  # noqa: E402
from hotfolder.metrics import Metrics  # noqa: E402
from hotfolder.server import Listener  # noqa: E402
from hotfolder.states import State  # noqa: E402
from ledger_scale import prepare  # noqa: E402

GOAL_MS = 300.0
POLL_EVERY_S = 2.5   # what the page does while jobs are moving (and it is visible)
IDLE_POLL_S = 10.0   # ... and when nothing is in progress


def freshen(ledger: Ledger, recent: int, days: int = 14) -> None:
    """Move the newest ``recent`` jobs (and their events) into the last ``days`` days, evenly.
    Idempotent: the new times depend on the id and the clock only."""
    top = ledger.conn.execute("SELECT MAX(id) FROM jobs WHERE name NOT LIKE 'live/%'").fetchone()[0]
    first = top - recent + 1
    step = days * 86400 / recent
    now = time.time()
    conn = ledger.conn
    conn.execute("BEGIN")
    conn.execute("CREATE TEMP TABLE shift (job_id INTEGER PRIMARY KEY, delta REAL)")
    conn.execute("INSERT INTO shift SELECT id, (? - (? - id) * ? - 60) - finished_at FROM jobs "
                 "WHERE id BETWEEN ? AND ? AND finished_at IS NOT NULL", [now, top, step, first, top])
    conn.execute("UPDATE jobs SET created_at = created_at + (SELECT delta FROM shift WHERE job_id = jobs.id), "
                 "updated_at = updated_at + (SELECT delta FROM shift WHERE job_id = jobs.id), "
                 "finished_at = finished_at + (SELECT delta FROM shift WHERE job_id = jobs.id) "
                 "WHERE id IN (SELECT job_id FROM shift)")
    conn.execute("UPDATE events SET at = at + (SELECT delta FROM shift WHERE shift.job_id = events.job_id) "
                 "WHERE job_id IN (SELECT job_id FROM shift)")
    conn.execute("DROP TABLE shift")
    conn.execute("COMMIT")


def add_unfinished(ledger: Ledger, count: int) -> None:
    """``count`` jobs in the unfinished states, through the ledger's verbs (once per ledger)."""
    have = ledger.conn.execute("SELECT COUNT(*) FROM jobs WHERE name LIKE 'live/%'").fetchone()[0]
    path = [State.QUEUED, State.UPLOADING, State.SUBMITTING, State.GENERATING]
    for i in range(have, count):
        stem = f"live{i:04d}"
        files = {"video": f"/srv/hotfolder/inbox/live/{stem}.mp4"}
        if i % 5 == 0:
            ledger.add_job(name=f"live/{stem}.mp4", rel_dir="live", stem=stem, state=State.WAITING, files=files,
                           inputs={}, params={})
            continue
        job = ledger.add_job(name=f"live/{stem}.mp4", rel_dir="live", stem=stem, state=State.QUEUED,
                             files={**files, "text": f"/srv/hotfolder/inbox/live/{stem}.txt"}, inputs={},
                             params={"text": "hello"})
        target = path[i % len(path)]
        for src, dst in zip(path, path[1:]):
            if path.index(src) >= path.index(target):
                break
            fields: dict[str, Any] = {"remote_id": f"live-task-{i:06d}", "progress": (i * 7) % 100} \
                if dst == State.GENERATING else {}
            ledger.advance(job, src, dst, **fields)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def timed(client: httpx.Client, path: str, n: int, headers: dict[str, str] | None = None,
          expect: int = 200) -> list[float]:
    for _ in range(2):
        client.get(path, headers=headers)
    out = []
    for _ in range(n):
        started = time.perf_counter()
        response = client.get(path, headers=headers)
        out.append((time.perf_counter() - started) * 1000)
        if response.status_code != expect:
            raise SystemExit(f"{path}: HTTP {response.status_code}, expected {expect}: {response.text[:300]}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--keep", type=Path, help="build (or reuse) the ledger in this folder and keep it")
    parser.add_argument("--recent", type=int, default=14_000, help="jobs ended in the last 14 days")
    parser.add_argument("--unfinished", type=int, default=150)
    parser.add_argument("--requests", type=int, default=20)
    args = parser.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="hotfolder-dash-scale-"))
    ledger_path = prepare(root, args.jobs)
    started = time.monotonic()
    ledger = Ledger(ledger_path)
    freshen(ledger, min(args.recent, args.jobs))
    add_unfinished(ledger, args.unfinished)
    ledger.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    print(f"  {args.recent:,} jobs moved into the last 14 days, {args.unfinished} unfinished "
          f"({time.monotonic() - started:.0f} s)")

    settings = config.from_mapping({
        "api": {"app_id": "bench", "secret_key": "bench-secret-key"},
        "folders": {k: k for k in ("inbox", "outbox", "archive", "failed")},
        "ledger": {"path": "state/ledger.db"},
        "server": {"listen": f"127.0.0.1:{free_port()}"},
        "presets": {"live": {"speed": 1.1}, "team1": {"volume": 90}},
    }, base_dir=root, env={})
    metrics = Metrics(ledger)
    listener = Listener(settings, ledger, Liveness(), metrics, lambda _task: None)
    if not listener.start() or not listener.url:
        raise SystemExit("the listener did not start")
    jobs = ledger.conn.execute("SELECT COUNT(*) FROM jobs").fetchone()[0]
    middle = jobs // 2
    rows: list[tuple[str, list[float]]] = []
    cpu_full = cpu_same = 0.0
    try:
        with httpx.Client(base_url=listener.url, timeout=60) as client:
            n = args.requests
            rows.append(("GET / (the page)", timed(client, "/", n)))
            rows.append(("GET /api/queue (live data, first page)", timed(client, "/api/queue", n)))
            etag = client.get("/api/queue").headers["etag"]
            rows.append(("GET /api/queue, unchanged (a poll: 304)",
                         timed(client, "/api/queue", n, {"If-None-Match": etag}, expect=304)))
            rows.append(("GET /api/queue?page=49 (deepest page)", timed(client, "/api/queue?page=49", n)))
            rows.append(("GET /api/queue?show=failed&page=5", timed(client, "/api/queue?show=failed&page=5", n)))
            rows.append((f"GET /jobs/{middle} (a job's page)", timed(client, f"/jobs/{middle}", n)))
            rows.append((f"GET /api/jobs/{middle}", timed(client, f"/api/jobs/{middle}", n)))
            cache = listener.dashboard.stats_cache
            ttl, cache.ttl = cache.ttl, 0.0
            rows.append(("GET /api/stats (computed each time)", timed(client, "/api/stats", n)))
            cache.ttl = ttl
            rows.append(("GET /api/stats (as a page gets it: cached 60 s)", timed(client, "/api/stats", n)))
            # What a tab left open costs: CPU of one poll (this process: listener and client), when
            # something changed (a full answer) and when nothing did (304).
            polls = 50
            cpu0 = time.process_time()
            for _ in range(polls):
                client.get("/api/queue")
            cpu_full = (time.process_time() - cpu0) / polls
            etag = client.get("/api/queue").headers["etag"]
            cpu0 = time.process_time()
            for _ in range(polls):
                client.get("/api/queue", headers={"If-None-Match": etag})
            cpu_same = (time.process_time() - cpu0) / polls
    finally:
        listener.stop()
    print(f"\nledger: {jobs:,} jobs, {ledger_path.stat().st_size / 2**20:.0f} MiB; {args.recent:,} ended in the "
          f"last 14 days, {args.unfinished} unfinished ({sys.platform}, in-process listener, loopback HTTP)")
    print("| endpoint | p50 | p95 | max | goal |\n|---|---|---|---|---|")
    for what, times in rows:
        times.sort()
        p95 = times[min(len(times) - 1, round(0.95 * (len(times) - 1)))]
        print(f"| {what} | {statistics.median(times):.1f} ms | {p95:.1f} ms | {times[-1]:.1f} ms | "
              f"{'ok' if p95 < GOAL_MS else 'OVER'} < {GOAL_MS:.0f} ms |")
    print(f"\na poll costs {cpu_full * 1000:.1f} ms of CPU when something changed, {cpu_same * 1000:.1f} ms when "
          f"nothing did (304) (listener and client together, this process). A tab left open: every {POLL_EVERY_S:g} s "
          f"while jobs move = {100 * cpu_full / POLL_EVERY_S:.2f} % of one core at most; every {IDLE_POLL_S:g} s when "
          f"idle = {100 * cpu_same / IDLE_POLL_S:.3f} %; nothing while the tab is hidden")
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
