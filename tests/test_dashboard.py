"""The dashboard over real loopback HTTP, against a real daemon and the sandbox: pages, live data,
actions (the CLI's library calls), uploads, output files, login, CSRF, DNS rebinding, secrets.

What a browser does with the pages is in test_dashboard_browser.py (headless Chromium).
"""

from __future__ import annotations

import re
import threading
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from helpers import EXAMPLES, MEDIA, all_jobs, free_port, wait_for
from hotfolder import callbacks
from hotfolder.intake import list_inbox
from hotfolder.ledger import Ledger
from hotfolder.liveness import Liveness
from hotfolder.log import register_secret
from hotfolder.metrics import Metrics
from hotfolder.outcomes import BILLING_KEY, PAUSE_REASON_KEY
from hotfolder.server import Listener
from hotfolder.states import State
from hotfolder.web import auth, upload
from test_daemon import Env, Running

API_SECRET = "sk-dash-SECRET-77c1e0a9"
SERVER_TOKEN = "srv-dash-SECRET-2b8f5d1c9e"
WEBHOOK_SECRET = "whsec-dash-SECRET-4e2a"
SCRIPT = "大家好，欢迎收看。Hello from the dashboard."


# -- the environment -------------------------------------------------------------------------------
def make_env(root: Path, sandbox: Any, host: str = "127.0.0.1", **sections: Any) -> Env:
    """A hotfolder with the listener on a free port, two presets and secrets to look for."""
    return Env(root, sandbox, **{
        "api": {"base_url": sandbox.base_url, "app_id": "sandbox", "secret_key": "sandbox"},
        "server": {"listen": f"{host}:{free_port(host)}", "token": SERVER_TOKEN},
        "notify": {"webhook_secret": WEBHOOK_SECRET},
        "presets.promo": {"speed": 1.1},
        "presets.training": {"volume": 80},
        **sections,
    })


class Dash:
    """An HTTP client on the running daemon's listener that keeps every answer (for the secret
    check) and knows the page's CSRF token."""

    def __init__(self, url: str, ledger: Ledger, **client: Any) -> None:
        self.url = url
        self.ledger = ledger
        self.client = httpx.Client(base_url=url, timeout=20, **client)
        self.answers: list[httpx.Response] = []

    def request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        response = self.client.request(method, path, **kw)
        self.answers.append(response)
        return response

    def get(self, path: str, **kw: Any) -> httpx.Response:
        return self.request("GET", path, **kw)

    def post(self, path: str, **kw: Any) -> httpx.Response:
        return self.request("POST", path, **kw)

    def csrf(self) -> str:
        return str(self.get("/api/queue").json()["csrf"])

    def act(self, path: str) -> httpx.Response:
        return self.post(path, headers={"X-CSRF-Token": self.csrf()})

    def queue(self, **params: Any) -> dict[str, Any]:
        response = self.get("/api/queue", params=params)
        assert response.status_code == 200, response.text
        return response.json()

    def job(self, name: str) -> dict[str, Any] | None:
        data = self.queue()
        found = [j for j in data["unfinished"] + data["finished"] if j["name"] == name]
        return found[0] if found else None

    def upload(self, video: tuple[str, bytes] | None, driver: tuple[str, bytes] | None = None,
               preset: str = "", script: str | None = None, csrf: str | None = None,
               header: bool = True) -> httpx.Response:
        token = self.csrf() if csrf is None else csrf
        data = {"csrf": token, "preset": preset}
        if script is not None:
            data["script"] = script
        files = []
        if video is not None:
            files.append(("video", (video[0], video[1], "video/mp4")))
        if driver is not None:
            files.append(("driver", (driver[0], driver[1], "application/octet-stream")))
        headers = {"X-CSRF-Token": token} if header else {}
        return self.post("/upload", data=data, files=files, headers=headers)

    def close(self) -> None:
        self.client.close()

    def assert_no_secret(self) -> None:
        secrets = [API_SECRET, SERVER_TOKEN, WEBHOOK_SECRET, callbacks.token(self.ledger)]
        for response in self.answers:
            text = response.text + "\n".join(f"{k}: {v}" for k, v in response.headers.items())
            for secret in secrets:
                assert secret not in text, f"a secret leaked in {response.request.url.path}"


