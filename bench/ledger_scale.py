"""How hotfolder behaves on a ledger grown to N finished jobs (default 1,000,000).

Builds the ledger through the ledger's own code: a template of real jobs is driven through every
state with the ledger's verbs (each with its events), then its rows are copied (with fresh ids)
until N jobs exist, as a shop's history would look. Then it measures, each in a fresh process:

* ``hotfolder status`` and ``hotfolder status --json``: wall time and peak RSS (from wait4), and
  for ``--json`` the jobs streamed per second;
* the daemon: start → first scan (the ``first_scan_done`` log line), a pair dropped into the inbox
  → its job recorded (must be within ``settle_seconds`` + 2 s), then idle CPU and RSS over a window
  longer than one rescan;
* ``hotfolder stats`` (when the command exists) and ``hotfolder show`` of one job.

Usage: ``python bench/ledger_scale.py [--jobs N] [--keep DIR] [--idle-window S]``. The goals are
printed beside each figure.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from hotfolder.ledger import Ledger  # noqa: E402
from hotfolder.sandbox import Sandbox, SandboxSettings  # noqa: E402
from hotfolder.states import State  # noqa: E402

TEMPLATE_JOBS = 1000
RESCAN_S = 10.0
SETTLE_S = 1.0


def build(path: Path, n: int) -> float:
    """A ledger of ``n`` ended jobs; returns the seconds it took."""
    started = time.monotonic()
    ledger = Ledger(path)
    ledger.conn.execute("PRAGMA synchronous=OFF")   # a bench's build, not a daemon's durability
    now = time.time() - 100 * 86400
    states = [State.QUEUED, State.UPLOADING, State.SUBMITTING, State.GENERATING, State.DOWNLOADING]
    for i in range(min(n, TEMPLATE_JOBS)):
        stem = f"clip{i:05d}"
        job_id = ledger.add_job(
            name=f"team{i % 7}/{stem}.mp4", rel_dir=f"team{i % 7}", stem=stem, state=State.QUEUED,
            files={"video": f"/srv/hotfolder/inbox/team{i % 7}/{stem}.mp4",
                   "text": f"/srv/hotfolder/inbox/team{i % 7}/{stem}.txt"},
            inputs={"video": {"size": 12_345_678, "mtime_ns": 1, "sha256": "ab" * 32},
                    "text": {"size": 321, "mtime_ns": 1, "sha256": "cd" * 32}},
            params={"text": "大家好，欢迎收看今天的节目。" * 8, "audio_man_id": "C-f2429d07554749839849497589199916",
                    "speed": 1.0, "pitch": 1.0, "volume": 100, "model": 0, "backway": 1, "drive_mode": "",
                    "screen_width": 1080, "screen_height": 1920})
        for src, dst in zip(states, states[1:]):
            fields: dict[str, Any] = {}
            if dst == State.GENERATING:
                fields = {"remote_id": f"task-{i:08d}", "video_file_id": "f" * 32, "audio_file_id": None}
            ledger.advance(job_id, src, dst, **fields)
        final = State.DONE if i % 10 else State.FAILED
        ledger.advance(job_id, State.DOWNLOADING, final, moves_pending=0,
                       outputs={"video": f"/srv/hotfolder/outbox/{stem}.mp4", "cover": f"/srv/hotfolder/outbox/{stem}.jpg",
                                "moves": {"video": f"/srv/hotfolder/archive/{stem}.mp4"}},
                       error=None if final == State.DONE else "the API could not make the video: 驱动失败",
                       error_code=None if final == State.DONE else "task_failed")
    conn = ledger.conn
    conn.execute("UPDATE jobs SET created_at = created_at - ?, updated_at = updated_at - ?, "
                 "finished_at = finished_at - ?", [time.time() - now] * 3)
    job_cols = [r[1] for r in conn.execute("PRAGMA table_info(jobs)") if r[1] != "id"]
    ev_cols = [r[1] for r in conn.execute("PRAGMA table_info(events)") if r[1] not in ("id", "job_id")]
    while (count := conn.execute("SELECT MAX(id) FROM jobs").fetchone()[0]) < n:
        take = min(count, n - count)
        # Copies of real rows with fresh ids (offset by `count`), and their events.
        conn.execute("BEGIN")
        conn.execute(f"INSERT INTO jobs (id, {', '.join(job_cols)}) SELECT id + ?, "
                     f"{', '.join(c if c != 'remote_id' else 'remote_id || ? || id' for c in job_cols)} "
                     "FROM jobs WHERE id <= ?", [count, "-", take])
        conn.execute(f"INSERT INTO events (job_id, {', '.join(ev_cols)}) SELECT job_id + ?, {', '.join(ev_cols)} "
                     "FROM events WHERE job_id <= ?", [count, take])
        conn.execute("INSERT OR IGNORE INTO remote_tasks (remote_id, job_id, recorded_at) "
                     "SELECT remote_id, id, updated_at FROM jobs WHERE id > ? AND remote_id IS NOT NULL", [count])
        conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    ledger.close()
    return time.monotonic() - started


def prepare(root: Path, jobs: int) -> Path:
    """The folders and a ledger of at least ``jobs`` jobs under ``root`` (reused when it has them,
    built otherwise); returns the ledger's path."""
    root.mkdir(parents=True, exist_ok=True)
    for name in ("inbox", "outbox", "archive", "failed"):
        (root / name).mkdir(exist_ok=True)
    ledger_path = root / "state" / "ledger.db"
    if ledger_path.exists() and (Ledger(ledger_path).conn.execute("SELECT MAX(id) FROM jobs").fetchone()[0] or 0) >= jobs:
        print(f"reusing the ledger in {root}")
        return ledger_path
    if ledger_path.exists():
        for f in ledger_path.parent.glob("ledger.db*"):
            f.unlink()
    print(f"building a ledger of {jobs:,} jobs in {root} …", flush=True)
    print(f"  built in {build(ledger_path, jobs):.0f} s, {ledger_path.stat().st_size / 2**20:.0f} MiB")
    return ledger_path


