"""CPU cost of polling the inbox (``[watch] mode = "polling"``).

    python bench/poll_watch.py [--files 10000] [--folders 8] [--poll-seconds 5] [--window 30]

Creates ``--files`` files spread over ``--folders`` sub-folders (plus a few ignored names, so
the skip path is exercised too) in a temp dir, starts a PollingWatcher on it, and measures this
process's CPU time (user + system, ``time.process_time()``, cross-checked with
``getrusage(RUSAGE_SELF)``) over ``--window`` seconds of wall time. Creating the files and the
baseline listing happen before the window opens, so only steady-state polling is counted — the
same work the daemon's polling thread does all day. Nothing else runs in the process meanwhile
(the main thread waits on an Event).

Target: 10,000 files every 5 s < 2 % of one core.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from hotfolder.watcher import PollingWatcher  # noqa: E402


def make_tree(root: Path, files: int, folders: int) -> None:
    """``files`` small files (pairs of .mp4/.txt names, as an inbox holds) in ``folders`` folders."""
    dirs = [root / f"preset{i}" for i in range(max(1, folders))]
    for d in dirs:
        d.mkdir(parents=True)
    for n in range(files):
        folder = dirs[n % len(dirs)]
        name = f"clip{n // 2:06d}.{'mp4' if n % 2 == 0 else 'txt'}"
        (folder / name).write_bytes(b"x")
    # Litter that intake ignores: must cost (almost) nothing.
    (root / ".DS_Store").write_bytes(b"x")
    (root / "@eaDir").mkdir()
    (root / "@eaDir" / "thumb.jpg").write_bytes(b"x")


def rusage_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--folders", type=int, default=8)
    parser.add_argument("--poll-seconds", type=float, default=5.0)
    parser.add_argument("--window", type=float, default=30.0, help="seconds measured")
    parser.add_argument("--dir", type=Path, default=None,
                        help="create the tree under this folder (e.g. on a share) instead of /tmp")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="hotfolder-pollbench-", dir=args.dir))
    wakes = 0

    def wake() -> None:
        nonlocal wakes
        wakes += 1

    watcher = PollingWatcher(tmp / "inbox", wake, poll_seconds=args.poll_seconds)
    try:
        make_tree(tmp / "inbox", args.files, args.folders)
        t0 = time.monotonic()
        watcher.ensure()   # the baseline listing, outside the window
        baseline_s = time.monotonic() - t0
        scans0 = watcher.scans
        cpu0, ru0, wall0 = time.process_time(), rusage_cpu(), time.monotonic()
        threading.Event().wait(args.window)   # idle main thread: only the poller works
        cpu1, ru1, wall1 = time.process_time(), rusage_cpu(), time.monotonic()
        scans = watcher.scans - scans0
        wall = wall1 - wall0
        pct = 100.0 * (cpu1 - cpu0) / wall
        pct_ru = 100.0 * (ru1 - ru0) / wall
        per_scan_ms = 1000.0 * (cpu1 - cpu0) / scans if scans else float("nan")
        print(f"files={args.files} folders={args.folders} poll_seconds={args.poll_seconds} "
              f"window={wall:.1f}s scans={scans} wakes={wakes}")
        print(f"baseline listing: {baseline_s * 1000:.0f} ms wall; last poll: "
              f"{watcher.last_scan_seconds * 1000:.0f} ms wall; CPU per poll: {per_scan_ms:.1f} ms")
        print(f"CPU: {pct:.2f} % of one core (process_time), {pct_ru:.2f} % (getrusage); target < 2 %")
        return 0 if pct < 2.0 and wakes == 0 else 1
    finally:
        watcher.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