class Daemon:
    """A running daemon (Running) with its dashboard client."""

    def __init__(self, env: Env) -> None:
        self.env = env
        self.running = Running(env)

    def __enter__(self) -> Dash:
        self.running.__enter__()
        listener = wait_for(lambda: self.running.daemon.listener, timeout=10, message="the listener")
        assert listener.url
        self.dash = Dash(listener.url, self.env.ledger())
        return self.dash

    def __exit__(self, *exc: object) -> None:
        self.dash.close()
        self.running.__exit__(*exc)


@pytest.fixture
def env(tmp_path: Path, sandbox: Any) -> Env:
    return make_env(tmp_path, sandbox)


def state_of(dash: Dash, name: str) -> str | None:
    job = dash.job(name)
    return job["state"] if job else None


# -- pages and live data ---------------------------------------------------------------------------
def test_a_pair_moves_to_done_and_its_outputs_are_served(env: Env) -> None:
    with Daemon(env) as dash:
        page = dash.get("/")
        assert page.status_code == 200 and "hotfolder dashboard" in page.text
        assert "default-src 'self'" in page.headers["content-security-policy"]
        assert page.headers["x-frame-options"] == "DENY"
        # Every asset the page names is served by the daemon itself: nothing from elsewhere.
        assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
        assert assets and all(a.startswith(("/", "?", "#")) for a in assets), assets
        for asset in (a for a in assets if a.startswith("/static/")):
            assert dash.get(asset).status_code == 200, asset

        env.drop("promo/launch.mp4", EXAMPLES / "presenter.mp4")
        env.drop("promo/launch.txt", SCRIPT)
        job = wait_for(lambda: dash.job("promo/launch.mp4"), timeout=30, message="the job in the queue")
        assert job["preset"] == "promo" and job["folder"] == "promo" and job["file"] == "launch.mp4"
        wait_for(lambda: state_of(dash, "promo/launch.mp4") == "done", timeout=60, message="done")
        done = dash.job("promo/launch.mp4")
        assert done is not None and done["progress"] == 100 and done["remote_id"]
        assert done["links"] == {"page": f"/jobs/{done['id']}", "video": f"/files/{done['id']}/video",
                                 "cover": f"/files/{done['id']}/cover"}

        video = dash.get(done["links"]["video"], params={"download": 1})
        assert video.status_code == 200 and video.headers["content-type"] == "video/mp4"
        assert video.content == (env.settings.folders.outbox / "promo" / "launch.mp4").read_bytes()
        assert video.headers["content-disposition"].startswith("attachment;")
        cover = dash.get(done["links"]["cover"])
        assert cover.status_code == 200 and cover.content[:2] == b"\xff\xd8"
        assert cover.headers["content-disposition"].startswith("inline;")
        part = dash.get(done["links"]["video"], headers={"Range": "bytes=10-19"})
        assert part.status_code == 206 and part.content == video.content[10:20]
        assert part.headers["content-range"] == f"bytes 10-19/{len(video.content)}"
        assert dash.get(done["links"]["video"], headers={"Range": f"bytes={len(video.content)}-"}).status_code == 416

        detail = dash.get(f"/api/jobs/{done['id']}").json()
        kinds = [e["kind"] for e in detail["events"]]
        assert "task_created" in kinds and kinds[-1] == "inputs_moved" and "done" in kinds
        assert detail["params"]["speed"] == "1.1" and detail["params"]["voice"] and detail["params"]["script"].startswith(f"{len(SCRIPT)} characters")
        assert detail["inputs"]["video"] == "archive/promo/launch.mp4"
        page = dash.get(f"/jobs/{done['id']}")
        assert page.status_code == 200 and "launch.mp4" in page.text
        assert dash.get("/jobs/99999").status_code == 404
        stats = dash.get("/api/stats").json()
        assert stats["totals"]["done"] == 1 and stats["video_seconds"] >= 0
        dash.assert_no_secret()


