"""The sandbox against the API reference, over real loopback HTTP: auth, files, tasks, results."""

from __future__ import annotations

import hashlib
import socket
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from hotfolder.sandbox import Sandbox
from sandbox_fixtures import FAST, VOICE, Api, api, sb, wait_for  # noqa: F401 (fixtures)

# -- envelope, routing ----------------------------------------------------------------------


def test_envelope_and_plain_404(sb: Sandbox, api: Api) -> None:
    env = api.call("POST", "/open/v1/access_token", auth=False,
                   json={"app_id": "sandbox", "secret_key": "sandbox"})
    assert env["code"] == 0 and env["msg"] == "success"
    for method, path in (("GET", "/nope"), ("GET", "/open/v1/access_token"),
                         ("POST", "/open/v1/video_lip_sync/detail"), ("GET", "/open/v1/")):
        response = api.http.request(method, path)
        assert response.status_code == 404
        assert response.headers["content-type"] == "text/plain"
        assert response.text == "404 page not found"
    assert sb.journal()[-1]["endpoint"] == "unknown"


# -- tokens ------------------------------------------------------------------------------------


def test_token_issue_and_expire_in_is_a_timestamp(api: Api) -> None:
    data = api.ok("POST", "/open/v1/access_token", auth=False,
                  json={"app_id": "sandbox", "secret_key": "sandbox"})
    assert len(data["access_token"]) == 64 and data["access_token"].isalnum()
    assert isinstance(data["expire_in"], int)
    assert abs(data["expire_in"] - (time.time() + 86400)) < 5


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"app_id": "sandbox", "secret_key": "wrong"}, 40000),
        ({"app_id": "other", "secret_key": "sandbox"}, 40000),
        ({"app_id": "sandbox"}, 40000),
        ({"secret_key": "sandbox"}, 40000),
        ({"app_id": 1, "secret_key": "sandbox"}, 400),
        (b"{not json", 400),
        (b"[1]", 400),
    ],
)
def test_token_refusals(api: Api, body: Any, code: int) -> None:
    kw = {"content": body} if isinstance(body, bytes) else {"json": body}
    env = api.call("POST", "/open/v1/access_token", auth=False, **kw)
    assert env["code"] == code and env["data"] is None and env["msg"]


def test_missing_invalid_superseded_and_expired_tokens(sb: Sandbox, api: Api) -> None:
    path = "/open/v1/list_common_audio"
    assert api.call("GET", path, auth=False)["code"] == 10400
    assert api.call("GET", path, headers={"access_token": "x" * 64})["code"] == 10400
    first = api.login()
    assert api.call("GET", path)["code"] == 0
    second = api.login()
    assert second != first
    old = api.call("GET", path, headers={"access_token": first})
    assert old["code"] == 10400 and "失效" in old["msg"]
    assert api.call("GET", path)["code"] == 0
    sb.update(token_ttl=0.3)
    api.login()
    assert api.call("GET", path)["code"] == 0
    expired = wait_for(lambda: (e := api.call("GET", path))["code"] == 10400 and e)
    assert "过期" in expired["msg"]
    # Secrets never reach the journal.
    text = repr(sb.journal())
    assert first not in text and second not in text and "secret" not in text


# -- upload URLs and PUT ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("service", "name", "mime"),
    [
        ("lip_sync_video", "a.mp4", "video/mp4"),
        ("lip_sync_video", "A B.MOV", "video/quicktime"),
        ("lip_sync_video", "x.y.webm", "video/webm"),
        ("lip_sync_audio", "v.mp3", "audio/mpeg"),
        ("lip_sync_audio", "v.M4A", "audio/mp4"),
        ("lip_sync_audio", "说话.wav", "audio/wav"),
        ("lip_sync_video", "a.mp3", None),
        ("lip_sync_audio", "a.mp4", None),
        ("lip_sync_video", "a.avi", None),
        ("lip_sync_video", "mp4", None),
        ("lip_sync_video", "", None),
        ("", "a.mp4", None),
        ("avatar", "a.mp4", None),
    ],
)
def test_create_upload_url(api: Api, service: str, name: str, mime: str | None) -> None:
    env = api.call("GET", "/open/v1/common/create_upload_url", params={"service": service, "name": name})
    if mime is None:
        assert env["code"] == 40000 and env["data"] is None
        return
    data = env["data"]
    assert env["code"] == 0
    assert set(data) == {"sign_url", "mime_type", "file_id", "full_path", "key"}
    assert data["mime_type"] == mime
    assert len(data["file_id"]) == 32 and int(data["file_id"], 16) >= 0
    assert data["sign_url"].startswith(api.sb.base_url + "/_storage/upload/" + data["key"] + "?")
    assert data["full_path"].endswith(data["key"])


