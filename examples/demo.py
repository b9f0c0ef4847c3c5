"""The hotfolder demo: the daemon on the sample pairs in examples/, against the local sandbox.

Run from the repository root after installing hotfolder:  python examples/demo.py
It starts `hotfolder sandbox` on a free loopback port, copies the samples into demo-run/inbox
(the originals stay put: hotfolder moves its inputs), runs `hotfolder run --once`, then
`hotfolder status`, and lists what landed in demo-run/outbox.

The sandbox emulates the API's protocol, not its lip-sync model: the "lip-synced" video it
returns is the input video itself, unchanged (and its cover a placeholder picture). Point
`[api]` at the real service, with your app_id and secret_key, for real results.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
SAMPLES = ["presenter.mp4", "presenter.txt", "interview.mp4", "interview.wav"]
NOTE = ("Note: the sandbox emulates the API, not its lip-sync model: each \"lip-synced\" result below is "
        "the input video returned unchanged (its cover a placeholder). Set [api] base_url, app_id and "
        "secret_key for the real service to get real lip-synced videos.")
CONFIG = """\
[api]
base_url = "http://127.0.0.1:{port}"
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
settle_seconds = 1
poll_interval = 1

[limits]                  # the demo's sandbox allows more than a real account (10 creates/min)
creates_per_minute = 60
file_calls_per_minute = 300

[lipsync]
audio_man_id = "C-f2429d07554749839849497589199916"
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until_up(url: str, proc: subprocess.Popen[bytes], deadline_s: float = 20.0) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit("the sandbox exited early; see its output above")
        try:
            httpx.get(f"{url}/_sandbox/settings", timeout=1.0)
            return
        except httpx.HTTPError:
            time.sleep(0.1)   # polling a server that is starting: no event to wait on
    sys.exit(f"the sandbox did not come up at {url}")


def main() -> int:
    run_dir = Path.cwd() / "demo-run"
    if run_dir.exists():
        shutil.rmtree(run_dir)
    (run_dir / "inbox").mkdir(parents=True)
    for name in SAMPLES:
        shutil.copy2(HERE / name, run_dir / "inbox" / name)
    port = free_port()
    config = run_dir / "hotfolder.toml"
    config.write_text(CONFIG.format(port=port), encoding="utf-8")
    hotfolder = [sys.executable, "-m", "hotfolder"]
    sandbox = subprocess.Popen([*hotfolder, "sandbox", "--port", str(port), "--data", str(run_dir / "sandbox"),
                                "--file-ready-delay", "0.5", "--queue-seconds", "0.5", "--generate-seconds", "2",
                                "--creates-per-minute", "60", "--file-calls-per-minute", "300"],
                               stderr=subprocess.DEVNULL)
    try:
        wait_until_up(f"http://127.0.0.1:{port}", sandbox)
        print(f"sandbox on 127.0.0.1:{port}; running: hotfolder run --once --config {config}", flush=True)
        print(NOTE, flush=True)
        env = {**os.environ, "HOTFOLDER_CONFIG": str(config)}
        code = subprocess.call([*hotfolder, "run", "--once", "--log-console"], env=env)
        print("\n$ hotfolder status", flush=True)
        subprocess.call([*hotfolder, "status"], env=env)
    finally:
        sandbox.terminate()
        sandbox.wait(timeout=10)
    print("\noutputs (from the sandbox: the input videos, returned as the \"lip-synced\" results):")
    for path in sorted((run_dir / "outbox").rglob("*")):
        print(f"  {path.relative_to(Path.cwd())}  ({path.stat().st_size} bytes)")
    return code


if __name__ == "__main__":
    sys.exit(main())