def test_queue_pages_and_filters_ended_jobs_with_bounded_reads(tmp_path: Path, sandbox: Any) -> None:
    env = make_env(tmp_path, sandbox)
    ledger = env.ledger()
    for i in range(45):
        job = ledger.add_job(name=f"old/c{i:02d}.mp4", rel_dir="old", stem=f"c{i:02d}", state=State.QUEUED,
                             files={"video": f"/x/c{i}.mp4", "text": f"/x/c{i}.txt"}, inputs={}, params={"text": "hi"})
        ledger.advance(job, State.QUEUED, State.FAILED if i % 3 == 0 else State.CANCELLED,
                       error="it broke", error_code="task_failed" if i % 3 == 0 else "cancelled")
    with Daemon(env) as dash:
        first = dash.queue()
        assert len(first["finished"]) == 20 and first["has_more"] and first["finished_total"] == 45
        assert [j["name"] for j in first["finished"]][:2] == ["old/c44.mp4", "old/c43.mp4"]   # newest first
        last = dash.queue(page=2)
        assert len(last["finished"]) == 5 and not last["has_more"]
        failed = dash.queue(show="failed")
        assert failed["finished_total"] == 15 and {j["state"] for j in failed["finished"]} == {"failed"}
        assert all(j["hint"] and j["error"] == "it broke" and j["can_retry"] for j in failed["finished"])
        assert dash.queue(show="nonsense")["show"] == "all"
        # Nothing changed: the poll costs a 304 and no body.
        response = dash.get("/api/queue")
        again = dash.get("/api/queue", headers={"If-None-Match": response.headers["etag"]})
        assert again.status_code == 304 and again.content == b""


def test_retry_and_cancel_are_the_cli_s_library_calls(env: Env) -> None:
    env.sandbox.update(fail_task_rate=1.0)
    with Daemon(env) as dash:
        env.drop("clip.mp4", MEDIA / "portrait.mp4")
        env.drop("clip.txt", SCRIPT)
        wait_for(lambda: state_of(dash, "clip.mp4") == "failed", timeout=60, message="failed")
        failed = dash.job("clip.mp4")
        assert failed is not None and failed["error"] and failed["error_code"] and failed["hint"]
        # The inputs move to failed/ just after the job ends; a retry waits for that (as the CLI's).
        wait_for(lambda: (env.settings.folders.failed / "clip.error.json").exists(), timeout=10,
                 message="the inputs moved")
        job_id = failed["id"]

        refused = dash.post(f"/api/jobs/{job_id}/retry")
        assert refused.status_code == 403 and refused.json()["error"] == "csrf"
        assert dash.post(f"/api/jobs/{job_id}/retry", headers={"X-CSRF-Token": "0" * 40}).status_code == 403
        assert state_of(dash, "clip.mp4") == "failed"

        env.sandbox.update(fail_task_rate=0.0)
        retried = dash.act(f"/api/jobs/{job_id}/retry")
        assert retried.status_code == 200 and retried.json()["job"]["state"] == "queued"
        wait_for(lambda: state_of(dash, "clip.mp4") == "done", timeout=60, message="done after the retry")
        again = dash.act(f"/api/jobs/{job_id}/retry")
        assert again.status_code == 409 and "only failed or cancelled" in again.json()["error"]

        env.drop("lonely.mp4", MEDIA / "portrait.mp4")   # no script: it waits
        wait_for(lambda: state_of(dash, "lonely.mp4") == "waiting", timeout=30, message="waiting")
        waiting = dash.job("lonely.mp4")
        assert waiting is not None and waiting["can_cancel"]
        cancelled = dash.act(f"/api/jobs/{waiting['id']}/cancel")
        assert cancelled.status_code == 200 and cancelled.json()["job"]["state"] == "cancelled"
        assert (env.settings.folders.failed / "lonely.mp4").exists()
        assert dash.act(f"/api/jobs/{waiting['id']}/cancel").status_code == 409
        assert dash.act("/api/jobs/424242/retry").status_code == 409
        dash.assert_no_secret()


def test_billing_pause_banner_and_resume(env: Env) -> None:
    with Daemon(env) as dash:
        ledger = env.ledger()
        assert dash.queue()["pause"] is None
        until = time.time() + 600
        ledger.set_value(BILLING_KEY, str(until))
        ledger.set_value(PAUSE_REASON_KEY, "余额不足 (insufficient balance)")
        pause = dash.queue()["pause"]
        assert pause["reason"] == "余额不足 (insufficient balance)" and pause["until"].startswith(
            time.strftime("%Y-%m-%dT", time.gmtime(until)))
        resumed = dash.act("/api/resume")
        assert resumed.status_code == 200 and resumed.json()["was_paused"] is True
        assert dash.queue()["pause"] is None


