"""The notification worker against real receivers: loopback HTTP servers, real subprocesses, real
ledger files. Time that matters (backoff, the give-up deadline) comes from an injected clock;
everything else waits on conditions with deadlines, never on fixed sleeps.

The worker runs with a long periodic look (``look_every``), so a test passes only if the wake-ups
(the ledger's notice listener, ``wake()`` after moving the clock) and the deadlines really work.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import io
import json
import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from helpers import FakeClock, wait_for
from hotfolder import config, finish, outcomes
from hotfolder.config import Settings
from hotfolder.ledger import Ledger, notices
from hotfolder.log import configure
from hotfolder.notify import NOTIFY_BACKOFF, NotifyWorker, hook_environment, signature
from hotfolder.states import State

API_SECRET = "sk-live-0123456789abcdef"
WEBHOOK_SECRET = "whsec-super-secret-42"
LONG_LOOK = 30.0   # the periodic look is out of the way: wake-ups and deadlines must do the work
PAST_ANY_BACKOFF = NOTIFY_BACKOFF.cap + 1


# -- real receivers -----------------------------------------------------------------------------
class Receiver:
    """A loopback HTTP server recording every request; ``status`` decides the answer."""

    def __init__(self, port: int = 0, status: Callable[[dict[str, Any]], int] = lambda _req: 200,
                 answer: bytes = b"ok") -> None:
        self.requests: list[dict[str, Any]] = []
        self.status = status
        self.answer = answer
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                req = {"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()}, "body": body}
                with receiver._lock:
                    receiver.requests.append(req)
                code = receiver.status(req)
                self.send_response(code)
                self.send_header("Content-Length", str(len(receiver.answer)))
                self.end_headers()
                self.wfile.write(receiver.answer)

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       name="test-receiver")
        self.thread.start()

    def bodies(self) -> list[dict[str, Any]]:
        with self._lock:
            return [json.loads(r["body"]) for r in self.requests]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@contextlib.contextmanager
def receiver(port: int = 0, **kw: Any) -> Iterator[Receiver]:
    rec = Receiver(port, **kw)
    try:
        yield rec
    finally:
        rec.stop()


def free_port() -> int:
    """A loopback port nobody listens on (connection refused), free to bind later."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- settings, ledger, jobs, the worker ---------------------------------------------------------
def make_settings(root: Path, **notify: Any) -> Settings:
    data = {
        "api": {"app_id": "app-1", "secret_key": API_SECRET},
        "folders": {"inbox": "inbox", "outbox": "outbox", "archive": "archive", "failed": "failed"},
        "ledger": {"path": "state/ledger.db"},
        "notify": {"timeout_seconds": 5, **notify},
    }
    return config.from_mapping(data, base_dir=root, env={})


def end_job(ledger: Ledger, settings: Settings, name: str, kind: str = "done") -> int:
    """A job that reaches ``kind`` through the ledger's verbs, with its notification."""
    stem = name.rsplit(".", 1)[0]
    job_id = ledger.add_job(name=name, rel_dir="", stem=stem, state=State.DOWNLOADING,
                            files={"video": f"/in/{name}", "text": f"/in/{stem}.txt"}, inputs={}, params={})
    if kind == "done":
        job = ledger.advance(job_id, State.DOWNLOADING, State.DONE, notice=finish.job_notice(settings, "done"),
                             outputs={"video": f"/out/{stem}.mp4", "cover": f"/out/{stem}.jpg"}, duration_ms=4200)
    else:
        job = ledger.advance(job_id, State.DOWNLOADING, State.FAILED, notice=finish.job_notice(settings, "failed"),
                             error="the API refused the audio: too short", error_code="bad_input")
    assert job is not None
    return job_id


def rows(ledger: Ledger, target: str | None = None) -> list[dict[str, Any]]:
    """Every notification row (tests may read the ledger's tables directly)."""
    cur = ledger.conn.execute("SELECT * FROM notifications ORDER BY id")
    names = [d[0] for d in cur.description]
    found = [dict(zip(names, r)) for r in cur.fetchall()]
    return [r for r in found if target is None or r["target"] == target]


class Metrics:
    def __init__(self) -> None:
        self.delivered: list[str] = []
        self.given_up: list[str] = []

    def notification_delivered(self, target: str) -> None:
        self.delivered.append(target)

    def notification_given_up(self, target: str) -> None:
        self.given_up.append(target)


