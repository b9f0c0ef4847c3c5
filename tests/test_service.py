"""Where users run it, end to end: the daemon under a stand-in for systemd, a config reload, and an
inbox on a FUSE mount written from "another machine" (underneath the mount).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers import MEDIA, VOICE, all_jobs, wait_for, write_config
from hotfolder import config
from hotfolder.daemon import Daemon
from hotfolder.ledger import Ledger
from hotfolder.liveness import Liveness
from hotfolder.sdnotify import Notifier
from test_daemon import Env, Running
from test_sdnotify import NotifyListener, listener, short_dir  # noqa: F401 (fixtures)
from test_watcher import bindfs_mount  # noqa: F401 (a fixture)

OTHER_VOICE = "C-0a1b2c3d4e5f40718293a4b5c6d7e8f9"   # another of the sandbox's public voices


def _task_voice(sandbox: Any, remote_id: str) -> str:
    task = next(t for t in sandbox.tasks() if t["id"] == remote_id)
    return str(task["request"]["tts_config"]["audio_man_id"])


@pytest.mark.slow
def test_notify_protocol_reload_and_stop_in_a_real_daemon(tmp_path: Path, sandbox: Any,
                                                         listener: tuple[NotifyListener, str]) -> None:
    lst, address = listener
    cfg = write_config(tmp_path, sandbox.base_url)
    env = {**os.environ, "NOTIFY_SOCKET": address, "WATCHDOG_USEC": "600000"}
    inbox = tmp_path / "inbox"
    (inbox / "one.mp4").write_bytes((MEDIA / "portrait.mp4").read_bytes())
    (inbox / "one.txt").write_text("the first voice")
    proc = subprocess.Popen([sys.executable, "-m", "hotfolder", "run", "--config", str(cfg), "--log-json"],
                            stdout=subprocess.DEVNULL, stderr=open(tmp_path / "log", "wb"), env=env)
    try:
        ready = lst.wait_for(lambda m: m.fields.get("READY") == "1", "READY=1")
        assert ready.pid == proc.pid and "STATUS" in ready.fields
        lst.wait_for(lambda m: m.fields.get("WATCHDOG") == "1", "a first WATCHDOG=1")
        lst.wait_for(lambda m: m.fields.get("WATCHDOG") == "1", "a second WATCHDOG=1 (periodic)")
        lst.wait_for(lambda m: "1 done" in m.fields.get("STATUS", ""), "STATUS with the job done")
        first = all_jobs(Ledger(tmp_path / "state" / "ledger.db"))[0]
        assert _task_voice(sandbox, first.remote_id) == VOICE
        # An invalid config is refused, the old one stays.
        good = cfg.read_text()
        cfg.write_text(good.replace("settle_seconds = 0.3", "settle_seconds = -1"))
        proc.send_signal(signal.SIGHUP)
        reloading = lst.wait_for(lambda m: m.fields.get("RELOADING") == "1", "RELOADING=1")
        assert int(reloading.fields["MONOTONIC_USEC"]) > 0
        refused = lst.wait_for(lambda m: m.fields.get("READY") == "1", "READY=1 after a refused reload")
        assert "watch.settle_seconds" in refused.fields.get("STATUS", "")
        # A valid one applies to the next job.
        cfg.write_text(good.replace(VOICE, OTHER_VOICE))
        proc.send_signal(signal.SIGHUP)
        lst.wait_for(lambda m: m.fields.get("RELOADING") == "1", "RELOADING=1 (second)")
        lst.wait_for(lambda m: m.fields.get("READY") == "1", "READY=1 after the reload")
        (inbox / "two.mp4").write_bytes((MEDIA / "portrait.mp4").read_bytes())
        (inbox / "two.txt").write_text("the second voice")
        lst.wait_for(lambda m: "2 done" in m.fields.get("STATUS", ""), "the second job done")
        second = [j for j in all_jobs(Ledger(tmp_path / "state" / "ledger.db")) if j.name == "two.mp4"][0]
        assert _task_voice(sandbox, second.remote_id) == OTHER_VOICE
        proc.send_signal(signal.SIGTERM)
        lst.wait_for(lambda m: m.fields.get("STOPPING") == "1", "STOPPING=1")
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_dead_worker_stops_the_watchdog_pings(tmp_path: Path, sandbox: Any,
                                                listener: tuple[NotifyListener, str]) -> None:
    lst, address = listener
    env = Env(tmp_path, sandbox)
    notifier = Notifier({"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "300000"}, pid=os.getpid())
    running = Running(env)
    running.daemon = Daemon(env.settings, stop=running.stop, notifier=notifier, liveness=Liveness())
    with running:
        lst.wait_for(lambda m: m.fields.get("READY") == "1", "READY=1")
        lst.wait_for(lambda m: m.fields.get("WATCHDOG") == "1", "a watchdog ping")
        pool = running.daemon.pools["upload"]
        pool.jobs.put(None)   # one upload worker leaves its loop: a dead worker thread
        wait_for(lambda: sum(t.is_alive() for t in pool.threads) < len(pool.threads), message="a dead worker")
        lst.wait_for(lambda m: "died" in m.fields.get("STATUS", ""), "STATUS naming the dead worker")
        lst.drain()
        # A healthy daemon pings every 150 ms: a second of silence means the pings stopped.
        later = [lst.recv(0.25) for _ in range(4)]
        assert not [m for m in later if m is not None and m.fields.get("WATCHDOG") == "1"], later


@pytest.fixture
def share_env(tmp_path: Path, sandbox: Any, bindfs_mount: tuple[Path, Path]) -> Iterator[tuple[Env, Path]]:
    under, mnt = bindfs_mount
    root = tmp_path / "hf"
    root.mkdir()
    # The default watch settings (mode auto, poll_seconds 5) with a short settle time.
    env = Env(root, sandbox, folders={"inbox": str(mnt)}, watch={"settle_seconds": 1.0, "rescan_seconds": 3600})
    yield env, under


def test_a_pair_written_behind_a_fuse_inbox_is_taken_by_polling(share_env: tuple[Env, Path]) -> None:
    env, under = share_env
    assert env.settings.watch.mode == "auto" and env.settings.watch.poll_seconds == 5
    with Running(env) as running:
        wait_for(lambda: running.daemon.first_scan_done, message="the daemon started")
        # Written into the folder underneath: the FUSE mount sends no event for this.
        (under / "remote.mp4").write_bytes((MEDIA / "portrait.mp4").read_bytes())
        (under / "remote.txt").write_text("copied from a laptop")
        written = time.monotonic()
        wait_for(lambda: "remote.mp4" in {j.name for j in all_jobs(env.ledger())}, timeout=30,
                 message="the pair taken")
        taken = time.monotonic() - written
        assert taken <= env.settings.watch.settle_seconds + env.settings.watch.poll_seconds + 2, taken
        wait_for(lambda: (env.settings.folders.outbox / "remote.mp4").exists(), timeout=30, message="done")
    assert not (under / "remote.mp4").exists() and (env.settings.folders.archive / "remote.mp4").exists()


def test_a_local_inbox_uses_events(tmp_path: Path, sandbox: Any) -> None:
    env = Env(tmp_path, sandbox, watch={"settle_seconds": 0.5, "rescan_seconds": 3600})
    with Running(env) as running:
        wait_for(lambda: running.daemon.first_scan_done, message="the daemon started")
        time_written = time.monotonic()
        env.drop("local.mp4", MEDIA / "portrait.mp4")
        env.drop("local.txt", "on a local disk")
        wait_for(lambda: "local.mp4" in {j.name for j in all_jobs(env.ledger())}, timeout=10, message="taken")
        assert time.monotonic() - time_written < 0.5 + 2
        wait_for(lambda: (env.settings.folders.outbox / "local.mp4").exists(), timeout=30, message="done")
    log_settings = config.load(env.config_path, env={})
    assert log_settings.watch.mode == "auto"


def test_an_outbox_share_that_disappears_pauses_placement_and_loses_nothing(tmp_path: Path, sandbox: Any) -> None:
    env = Env(tmp_path, sandbox)
    sandbox.update(generate_seconds=1.5)
    env.drop("nas.mp4", MEDIA / "portrait.mp4")
    env.drop("nas.txt", "to a share that goes away")
    outbox = env.settings.folders.outbox
    away = tmp_path / "unmounted-outbox"
    with Running(env):
        wait_for(lambda: any(j.state == "generating" for j in all_jobs(env.ledger())), message="generating")
        outbox.rename(away)   # the share is unmounted while the task runs
        wait_for(lambda: any(e["to_state"] == "downloading" for e in env.ledger().events(1)), timeout=30,
                 message="the task done remotely")
        wait_for(lambda: env.ledger().get(1).next_attempt_at > 0, timeout=30, message="placement paused")
        assert not outbox.exists(), "the outbox must not be recreated under the mount point"
        assert env.ledger().get(1).state == "downloading"
        away.rename(outbox)   # mounted again
        from hotfolder import control

        control.resume(env.ledger(), env.settings)   # or wait for the retry: a person may hurry it
        wait_for(lambda: env.ledger().get(1).state == "done", timeout=30, message="done once it is back")
    assert (outbox / "nas.mp4").exists() and (env.settings.folders.archive / "nas.mp4").exists()