# -- uploads ---------------------------------------------------------------------------------------
def test_upload_lands_a_pair_in_a_preset_folder_and_becomes_a_job(env: Env) -> None:
    video = (EXAMPLES / "presenter.mp4").read_bytes()
    with Daemon(env) as dash:
        response = dash.upload(("Spring Launch.mp4", video), ("script.txt", SCRIPT.encode()), preset="promo")
        assert response.status_code == 200, response.text
        body = response.json()
        assert body == {"ok": True, "video": "promo/Spring Launch.mp4", "driver": "promo/Spring Launch.txt",
                        "renamed": False, "preset": "promo", "bytes": len(video) + len(SCRIPT.encode())}
        wait_for(lambda: state_of(dash, "promo/Spring Launch.mp4") == "done", timeout=60, message="done")
        archive = env.settings.folders.archive / "promo"
        assert (archive / "Spring Launch.mp4").read_bytes() == video
        assert (archive / "Spring Launch.txt").read_text(encoding="utf-8").strip() == SCRIPT
        task = env.sandbox.tasks()[0]["request"]
        assert task["tts_config"]["text"] == [SCRIPT] and task["tts_config"]["speed"] == 1.1   # the preset's

        # A typed script, an audio driver, and names that are taken or unsafe.
        env.drop("training/intro.txt", "a stray script nobody paired yet")
        typed = dash.upload(("intro.mp4", video), preset="training", script="  Welcome aboard!\r\n ")
        assert typed.status_code == 200, typed.text
        assert typed.json()["video"] == "training/intro-2.mp4" and typed.json()["renamed"] is True
        assert (env.inbox / "training" / "intro.txt").read_text() == "a stray script nobody paired yet"
        audio = dash.upload(("../../etc/.evil<1>.mp4", video), ("voice.WAV", (MEDIA / "speech.wav").read_bytes()))
        assert audio.status_code == 200, audio.text
        assert audio.json()["video"] == "evil_1_.mp4" and audio.json()["driver"] == "evil_1_.WAV"
        wait_for(lambda: state_of(dash, "training/intro-2.mp4") == "done" and state_of(dash, "evil_1_.mp4") == "done",
                 timeout=60, message="both done")
        sent = [t["request"] for t in env.sandbox.tasks()]
        assert any(t.get("tts_config", {}).get("text") == ["Welcome aboard!"] for t in sent)
        dash.assert_no_secret()


def test_upload_refusals_leave_nothing_behind(env: Env) -> None:
    video = (MEDIA / "portrait.mp4").read_bytes()
    with Daemon(env) as dash:
        cases = [
            (dict(video=("clip.mp4", video), driver=("clip.txt", b"hi"), preset="nope"), 400, "unknown preset"),
            (dict(video=("clip.mp4", video), driver=("clip.txt", b"hi"), preset="../failed"), 400, "unknown preset"),
            (dict(video=("clip.mkv", video), driver=("clip.txt", b"hi")), 400, "ffmpeg"),
            (dict(video=("clip.mp4", video), driver=("clip.ogg", b"OggS")), 400, "does not take"),
            (dict(video=("clip.mp4", video)), 400, "no script or audio"),
            (dict(video=None, driver=("clip.txt", b"hi")), 400, "no video"),
            (dict(video=("clip.mp4", video), script="   "), 400, "no script or audio"),
            (dict(video=("clip.mp4", video), driver=("clip.txt", b"hi"), script="and this"), 400, "either"),
            (dict(video=("clip.mp4", b""), driver=("clip.txt", b"hi")), 400, "empty"),
            (dict(video=("~$lock.mp4", video), driver=("clip.txt", b"hi")), 400, "Office lock"),
            (dict(video=("clip.mp4", video), script="x" * 4001), 400, "at most 4000"),
            (dict(video=("clip.mp4", video), driver=("clip.txt", b"hi"), csrf="f" * 40, header=False), 403, "expired"),
        ]
        for kwargs, status, words in cases:
            response = dash.upload(**kwargs)
            assert response.status_code == status, (kwargs.get("video"), response.text)
            assert words in response.json()["error"], response.json()
        assert list_inbox(env.inbox) == [] and not list(env.inbox.rglob(".hotfolder-upload-*"))
        # The token in the form alone (a form sent without the script) is enough.
        fine = dash.upload(("clip.mp4", video), ("clip.txt", b"hello"), header=False)
        assert fine.status_code == 200, fine.text
        # Fields out of order: a file before the preset could land in the wrong folder.
        token = dash.csrf()
        late = dash.post("/upload", headers={"X-CSRF-Token": token}, files=[
            ("video", ("late.mp4", video, "video/mp4")), ("preset", (None, "promo")), ("driver", ("late.txt", b"x"))])
        assert late.status_code == 400 and "before the files" in late.json()["error"]
        assert dash.post("/upload", headers={"X-CSRF-Token": token}, content=b"x").status_code == 415
        assert not list(env.inbox.rglob(".hotfolder-upload-*")) and not (env.inbox / "late.mp4").exists()


