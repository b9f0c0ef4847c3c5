"""The listener over real loopback HTTP: health, metrics, callbacks, auth, binding, shutdown."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from structlog.testing import capture_logs

from helpers import FakeClock, free_port, wait_for, write_config
from hotfolder import callbacks, config
from hotfolder.chanjing import CallRecord
from hotfolder.config import Settings
from hotfolder.ledger import Ledger
from hotfolder.liveness import Liveness
from hotfolder.log import register_secret
from hotfolder.metrics import Metrics
from hotfolder.outcomes import BILLING_KEY, PAUSE_REASON_KEY
from hotfolder.server import MAX_CALLBACK_BYTES, Listener
from hotfolder.states import State
from hotfolder.trouble import TROUBLE_KEY

API_SECRET = "sk-api-SECRET-5f1c9a7e2b"
SERVER_TOKEN = "srv-token-SECRET-8d2e4c6a1f0b"
WEBHOOK_SECRET = "whsec-SECRET-3a9b7c"


@dataclass
class Env:
    """One started listener and everything it reads; every HTTP answer is kept for the secret check."""

    root: Path
    settings: Settings
    ledger: Ledger
    liveness: Liveness
    mono: FakeClock
    metrics: Metrics
    listener: Listener
    hints: list[str]
    answers: list[httpx.Response] = field(default_factory=list)
    client: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=10))

    def request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        assert self.listener.url
        response = self.client.request(method, self.listener.url + path, **kw)
        self.answers.append(response)
        return response

    def get(self, path: str, **kw: Any) -> httpx.Response:
        return self.request("GET", path, **kw)

    def post(self, path: str, **kw: Any) -> httpx.Response:
        return self.request("POST", path, **kw)

    def close(self) -> None:
        self.client.close()
        self.listener.stop()

    def secrets(self) -> list[str]:
        return [API_SECRET, SERVER_TOKEN, WEBHOOK_SECRET, callbacks.token(self.ledger)]


def make_settings(root: Path, listen: str) -> Settings:
    path = write_config(root, "http://127.0.0.1:9", api={"secret_key": API_SECRET},
                        server={"listen": listen, "token": SERVER_TOKEN},
                        notify={"webhook": "http://127.0.0.1:9/hook", "webhook_secret": WEBHOOK_SECRET})
    return config.load(path)


def start_env(root: Path, host: str = "127.0.0.1") -> Env:
    """A listener on a free port (a port the OS just gave back could be taken again in between:
    try a few)."""
    mono = FakeClock(1000.0)
    liveness = Liveness(clock=mono)
    liveness.register("main_loop", max_silence=90)
    for _ in range(5):
        settings = make_settings(root, f"{host}:{free_port(host)}")
        ledger = Ledger(settings.ledger_path)
        metrics = Metrics(ledger)
        ledger.listeners.append(metrics.on_transition)
        hints: list[str] = []
        listener = Listener(settings, ledger, liveness, metrics, hints.append)
        if listener.start():
            return Env(root, settings, ledger, liveness, mono, metrics, listener, hints)
    raise AssertionError("no free port found")


def assert_no_secret(env: Env) -> None:
    for response in env.answers:
        text = response.text + "\n".join(f"{k}: {v}" for k, v in response.headers.items())
        for secret in env.secrets():
            assert secret not in text, f"a secret leaked in {response.request.url.path}"


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    e = start_env(tmp_path)
    try:
        yield e
        assert_no_secret(e)
    finally:
        e.close()


@pytest.fixture
def public_env(tmp_path: Path) -> Iterator[Env]:
    """Bound on every interface (not loopback: auth applies), reached through 127.0.0.1."""
    e = start_env(tmp_path, host="0.0.0.0")
    try:
        yield e
        assert_no_secret(e)
    finally:
        e.close()


def new_job(ledger: Ledger, name: str, state: State = State.QUEUED) -> int:
    stem = name.rsplit(".", 1)[0]
    return ledger.add_job(name=name, rel_dir="", stem=stem, state=state, files={"video": f"/in/{name}"},
                          inputs={"video": {"size": 1}}, params={"text": "hi"})


# -- /healthz ------------------------------------------------------------------------------------

def test_healthz_ok_then_unhealthy_when_the_main_loop_stalls_then_ok_again(env: Env) -> None:
    new_job(env.ledger, "a.mp4")
    response = env.get("/healthz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok" and body["reasons"] == []
    assert body["jobs"] == {"queued": 1}
    assert body["version"] and body["uptime_s"] >= 0
    assert body["billing_paused"] is None and body["api_trouble"] is None

    env.mono.advance(91)   # the main loop has not beaten for longer than its allowance
    response = env.get("/healthz")
    assert response.status_code == 503
    assert response.json()["status"] == "unhealthy"
    assert any("main loop has not turned" in r for r in response.json()["reasons"])

    env.liveness.beat("main_loop")
    response = env.get("/healthz")
    assert response.status_code == 200 and response.json()["reasons"] == []


def test_healthz_with_a_real_clock_turns_unhealthy_within_seconds(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, f"127.0.0.1:{free_port()}")
    ledger = Ledger(settings.ledger_path)
    liveness = Liveness()
    liveness.register("main_loop", max_silence=0.3)
    listener = Listener(settings, ledger, liveness, Metrics(ledger), lambda _id: None)
    assert listener.start()
    try:
        url = f"{listener.url}/healthz"
        assert httpx.get(url).status_code == 200
        wait_for(lambda: httpx.get(url).status_code == 503, timeout=5, message="503 after the loop went silent")
        liveness.beat("main_loop")
        assert httpx.get(url).status_code == 200
    finally:
        listener.stop()


def test_healthz_unhealthy_when_a_worker_died(env: Env) -> None:
    worker = threading.Thread(target=lambda: None, name="hotfolder-upload-test")
    env.liveness.register_thread(worker)
    worker.start()
    worker.join()
    response = env.get("/healthz")
    assert response.status_code == 503
    assert "worker hotfolder-upload-test died" in response.json()["reasons"]


def test_healthz_unhealthy_while_the_inbox_is_missing(env: Env) -> None:
    inbox = env.settings.folders.inbox
    inbox.rmdir()
    response = env.get("/healthz")
    assert response.status_code == 503
    assert response.json()["reasons"] == [f"inbox {inbox} is missing"]
    inbox.mkdir()
    assert env.get("/healthz").status_code == 200


def test_healthz_unhealthy_when_the_ledger_file_is_gone(env: Env) -> None:
    path = env.ledger.path
    assert env.get("/healthz").status_code == 200
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    response = wait_for(lambda: (r := env.get("/healthz")).status_code == 503 and r, timeout=5,
                        message="503 once the ledger file is gone")
    assert any("ledger" in r and "gone" in r for r in response.json()["reasons"])
    assert not path.exists(), "the probe must never create the ledger file"


def test_billing_pause_and_api_trouble_are_reported_but_healthy(env: Env) -> None:
    env.ledger.set_value(BILLING_KEY, str(time.time() + 600))
    env.ledger.set_value(PAUSE_REASON_KEY, "余额不足 (insufficient balance)")
    env.ledger.set_value(TROUBLE_KEY, '{"kind": "unreachable", "message": "the API cannot be reached", '
                                      f'"since": {time.time()}}}')
    response = env.get("/healthz")
    assert response.status_code == 200
    body = response.json()
    assert body["billing_paused"]["reason"] == "余额不足 (insufficient balance)"
    assert body["billing_paused"]["until"]
    assert body["api_trouble"]["kind"] == "unreachable"


def test_head_and_wrong_methods(env: Env) -> None:
    assert env.request("HEAD", "/healthz").status_code == 200
    assert env.post("/healthz").status_code == 405
    assert env.get("/callback").status_code == 405
    assert env.get("/nowhere").status_code == 404
    assert "dashboard" in env.get("/").text


# -- /metrics ------------------------------------------------------------------------------------

def test_metrics_over_http_match_what_happened(env: Env) -> None:
    ledger = env.ledger
    a, b = new_job(ledger, "a.mp4"), new_job(ledger, "b.mp4")
    new_job(ledger, "c.mp4")
    new_job(ledger, "w.mp4", State.WAITING)
    for src, dst in [(State.QUEUED, State.UPLOADING), (State.UPLOADING, State.SUBMITTING),
                     (State.SUBMITTING, State.GENERATING)]:
        assert ledger.advance(a, src, dst)
    assert ledger.advance(b, State.QUEUED, State.FAILED, error="bad", error_code="bad_input")
    env.metrics.observe_call(CallRecord("detail", 0, 200, 0.12, None))
    env.metrics.observe_call(CallRecord("detail", None, None, 3.0, None))

    response = env.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    found = {(s.name, tuple(sorted(s.labels.items()))): s.value
             for family in text_string_to_metric_families(response.text) for s in family.samples}
    for state, n in ledger.counts().items():
        assert found[("hotfolder_jobs", (("state", state),))] == n
    assert found[("hotfolder_jobs", (("state", "done"),))] == 0
    assert found[("hotfolder_tasks_in_flight", ())] == 1
    assert found[("hotfolder_videos_waiting_for_sidecar", ())] == 1
    assert found[("hotfolder_job_failures_total", (("code", "bad_input"),))] == 1
    assert found[("hotfolder_job_transitions_total", (("from", "new"), ("to", "queued")))] == 3
    assert found[("hotfolder_api_requests_total", (("code", "0"), ("endpoint", "detail")))] == 1
    assert found[("hotfolder_api_requests_total", (("code", "none"), ("endpoint", "detail")))] == 1
    assert found[("hotfolder_ledger_readable", ())] == 1


# -- /callback -----------------------------------------------------------------------------------

def test_callback_needs_the_token(env: Env) -> None:
    token = callbacks.token(env.ledger)
    body = {"code": 0, "msg": "success", "data": {"id": "task-123", "status": 20}}
    with capture_logs() as logs:
        assert env.post("/callback", json=body).status_code == 403
        assert env.post("/callback", params={"token": "nope"}, json=body).status_code == 403
        assert env.post("/callback", params={"token": token + "x"}, json=body).status_code == 403
    assert env.hints == []
    assert all(token not in repr(line) for line in logs)

    response = env.post("/callback", params={"token": token}, json=body)
    assert response.status_code == 200 and response.json() == {"ok": True}
    assert env.hints == ["task-123"]
    # A duplicate, an unknown task and a bare task object are all fine: the poller decides.
    assert env.post("/callback", params={"token": token}, json=body).status_code == 200
    assert env.post("/callback", params={"token": token}, json={"id": "never-heard-of-it"}).status_code == 200
    assert env.hints == ["task-123", "task-123", "never-heard-of-it"]


def test_callback_without_any_token_recorded_is_refused(env: Env) -> None:
    """Before the first create there is no token at all: nothing can match."""
    assert env.ledger.get_value(callbacks.TOKEN_KEY) is None
    assert env.post("/callback", params={"token": ""}, json={"id": "x"}).status_code == 403
    assert env.post("/callback", params={"token": "None"}, json={"id": "x"}).status_code == 403
    assert env.hints == []


def test_callback_bodies_that_are_not_callbacks(env: Env) -> None:
    token = callbacks.token(env.ledger)
    params = {"token": token}
    assert env.post("/callback", params=params, json={"code": 0, "data": {}}).status_code == 400
    assert env.post("/callback", params=params, content=b"not json").status_code == 400
    assert env.post("/callback", params=params, json={"id": "x" * 500}).status_code == 400
    big = b'{"id": "t1", "pad": "' + b"x" * MAX_CALLBACK_BYTES + b'"}'
    assert env.post("/callback", params=params, content=big).status_code == 413

    def chunks() -> Iterator[bytes]:   # no Content-Length: the limit holds while streaming
        yield b'{"id": "t2", "pad": "'
        for _ in range(20):
            yield b"x" * 8192
        yield b'"}'
    assert env.post("/callback", params=params, content=chunks()).status_code == 413
    assert env.hints == []


# -- auth ------------------------------------------------------------------------------------------

def test_loopback_listener_needs_no_token(env: Env) -> None:
    assert env.settings.server.loopback
    assert env.get("/metrics").status_code == 200
    assert env.get("/").status_code == 200


def test_public_listener_needs_the_bearer_token(public_env: Env) -> None:
    env = public_env
    assert not env.settings.server.loopback
    assert env.listener.url and env.listener.url.startswith("http://127.0.0.1:")
    refused = env.get("/metrics")
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"].startswith("Bearer")
    assert env.get("/metrics", headers={"Authorization": "Bearer wrong-token-of-some-length"}).status_code == 401
    assert env.get("/metrics", headers={"Authorization": f"Basic {SERVER_TOKEN}"}).status_code == 401
    assert env.get("/metrics", headers={"Authorization": "Bearer"}).status_code == 401
    assert env.get("/", headers={}).status_code == 401
    assert env.get("/metrics/", headers={}).status_code == 401   # no way around it by spelling
    ok = env.get("/metrics", headers={"Authorization": f"Bearer {SERVER_TOKEN}"})
    assert ok.status_code == 200 and "hotfolder_jobs" in ok.text
    # Open to probes; the callback has its own token.
    assert env.get("/healthz").status_code == 200
    token = callbacks.token(env.ledger)
    assert env.post("/callback", params={"token": token}, json={"id": "t9"}).status_code == 200
    assert env.post("/callback", json={"id": "t9"}).status_code == 403
    assert env.hints == ["t9"]


# -- binding and lifecycle -------------------------------------------------------------------------

def test_a_port_already_taken_is_logged_and_start_returns_false(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        settings = make_settings(tmp_path, f"127.0.0.1:{port}")
        ledger = Ledger(settings.ledger_path)
        listener = Listener(settings, ledger, Liveness(), Metrics(ledger), lambda _id: None)
        with capture_logs() as logs:
            assert listener.start() is False
        listener.stop()   # harmless when it never started
    assert listener.url is None
    failed = [line for line in logs if line["event"] == "listener_failed"]
    assert len(failed) == 1
    assert failed[0]["listen"] == f"127.0.0.1:{port}"
    assert "already taken" in failed[0]["action"] and "[server] listen" in failed[0]["action"]
    assert "without" in failed[0]["consequence"]
    assert not [t for t in threading.enumerate() if t.name.startswith("hotfolder-listener")]


def test_an_address_not_on_this_machine_is_logged_and_start_returns_false(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, "192.0.2.1:8750")   # TEST-NET-1: never a local address
    ledger = Ledger(settings.ledger_path)
    listener = Listener(settings, ledger, Liveness(), Metrics(ledger), lambda _id: None)
    with capture_logs() as logs:
        assert listener.start() is False
    failed = [line for line in logs if line["event"] == "listener_failed"]
    assert failed and "not an address of this machine" in failed[0]["action"]


def test_listen_empty_turns_it_off(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, "127.0.0.1:8750")
    settings = replace(settings, server=replace(settings.server, listen=""))
    ledger = Ledger(settings.ledger_path)
    listener = Listener(settings, ledger, Liveness(), Metrics(ledger), lambda _id: None)
    assert listener.start() is False
    assert listener.url is None and listener.thread is None


def test_stop_is_quick_with_an_idle_keep_alive_connection(tmp_path: Path) -> None:
    env = start_env(tmp_path)
    threads = [t for t in threading.enumerate() if t.name.startswith("hotfolder-listener")]
    assert {t.name for t in threads} == {"hotfolder-listener", "hotfolder-listener-io"}
    with httpx.Client() as client:   # keeps its connection open between requests
        assert client.get(f"{env.listener.url}/healthz").status_code == 200
        assert client.get(f"{env.listener.url}/metrics").status_code == 200
        started = time.monotonic()
        env.listener.stop()
        took = time.monotonic() - started
    assert took < 3.0, f"stop took {took:.1f} s"
    assert not any(t.is_alive() for t in threads)
    assert env.listener.url is None
    env.listener.stop()   # twice is fine
    env.client.close()


def test_a_stopped_listener_frees_its_port(tmp_path: Path) -> None:
    env = start_env(tmp_path)
    listen = env.settings.server.listen
    env.close()
    again = Listener(env.settings, env.ledger, env.liveness, env.metrics, lambda _id: None)
    try:
        assert again.start(), f"{listen} still taken after stop()"
        assert httpx.get(f"{again.url}/healthz").status_code == 200
    finally:
        again.stop()


def test_no_secret_in_the_listener_logs(tmp_path: Path) -> None:
    register_secret(SERVER_TOKEN)
    with capture_logs() as logs:
        env = start_env(tmp_path, host="0.0.0.0")
        try:
            token = callbacks.token(env.ledger)
            env.get("/metrics")
            env.post("/callback", params={"token": "wrong"}, json={"id": "x"})
            env.post("/callback", params={"token": token}, json={"id": "x"})
        finally:
            env.close()
    assert logs, "the listener logs its start and stop"
    text = repr(logs)
    for secret in env.secrets():
        assert secret not in text
    assert_no_secret(env)


def test_a_crashing_endpoint_answers_500_is_logged_and_the_listener_goes_on(env: Env,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    register_secret(API_SECRET)

    def broken() -> tuple[bytes, str]:
        raise RuntimeError(f"render failed near {API_SECRET}")
    monkeypatch.setattr(env.metrics, "render", broken)
    with capture_logs() as logs:
        response = env.get("/metrics")
    assert response.status_code == 500
    assert API_SECRET not in response.text
    crashed = [line for line in logs if line["event"] == "listener_request_crashed"]
    assert len(crashed) == 1 and crashed[0]["exc_info"]
    assert env.get("/healthz").status_code == 200
