"""Crash safety: a daemon SIGKILLed mid-job resumes from the ledger and never pays twice."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers import FAST_SANDBOX, MEDIA, all_jobs, wait_for, write_config
from hotfolder import config
from hotfolder.ledger import Ledger

SECRET = "s3cr3t-Very-Distinct-Key-9f8e7d"


@pytest.fixture
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A sandbox whose account has a distinctive secret, so logs can be searched for it."""
    from hotfolder.sandbox import Sandbox, SandboxSettings

    sb = Sandbox(tmp_path_factory.mktemp("sandbox"), secret_key=SECRET, settings=SandboxSettings(**FAST_SANDBOX))
    sb.start()
    try:
        yield sb
    finally:
        sb.stop()


def start_daemon(config_path: Path, log_path: Path, *args: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "HOTFOLDER_CONFIG": str(config_path), "CHANJING_SECRET_KEY": SECRET}
    with open(log_path, "ab") as log:
        return subprocess.Popen([sys.executable, "-m", "hotfolder", "run", "--log-json", *args],
                                env=env, stdout=log, stderr=log)


def drop_jobs(inbox: Path, count: int) -> dict[str, bytes]:
    """``count`` jobs alternating text and audio, each with distinct video bytes."""
    expected = {}
    sources = [MEDIA / "portrait.mp4", MEDIA / "landscape.mov", MEDIA / "faststart.mp4"]
    for i in range(count):
        src = sources[i % len(sources)]
        # Distinct bytes per job: a trailing free box keeps the video valid but changes its hash.
        data = src.read_bytes() + (16).to_bytes(4, "big") + b"free" + i.to_bytes(8, "big")
        stem = f"job{i:02d}"
        (inbox / f"{stem}{src.suffix}").write_bytes(data)
        if i % 2:
            (inbox / f"{stem}.wav").write_bytes((MEDIA / "speech.wav").read_bytes())
        else:
            (inbox / f"{stem}.txt").write_text(f"script number {i}", encoding="utf-8")
        expected[stem] = data
    return expected


def check_outputs(settings: config.Settings, sandbox: Any, expected: dict[str, bytes]) -> None:
    out = settings.folders.outbox
    for stem, data in expected.items():
        assert (out / f"{stem}.mp4").read_bytes() == data, f"{stem}.mp4 differs from its input"
        assert (out / f"{stem}.jpg").read_bytes()[:2] == b"\xff\xd8"
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{s}{e}" for s in expected for e in (".mp4", ".jpg"))
    assert list(settings.folders.inbox.iterdir()) == []
    archived = {p.stem for p in settings.folders.archive.iterdir()}
    assert archived == set(expected)
    jobs = all_jobs(Ledger(settings.ledger_path))
    assert len(jobs) == len(expected) and {j.state for j in jobs} == {"done"}
    creates = [e for e in sandbox.journal() if e["endpoint"] == "create" and e["code"] == 0]
    remote_ids = [j.remote_id for j in jobs]
    assert len(set(remote_ids)) == len(expected)
    # Every task the API made belongs to exactly one job: nothing was paid for twice.
    assert len(sandbox.tasks()) == len(expected) == len(creates)


def test_sigkill_mid_job_then_resume(tmp_path: Path, sandbox: Any) -> None:
    sandbox.update(generate_seconds=2.0)
    path = write_config(tmp_path, sandbox.base_url, api={"secret_key": "overridden-by-env"})
    settings = config.load(path, env={})
    expected = drop_jobs(settings.folders.inbox, 6)
    log = tmp_path / "daemon.log"
    proc = start_daemon(path, log)
    try:
        ledger = wait_for(lambda: settings.ledger_path.exists() and Ledger(settings.ledger_path), message="ledger")
        wait_for(lambda: any(j.state == "generating" for j in all_jobs(ledger)), message="a task in flight")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    states = Counter(j.state for j in all_jobs(ledger))
    assert states["done"] < 6, f"killed too late to test anything: {states}"
    rerun = start_daemon(path, log, "--once")
    assert rerun.wait(timeout=90) == 0, log.read_text()[-3000:]
    check_outputs(settings, sandbox, expected)
    assert SECRET not in log.read_text()
    env = {**os.environ, "HOTFOLDER_CONFIG": str(path), "CHANJING_SECRET_KEY": SECRET}
    for args in (["status", "--json"], ["status"], ["show", "--json", "job00.mp4"], ["doctor"]):
        out = subprocess.run([sys.executable, "-m", "hotfolder", *args], env=env, capture_output=True, text=True)
        assert SECRET not in out.stdout + out.stderr, args
    for path_ in tmp_path.rglob("*"):
        if path_.is_file() and path_.suffix in (".json", ".log", ".toml", ".txt") and path_.name != "hotfolder.toml":
            assert SECRET not in path_.read_text(errors="replace"), path_


def test_chaos_kills_at_random_moments(tmp_path: Path, sandbox: Any) -> None:
    """20 jobs, 8 SIGKILLs at seeded random moments, restarts; then everything is right."""
    rng = random.Random(20261124)
    # Slow creates widen the window in which a kill lands between sending a create and recording it.
    sandbox.update(generate_seconds=1.0, slow_rate=0.3, slow_seconds=0.4)
    path = write_config(tmp_path, sandbox.base_url, api={"secret_key": "overridden-by-env"})
    settings = config.load(path, env={})
    expected = drop_jobs(settings.folders.inbox, 20)
    log = tmp_path / "daemon.log"
    started = time.monotonic()
    kills = 0
    for _ in range(8):
        proc = start_daemon(path, log)
        time.sleep(rng.uniform(0.3, 2.5))   # the seeded random moment of the kill is the point here
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        kills += 1
    sandbox.update(slow_rate=0.0)
    final = start_daemon(path, log, "--once")
    assert final.wait(timeout=100) == 0, log.read_text()[-3000:]
    assert kills == 8
    check_outputs(settings, sandbox, expected)
    assert time.monotonic() - started < 120
    assert SECRET not in log.read_text()
    ledger = Ledger(settings.ledger_path)
    kinds = Counter(e["kind"] for j in all_jobs(ledger) for e in ledger.events(j.id))
    print(f"chaos: kills={kills} jobs={len(expected)} creates={len(sandbox.tasks())} "
          f"adopted={kinds['task_adopted']} reconciled_none={kinds['reconciled']} "
          f"retries={kinds['retry_scheduled']} seconds={time.monotonic() - started:.1f}")