def multipart(boundary: str, fields: dict[str, str], files: list[tuple[str, str, Iterator[bytes]]]) -> Iterator[bytes]:
    for name, value in fields.items():
        yield (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n").encode()
    for name, filename, chunks in files:
        yield (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{filename}\"\r\n"
               "Content-Type: application/octet-stream\r\n\r\n").encode()
        yield from chunks
        yield b"\r\n"
    yield f"--{boundary}--\r\n".encode()


def test_an_upload_streams_to_a_hidden_temp_and_appears_whole(tmp_path: Path, sandbox: Any) -> None:
    """Intake never sees half a file: while the body is still arriving, only a hidden temp exists,
    and the pair appears under its final names at once, complete. Memory stays flat."""
    env = make_env(tmp_path, sandbox, watch={"settle_seconds": 60})   # nothing is taken during the test
    head = (MEDIA / "portrait.mp4").read_bytes()
    block = bytes(range(256)) * 4096      # 1 MiB
    total_mib = 48
    seen: dict[str, Any] = {}

    def video_chunks() -> Iterator[bytes]:
        yield head
        for i in range(total_mib):
            yield block
            if i == total_mib // 2:
                # Half sent: the server is writing it, under a hidden name only.
                temps = wait_for(lambda: list(env.inbox.rglob(".hotfolder-upload-*-video")), timeout=10,
                                 message="the staged temp")
                wait_for(lambda: temps[0].stat().st_size >= 8 << 20, timeout=10, message="bytes on disk")
                seen["listing"] = list_inbox(env.inbox)
                seen["temps"] = [t.name for t in temps]

    with Daemon(env) as dash:
        token = dash.csrf()
        boundary = "hotfolder-test-boundary"
        tracemalloc.start()
        try:
            response = dash.post("/upload", headers={"X-CSRF-Token": token,
                                                     "Content-Type": f"multipart/form-data; boundary={boundary}"},
                                 content=multipart(boundary, {"csrf": token, "preset": "training"},
                                                   [("video", "big.mp4", video_chunks()),
                                                    ("driver", "big.txt", iter([SCRIPT.encode()]))]))
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert response.status_code == 200, response.text
        assert seen["listing"] == [] and seen["temps"][0].startswith(".hotfolder-upload-")
        final = env.inbox / "training" / "big.mp4"
        assert final.stat().st_size == len(head) + total_mib * len(block)
        assert (env.inbox / "training" / "big.txt").read_text(encoding="utf-8").strip() == SCRIPT
        assert not list(env.inbox.rglob(".hotfolder-upload-*"))
        assert peak < 12 << 20, f"{peak / 2**20:.1f} MiB held for a {total_mib} MiB upload"


def test_a_cut_off_upload_leaves_nothing(tmp_path: Path, sandbox: Any) -> None:
    env = make_env(tmp_path, sandbox)

    def chunks() -> Iterator[bytes]:
        yield (MEDIA / "portrait.mp4").read_bytes()
        wait_for(lambda: list(env.inbox.rglob(".hotfolder-upload-*")), timeout=10, message="a temp")
        raise ConnectionAbortedError("the browser tab was closed")

    with Daemon(env) as dash:
        token = dash.csrf()
        with pytest.raises(Exception):
            dash.post("/upload", headers={"X-CSRF-Token": token, "Content-Type": "multipart/form-data; boundary=b"},
                      content=multipart("b", {"csrf": token, "preset": ""}, [("video", "cut.mp4", chunks())]))
        wait_for(lambda: not list(env.inbox.rglob(".hotfolder-upload-*")), timeout=10, message="the temp removed")
        assert list_inbox(env.inbox) == []


def test_stale_upload_temps_are_swept_at_start(env: Env) -> None:
    stale = env.inbox / "promo" / ".hotfolder-upload-0123456789abcdef-video"
    fresh = env.inbox / ".hotfolder-upload-fedcba9876543210-video"
    for path in (stale, fresh):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"partial")
    old = time.time() - upload.STALE_TEMP_S - 60
    import os
    os.utime(stale, (old, old))
    with Daemon(env):
        wait_for(lambda: not stale.exists(), timeout=10, message="the stale temp removed")
        assert fresh.exists()


