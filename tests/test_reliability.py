"""Reliability: a busy running daemon, injected faults, remote outcomes, billing, shutdown, locks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from helpers import MEDIA, all_jobs, wait_for
from test_crash import drop_jobs
from test_daemon import Env, Running


def endpoint_counts(sandbox: Any) -> dict[str, int]:
    return dict(sorted(Counter(e["endpoint"] for e in sandbox.journal()).items()))


def assert_all_done(env: Env, expected: dict[str, bytes]) -> None:
    out = env.settings.folders.outbox
    for stem, data in expected.items():
        assert (out / f"{stem}.mp4").read_bytes() == data, stem
        assert (out / f"{stem}.jpg").read_bytes()[:2] == b"\xff\xd8"
    assert {j.state for j in all_jobs(env.ledger())} == {"done"}
    assert {p.stem for p in env.settings.folders.archive.iterdir()} == set(expected)
    assert list(env.inbox.iterdir()) == []


def test_ten_pairs_into_a_running_daemon(tmp_path: Path, sandbox: Any) -> None:
    env = Env(tmp_path, sandbox)
    with Running(env):
        expected = drop_jobs(env.inbox, 10)
        wait_for(lambda: len(env.jobs()) == 10 and all(j.state == "done" for j in env.jobs().values()),
                 timeout=60, message="10 jobs done")
    assert_all_done(env, expected)
    counts = endpoint_counts(sandbox)
    print(f"ten pairs: API calls per endpoint: {counts}")
    assert counts["create"] == 10
    # The poller reads the list instead of asking detail for every task every time.
    assert counts.get("list", 0) >= 1


@pytest.mark.slow
def test_everything_finishes_despite_injected_faults(tmp_path: Path, sandbox: Any) -> None:
    sandbox.update(seed=7, error_rate=0.2, drop_rate=0.05, truncate_rate=0.2, token_ttl=3, generate_seconds=2.0,
                   queries_per_second=1)   # the client is allowed 200/s: the sandbox says 40001
    env = Env(tmp_path, sandbox, retry={"file_ready_timeout": 30})
    expected = drop_jobs(env.inbox, 8)
    assert env.run_once() == 0
    assert_all_done(env, expected)
    journal = sandbox.journal()
    faults = Counter(e["fault"] for e in journal if e["fault"])
    codes = Counter(e["code"] for e in journal if e["code"])
    print(f"faults injected: {dict(faults)}; error codes seen: {dict(codes)}; calls: {len(journal)}")
    assert faults and codes.get(40001) and codes.get(50000)
    assert len(sandbox.tasks()) == len(expected)   # drops on create did not make duplicates


def test_remote_failures_end_in_failed_with_an_error_file(tmp_path: Path, sandbox: Any) -> None:
    env = Env(tmp_path, sandbox)
    sandbox.update(fail_task_rate=1.0)
    env.drop("doomed.mp4", MEDIA / "portrait.mp4")
    env.drop("doomed.txt", "words")
    assert env.run_once() == 1
    error = json.loads((env.settings.folders.failed / "doomed.error.json").read_text(encoding="utf-8"))
    assert error["code"] == "task_failed" and error["remote_id"] and error["message"]
    sandbox.update(fail_task_rate=0.0, reject_file_rate=1.0)
    env.drop("rejected.mp4", MEDIA / "landscape.mov")
    env.drop("rejected.wav", MEDIA / "speech.wav")
    assert env.run_once() == 1
    error = json.loads((env.settings.folders.failed / "rejected.error.json").read_text(encoding="utf-8"))
    assert "98" in error["message"] or "rejected" in error["message"].lower() or "refused" in error["message"]


@pytest.mark.slow
def test_billing_pause_requeues_and_resumes_by_itself(tmp_path: Path, sandbox: Any) -> None:
    sandbox.update(balance_creates=1, balance_mode="refuse")
    env = Env(tmp_path, sandbox, retry={"billing_recheck_seconds": 0.5})
    expected = drop_jobs(env.inbox, 3)
    with Running(env):
        wait_for(lambda: env.ledger().get_value("billing_paused_until"), timeout=30, message="a billing pause")
        states = Counter(j.state for j in all_jobs(env.ledger()))
        assert "failed" not in states
        out = subprocess.run([sys.executable, "-m", "hotfolder", "status", "--config", str(env.config_path)],
                             capture_output=True, text=True, check=True).stdout
        assert "out of balance" in out
        import httpx

        httpx.post(f"{sandbox.base_url}/_sandbox/balance", json={"creates": None}, timeout=5)
        wait_for(lambda: all(j.state == "done" for j in all_jobs(env.ledger())) and len(all_jobs(env.ledger())) == 3,
                 timeout=60, message="jobs done after the top-up")
    assert_all_done(env, expected)


@pytest.mark.slow
def test_task_ending_30_for_balance_is_retried_not_failed(tmp_path: Path, sandbox: Any) -> None:
    sandbox.update(balance_creates=0, balance_mode="fail_task")
    env = Env(tmp_path, sandbox, retry={"billing_recheck_seconds": 0.5})
    expected = drop_jobs(env.inbox, 1)
    with Running(env):
        wait_for(lambda: any(e["kind"] == "billing_paused" for e in env.ledger().events(1)), timeout=30,
                 message="the job requeued for billing")
        import httpx

        httpx.post(f"{sandbox.base_url}/_sandbox/balance", json={"creates": None}, timeout=5)
        wait_for(lambda: env.ledger().get(1).state == "done", timeout=60, message="done after top-up")
    assert_all_done(env, expected)


@pytest.mark.slow
def test_sigterm_exits_0_within_10_s_and_the_job_resumes(tmp_path: Path, sandbox: Any) -> None:
    sandbox.update(generate_seconds=3.0)
    env = Env(tmp_path, sandbox)
    expected = drop_jobs(env.inbox, 3)
    log = tmp_path / "log"
    proc = subprocess.Popen([sys.executable, "-m", "hotfolder", "run", "--config", str(env.config_path)],
                            stdout=open(log, "wb"), stderr=subprocess.STDOUT)
    wait_for(lambda: env.settings.ledger_path.exists() and any(j.state == "generating" for j in all_jobs(env.ledger())),
             timeout=30, message="a task in flight")
    # A second daemon on the same ledger refuses to start.
    second = subprocess.run([sys.executable, "-m", "hotfolder", "run", "--config", str(env.config_path)],
                            capture_output=True, text=True, timeout=20)
    assert second.returncode == 1 and "already using the ledger" in second.stderr
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 0
    assert time.monotonic() - started < 10
    assert env.run_once() == 0
    assert_all_done(env, expected)


@pytest.mark.slow
def test_inbox_that_disappears_is_not_taken_as_empty(tmp_path: Path, sandbox: Any) -> None:
    env = Env(tmp_path, sandbox)
    env.drop("w.mp4", MEDIA / "portrait.mp4")
    with Running(env) as running:
        wait_for(lambda: "w.mp4" in env.jobs(), message="a waiting job")
        away = tmp_path / "unmounted"
        env.inbox.rename(away)
        renamed_at = time.time()
        # A scan that started after the inbox went away sets the next one a rescan period later.
        wait_for(lambda: running.daemon.next_rescan >= renamed_at + env.settings.watch.rescan_seconds, timeout=15,
                 message="a scan of the missing inbox")
        # It looked at the missing inbox and did nothing: an unmounted share is not an empty one.
        assert env.jobs()["w.mp4"].state == "waiting"
        away.rename(env.inbox)
        (env.inbox / "w.txt").write_text("back again")
        wait_for(lambda: env.jobs()["w.mp4"].state == "done", timeout=30, message="resumed after the inbox came back")
    assert not list(env.settings.folders.failed.glob("*"))


def test_symlink_is_never_followed(tmp_path: Path, sandbox: Any) -> None:
    env = Env(tmp_path, sandbox)
    outside = tmp_path / "secret.mp4"
    outside.write_bytes((MEDIA / "portrait.mp4").read_bytes())
    os.symlink(outside, env.inbox / "link.mp4")
    env.drop("link.txt", "hi")
    assert env.run_once() == 0
    assert "link.mp4" not in env.jobs() and outside.exists() and (env.inbox / "link.mp4").is_symlink()
