"""Helpers for the client tests: a fake clock and a scripted httpx.MockTransport API.

Also the fixtures and helpers of the tests on the real sandbox (import the fixtures you use).

The MockTransport is only for pure mapping cases that no real server produces on demand (odd
envelopes, a 200 to a Range request, string codes...). Behaviour against a server is tested
with the real sandbox in tests/test_client.py.
"""

from __future__ import annotations

import json
import random
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest

from helpers import MEDIA, VOICE, FakeClock, wait_for  # noqa: F401 (FakeClock: re-exported)
from hotfolder.chanjing import ChanjingClient, Limits, LipSyncRequest, Task
from hotfolder.retry import Backoff


SECRET = "s3cret-KEY-never-logged"
TOKEN_PREFIX = "tok-VALUE-never-logged-"
UNPACED = Limits(creates_per_minute=0, file_calls_per_minute=0, queries_per_second=0)


def envelope(code: int | str = 0, data: Any = None, msg: str = "success", **extra: Any) -> httpx.Response:
    """An API reply (HTTP 200, JSON envelope)."""
    body = {"trace_id": "trace-1", "code": code, "msg": msg, "data": data, **extra}
    return httpx.Response(200, content=json.dumps(body, ensure_ascii=False).encode(),
                          headers={"Content-Type": "application/json"})


def blob(status: int, body: bytes, **headers: str) -> Callable[[httpx.Request], httpx.Response]:
    """A storage reply with a raw (streamable) body and its Content-Length; fresh on every call."""
    def reply(_request: httpx.Request) -> httpx.Response:
        head = {"Content-Length": str(len(body)), **{k.replace("_", "-"): v for k, v in headers.items()}}
        return httpx.Response(status, stream=httpx.ByteStream(body), headers=head)
    return reply


Handler = Callable[[httpx.Request], httpx.Response]


class FakeApi:
    """A scripted API: ``routes[endpoint]`` is a list of replies (a callable or Response or an
    exception to raise), consumed in order; the last one repeats. Tokens are issued on demand."""

    PATHS: ClassVar[dict[str, str]] = {
        "/open/v1/access_token": "access_token",
        "/open/v1/common/create_upload_url": "create_upload_url",
        "/open/v1/common/file_detail": "file_detail",
        "/open/v1/video_lip_sync/create": "create",
        "/open/v1/video_lip_sync/detail": "detail",
        "/open/v1/video_lip_sync/list": "list",
        "/open/v1/list_common_audio": "list_common_audio",
    }

    def __init__(self, clock: FakeClock | None = None, token_ttl: float = 86400.0) -> None:
        self.clock = clock or FakeClock()
        self.token_ttl = token_ttl
        self.routes: dict[str, list[Any]] = {}
        self.requests: list[httpx.Request] = []
        self.bodies: list[bytes] = []
        self.tokens_issued = 0
        self.valid_token: str | None = None
        self._lock = threading.Lock()

    def on(self, endpoint: str, *replies: Any) -> FakeApi:
        self.routes[endpoint] = list(replies)
        return self

    def calls(self, endpoint: str) -> list[httpx.Request]:
        return [r for r in self.requests if self.endpoint_of(r) == endpoint]

    def endpoint_of(self, request: httpx.Request) -> str:
        return self.PATHS.get(request.url.path, request.url.path)

    def issue(self) -> httpx.Response:
        with self._lock:
            self.tokens_issued += 1
            self.valid_token = f"{TOKEN_PREFIX}{self.tokens_issued}"
        return envelope(data={"access_token": self.valid_token, "expire_in": int(self.clock() + self.token_ttl)})

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = request.read()
        with self._lock:
            self.requests.append(request)
            self.bodies.append(body)
        endpoint = self.endpoint_of(request)
        replies = self.routes.get(endpoint)
        if not replies:
            if endpoint == "access_token":
                return self.issue()
            return envelope(data=None)
        with self._lock:
            reply = replies.pop(0) if len(replies) > 1 else replies[0]
        if isinstance(reply, BaseException):
            raise reply
        if callable(reply):
            return reply(request)
        return reply

    def client(self, **kw: Any) -> ChanjingClient:
        kw.setdefault("limits", UNPACED)
        kw.setdefault("backoff", Backoff(base=0.01, cap=0.05, max_retries=3))
        kw.setdefault("rng", random.Random(0))
        kw.setdefault("clock", self.clock)
        kw.setdefault("sleep", self.clock.sleep)
        kw.setdefault("transport", httpx.MockTransport(self))
        return ChanjingClient("https://api.test", "app", SECRET, **kw)


# -- on the real sandbox (tests/test_client.py, tests/test_client_transfer.py) ---------------------------
VIDEO = MEDIA / "portrait.mp4"
AUDIO = MEDIA / "speech.wav"
FAST_LIMITS = Limits(creates_per_minute=600, file_calls_per_minute=6000, queries_per_second=200)

MakeClient = Callable[..., ChanjingClient]


@pytest.fixture
def make_client(sandbox: Any) -> Iterator[MakeClient]:
    """Clients on the sandbox with fast backoff and limits under the sandbox's; closed after."""
    made: list[ChanjingClient] = []

    def make(sb: Any = None, **kw: Any) -> ChanjingClient:
        sb = sb or sandbox
        kw.setdefault("limits", FAST_LIMITS)
        kw.setdefault("backoff", Backoff(base=0.01, cap=0.05, max_retries=kw.pop("max_retries", 5)))
        kw.setdefault("rng", random.Random(0))
        kw.setdefault("timeout", 5.0)
        client = ChanjingClient(sb.base_url, "sandbox", "sandbox", **kw)
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


@pytest.fixture
def client(make_client: MakeClient) -> ChanjingClient:
    return make_client()


def entries(sb: Any, endpoint: str, since: int = 0) -> list[dict[str, Any]]:
    """The journal entries of ``endpoint`` after ``since``."""
    return [e for e in sb.journal(since) if e["endpoint"] == endpoint]


def settled(sb: Any, endpoint: str, count: int, since: int = 0) -> list[dict[str, Any]]:
    """The journal entries of ``endpoint`` once there are ``count`` (entries are written after the
    answer is sent, so the last one may lag the client by a moment)."""
    return wait_for(lambda: (found := entries(sb, endpoint, since)) and len(found) >= count and found,
                    timeout=10, message=f"{count} journal entries for {endpoint}")


def last_seq(sb: Any) -> int:
    journal = sb.journal()
    return journal[-1]["seq"] if journal else 0


def ready_video(client: ChanjingClient, path: Path = VIDEO) -> str:
    file_id = client.upload(path, "lip_sync_video")
    client.wait_file_ready(file_id, timeout=10)
    return file_id


def tts(file_id: str, text: str = "你好,欢迎收看。") -> LipSyncRequest:
    return LipSyncRequest(video_file_id=file_id, text=text, audio_man_id=VOICE)


def finished(client: ChanjingClient, task_id: str) -> Task:
    return wait_for(lambda: (t := client.task_detail(task_id)).status in (20, 30) and t, timeout=10,
                    message=f"task {task_id} to end")