# -- outputs only from the outbox ------------------------------------------------------------------
def test_files_are_served_only_from_the_outbox(tmp_path: Path, sandbox: Any) -> None:
    env = make_env(tmp_path, sandbox)
    ledger = env.ledger()
    outside = tmp_path / "secret.txt"
    outside.write_text("not for the web")
    env.settings.folders.outbox.mkdir(parents=True, exist_ok=True)
    link = env.settings.folders.outbox / "link.mp4"
    link.symlink_to(outside)
    good = env.settings.folders.outbox / "good.jpg"
    good.write_bytes(b"\xff\xd8fine")

    def done_job(name: str, outputs: dict[str, str]) -> int:
        job = ledger.add_job(name=name, rel_dir="", stem=name[:-4], state=State.QUEUED, files={"video": "/x"},
                             inputs={}, params={})
        ledger.advance(job, State.QUEUED, State.UPLOADING)
        ledger.advance(job, State.UPLOADING, State.SUBMITTING)
        ledger.advance(job, State.SUBMITTING, State.GENERATING)
        ledger.advance(job, State.GENERATING, State.DOWNLOADING)
        ledger.advance(job, State.DOWNLOADING, State.DONE, outputs=outputs)
        return job

    escape = done_job("escape.mp4", {"video": str(outside), "cover": str(env.settings.folders.outbox / "../secret.txt")})
    linked = done_job("linked.mp4", {"video": str(link), "cover": str(good)})
    with Daemon(env) as dash:
        for path in (f"/files/{escape}/video", f"/files/{escape}/cover", f"/files/{linked}/video",
                     f"/files/{linked}/ledger", "/files/999/video", f"/files/{linked}/..%2F..%2Fsecret.txt"):
            response = dash.get(path)
            assert response.status_code == 404, path
            assert "not for the web" not in response.text
        assert dash.get(f"/files/{linked}/cover").content == b"\xff\xd8fine"
        assert dash.get("/static/../server.py").status_code == 404


# -- access ----------------------------------------------------------------------------------------
def test_a_loopback_listener_refuses_foreign_host_headers(env: Env) -> None:
    """DNS rebinding: evil.example resolving to 127.0.0.1 must not reach pages or actions."""
    with Daemon(env) as dash:
        port = dash.url.rsplit(":", 1)[1]
        for path in ("/", "/api/queue", "/jobs/1", "/static/app.js", "/login", "/metrics"):
            assert dash.get(path, headers={"Host": f"evil.example:{port}"}).status_code == 421, path
        assert dash.post("/api/resume", headers={"Host": "evil.example", "X-CSRF-Token": dash.csrf()}).status_code == 421
        assert dash.post("/upload", headers={"Host": "127.0.0.1.evil.example"}).status_code == 421
        for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}", "LOCALHOST", "127.1.2.3"):
            assert dash.get("/api/queue", headers={"Host": host}).status_code == 200, host
        # Probes and the API's callbacks come through proxies with public names.
        assert dash.get("/healthz", headers={"Host": "hotfolder.example.com"}).status_code in (200, 503)
        token = callbacks.token(dash.ledger)
        assert dash.post("/callback", params={"token": token}, json={"id": "t1"},
                         headers={"Host": "hooks.example.com"}).status_code == 200