class Harness:
    """Workers on one ledger, each stopped and joined at the end of the test."""

    def __init__(self, tmp_path: Path, clock: FakeClock) -> None:
        self.path = tmp_path / "state" / "ledger.db"
        self.clock = clock
        self.ledger = Ledger(self.path, clock=clock)
        self.workers: list[tuple[NotifyWorker, threading.Event]] = []

    def start(self, settings: Settings, *, ledger: Ledger | None = None, look_every: float = LONG_LOOK,
              metrics: Metrics | None = None) -> NotifyWorker:
        stop = threading.Event()
        ledger = ledger or self.ledger
        worker = NotifyWorker(settings, ledger, stop, clock=self.clock, metrics=metrics, look_every=look_every)
        ledger.notice_listeners.append(worker.wake)
        worker.start()
        self.workers.append((worker, stop))
        return worker

    def stop(self, worker: NotifyWorker) -> None:
        for w, stop in self.workers:
            if w is worker:
                stop.set()
                assert w.join(5), "the worker did not stop"
                with contextlib.suppress(ValueError):
                    self.ledger.notice_listeners.remove(w.wake)

    def close(self) -> None:
        for worker, _stop in self.workers:
            self.stop(worker)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def harness(tmp_path: Path, clock: FakeClock) -> Iterator[Harness]:
    h = Harness(tmp_path, clock)
    try:
        yield h
    finally:
        h.close()


@pytest.fixture
def logs() -> io.StringIO:
    """Everything logged during the test, as JSON lines (fresh_structlog resets it after)."""
    buffer = io.StringIO()
    configure("debug", json_lines=True, stream=buffer)
    return buffer


def log_events(buffer: io.StringIO, name: str) -> list[dict[str, Any]]:
    return [e for e in (json.loads(line) for line in buffer.getvalue().splitlines() if line.strip())
            if e.get("event") == name]


def retry_now(harness: Harness, worker: NotifyWorker) -> None:
    """Move the clock past any backoff and tell the worker."""
    harness.clock.advance(PAST_ANY_BACKOFF)
    worker.wake()


# -- the exec hook: a small Python script ---------------------------------------------------------
HOOK = r'''
import json, os, subprocess, sys, time
mode, out = sys.argv[1], sys.argv[2]
data = sys.stdin.buffer.read().decode("utf-8")
if mode == "fail-until":
    if not os.path.exists(sys.argv[3]):
        print("first attempt output")
        print("receiver not ready yet", file=sys.stderr)
        sys.exit(1)
elif mode == "hang":
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    with open(out + ".pids", "w") as f:
        f.write(f"{os.getpid()} {child.pid}")
    time.sleep(60)
elif mode == "leak":
    print("about to fail: " + sys.argv[3], file=sys.stderr)
    sys.exit(3)
with open(out, "a", encoding="utf-8") as f:
    f.write(json.dumps({"stdin": data, "env": dict(os.environ)}) + "\n")
'''


@pytest.fixture
def hook(tmp_path: Path) -> Callable[..., list[str]]:
    script = tmp_path / "hook.py"
    script.write_text(HOOK, encoding="utf-8")

    def argv(mode: str, *extra: str) -> list[str]:
        return [sys.executable, str(script), mode, str(tmp_path / "hook.out"), *extra]
    return argv


def hook_calls(tmp_path: Path) -> list[dict[str, Any]]:
    out = tmp_path / "hook.out"
    if not out.exists():
        return []
    return [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]