def _xml_code(response: httpx.Response) -> str:
    return response.text.split("<Code>")[1].split("</Code>")[0]


def test_put_checks_signature_type_length_and_expiry(sb: Sandbox, api: Api) -> None:
    slot = api.slot()
    url = slot["sign_url"]
    for ctype in ("video/mpeg", "video/mp4; charset=utf-8", "application/octet-stream", ""):
        response = api.put(slot, b"abc", content_type=ctype)
        assert response.status_code == 403 and _xml_code(response) == "SignatureDoesNotMatch", ctype
    tampered = [url.replace("sig=", "sig=0"), url.replace("expires=", "expires=9"),
                url.replace(slot["key"], slot["key"].replace(".mp4", ".mov"))]
    for bad in tampered:
        response = api.http.put(bad, content=b"abc", headers={"Content-Type": "video/mp4"})
        assert response.status_code == 403 and _xml_code(response) == "SignatureDoesNotMatch"
    response = api.http.put(url.split("?")[0], content=b"abc", headers={"Content-Type": "video/mp4"})
    assert response.status_code == 403 and _xml_code(response) == "AccessDenied"
    # A generator body goes chunked, without Content-Length: S3 wants the length.
    response = api.http.put(url, content=iter([b"ab", b"c"]), headers={"Content-Type": "video/mp4"})
    assert response.status_code == 411 and _xml_code(response) == "MissingContentLength"
    assert api.file(slot["file_id"])["bytes"] == 0
    # A good PUT: 200 + ETag (the MD5, as S3).
    response = api.put(slot, b"hello video")
    assert response.status_code == 200
    assert response.headers["etag"] == '"%s"' % hashlib.md5(b"hello video").hexdigest()
    sb.update(upload_url_ttl=0)
    late = api.slot()
    response = api.put(late, b"abc")
    assert response.status_code == 403 and "Request has expired" in response.text
    statuses = [e["http_status"] for e in sb.journal() if e["endpoint"] == "upload_put"]
    assert statuses == [403] * 8 + [411, 200, 403]


def test_second_put_overwrites_and_full_path_serves_the_blob(api: Api) -> None:
    slot = api.slot()
    assert api.put(slot, b"first").status_code == 200
    assert api.put(slot, b"second version").status_code == 200
    assert api.file(slot["file_id"])["bytes"] == len(b"second version")
    response = api.http.get(slot["full_path"])
    assert response.status_code == 200 and response.content == b"second version"
    assert response.headers["content-type"] == "video/mp4"


def _raw_put(sb: Sandbox, slot: dict[str, Any], declared: int, body: bytes, expect: bool = False) -> bytes:
    """A PUT over a raw socket, to send what httpx would not (short bodies, Expect)."""
    target = slot["sign_url"][len(sb.base_url):]
    head = (f"PUT {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {slot['mime_type']}\r\n"
            f"Content-Length: {declared}\r\n" + ("Expect: 100-continue\r\n" if expect else "") + "\r\n")
    with socket.create_connection(("127.0.0.1", sb.port), timeout=5) as conn:
        conn.sendall(head.encode())
        if not expect:
            conn.sendall(body)
            conn.shutdown(socket.SHUT_WR)
        reply = b""
        while chunk := conn.recv(65536):
            reply += chunk
            if reply.startswith(b"HTTP/1.1 100 ") and reply.endswith(b"\r\n\r\n"):
                break  # the go-ahead: the server now waits for a body we will not send
        return reply