def test_cross_site_requests_are_refused(env: Env) -> None:
    with Daemon(env) as dash:
        token = dash.csrf()
        origin = dash.url
        assert dash.post("/api/resume", headers={"X-CSRF-Token": token, "Origin": origin}).status_code == 200
        for headers in ({"Origin": "http://evil.example"}, {"Origin": "null"}, {"Sec-Fetch-Site": "cross-site"},
                        {"Sec-Fetch-Site": "same-site"}):
            response = dash.post("/api/resume", headers={"X-CSRF-Token": token, **headers})
            assert response.status_code == 403, headers
        assert dash.get("/api/queue", headers={"Sec-Fetch-Site": "cross-site"}).status_code == 200   # reads are fine


class PublicListener:
    """A listener on every interface with a token (reached through 127.0.0.1), no daemon."""

    def __init__(self, root: Path, sandbox: Any) -> None:
        self.env = make_env(root, sandbox, host="0.0.0.0")
        register_secret(SERVER_TOKEN)
        self.ledger = self.env.ledger()
        self.clock_offset = 0.0
        self.listener = Listener(self.env.settings, self.ledger, Liveness(), Metrics(self.ledger), lambda _t: None,
                                 clock=lambda: time.time() + self.clock_offset)
        assert self.listener.start()
        assert self.listener.url
        self.dash = Dash(self.listener.url, self.ledger, follow_redirects=False)

    def close(self) -> None:
        self.dash.close()
        self.listener.stop()


@pytest.fixture
def public(tmp_path: Path, sandbox: Any) -> Iterator[PublicListener]:
    p = PublicListener(tmp_path, sandbox)
    try:
        yield p
        p.dash.assert_no_secret()
    finally:
        p.close()


def login_form(dash: Dash) -> dict[str, str]:
    page = dash.get("/login")
    assert page.status_code == 200
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert csrf
    return {"csrf": csrf.group(1), "next": "/jobs/1?x=1"}


def test_a_network_listener_needs_the_token_login_or_bearer(public: PublicListener) -> None:
    dash = public.dash
    page = dash.get("/", headers={"Accept": "text/html"})
    assert page.status_code == 401 and 'action="/login"' in page.text and 'type="password"' in page.text
    assert dash.get("/api/queue").status_code == 401
    assert dash.get("/files/1/video").status_code == 401
    assert dash.get("/static/app.css").status_code == 200   # the login page needs its style
    assert dash.get("/api/queue", headers={"Host": "any.name.example"}).status_code == 401   # no Host rule here

    form = login_form(dash)
    wrong = dash.post("/login", data={**form, "token": "not-the-token-at-all"})
    assert wrong.status_code == 401 and "not the token" in wrong.text and "set-cookie" not in wrong.headers
    stale = dash.post("/login", data={**form, "csrf": "0" * 40, "token": SERVER_TOKEN})
    assert stale.status_code == 403 and "set-cookie" not in stale.headers
    foreign = dash.post("/login", data={**form, "token": SERVER_TOKEN}, headers={"Origin": "http://evil.example"})
    assert foreign.status_code == 403

    ok = dash.post("/login", data={**form, "token": SERVER_TOKEN, "next": "//evil.example/x"})
    assert ok.status_code == 303 and ok.headers["location"] == "/"
    cookie = ok.headers["set-cookie"]
    assert cookie.startswith(f"{auth.SESSION_COOKIE}=") and "httponly" in cookie.lower()
    assert "samesite=lax" in cookie.lower() and "path=/" in cookie.lower()
    assert SERVER_TOKEN not in cookie
    ok2 = dash.post("/login", data={**form, "token": SERVER_TOKEN})
    assert ok2.headers["location"] == "/jobs/1?x=1"
    assert dash.get("/", headers={"Accept": "text/html"}).status_code == 200   # the client keeps the cookie
    data = dash.get("/api/queue").json()
    assert data["csrf"]
    assert dash.post("/api/resume").status_code == 403   # the cookie alone cannot change anything
    assert dash.post("/api/resume", headers={"X-CSRF-Token": data["csrf"]}).status_code == 200

    # The session expires; a tampered cookie is nobody's.
    value = dash.client.cookies[auth.SESSION_COOKIE]
    expiry, nonce, signature = value.split(".")

    def with_cookie(cookie: str) -> int:
        dash.client.cookies.clear()
        dash.client.cookies.set(auth.SESSION_COOKIE, cookie)
        return dash.get("/api/queue").status_code

    assert with_cookie(f"{int(expiry) + 999999}.{nonce}.{signature}") == 401
    assert with_cookie(f"{expiry}.{nonce}x.{signature}") == 401
    assert with_cookie(value) == 200
    public.clock_offset = auth.SESSION_SECONDS + 60
    assert with_cookie(value) == 401
    public.clock_offset = 0.0
    dash.client.cookies.clear()

    # Scripts use the bearer header, and need no CSRF token (a browser never sends that header).
    bearer = {"Authorization": f"Bearer {SERVER_TOKEN}"}
    assert dash.get("/api/queue", headers=bearer).json()["csrf"] == ""
    assert dash.post("/api/resume", headers=bearer).status_code == 200
    assert dash.get("/api/queue", headers={"Authorization": "Bearer wrong-wrong-wrong"}).status_code == 401

    # Logging out needs the session's token too, and ends the cookie.
    assert with_cookie(value) == 200
    csrf = dash.get("/api/queue").json()["csrf"]
    assert dash.post("/logout", data={"csrf": "nope"}).status_code == 403
    out = dash.post("/logout", data={"csrf": csrf})
    assert out.status_code == 303 and f'{auth.SESSION_COOKIE}=""' in out.headers["set-cookie"]


