"""Telling people what happens, end to end: callbacks, webhooks across a kill, /healthz, /metrics.

A real daemon (in a thread or a subprocess), the sandbox over loopback HTTP, a real webhook
receiver, real ledger files. Waits are conditions with deadlines.
"""

from __future__ import annotations

import hashlib
import hmac
import http.server
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from helpers import MEDIA, all_jobs, free_port, wait_for
from test_daemon import Env, Running

SECRET = "whsec-observability-7d1e"


class Receiver:
    """A webhook receiver on a fixed loopback port that can be started late (down, then up)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.events: list[dict[str, Any]] = []
        self.bad_signatures = 0
        self._server: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self) -> None:
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
                if not hmac.compare_digest(expected, self.headers.get("X-Hotfolder-Signature", "")):
                    outer.bad_signatures += 1
                outer.events.append(json.loads(body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="test-receiver", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            assert self._thread is not None
            self._thread.join(timeout=5)


def _drop_pairs(env: Env, good: int, bad: int) -> None:
    for i in range(good):
        env.drop(f"ok{i}.mp4", MEDIA / "portrait.mp4")
        env.drop(f"ok{i}.txt", f"hello number {i}")
    for i in range(bad):
        env.drop(f"bad{i}.mp4", b"")   # an empty video: failed at intake, before any upload
        env.drop(f"bad{i}.txt", "never spoken")


def test_a_callback_finishes_a_job_long_before_the_next_poll(tmp_path: Path, sandbox: Any) -> None:
    port = free_port()
    sandbox.update(generate_seconds=2.0)
    env = Env(tmp_path, sandbox, watch={"poll_interval": 30},
              server={"listen": f"127.0.0.1:{port}"},
              api={"callback_url": f"http://127.0.0.1:{port}/callback"})
    env.drop("cb.mp4", MEDIA / "portrait.mp4")
    env.drop("cb.txt", "a callback, please")
    out = env.settings.folders.outbox / "cb.mp4"
    with Running(env):
        # The first poll happened right after the create (task still generating); the next one is
        # 30 s away (90 s with callbacks), so only the callback can explain a prompt result.
        callback = wait_for(lambda: [e for e in env.sandbox.journal() if e["endpoint"] == "callback"],
                            timeout=30, message="the sandbox's callback")[0]
        assert callback["http_status"] == 200, callback
        wait_for(out.exists, timeout=10, message="the output after the callback")
        assert time.time() - callback["time"] < 3.0
    details = [e for e in env.sandbox.journal() if e["endpoint"] == "detail"]
    assert details, "the callback was confirmed with detail before acting on it"
    # The token was sent with the callback URL but is never shown to a person.
    task = env.sandbox.tasks()[0]
    assert "token=" in task["request"]["callback"]
    token = task["request"]["callback"].split("token=")[1]
    status = subprocess.run([sys.executable, "-m", "hotfolder", "status", "--json", "--config",
                             str(env.config_path)], capture_output=True, text=True, check=True)
    assert token not in status.stdout and token not in status.stderr


def test_webhook_down_then_up_across_a_kill_gets_every_event_signed(tmp_path: Path, sandbox: Any) -> None:
    receiver = Receiver(free_port())   # nobody listens there yet: connection refused
    env = Env(tmp_path, sandbox, notify={"webhook": receiver.url, "webhook_secret": SECRET})
    _drop_pairs(env, good=3, bad=2)
    log = open(tmp_path / "daemon.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "hotfolder", "run", "--config", str(env.config_path),
                             "--log-json"], stdout=log, stderr=subprocess.STDOUT)
    try:
        def ended() -> bool:
            jobs = all_jobs(env.ledger())
            return len(jobs) == 5 and all(j.state in ("done", "failed") and not j.moves_pending for j in jobs)
        wait_for(ended, timeout=60, message="every job ended")
        pending = env.ledger().conn.execute(
            "SELECT COUNT(*) FROM notifications WHERE delivered_at IS NULL").fetchone()[0]
        assert pending == 5   # recorded with the transitions, none delivered: the receiver is down
        proc.send_signal(signal.SIGKILL)   # mid-delivery: the worker is retrying right now
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    receiver.start()
    try:
        with Running(env):
            wait_for(lambda: len({e["id"] for e in receiver.events}) == 5, timeout=30,
                     message="every event delivered after the restart")
    finally:
        receiver.stop()
    kinds = Counter(e["event"] for e in {e["id"]: e for e in receiver.events}.values())
    assert kinds == {"done": 3, "failed": 2}
    assert receiver.bad_signatures == 0
    done = [e for e in receiver.events if e["event"] == "done"]
    assert all(Path(e["job"]["outputs"]["video"]).exists() for e in done)
    assert all(e["job"]["error"] for e in receiver.events if e["event"] == "failed")


def test_healthz_turns_503_when_the_main_loop_stalls_and_back(tmp_path: Path, sandbox: Any) -> None:
    port = free_port()
    env = Env(tmp_path, sandbox, server={"listen": f"127.0.0.1:{port}"})
    stall = threading.Event()
    release = threading.Event()
    running = Running(env)
    running.daemon.loop_max_silence = 1.0
    original = running.daemon._dispatch

    def dispatch(now: float, wait_for_: list[float]) -> None:
        if stall.is_set():
            release.wait(30)   # a stuck main loop (a bug, a hung filesystem call)
        original(now, wait_for_)

    running.daemon._dispatch = dispatch  # type: ignore[method-assign]
    url = f"http://127.0.0.1:{port}/healthz"
    with running:
        wait_for(lambda: _get(url).status_code == 200, timeout=15, message="healthy at start")
        stall.set()
        answer = wait_for(lambda: (r := _get(url)).status_code == 503 and r, timeout=10, message="503 when stalled")
        assert any("main loop" in reason for reason in answer.json()["reasons"])
        stall.clear()
        release.set()
        wait_for(lambda: _get(url).status_code == 200, timeout=10, message="healthy again")


def _get(url: str) -> httpx.Response:
    try:
        return httpx.get(url, timeout=5)
    except httpx.HTTPError:
        return httpx.Response(599)


def test_metrics_job_counters_equal_status_after_a_mixed_run(tmp_path: Path, sandbox: Any) -> None:
    port = free_port()
    sandbox.update(error_rate=0.1, seed=7)
    env = Env(tmp_path, sandbox, server={"listen": f"127.0.0.1:{port}"})
    _drop_pairs(env, good=4, bad=2)
    with Running(env):
        def ended() -> bool:
            jobs = all_jobs(env.ledger())
            return len(jobs) == 6 and all(j.state in ("done", "failed") for j in jobs)
        wait_for(ended, timeout=60, message="a mixed run to end")
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    by_state = {s.labels["state"]: s.value for s in families["hotfolder_jobs"].samples}
    rows = json.loads(subprocess.run([sys.executable, "-m", "hotfolder", "status", "--json", "--config",
                                      str(env.config_path)], capture_output=True, text=True, check=True).stdout)
    expected = Counter(r["state"] for r in rows)
    assert {k: v for k, v in by_state.items() if v} == dict(expected) == {"done": 4, "failed": 2}
    failures = {s.labels["code"]: s.value for s in families["hotfolder_job_failures"].samples
                if s.name.endswith("_total")}
    assert failures == {"bad_input": 2}
    requests = {(s.labels["endpoint"], s.labels["code"]): s.value
                for s in families["hotfolder_api_requests"].samples if s.name.endswith("_total")}
    creates = [e for e in env.sandbox.journal() if e["endpoint"] == "create" and e["code"] == 0]
    assert requests[("create", "0")] == len(creates) == 4
    assert sum(v for (endpoint, code), v in requests.items() if code == "50000") == \
        len([e for e in env.sandbox.journal() if e["code"] == 50000])
    assert "sandbox" not in text.replace("hotfolder_", "")   # no secret (the sandbox's key) in the metrics
    seconds = [s.value for s in families["hotfolder_video_produced_seconds"].samples if s.name.endswith("_total")]
    assert seconds and seconds[0] > 0