def measure(argv: list[str], env: dict[str, str]) -> dict[str, Any]:
    """Run a command to its end; wall time, peak RSS (MiB) and output size."""
    started = time.monotonic()
    with tempfile.TemporaryFile() as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.PIPE, env=env)
        _pid, status, usage = os.wait4(proc.pid, 0)
        elapsed = time.monotonic() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        size = out.tell()
        out.seek(0)
        head = out.read(200).decode(errors="replace")
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} exited {proc.returncode}: {err[-2000:]}")
    return {"seconds": elapsed, "rss_mib": usage.ru_maxrss / 1024, "bytes": size, "head": head}


def proc_cpu(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def daemon_figures(root: Path, config: Path, env: dict[str, str], idle_window: float) -> dict[str, float]:
    """Start the daemon on the big ledger; time to first scan, to taking a new pair, idle cost."""
    started = time.monotonic()
    log = open(root / "daemon.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "hotfolder", "run", "--config", str(config), "--log-json"],
                            stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        first_scan = _wait_for_line(root / "daemon.log", "first_scan_done", started, 600)
        inbox = root / "inbox"
        shutil.copyfile(REPO / "examples" / "presenter.mp4", inbox / "fresh.mp4")
        shutil.copyfile(REPO / "examples" / "presenter.txt", inbox / "fresh.txt")
        dropped = time.monotonic()
        pickup = _wait_for_line(root / "daemon.log", '"job_queued"', dropped, 60)
        done = _wait_for_line(root / "daemon.log", '"job_done"', dropped, 120)
        # Idle: nothing left to do; measure over a window longer than one rescan.
        cpu0, t0 = proc_cpu(proc.pid), time.monotonic()
        time.sleep(idle_window)   # a bench window, not synchronisation
        cpu1, t1 = proc_cpu(proc.pid), time.monotonic()
        return {"start_to_first_scan_s": first_scan, "pickup_s": pickup, "pair_done_s": done,
                "idle_cpu_pct": 100 * (cpu1 - cpu0) / (t1 - t0), "idle_rss_mib": proc_rss_mib(proc.pid)}
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def _wait_for_line(path: Path, needle: str, since: float, timeout: float) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if needle in path.read_text(errors="replace"):
            return time.monotonic() - since
        time.sleep(0.02)
    raise SystemExit(f"no {needle} in the daemon's log within {timeout}s:\n{path.read_text()[-3000:]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--keep", type=Path, help="build (or reuse) the ledger in this folder and keep it")
    parser.add_argument("--idle-window", type=float, default=RESCAN_S * 1.5,
                        help=f"seconds of idle CPU measurement (default 1.5 rescans of {RESCAN_S:g} s)")
    args = parser.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="hotfolder-scale-"))
    ledger_path = prepare(root, args.jobs)
    sandbox = Sandbox(root / "sandbox", settings=SandboxSettings(file_ready_delay=0.2, queue_seconds=0.2,
                                                                 generate_seconds=0.5))
    sandbox.start()
    try:
        config = root / "hotfolder.toml"
        config.write_text(f'''[api]
base_url = "{sandbox.base_url}"
app_id = "sandbox"
secret_key = "sandbox"
[folders]
inbox = "inbox"
outbox = "outbox"
archive = "archive"
failed = "failed"
[ledger]
path = "state/ledger.db"
[watch]
settle_seconds = {SETTLE_S}
poll_interval = 1
rescan_seconds = {RESCAN_S}
[lipsync]
audio_man_id = "C-f2429d07554749839849497589199916"
''')
        env = {**os.environ, "HOTFOLDER_CONFIG": str(config), "PYTHONPATH": str(REPO)}
        hf = [sys.executable, "-m", "hotfolder"]
        status = measure(hf + ["status"], env)
        status_json = measure(hf + ["status", "--json"], env)
        jobs = Ledger(ledger_path).conn.execute("SELECT COUNT(*) FROM jobs").fetchone()[0]
        show = measure(hf + ["show", str(jobs // 2)], env)
        daemon = daemon_figures(root, config, env, args.idle_window)
        stats = None
        from hotfolder.cli import main as cli_main
        if "stats" in cli_main.commands:
            stats = measure(hf + ["stats"], env)
    finally:
        sandbox.stop()
    rows = [
        ("hotfolder status", f"{status['seconds']:.2f} s, {status['rss_mib']:.0f} MiB", "< 0.5 s, < 60 MiB"),
        ("hotfolder status --json", f"{status_json['seconds']:.1f} s, {status_json['rss_mib']:.0f} MiB, "
         f"{jobs / status_json['seconds']:,.0f} jobs/s", "< 100 MiB, ≥ 100k jobs/s"),
        ("hotfolder show (one job)", f"{show['seconds']:.2f} s, {show['rss_mib']:.0f} MiB", "< 0.5 s"),
        ("daemon start → first scan", f"{daemon['start_to_first_scan_s']:.2f} s", "< 2 s"),
        ("new pair → job recorded", f"{daemon['pickup_s']:.2f} s (done in {daemon['pair_done_s']:.1f} s)",
         f"< settle {SETTLE_S:g} s + 2 s"),
        (f"daemon idle ({args.idle_window:g} s window)", f"{daemon['idle_cpu_pct']:.2f} % CPU, "
         f"{daemon['idle_rss_mib']:.0f} MiB", "< 0.5 %, < 100 MiB"),
    ]
    if stats is not None:
        rows.append(("hotfolder stats", f"{stats['seconds']:.2f} s, {stats['rss_mib']:.0f} MiB", "< 1 s"))
    print(f"\nledger: {jobs:,} jobs, {ledger_path.stat().st_size / 2**20:.0f} MiB ({sys.platform}, {os.cpu_count()} cores)")
    print("| what | measured | goal |\n|---|---|---|")
    for what, got, goal in rows:
        print(f"| {what} | {got} | {goal} |")
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
