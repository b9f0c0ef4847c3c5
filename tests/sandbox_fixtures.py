"""Helpers for the sandbox's own tests: a raw wire-level client, polling and a callback sink.

Deliberately independent of hotfolder.chanjing: these tests check the sandbox against the API
reference, not against our client.
"""

from __future__ import annotations

import http.server
import json
import threading
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

import helpers
import httpx
from helpers import VOICE
import pytest

from hotfolder.sandbox import Sandbox, SandboxSettings

T = TypeVar("T")


# Short timings; rate limits off unless a test is about them.
FAST = SandboxSettings(
    file_ready_delay=0.2,
    queue_seconds=0.2,
    generate_seconds=0.5,
    creates_per_minute=0,
    file_calls_per_minute=0,
    queries_per_second=0,
)


def wait_for(predicate: Callable[[], T], timeout: float = 5.0, interval: float = 0.02) -> T:
    """helpers.wait_for with the short deadline the sandbox's own tests use."""
    return helpers.wait_for(predicate, timeout=timeout, interval=interval)


class Api:
    """Speaks the wire format directly: envelopes in, envelopes out."""

    def __init__(self, sandbox: Sandbox, *, app_id: str = "sandbox", secret_key: str = "sandbox") -> None:
        self.sb = sandbox
        self.http = httpx.Client(base_url=sandbox.base_url, timeout=10, trust_env=False)
        self.app_id = app_id
        self.secret_key = secret_key
        self.token: str | None = None

    def close(self) -> None:
        self.http.close()

    def login(self) -> str:
        env = self.call("POST", "/open/v1/access_token", auth=False,
                        json={"app_id": self.app_id, "secret_key": self.secret_key})
        assert env["code"] == 0, env
        self.token = env["data"]["access_token"]
        return self.token

    def call(self, method: str, path: str, *, auth: bool = True, **kw: Any) -> dict[str, Any]:
        """One API request; asserts HTTP 200 and the envelope's shape, returns the envelope."""
        headers = dict(kw.pop("headers", {}))
        if auth:
            if self.token is None:
                self.login()
            headers.setdefault("access_token", self.token)
        response = self.http.request(method, path, headers=headers, **kw)
        assert response.status_code == 200, (response.status_code, response.text)
        assert response.headers["content-type"].startswith("application/json")
        env = response.json()
        assert set(env) == {"trace_id", "code", "msg", "data"}, env
        assert isinstance(env["trace_id"], str) and len(env["trace_id"]) == 32
        return env

    def ok(self, method: str, path: str, **kw: Any) -> Any:
        env = self.call(method, path, **kw)
        assert env["code"] == 0, env
        return env["data"]

    def slot(self, service: str = "lip_sync_video", name: str = "clip.mp4") -> dict[str, Any]:
        return self.ok("GET", "/open/v1/common/create_upload_url", params={"service": service, "name": name})

    def put(self, slot: dict[str, Any], data: bytes, content_type: str | None = None) -> httpx.Response:
        ctype = slot["mime_type"] if content_type is None else content_type
        return self.http.put(slot["sign_url"], content=data, headers={"Content-Type": ctype})

    def upload(self, data: bytes = b"\x00\x00\x00\x18ftypmp42" + b"v" * 2000,
               service: str = "lip_sync_video", name: str = "clip.mp4") -> str:
        slot = self.slot(service, name)
        response = self.put(slot, data)
        assert response.status_code == 200, response.text
        return slot["file_id"]

    def file(self, file_id: str) -> dict[str, Any]:
        return self.ok("GET", "/open/v1/common/file_detail", params={"id": file_id})

    def ready(self, file_id: str, status: int = 1) -> dict[str, Any]:
        return wait_for(lambda: (d := self.file(file_id))["status"] == status and d)

    def ready_upload(self, data: bytes | None = None, service: str = "lip_sync_video",
                     name: str = "clip.mp4") -> str:
        if data is None:
            file_id = self.upload(service=service, name=name)
        else:
            file_id = self.upload(data, service, name)
        self.ready(file_id)
        return file_id

    def create(self, body: dict[str, Any] | None = None, **fields: Any) -> dict[str, Any]:
        return self.call("POST", "/open/v1/video_lip_sync/create", json={**(body or {}), **fields})

    def tts_body(self, video_id: str, **over: Any) -> dict[str, Any]:
        return {"video_file_id": video_id,
                "tts_config": {"text": ["你好,世界。"], "audio_man_id": VOICE}, **over}

    def detail(self, task_id: str) -> dict[str, Any]:
        return self.ok("GET", "/open/v1/video_lip_sync/detail", params={"id": task_id})

    def wait_end(self, task_id: str, timeout: float = 5.0) -> dict[str, Any]:
        return wait_for(lambda: (d := self.detail(task_id))["status"] in (20, 30) and d, timeout)


@pytest.fixture
def sb(tmp_path: Path) -> Iterator[Sandbox]:
    with Sandbox(tmp_path / "sandbox", settings=FAST) as sandbox:
        yield sandbox


@pytest.fixture
def api(sb: Sandbox) -> Iterator[Api]:
    client = Api(sb)
    yield client
    client.close()


class CallbackSink:
    """A tiny local HTTP server that records the JSON POSTed to it."""

    def __init__(self, status: int = 200) -> None:
        self.received: list[dict[str, Any]] = []
        sink = self

        class _Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (stdlib naming)
                body = self.rfile.read(int(self.headers["Content-Length"]))
                sink.received.append({"path": self.path, "body": json.loads(body),
                                      "content_type": self.headers.get("Content-Type")})
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.HTTPServer(("127.0.0.1", 0), _Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05})
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.fixture
def sink() -> Iterator[CallbackSink]:
    server = CallbackSink()
    yield server
    server.close()
