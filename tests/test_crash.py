"""Crash safety: a daemon SIGKILLed mid-job resumes from the ledger and never pays twice."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers import FAST_SANDBOX, MEDIA, all_jobs, wait_for, write_config
from hotfolder import config
from hotfolder.ledger import Ledger
from hotfolder.states import ACTIVE, State

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


@pytest.mark.slow
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
        assert proc.poll() is None, "the daemon died by itself before the kill"
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


class CreateGate:
    """Holds the next create that reaches the sandbox until the test has killed the daemon that
    sent it, then lets the sandbox make the task (its answer is lost: a lost create) or drop the
    request unseen (nothing made). A hook on the emulator's request handler, not on hotfolder."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._armed: bool | None = None
        self.arrived = threading.Event()
        self.release = threading.Event()

    def arm(self, process: bool) -> None:
        with self._lock:
            self._armed = process
        self.arrived.clear()
        self.release.clear()

    def hook(self, original: Any) -> Any:
        gate = self

        def _api(handler: Any, endpoint: str, bucket: str | None, query: dict[str, str]) -> None:
            if endpoint == "create":
                with gate._lock:
                    process, gate._armed = gate._armed, None
                if process is not None:
                    gate.arrived.set()
                    gate.release.wait(timeout=90)
                    if not process:
                        handler._record("create", None, None, "drop", False, handler.app.clock())
                        handler.drop()
                        return
            original(handler, endpoint, bucket, query)

        return _api


def log_count(log: Path, event: str) -> int:
    return log.read_text(errors="replace").count(f'"{event}"') if log.exists() else 0


def last_event_id(ledger: Ledger) -> int:
    return ledger.conn.execute("SELECT COALESCE(MAX(id), 0) FROM events").fetchone()[0]


def done(ledger: Ledger) -> int:
    return ledger.count(State.DONE)


def unfinished(ledger: Ledger) -> int:
    return sum(n for state, n in ledger.counts().items() if state in ACTIVE)


@pytest.mark.slow
def test_chaos_kills_at_random_moments(tmp_path: Path, sandbox: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """20 jobs, 8 SIGKILLs at seeded moments, restarts; then everything is right, and every create
    whose answer a kill lost was adopted (never sent again), every one that never arrived reconciled.

    The moments: six kills after a seeded number of ledger events plus a seeded pause; two while a
    create is in the sandbox's hands (the sandbox then makes one of them and never sees the other).
    """
    rng = random.Random(20261124)
    # Slow requests widen the window in which a random kill lands between a create and its record.
    sandbox.update(seed=20261124, generate_seconds=1.0, slow_rate=0.3, slow_seconds=0.4)
    from hotfolder.sandbox.server import Handler

    gate = CreateGate()
    monkeypatch.setattr(Handler, "_api", gate.hook(Handler._api))
    path = write_config(tmp_path, sandbox.base_url, api={"secret_key": "overridden-by-env"})
    settings = config.load(path, env={})
    expected = drop_jobs(settings.folders.inbox, 20)
    log = tmp_path / "daemon.log"
    started = time.monotonic()
    held = dict(zip(sorted(rng.sample(range(1, 6), 2)), rng.sample([True, False], 2)))
    kills: list[dict[str, Any]] = []
    made_by_held: dict[str, int] = {}   # task id -> the job whose held create made it
    intent_of_unsent: list[int] = []
    try:
        for round_ in range(8):
            if round_ in held:
                gate.arm(process=held[round_])
            proc = start_daemon(path, log)
            try:
                wait_for(lambda: log_count(log, "daemon_start") > round_, timeout=30,
                         message=f"daemon {round_} to start")
                ledger = Ledger(settings.ledger_path)
                if round_ in held:
                    assert gate.arrived.wait(timeout=60), f"round {round_}: no create reached the sandbox"
                    [intent] = [j for j in ledger.jobs([State.SUBMITTING]) if j.create_intent_at is not None]
                else:
                    # k more events (or the work nearly done: the last kill must still find some).
                    base, k = last_event_id(ledger), rng.randint(3, 30)
                    wait_for(lambda: last_event_id(ledger) >= base + k or done(ledger) >= len(expected) - 4,
                             timeout=60, message=f"round {round_}: {k} more ledger events")
                    time.sleep(rng.uniform(0.0, 0.3))   # deliberate: the seeded moment between two events
                tasks_before = {t["id"] for t in sandbox.tasks()}
                kills.append({"round": round_, "alive": proc.poll() is None, "unfinished": unfinished(ledger),
                              "states": ledger.counts()})
            finally:
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=10)
            if round_ in held:
                gate.release.set()
                if held[round_]:
                    [task] = wait_for(lambda: [t["id"] for t in sandbox.tasks() if t["id"] not in tasks_before
                                               and t["request"]["video_file_id"] == intent.video_file_id],
                                      timeout=10, message="the held create to be made")
                    made_by_held[task] = intent.id
                else:
                    wait_for(lambda: any(e["endpoint"] == "create" and e["fault"] == "drop"
                                         for e in sandbox.journal()), timeout=10, message="the held create dropped")
                    intent_of_unsent.append(intent.id)
    finally:
        gate.release.set()
    # Every kill hit a live daemon in the middle of its work.
    assert len(kills) == 8 and all(k["alive"] and k["unfinished"] > 0 for k in kills), kills
    sandbox.update(slow_rate=0.0)
    final = start_daemon(path, log, "--once")
    assert final.wait(timeout=100) == 0, log.read_text()[-3000:]
    check_outputs(settings, sandbox, expected)   # one task per job: nothing was paid for twice
    assert time.monotonic() - started < 150
    assert SECRET not in log.read_text()
    ledger = Ledger(settings.ledger_path)
    history = {j.id: ledger.events(j.id) for j in all_jobs(ledger)}
    created = {e["detail"]["remote_id"] for evs in history.values() for e in evs if e["kind"] == "task_created"}
    adopted = {e["detail"]["remote_id"]: job_id for job_id, evs in history.items() for e in evs
               if e["kind"] == "task_adopted"}
    lost = {t["id"] for t in sandbox.tasks()} - created
    # Tasks whose create answer a kill lost: each adopted by the job that sent it, none sent again.
    assert len(made_by_held) == 1 and set(made_by_held) <= lost
    assert set(adopted) == lost, (adopted, lost)
    assert all(adopted[task] == job_id for task, job_id in made_by_held.items())
    for remote_id, job_id in adopted.items():
        assert ledger.get(job_id).remote_id == remote_id and ledger.get(job_id).state == State.DONE
    # The create the sandbox never saw: reconciled to "nothing", then sent once.
    [job_id] = intent_of_unsent
    kinds = [e["kind"] for e in history[job_id]]
    assert {"found": None} in [e["detail"] for e in history[job_id] if e["kind"] == "reconciled"]
    assert kinds.index("reconciled") < max(i for i, k in enumerate(kinds) if k in ("task_created", "task_adopted"))
