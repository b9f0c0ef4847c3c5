"""Unit tests of the sandbox's state and helpers with a hand-driven clock (no HTTP)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest

from hotfolder.sandbox import storage
from hotfolder.sandbox.faults import API, DOWNLOAD, UPLOAD, Faults
from hotfolder.sandbox.settings import SandboxSettings
from hotfolder.sandbox.state import State
from hotfolder.sandbox.validation import ApiFailure, contains_emoji, validate_create
from sandbox_fixtures import VOICE


class Clock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make_state(tmp_path: Path, clock: Clock, **over: Any) -> State:
    settings = SandboxSettings(**{"file_ready_delay": 3.0, "queue_seconds": 2.0,
                                  "generate_seconds": 8.0, **over})
    return State(tmp_path, lambda: settings, Faults(0), clock, accounts={"app": "secret"})


def ready_video(state: State, clock: Clock, data: bytes = b"video") -> str:
    slot = state.create_upload("app", "lip_sync_video", "a.mp4")
    tmp = state.data_dir / "tmp" / "x.tmp"
    tmp.write_bytes(data)
    state.complete_upload(slot["file_id"], tmp, "etag")
    clock.now += 3.0
    return slot["file_id"]


def tts_request(video: str, **over: Any) -> dict[str, Any]:
    return validate_create({"video_file_id": video,
                            "tts_config": {"text": "你好", "audio_man_id": VOICE}, **over})


def test_token_expiry_and_supersede(tmp_path: Path) -> None:
    clock = Clock()
    state = make_state(tmp_path, clock, token_ttl=100.5)
    first = state.issue_token("app", "secret")
    assert first["expire_in"] == int(clock.now + 100)  # rounded down, never late
    assert state.authenticate(first["access_token"]) == "app"
    second = state.issue_token("app", "secret")
    with pytest.raises(ApiFailure) as exc:
        state.authenticate(first["access_token"])
    assert exc.value.code == 10400
    clock.now += 100.4
    assert state.authenticate(second["access_token"]) == "app"
    clock.now += 0.1
    with pytest.raises(ApiFailure, match="过期"):
        state.authenticate(second["access_token"])
    with pytest.raises(ApiFailure) as exc:
        state.issue_token("app", "nope")
    assert exc.value.code == 40000


def test_rate_windows_slide(tmp_path: Path) -> None:
    clock = Clock()
    state = make_state(tmp_path, clock, creates_per_minute=2, queries_per_second=1)
    state.check_rate("app", "create")
    clock.now += 30
    state.check_rate("app", "create")
    with pytest.raises(ApiFailure) as exc:
        state.check_rate("app", "create")
    assert exc.value.code == 40001
    clock.now += 30.01  # the first call left the window; the refused one never counted
    state.check_rate("app", "create")
    with pytest.raises(ApiFailure):
        state.check_rate("app", "create")
    state.check_rate("other", "create")  # per app_id
    state.check_rate("app", "query")
    clock.now += 1.0
    state.check_rate("app", "query")


def test_file_readiness_and_retention(tmp_path: Path) -> None:
    clock = Clock()
    state = make_state(tmp_path, clock)
    slot = state.create_upload("app", "lip_sync_video", "a.mp4")
    detail = lambda: state.file_detail("app", slot["file_id"])  # noqa: E731
    clock.now += 1000
    assert detail()["status"] == 0  # never ready without a PUT
    tmp = tmp_path / "tmp" / "body.tmp"
    tmp.write_bytes(b"12345")
    state.complete_upload(slot["file_id"], tmp, "etag")
    clock.now += 2.99
    assert detail()["status"] == 0
    clock.now += 0.01
    assert detail() | {"create_time": 0} == {
        "id": slot["file_id"], "service": "lip_sync_video", "bytes": 5, "create_time": 0,
        "file_path": slot["full_path"], "status": 1, "msg": "success"}
    clock.now += 30 * 86400
    assert detail()["status"] == 100
    with pytest.raises(ApiFailure):
        state.file_detail("someone-else", slot["file_id"])


def test_task_phases_follow_the_clock(tmp_path: Path) -> None:
    clock = Clock()
    state = make_state(tmp_path, clock)
    video = ready_video(state, clock)
    task_id = state.create_task("app", tts_request(video))
    view = lambda: state.task_detail("app", task_id)  # noqa: E731
    assert (view()["status"], view()["progress"]) == (0, 0)
    clock.now += 1.99
    assert view()["status"] == 0
    clock.now += 0.02
    assert view()["status"] == 10 and 1 <= view()["progress"] <= 2
    clock.now += 4
    assert view()["status"] == 10 and 45 <= view()["progress"] <= 55
    clock.now += 4
    done = view()
    assert done["status"] == 20 and done["progress"] == 100 and done["duration"] == 1000
    assert done["create_time"] == 1_700_000_003
    expires = int(done["video_url"].split("expires=")[1].split("&")[0])
    assert expires == int(clock.now + 3600)


def test_balance_and_failures_in_state(tmp_path: Path) -> None:
    clock = Clock()
    state = make_state(tmp_path, clock, balance_creates=1, balance_mode="fail_task")
    video = ready_video(state, clock)
    paid = state.create_task("app", tts_request(video))
    unpaid = state.create_task("app", tts_request(video))
    clock.now += 2.0  # billing failures end right after the queue
    assert state.task_detail("app", unpaid)["status"] == 30
    assert state.task_detail("app", paid)["status"] == 10
    state.set_balance(None)
    assert state.task_detail("app", state.create_task("app", tts_request(video)))["status"] == 0


def test_callbacks_are_due_once(tmp_path: Path) -> None:
    clock = Clock()
    state = make_state(tmp_path, clock)
    video = ready_video(state, clock)
    task_id = state.create_task("app", tts_request(video, callback="http://h/cb"))
    assert state.due_callbacks(True) == []
    clock.now += 10
    due = state.due_callbacks(True)
    assert [(t, u, v["status"]) for t, u, v in due] == [(task_id, "http://h/cb", 20)]
    assert state.due_callbacks(True) == []
    reloaded = make_state(tmp_path, clock)  # "sent" is persisted: no second callback
    assert reloaded.due_callbacks(True) == []


def test_signed_urls(tmp_path: Path) -> None:
    secret = b"k" * 32
    url = storage.signed_url("http://x", storage.UPLOAD_PREFIX, secret, "a/b.mp4", 1000, "video/mp4")
    query = dict(p.split("=") for p in url.split("?")[1].split("&"))
    storage.check_signature(secret, "a/b.mp4", query, "video/mp4", 999.9)
    for key, mime, now, code in (("a/b.mp4", "video/webm", 0, "SignatureDoesNotMatch"),
                                 ("a/c.mp4", "video/mp4", 0, "SignatureDoesNotMatch"),
                                 ("a/b.mp4", "video/mp4", 1000, "AccessDenied")):
        with pytest.raises(storage.StorageDenied) as exc:
            storage.check_signature(secret, key, query, mime, now)
        assert exc.value.code == code


@pytest.mark.parametrize(
    ("header", "expected"),
    [(None, None), ("items=0-1", None), ("bytes=0-0", (0, 0)), ("bytes=5-", (5, 9)),
     ("bytes=-3", (7, 9)), ("bytes=-30", (0, 9)), ("bytes=8-100", (8, 9)), (" bytes = 1-2 ", (1, 2)),
     ("bytes=10-", "416"), ("bytes=3-2", "416"), ("bytes=-", "416"), ("bytes=a-b", "416"),
     ("bytes=0-1,3-4", "416"), ("bytes=-0", "416")],
)
def test_parse_range(header: str | None, expected: Any) -> None:
    if expected == "416":
        with pytest.raises(storage.Unsatisfiable):
            storage.parse_range(header, 10)
    else:
        assert storage.parse_range(header, 10) == expected


def test_receive_body_keeps_nothing_of_a_short_body(tmp_path: Path) -> None:
    assert storage.receive_body(io.BytesIO(b"abc"), 5, tmp_path) is None
    assert list(tmp_path.iterdir()) == []
    path, md5 = storage.receive_body(io.BytesIO(b"abcdef"), 5, tmp_path)  # type: ignore[misc]
    assert path.read_bytes() == b"abcde" and md5 == "ab56b4d92b40713acc5af89985d4b786"


@pytest.mark.parametrize(("text", "emoji"), [("你好,世界。", False), ("A–Z “quotes” ©", False),
                                             ("😀", True), ("❤", True), ("1️⃣", True), ("𠀀", True)])
def test_contains_emoji(text: str, emoji: bool) -> None:
    assert contains_emoji(text) is emoji


def test_fault_decisions_take_four_draws_whatever_the_rates() -> None:
    quiet, noisy = Faults(9), Faults(9)
    loud = SandboxSettings(error_rate=0.5, drop_rate=0.2, truncate_rate=0.5, slow_rate=0.5, slow_seconds=1)
    for surface in (API, UPLOAD, DOWNLOAD, API):
        quiet.decide(SandboxSettings(), surface)
        noisy.decide(loud, surface)
    assert quiet.chance(0.5) == noisy.chance(0.5)
    upload = Faults(1)
    decisions = [upload.decide(SandboxSettings(error_rate=1, gateway_error_rate=1), UPLOAD) for _ in range(5)]
    assert all(d.kind is None for d in decisions)  # API-only faults never hit storage
