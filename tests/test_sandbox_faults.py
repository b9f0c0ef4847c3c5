"""Every fault the sandbox can inject, seeded, checked on the wire and in the journal."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from hotfolder.sandbox import Sandbox, SandboxSettings
from sandbox_fixtures import Api, api, sb, wait_for  # noqa: F401 (fixtures)


def _entries(sb: Sandbox, endpoint: str, since: int = 0) -> list[dict[str, Any]]:
    return [e for e in sb.journal(since) if e["endpoint"] == endpoint]


def _last_seq(sb: Sandbox) -> int:
    entries = sb.journal()
    return entries[-1]["seq"] if entries else 0


def test_error_rate(sb: Sandbox, api: Api) -> None:
    slot = api.slot()
    sb.update(error_rate=1.0)
    for _ in range(3):
        env = api.call("POST", "/open/v1/video_lip_sync/list", json={})
        assert env["code"] == 50000 and env["msg"] == "系统内部错误" and env["data"] is None
    assert api.call("POST", "/open/v1/access_token", auth=False,
                    json={"app_id": "sandbox", "secret_key": "sandbox"})["code"] == 50000
    assert api.put(slot, b"storage is not an API endpoint").status_code == 200
    listed = _entries(sb, "list")
    assert [(e["code"], e["fault"], e["processed"]) for e in listed] == [(50000, "error", False)] * 3
    assert _entries(sb, "upload_put")[-1]["fault"] is None


def test_drop_rate_on_api_calls(sb: Sandbox, api: Api) -> None:
    video = api.ready_upload()
    api.login()
    seq = _last_seq(sb)
    sb.update(drop_rate=1.0, seed=3)
    for _ in range(12):
        with pytest.raises(httpx.RemoteProtocolError):
            api.create(api.tts_body(video))
    creates = _entries(sb, "create", seq)
    assert len(creates) == 12
    assert all(e["fault"] == "drop" and e["http_status"] is None for e in creates)
    processed = [e for e in creates if e["processed"]]
    assert 0 < len(processed) < 12  # some lost before the service, some after it acted
    assert all(e["code"] == 0 for e in processed)
    assert all(e["code"] is None for e in creates if not e["processed"])
    assert len(sb.tasks()) == len(processed)  # exactly the creates that got through exist


def test_gateway_errors(sb: Sandbox, api: Api) -> None:
    video = api.ready_upload()
    api.login()
    seq = _last_seq(sb)
    sb.update(gateway_error_rate=1.0, seed=5)
    statuses = []
    for _ in range(24):
        response = api.http.post("/open/v1/video_lip_sync/create", json=api.tts_body(video),
                                 headers={"access_token": api.token})
        statuses.append(response.status_code)
        assert response.headers["content-type"] == "text/html"
        assert f"<title>{response.status_code} " in response.text and "nginx" in response.text
    assert set(statuses) == {502, 503, 504}
    creates = _entries(sb, "create", seq)
    assert [e["http_status"] for e in creates] == statuses
    for entry in creates:
        assert entry["fault"] == "gateway"
        # 504: the service did the work behind the gateway's back.
        assert entry["processed"] == (entry["http_status"] == 504)
    assert len(sb.tasks()) == statuses.count(504)


def test_slow_requests(sb: Sandbox, api: Api) -> None:
    api.login()
    slot = api.slot()
    sb.update(slow_rate=1.0, slow_seconds=0.3)
    started = time.monotonic()
    assert api.call("GET", "/open/v1/list_common_audio")["code"] == 0
    assert time.monotonic() - started >= 0.3
    with pytest.raises(httpx.ReadTimeout):
        api.http.get("/open/v1/list_common_audio", headers={"access_token": api.token}, timeout=0.1)
    started = time.monotonic()
    assert api.put(slot, b"slow upload").status_code == 200
    assert time.monotonic() - started >= 0.3
    wait_for(lambda: len(_entries(sb, "list_common_audio")) == 2)
    assert [e["fault"] for e in _entries(sb, "list_common_audio")] == ["slow", "slow"]
    assert _entries(sb, "upload_put")[-1]["fault"] == "slow"


def _finished_task(api: Api, payload: bytes) -> dict[str, Any]:
    video = api.ready_upload(payload)
    return api.wait_end(api.create(api.tts_body(video))["data"])


def test_truncated_downloads(sb: Sandbox, api: Api) -> None:
    payload = b"0123456789" * 5000
    task = _finished_task(api, payload)
    sb.update(truncate_rate=1.0, seed=11)
    for headers in ({}, {"Range": "bytes=100-"}):
        with api.http.stream("GET", task["video_url"], headers=headers) as response:
            declared = int(response.headers["content-length"])
            got = bytearray()
            with pytest.raises(httpx.RemoteProtocolError):
                for chunk in response.iter_raw():
                    got += chunk
        assert len(got) < declared
        start = 100 if headers else 0
        assert bytes(got) == payload[start:start + len(got)]  # what arrives is right, just short
    downloads = _entries(sb, "download")
    assert [(e["fault"], e["http_status"]) for e in downloads[-2:]] == [("truncate", 200), ("truncate", 206)]
    sb.update(truncate_rate=0.0)
    assert api.http.get(task["video_url"]).content == payload


def test_drop_rate_on_storage(sb: Sandbox, api: Api) -> None:
    task = _finished_task(api, b"v" * 1000)
    slots = [api.slot() for _ in range(10)]
    sb.update(drop_rate=1.0, seed=2)
    for slot in slots:
        with pytest.raises(httpx.RemoteProtocolError):
            api.put(slot, b"content")
    with pytest.raises(httpx.RemoteProtocolError):
        api.http.get(task["video_url"])
    puts = _entries(sb, "upload_put")[-10:]
    assert all(e["fault"] == "drop" and e["http_status"] is None for e in puts)
    sb.update(drop_rate=0.0)
    stored = [api.file(s["file_id"])["bytes"] == len(b"content") for s in slots]
    assert stored == [e["processed"] for e in puts] and 0 < sum(stored) < 10
    assert _entries(sb, "download")[-1]["fault"] == "drop"


def test_failed_tasks_and_rejected_files(sb: Sandbox, api: Api) -> None:
    video = api.ready_upload()
    sb.update(fail_task_rate=1.0, reject_file_rate=1.0)
    task = api.wait_end(api.create(api.tts_body(video))["data"])
    assert task["status"] == 30 and task["msg"] and task["video_url"] == ""
    rejected = api.upload()
    info = api.ready(rejected, status=98)
    assert info["msg"]
    env = api.create(api.tts_body(rejected))
    assert env["code"] == 40000 and "98" in env["msg"]


def _fault_run(tmp_path: Path, seed: int) -> list[Any]:
    settings = SandboxSettings(seed=seed, error_rate=0.3, gateway_error_rate=0.2, slow_rate=0.2,
                               slow_seconds=0.01, queries_per_second=0)
    with Sandbox(tmp_path, settings=settings) as sandbox:
        api = Api(sandbox)
        for _ in range(30):  # a faulted login just means 10400s later: same for both runs
            reply = api.http.post("/open/v1/access_token",
                                  json={"app_id": "sandbox", "secret_key": "sandbox"})
            if reply.status_code == 200 and reply.json()["code"] == 0:
                api.token = reply.json()["data"]["access_token"]
            api.http.post("/open/v1/video_lip_sync/list", json={}, headers={"access_token": api.token or ""})
        api.close()
        return [(e["fault"], e["http_status"]) for e in sandbox.journal()]


def test_faults_are_reproducible_from_the_seed(tmp_path: Path) -> None:
    first = _fault_run(tmp_path / "a", seed=42)
    assert first == _fault_run(tmp_path / "b", seed=42)
    assert first != _fault_run(tmp_path / "c", seed=43)
    faults = [f for f, _ in first]
    assert {"error", "gateway", "slow", None} <= set(faults)
    assert 6 <= faults.count("error") <= 30


def test_control_endpoint_is_never_faulted(sb: Sandbox) -> None:
    sb.update(error_rate=0.5, drop_rate=0.5, gateway_error_rate=0.0, slow_rate=1.0, slow_seconds=5)
    with httpx.Client(base_url=sb.base_url, trust_env=False, timeout=2) as control:
        for _ in range(10):
            assert control.get("/_sandbox/settings").status_code == 200
        assert control.post("/_sandbox/settings", json={"drop_rate": 0}).status_code == 200
    assert sb.journal() == []