def test_short_body_never_completes_the_file(sb: Sandbox, api: Api, tmp_path: Path) -> None:
    slot = api.slot()
    assert _raw_put(sb, slot, 1000, b"x" * 10) == b""  # no answer for a broken upload
    entry = wait_for(lambda: [e for e in sb.journal() if e["endpoint"] == "upload_put"])[-1]
    assert entry["http_status"] is None and not entry["processed"]
    time.sleep(FAST.file_ready_delay + 0.1)  # past the delay a completed file would have taken
    assert api.file(slot["file_id"])["status"] == 0
    assert not list((tmp_path / "sandbox" / "blobs").iterdir())
    assert not list((tmp_path / "sandbox" / "tmp").iterdir())


def test_expect_continue_is_answered_after_the_checks(sb: Sandbox, api: Api) -> None:
    slot = api.slot()
    assert _raw_put(sb, slot, 3, b"", expect=True).startswith(b"HTTP/1.1 100")
    bad = dict(slot, mime_type="video/webm")
    reply = _raw_put(sb, bad, 3, b"", expect=True)
    assert reply.startswith(b"HTTP/1.1 403") and b"SignatureDoesNotMatch" in reply


def test_large_upload_and_download_stream_in_small_memory(api: Api) -> None:
    import tracemalloc

    size = 192 * 1024 * 1024
    block = hashlib.sha256(b"seed").digest() * 32768  # 1 MiB
    slot = api.slot()
    tracemalloc.start()
    try:
        response = api.http.put(slot["sign_url"], content=(block for _ in range(size // len(block))),
                                headers={"Content-Type": "video/mp4", "Content-Length": str(size)})
        assert response.status_code == 200
        got = 0
        with api.http.stream("GET", slot["full_path"]) as download:
            for chunk in download.iter_raw():
                got += len(chunk)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert got == size
    assert response.headers["etag"].strip('"') == hashlib.md5(block * (size // len(block))).hexdigest()
    assert peak < 24 * 1024 * 1024, f"peak {peak / 2**20:.1f} MiB"


# -- file readiness ------------------------------------------------------------------------------


def test_file_detail_lifecycle(sb: Sandbox, api: Api) -> None:
    slot = api.slot("lip_sync_audio", "voice.wav")
    fresh = api.file(slot["file_id"])
    assert set(fresh) == {"id", "service", "bytes", "create_time", "file_path", "status", "msg"}
    assert fresh["status"] == 0 and fresh["service"] == "lip_sync_audio"
    time.sleep(FAST.file_ready_delay + 0.1)
    assert api.file(slot["file_id"])["status"] == 0  # never ready without a PUT
    assert api.put(slot, b"RIFF....WAVE").status_code == 200
    assert api.file(slot["file_id"])["status"] == 0  # the sync delay
    ready = api.ready(slot["file_id"])
    assert ready["bytes"] == 12 and abs(ready["create_time"] - time.time()) < 5
    for file_id in ("", "0" * 32):
        env = api.call("GET", "/open/v1/common/file_detail", params={"id": file_id})
        assert env["code"] == 40000 and env["data"] is None
    sb.set_file_status(slot["file_id"], 99)
    assert api.file(slot["file_id"])["status"] == 99


# -- tasks ------------------------------------------------------------------------------------


def test_task_lifecycle(sb: Sandbox, api: Api) -> None:
    video = api.ready_upload()
    env = api.create(api.tts_body(video, screen_width=720, screen_height=1280, model=1))
    task_id = env["data"]
    assert env["code"] == 0 and isinstance(task_id, str) and len(task_id) == 32 and int(task_id, 16) >= 0
    seen: list[tuple[int, int]] = []

    def ended() -> bool:
        d = api.detail(task_id)
        seen.append((d["status"], d["progress"]))
        return d["status"] == 20

    wait_for(ended, interval=0.03)
    statuses = [s for s, _ in seen]
    assert statuses == sorted(statuses) and statuses[0] == 0 and 10 in statuses
    progress = [p for s, p in seen if s == 10]
    assert progress == sorted(progress) and all(1 <= p <= 99 for p in progress)
    done = api.detail(task_id)
    assert set(done) == {"id", "status", "progress", "msg", "video_url", "preview_url", "duration",
                         "create_time"}
    assert done["progress"] == 100 and done["msg"] == "success" and done["duration"] > 0
    assert abs(done["create_time"] - time.time()) < 5 and isinstance(done["create_time"], int)
    queued = api.detail(api.create(api.tts_body(video))["data"])
    assert queued["status"] == 0 and queued["video_url"] == "" and queued["preview_url"] == ""
    assert "duration" not in queued
    assert sb.tasks()[0]["request"]["screen_width"] == 720
    for task in ("", "f" * 32):
        assert api.call("GET", "/open/v1/video_lip_sync/detail", params={"id": task})["code"] == 40000


def test_audio_driven_task_has_no_duration(api: Api) -> None:
    video = api.ready_upload()
    audio = api.ready_upload(b"ID3" + b"a" * 100, "lip_sync_audio", "v.mp3")
    task = api.wait_end(api.create(video_file_id=video, audio_type="audio", audio_file_id=audio)["data"])
    assert task["status"] == 20 and "duration" not in task


def test_file_of_the_wrong_service_fails_the_task_later(api: Api) -> None:
    audio = api.ready_upload(b"ID3" + b"a" * 100, "lip_sync_audio", "v.mp3")
    env = api.create(api.tts_body(audio))
    assert env["code"] == 0
    task = api.wait_end(env["data"])
    assert task["status"] == 30 and "lip_sync_audio" in task["msg"]


def test_empty_file_fails_the_task_later(api: Api) -> None:
    video = api.ready_upload(b"")
    task = api.wait_end(api.create(api.tts_body(video))["data"])
    assert task["status"] == 30 and "empty" in task["msg"]


def test_list_pagination_newest_first(api: Api) -> None:
    video = api.ready_upload()
    ids = [api.create(api.tts_body(video))["data"] for _ in range(5)]
    pages = [api.ok("POST", "/open/v1/video_lip_sync/list", json={"page": p, "page_size": 2})
             for p in (1, 2, 3, 4)]
    assert [t["id"] for p in pages for t in p["list"]] == ids[::-1]
    assert pages[0]["page_info"] == {"page": 1, "size": 2, "total_count": 5, "total_page": 3}
    assert pages[3]["list"] == [] and pages[3]["page_info"]["page"] == 4
    default = api.ok("POST", "/open/v1/video_lip_sync/list", content=b"")
    assert default["page_info"] == {"page": 1, "size": 10, "total_count": 5, "total_page": 1}
    assert api.ok("POST", "/open/v1/video_lip_sync/list", json={"page_size": 50})["page_info"]["size"] == 50
    for body, code in (({"page_size": 51}, 40000), ({"page_size": 0}, 40000), ({"page": 0}, 40000),
                       ({"page": "1"}, 400), ({"page": 1.5}, 400), ({"status": 20}, 40000)):
        assert api.call("POST", "/open/v1/video_lip_sync/list", json=body)["code"] == code, body
    assert api.call("POST", "/open/v1/video_lip_sync/list", content=b"[]")["code"] == 400


# -- results -------------------------------------------------------------------------------------


def test_results_bytes_ranges_and_expiry(sb: Sandbox, api: Api) -> None:
    payload = bytes(range(256)) * 40
    slot = api.slot()
    assert api.put(slot, payload).status_code == 200
    api.ready(slot["file_id"])
    task = api.wait_end(api.create(api.tts_body(slot["file_id"]))["data"])
    assert api.put(slot, b"replaced later").status_code == 200  # the task keeps its copy
    video = api.http.get(task["video_url"])
    assert video.status_code == 200 and video.content == payload
    assert video.headers["content-type"] == "video/mp4"
    assert video.headers["content-length"] == str(len(payload))
    assert video.headers["accept-ranges"] == "bytes"
    size = len(payload)
    for spec, first, last in (("bytes=0-99", 0, 99), ("bytes=100-", 100, size - 1),
                              ("bytes=-10", size - 10, size - 1), ("bytes=10-99999", 10, size - 1)):
        part = api.http.get(task["video_url"], headers={"Range": spec})
        assert part.status_code == 206, spec
        assert part.content == payload[first:last + 1]
        assert part.headers["content-range"] == f"bytes {first}-{last}/{size}"
    for spec in (f"bytes={size}-", "bytes=5-2", "bytes=abc", "bytes=0-1,4-5", "bytes=-0"):
        refused = api.http.get(task["video_url"], headers={"Range": spec})
        assert refused.status_code == 416, spec
        assert refused.headers["content-range"] == f"bytes */{size}"
    head = api.http.head(task["video_url"])
    assert head.status_code == 200 and head.headers["content-length"] == str(size) and head.content == b""
    cover = api.http.get(task["preview_url"])
    assert cover.status_code == 200 and cover.headers["content-type"] == "image/jpeg"
    assert cover.content[:3] == b"\xff\xd8\xff" and cover.content[-2:] == b"\xff\xd9"
    forged = task["video_url"].replace("sig=", "sig=1")
    assert api.http.get(forged).status_code == 403
    other = task["video_url"].replace(".mp4?", ".jpg?")
    assert _xml_code(api.http.get(other)) == "SignatureDoesNotMatch"
    sb.update(result_url_ttl=0)
    stale = api.detail(task["id"])
    expired = api.http.get(stale["video_url"])
    assert expired.status_code == 403 and "Request has expired" in expired.text


def test_voice_list(api: Api) -> None:
    first = api.ok("GET", "/open/v1/list_common_audio", params={"page": 1, "size": 10})
    assert first["page_info"] == {"page": 1, "size": 10, "total_count": 12, "total_page": 2}
    second = api.ok("GET", "/open/v1/list_common_audio", params={"page": 2, "size": 10})
    voices = first["list"] + second["list"]
    assert len(voices) == 12 and len({v["id"] for v in voices}) == 12
    assert VOICE in {v["id"] for v in voices}
    fields = {"id", "name", "gender", "lang", "desc", "speed", "pitch", "grade", "audition"}
    assert all(set(v) == fields for v in voices)
    sample = api.http.get(voices[0]["audition"])
    assert sample.status_code == 200 and sample.content[:4] == b"RIFF"
    assert api.ok("GET", "/open/v1/list_common_audio")["page_info"]["size"] == 10
    for params, code in (({"size": 51}, 40000), ({"page": 0}, 40000), ({"size": "x"}, 400)):
        assert api.call("GET", "/open/v1/list_common_audio", params=params)["code"] == code


# -- rate limits -----------------------------------------------------------------------------------


def test_rate_limits(sb: Sandbox, api: Api) -> None:
    video = api.ready_upload()
    sb.update(creates_per_minute=2, file_calls_per_minute=3, queries_per_second=2)
    assert [api.create(api.tts_body(video))["code"] for _ in range(3)] == [0, 0, 40001]
    calls = [api.call("GET", "/open/v1/common/create_upload_url",
                      params={"service": "lip_sync_video", "name": "a.mp4"})["code"],
             api.call("GET", "/open/v1/common/file_detail", params={"id": video})["code"],
             api.call("GET", "/open/v1/common/file_detail", params={"id": video})["code"],
             api.call("GET", "/open/v1/common/file_detail", params={"id": video})["code"]]
    assert calls == [0, 0, 0, 40001]

    def burst() -> list[int]:
        return [api.call("POST", "/open/v1/video_lip_sync/list", json={})["code"],
                api.call("GET", "/open/v1/video_lip_sync/detail", params={"id": "x"})["code"],
                api.call("POST", "/open/v1/video_lip_sync/list", json={})["code"]]

    assert burst() == [0, 40000, 40001]
    wait_for(lambda: api.call("POST", "/open/v1/video_lip_sync/list", json={})["code"] == 0, interval=0.1)
    # Not limited: tokens, voices, storage.
    assert all(api.call("POST", "/open/v1/access_token", auth=False,
                        json={"app_id": "sandbox", "secret_key": "sandbox"})["code"] == 0 for _ in range(5))
    limited = [e for e in sb.journal() if e["code"] == 40001]
    assert {e["endpoint"] for e in limited} >= {"create", "file_detail", "list"}