def test_secrets_never_reach_a_page(public: PublicListener) -> None:
    ledger = public.ledger
    register_secret(API_SECRET)
    job = ledger.add_job(name="leak.mp4", rel_dir="", stem="leak", state=State.QUEUED, files={"video": "/x"},
                         inputs={}, params={"text": f"say {API_SECRET}"})
    ledger.advance(job, State.QUEUED, State.FAILED, error=f"the API said: bad key {API_SECRET} / {SERVER_TOKEN}",
                   error_code="auth")
    ledger.note(job, "trouble", {"token": WEBHOOK_SECRET})
    callbacks.token(ledger)
    dash = public.dash
    bearer = {"Authorization": f"Bearer {SERVER_TOKEN}"}
    for path in ("/", f"/jobs/{job}", "/api/queue", f"/api/jobs/{job}", "/api/stats", "/healthz", "/metrics"):
        response = dash.get(path, headers=bearer)
        assert response.status_code == 200, path
    assert "***" in dash.get(f"/api/jobs/{job}", headers=bearer).text
    dash.get("/login")


def test_names_cannot_inject_markup(env: Env) -> None:
    ledger = env.ledger()
    name = '<script>alert(1)</script><img src=x onerror=alert(2)>.mp4'
    job = ledger.add_job(name=name, rel_dir="", stem=name[:-4], state=State.QUEUED, files={"video": "/x"},
                         inputs={}, params={})
    ledger.advance(job, State.QUEUED, State.FAILED, error="</script><script>alert(3)</script>", error_code="x")
    with Daemon(env) as dash:
        for path in ("/", f"/jobs/{job}"):
            html = dash.get(path).text
            assert "<script>alert" not in html and "<img src=x" not in html
            assert "\\u003cscript\\u003e" in html   # the data is there, as JSON the script puts in textContent


def test_the_listener_stops_cleanly_after_serving_files_and_uploads(env: Env) -> None:
    with Daemon(env) as dash:
        assert dash.upload(("a.mp4", (MEDIA / "portrait.mp4").read_bytes()), ("a.txt", b"hi")).status_code == 200
        names = {t.name for t in threading.enumerate()}
        assert {"hotfolder-listener", "hotfolder-listener-io", "hotfolder-listener-files"} <= names
        jobs = wait_for(lambda: [j for j in all_jobs(env.ledger()) if j.state == State.DONE], timeout=60,
                        message="done")
        assert jobs
    assert not [t for t in threading.enumerate() if t.name.startswith("hotfolder-listener")]