def gone(pid: int) -> bool:
    """The process no longer runs (absent, or a zombie nobody reaped yet)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


# -- webhook -------------------------------------------------------------------------------------
def test_a_webhook_down_then_up_gets_every_event_in_order_and_signed(tmp_path: Path, harness: Harness) -> None:
    port = free_port()   # nobody listens: connection refused
    settings = make_settings(tmp_path, webhook=f"http://127.0.0.1:{port}/hook", webhook_secret=WEBHOOK_SECRET)
    worker = harness.start(settings)
    for name in ("a.mp4", "b.mp4"):
        end_job(harness.ledger, settings, name)
    end_job(harness.ledger, settings, "c.mp4", "failed")
    harness.ledger.record_notice(outcomes.account_notice(settings, "paused", "余额不足"))

    head = wait_for(lambda: [r for r in rows(harness.ledger) if r["attempts"] >= 1], 10,
                    message="a first attempt")[0]
    assert "ConnectError" in head["last_error"] and head["next_at"] > harness.clock()
    # Only the oldest is tried while its receiver fails: the others wait behind it, in order.
    assert [r["attempts"] for r in rows(harness.ledger)] == [1, 0, 0, 0]

    with receiver(port) as rec:
        retry_now(harness, worker)
        wait_for(lambda: all(r["delivered_at"] for r in rows(harness.ledger)), 10, message="every delivery")
        stored = rows(harness.ledger)
        firsts: list[str] = []
        for req in rec.requests:
            if req["headers"]["x-hotfolder-delivery"] not in firsts:
                firsts.append(req["headers"]["x-hotfolder-delivery"])
        assert firsts == [r["event_id"] for r in stored]   # each at least once, in order of creation
        by_id = {r["event_id"]: r for r in stored}
        for req in rec.requests:
            row = by_id[req["headers"]["x-hotfolder-delivery"]]
            assert req["body"] == row["body"].encode("utf-8")   # the exact recorded bytes
            expected = "sha256=" + hmac.new(WEBHOOK_SECRET.encode(), req["body"], hashlib.sha256).hexdigest()
            assert hmac.compare_digest(req["headers"]["x-hotfolder-signature"], expected)
            assert req["headers"]["content-type"] == "application/json"
            assert req["headers"]["x-hotfolder-event"] == row["kind"]
            assert req["path"] == "/hook"
        events = rec.bodies()
    assert [e["event"] for e in events][-4:] == ["done", "done", "failed", "paused"]
    done = events[-4]
    assert done["job"]["name"] == "a.mp4" and done["job"]["state"] == "done"
    assert done["job"]["outputs"]["video"] == "/out/a.mp4" and done["job"]["duration_ms"] == 4200
    assert events[-2]["job"]["error"] == "the API refused the audio: too short"
    assert events[-1]["reason"] == "余额不足" and "job" not in events[-1]
    assert notices.pending_count(harness.ledger) == 0


def test_a_non_2xx_answer_is_a_failed_attempt_and_a_reload_retries_at_the_new_url(
        tmp_path: Path, harness: Harness) -> None:
    with receiver(status=lambda _r: 503, answer=b"maintenance") as broken, receiver() as good:
        settings = make_settings(tmp_path, webhook=broken.url)
        worker = harness.start(settings)
        end_job(harness.ledger, settings, "a.mp4")
        row = wait_for(lambda: [r for r in rows(harness.ledger) if r["attempts"] >= 1], 10)[0]
        assert "HTTP 503" in row["last_error"] and "maintenance" in row["last_error"]
        assert row["delivered_at"] is None

        # No clock move: the changed target is tried again at once, at its new address.
        worker.reconfigure(make_settings(tmp_path, webhook=good.url))
        wait_for(lambda: rows(harness.ledger)[0]["delivered_at"], 10, message="delivery after reload")
        assert [b["job"]["name"] for b in good.bodies()] == ["a.mp4"]
        assert len(broken.requests) == 1


def test_a_dead_webhook_does_not_hold_up_the_exec_hook(tmp_path: Path, harness: Harness,
                                                       hook: Callable[..., list[str]]) -> None:
    settings = make_settings(tmp_path, webhook=f"http://127.0.0.1:{free_port()}/hook", exec=hook("record"))
    harness.start(settings)
    for name in ("a.mp4", "b.mp4", "c.mp4"):
        end_job(harness.ledger, settings, name)
    wait_for(lambda: all(r["delivered_at"] for r in rows(harness.ledger, "exec")), 10, message="exec deliveries")
    assert [json.loads(c["stdin"])["job"]["name"] for c in hook_calls(tmp_path)] == ["a.mp4", "b.mp4", "c.mp4"]
    assert not any(r["delivered_at"] for r in rows(harness.ledger, "webhook"))


def test_a_backlog_behind_a_dead_webhook_does_not_hide_newer_exec_rows(
        tmp_path: Path, harness: Harness, hook: Callable[..., list[str]], monkeypatch: pytest.MonkeyPatch) -> None:
    from hotfolder import notify

    monkeypatch.setattr(notify, "BATCH", 4)   # the backlog is bigger than one read of due rows
    dead = f"http://127.0.0.1:{free_port()}/hook"
    webhook_only = make_settings(tmp_path, webhook=dead)
    for n in range(6):   # the oldest rows: all for the dead webhook
        end_job(harness.ledger, webhook_only, f"old{n}.mp4")
    both = make_settings(tmp_path, webhook=dead, exec=hook("record"))
    end_job(harness.ledger, both, "new.mp4")
    harness.start(both)
    wait_for(lambda: rows(harness.ledger, "exec")[0]["delivered_at"], 10, message="the exec row behind the backlog")
    assert [json.loads(c["stdin"])["job"]["name"] for c in hook_calls(tmp_path)] == ["new.mp4"]
    assert [r["attempts"] for r in rows(harness.ledger, "webhook")] == [1, 0, 0, 0, 0, 0, 0]


# -- exec ------------------------------------------------------------------------------------------
def test_the_exec_hook_gets_the_event_on_stdin_and_a_clean_environment(
        tmp_path: Path, harness: Harness, hook: Callable[..., list[str]], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHANJING_SECRET_KEY", API_SECRET)
    monkeypatch.setenv("NOTIFY_SOCKET", "/run/systemd/notify")
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    monkeypatch.setenv("WATCHDOG_PID", "1")
    monkeypatch.setenv("MY_COPY_OF_THE_SECRET", f"Bearer {WEBHOOK_SECRET}")
    monkeypatch.setenv("HOTFOLDER_TEST_PLAIN", "kept")
    settings = make_settings(tmp_path, exec=hook("record"), webhook_secret=WEBHOOK_SECRET,
                             webhook="http://127.0.0.1:9/unused", events=["done", "failed"])
    harness.start(settings)
    end_job(harness.ledger, settings, "clip.mp4")
    end_job(harness.ledger, settings, "bad.mp4", "failed")
    wait_for(lambda: all(r["delivered_at"] for r in rows(harness.ledger, "exec")), 10, message="exec deliveries")

    done, failed = hook_calls(tmp_path)
    exec_rows = rows(harness.ledger, "exec")
    assert done["stdin"] == exec_rows[0]["body"]
    event = json.loads(done["stdin"])
    env = done["env"]
    assert env["HOTFOLDER_EVENT"] == "done" and env["HOTFOLDER_EVENT_ID"] == event["id"]
    assert env["HOTFOLDER_JOB_ID"] == str(event["job"]["id"]) and env["HOTFOLDER_JOB_NAME"] == "clip.mp4"
    assert env["HOTFOLDER_JOB_STATE"] == "done" and env["HOTFOLDER_OUTPUT"] == "/out/clip.mp4"
    assert env["HOTFOLDER_ERROR"] == "" and env["HOTFOLDER_REASON"] == ""
    assert env["HOTFOLDER_TEST_PLAIN"] == "kept" and env["PATH"] == os.environ["PATH"]
    for name in ("CHANJING_SECRET_KEY", "NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "MY_COPY_OF_THE_SECRET"):
        assert name not in env
    assert not any(API_SECRET in v or WEBHOOK_SECRET in v for v in env.values())

    assert failed["env"]["HOTFOLDER_EVENT"] == "failed" and failed["env"]["HOTFOLDER_OUTPUT"] == ""
    assert failed["env"]["HOTFOLDER_ERROR"] == "the API refused the audio: too short"


def test_a_failing_exec_hook_is_retried_and_succeeds_once_fixed(
        tmp_path: Path, harness: Harness, hook: Callable[..., list[str]], logs: io.StringIO) -> None:
    flag = tmp_path / "fixed"
    settings = make_settings(tmp_path, exec=hook("fail-until", str(flag)))
    worker = harness.start(settings)
    end_job(harness.ledger, settings, "clip.mp4")
    row = wait_for(lambda: [r for r in rows(harness.ledger) if r["attempts"] >= 1], 10)[0]
    assert "exited with status 1" in row["last_error"] and "receiver not ready yet" in row["last_error"]
    failed = wait_for(lambda: log_events(logs, "notification_failed"), 5)[0]
    assert failed["stderr"] == "receiver not ready yet" and failed["stdout"] == "first attempt output"
    assert failed["target"] == "exec" and failed["retry_in_s"] > 0

    flag.touch()
    retry_now(harness, worker)
    wait_for(lambda: rows(harness.ledger)[0]["delivered_at"], 10, message="delivery once fixed")
    assert rows(harness.ledger)[0]["attempts"] == 2
    assert len(hook_calls(tmp_path)) == 1


def test_a_hook_that_runs_too_long_is_killed_with_its_children(
        tmp_path: Path, harness: Harness, hook: Callable[..., list[str]]) -> None:
    settings = make_settings(tmp_path, exec=hook("hang"), timeout_seconds=1)
    harness.start(settings)
    started = time.monotonic()
    end_job(harness.ledger, settings, "clip.mp4")
    row = wait_for(lambda: [r for r in rows(harness.ledger) if r["attempts"] >= 1], 15)[0]
    assert time.monotonic() - started < 10
    assert "timed out after 1 s" in row["last_error"] and row["delivered_at"] is None
    hook_pid, child_pid = map(int, (tmp_path / "hook.out.pids").read_text().split())
    wait_for(lambda: gone(hook_pid) and gone(child_pid), 5, message="the hook's process group killed")


def test_a_missing_hook_program_is_a_failed_attempt_with_a_clear_message(tmp_path: Path, harness: Harness) -> None:
    settings = make_settings(tmp_path, exec=[str(tmp_path / "not-installed-yet"), "--flag"])
    harness.start(settings)
    end_job(harness.ledger, settings, "clip.mp4")
    row = wait_for(lambda: [r for r in rows(harness.ledger) if r["attempts"] >= 1], 10)[0]
    assert "not found" in row["last_error"] and "notify.exec" in row["last_error"]
    assert row["gave_up_at"] is None   # a person may install it: tried again until the deadline


def test_stop_cuts_a_delivery_short_and_it_stays_pending(
        tmp_path: Path, harness: Harness, hook: Callable[..., list[str]]) -> None:
    settings = make_settings(tmp_path, exec=hook("hang"), timeout_seconds=30)
    worker = harness.start(settings)
    end_job(harness.ledger, settings, "clip.mp4")
    pids = wait_for(lambda: (tmp_path / "hook.out.pids").exists() and (tmp_path / "hook.out.pids").read_text(), 10)
    stop = harness.workers[0][1]
    stopped_at = time.monotonic()
    stop.set()
    assert worker.join(2)
    assert time.monotonic() - stopped_at < 1.0
    row = rows(harness.ledger)[0]
    assert row["delivered_at"] is None and row["attempts"] == 0   # at least once: sent again at the next start
    for pid in map(int, pids.split()):
        wait_for(lambda pid=pid: gone(pid), 5, message="the interrupted hook killed")


# -- give-up, restarts, other processes --------------------------------------------------------------
def test_a_receiver_failing_past_the_deadline_is_given_up_with_a_log_line_and_a_metric(
        tmp_path: Path, harness: Harness, hook: Callable[..., list[str]], logs: io.StringIO) -> None:
    metrics = Metrics()
    settings = make_settings(tmp_path, webhook=f"http://127.0.0.1:{free_port()}/hook", exec=hook("record"),
                             give_up_hours=1)
    worker = harness.start(settings, metrics=metrics)
    end_job(harness.ledger, settings, "a.mp4")
    end_job(harness.ledger, settings, "b.mp4")
    wait_for(lambda: rows(harness.ledger, "webhook")[0]["attempts"] >= 1, 10, message="a webhook attempt")
    wait_for(lambda: metrics.delivered == ["exec", "exec"], 10, message="exec delivered")
    assert metrics.given_up == []

    harness.clock.advance(2 * 3600)
    worker.wake()
    wait_for(lambda: all(r["gave_up_at"] for r in rows(harness.ledger, "webhook")), 10, message="give-up")
    first, second = rows(harness.ledger, "webhook")
    assert first["attempts"] == 2 and "ConnectError" in first["last_error"]
    # The one behind it expired waiting: given up with it, without one more doomed attempt.
    assert second["attempts"] == 1 and "still failing" in second["last_error"]
    assert metrics.given_up == ["webhook", "webhook"]
    lines = wait_for(lambda: log_events(logs, "notification_given_up"), 5)
    assert [(e["target"], e["event_id"]) for e in lines] == [("webhook", first["event_id"]),
                                                             ("webhook", second["event_id"])]
    assert "ConnectError" in lines[0]["error"] and lines[0]["level"] == "error"
    assert notices.pending_count(harness.ledger) == 0


def test_a_restart_loses_nothing_and_keeps_the_order(tmp_path: Path, harness: Harness) -> None:
    port = free_port()
    settings = make_settings(tmp_path, webhook=f"http://127.0.0.1:{port}/hook")
    first = harness.start(settings)
    end_job(harness.ledger, settings, "a.mp4")
    wait_for(lambda: rows(harness.ledger)[0]["attempts"] >= 1, 10, message="a failed attempt")
    harness.stop(first)
    # Recorded while no worker runs (the daemon is down, or `hotfolder resume` in another process).
    end_job(harness.ledger, settings, "b.mp4")
    harness.ledger.record_notice(outcomes.account_notice(settings, "resumed", "a person said so"))

    with receiver(port) as rec:
        # A new process: its own ledger object on the same file. The head's backoff (in the
        # ledger) is honoured, and the newer rows, due already, wait behind it.
        second = harness.start(settings, ledger=Ledger(harness.path, clock=harness.clock))
        assert second.drain(10) == 3
        assert rec.requests == []
        retry_now(harness, second)
        wait_for(lambda: notices.pending_count(harness.ledger) == 0, 10, message="every delivery")
        kinds = [(b["event"], b.get("job", {}).get("name")) for b in rec.bodies()]
    assert kinds == [("done", "a.mp4"), ("done", "b.mp4"), ("resumed", None)]


def test_rows_recorded_by_another_process_are_found_by_the_periodic_look(tmp_path: Path, harness: Harness) -> None:
    with receiver() as rec:
        settings = make_settings(tmp_path, webhook=rec.url)
        worker = harness.start(settings, look_every=0.3)
        assert worker.drain(5) == 0
        other = Ledger(harness.path, clock=harness.clock)   # no listener: nobody wakes the worker
        other.record_notice(outcomes.account_notice(settings, "paused", "quota used up"))
        wait_for(lambda: rec.requests, 5, message="the periodic look")
        other.close()
        assert rec.bodies()[0]["reason"] == "quota used up"


def test_paused_and_resumed_reach_every_target_with_their_reason(
        tmp_path: Path, harness: Harness, hook: Callable[..., list[str]]) -> None:
    with receiver() as rec:
        settings = make_settings(tmp_path, webhook=rec.url, exec=hook("record"))
        worker = harness.start(settings)
        harness.ledger.record_notice(outcomes.account_notice(settings, "paused", "余额不足"),
                                     {outcomes.BILLING_KEY: str(harness.clock() + 600),
                                      outcomes.PAUSE_REASON_KEY: "余额不足"})
        harness.ledger.record_notice(outcomes.account_notice(settings, "resumed", "a create went through"),
                                     {outcomes.BILLING_KEY: None, outcomes.PAUSE_REASON_KEY: None})
        assert worker.drain(10) == 0
        assert [(b["event"], b["reason"]) for b in rec.bodies()] == [("paused", "余额不足"),
                                                                   ("resumed", "a create went through")]
        assert all("job" not in b for b in rec.bodies())
    calls = hook_calls(tmp_path)
    assert [c["env"]["HOTFOLDER_EVENT"] for c in calls] == ["paused", "resumed"]
    assert calls[0]["env"]["HOTFOLDER_REASON"] == "余额不足" and calls[0]["env"]["HOTFOLDER_JOB_ID"] == ""
    assert json.loads(calls[0]["stdin"])["reason"] == "余额不足"


# -- secrets ------------------------------------------------------------------------------------------
def test_no_secret_reaches_a_log_line_or_a_stored_error(
        tmp_path: Path, harness: Harness, hook: Callable[..., list[str]], logs: io.StringIO) -> None:
    path_token, query_token, password = "tok-ABCDEF123456", "qk-987654321xyz", "pa55word-xyz"
    apprise_token = "apprise-tok-XYZ123456789"
    secrets = [API_SECRET, WEBHOOK_SECRET, path_token, query_token, password, apprise_token]
    with receiver(status=lambda _r: 401, answer=f"bad token {path_token} / {query_token}".encode()) as rec:
        webhook = f"http://bob:{password}@127.0.0.1:{rec.port}/hooks/{path_token}?key={query_token}"
        settings = make_settings(tmp_path, webhook=webhook, webhook_secret=WEBHOOK_SECRET,
                                 exec=hook("leak", WEBHOOK_SECRET),
                                 apprise=[f"json://127.0.0.1:{free_port()}/{apprise_token}"])
        harness.start(settings)
        end_job(harness.ledger, settings, "clip.mp4")
        wait_for(lambda: all(r["attempts"] >= 1 for r in rows(harness.ledger)), 15, message="every target tried")
        assert rec.requests and rec.requests[0]["headers"]["x-hotfolder-signature"].startswith("sha256=")
    failures = wait_for(lambda: (f := log_events(logs, "notification_failed")) and len(f) >= 3 and f, 5)
    assert {f["target"] for f in failures} == {"webhook", "exec", "apprise"}
    text = logs.getvalue() + json.dumps([r["last_error"] for r in rows(harness.ledger)])
    for secret in secrets:
        assert secret not in text
    webhook_row = rows(harness.ledger, "webhook")[0]
    assert "HTTP 401" in webhook_row["last_error"] and f"127.0.0.1:{rec.port}" in webhook_row["last_error"]
    assert "about to fail: ***" in rows(harness.ledger, "exec")[0]["last_error"]


def test_hook_environment_and_signature_helpers() -> None:
    event = {"id": "e1", "event": "done", "job": {"id": 7, "name": "x/clip.mp4", "state": "done", "error": None,
                                                  "outputs": {"video": "/o/x/clip.mp4"}}}
    env = hook_environment(event, {"PATH": "/bin", "WATCHDOG_USEC": "1", "NOTIFY_SOCKET": "@x",
                                   "CHANJING_SECRET_KEY": "whatever"})
    assert env == {"PATH": "/bin", "HOTFOLDER_EVENT": "done", "HOTFOLDER_EVENT_ID": "e1", "HOTFOLDER_JOB_ID": "7",
                   "HOTFOLDER_JOB_NAME": "x/clip.mp4", "HOTFOLDER_JOB_STATE": "done",
                   "HOTFOLDER_OUTPUT": "/o/x/clip.mp4", "HOTFOLDER_ERROR": "", "HOTFOLDER_REASON": ""}
    body = b'{"id": "e1"}'
    assert signature("k3y!", body) == "sha256=" + hmac.new(b"k3y!", body, hashlib.sha256).hexdigest()


# -- apprise -----------------------------------------------------------------------------------------
def test_apprise_not_installed_logs_once_and_keeps_the_rows(
        tmp_path: Path, harness: Harness, logs: io.StringIO, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "apprise", None)   # `import apprise` raises ImportError
    settings = make_settings(tmp_path, apprise=["json://127.0.0.1:9/x"])
    worker = harness.start(settings)
    end_job(harness.ledger, settings, "a.mp4")
    wait_for(lambda: rows(harness.ledger)[0]["attempts"] >= 1, 10)
    retry_now(harness, worker)
    wait_for(lambda: rows(harness.ledger)[0]["attempts"] >= 2, 10, message="a second attempt")
    row = rows(harness.ledger)[0]
    assert "pip install 'hotfolder[apprise]'" in row["last_error"]
    assert row["delivered_at"] is None and row["gave_up_at"] is None
    missing = log_events(logs, "notify_apprise_missing")
    assert len(missing) == 1 and "hotfolder[apprise]" in missing[0]["hint"]


def test_apprise_urls_get_a_short_title_and_body(tmp_path: Path, harness: Harness) -> None:
    pytest.importorskip("apprise")
    with receiver() as rec:
        settings = make_settings(tmp_path, apprise=[f"json://127.0.0.1:{rec.port}/notify"])
        harness.start(settings)
        end_job(harness.ledger, settings, "clip.mp4")
        end_job(harness.ledger, settings, "bad.mp4", "failed")
        harness.ledger.record_notice(outcomes.account_notice(settings, "paused", "余额不足"))
        wait_for(lambda: notices.pending_count(harness.ledger) == 0, 15, message="apprise deliveries")
        got = [(b["title"], b["message"]) for b in rec.bodies()]
    assert got == [("hotfolder: clip.mp4 done", "/out/clip.mp4"),
                   ("hotfolder: bad.mp4 failed", "the API refused the audio: too short"),
                   ("hotfolder: paused", "余额不足")]
