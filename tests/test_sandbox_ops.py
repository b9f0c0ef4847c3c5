"""Billing, callbacks, persistence, the control endpoint, settings and clean shutdown."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import httpx
import pytest

import hotfolder.sandbox as sandbox_pkg
from hotfolder.sandbox import Sandbox, SandboxSettings, cli_options, settings_from_mapping
from sandbox_fixtures import FAST, Api, CallbackSink, api, sb, sink, wait_for  # noqa: F401

# -- billing -----------------------------------------------------------------------------------


def test_balance_refuse_and_top_up(sb: Sandbox, api: Api) -> None:
    video = api.ready_upload()
    control = httpx.Client(base_url=sb.base_url, trust_env=False)
    sb.update(balance_creates=1)
    assert api.create(api.tts_body(video))["code"] == 0
    refused = api.create(api.tts_body(video))
    assert refused["code"] == 50000 and "余额不足" in refused["msg"] and refused["data"] is None
    assert control.get("/_sandbox/balance").json() == {"creates": 0}
    assert control.post("/_sandbox/balance", json={"creates": 2}).json() == {"creates": 2}
    assert [api.create(api.tts_body(video))["code"] for _ in range(3)] == [0, 0, 50000]
    assert control.post("/_sandbox/balance", json={"creates": None}).json() == {"creates": None}
    assert api.create(api.tts_body(video))["code"] == 0
    assert len(sb.tasks()) == 4
    control.close()


def test_balance_fail_task_mode(sb: Sandbox, api: Api) -> None:
    video = api.ready_upload()
    sb.update(balance_creates=0, balance_mode="fail_task")
    env = api.create(api.tts_body(video))
    assert env["code"] == 0
    task = api.wait_end(env["data"])
    assert task["status"] == 30 and "蝉豆不足" in task["msg"] and task["video_url"] == ""
    sb.update(balance_creates=None)
    assert api.wait_end(api.create(api.tts_body(video))["data"])["status"] == 20


# -- callbacks ---------------------------------------------------------------------------------


def test_callback_posted_once_when_the_task_ends(sb: Sandbox, api: Api, sink: CallbackSink) -> None:
    video = api.ready_upload()
    done = api.create(api.tts_body(video, callback=sink.url + "/hook?job=1"))["data"]
    sb.update(fail_task_rate=1.0)
    failed = api.create(api.tts_body(video, callback=sink.url + "/hook?job=2"))["data"]
    api.create(api.tts_body(video))  # no callback URL: nothing posted
    wait_for(lambda: len(sink.received) >= 2)
    entries = wait_for(lambda: len(cbs := [e for e in sb.journal() if e["endpoint"] == "callback"]) >= 2
                       and cbs)
    bodies = {r["body"]["data"]["id"]: r for r in sink.received}
    assert set(bodies) == {done, failed}
    ok = bodies[done]
    assert ok["path"] == "/hook?job=1" and ok["content_type"] == "application/json"
    assert set(ok["body"]) == {"trace_id", "code", "msg", "data"} and ok["body"]["code"] == 0
    assert ok["body"]["data"] == {**api.detail(done), "video_url": ok["body"]["data"]["video_url"],
                                  "preview_url": ok["body"]["data"]["preview_url"]}
    assert ok["body"]["data"]["status"] == 20
    assert bodies[failed]["body"]["data"]["status"] == 30
    assert [(e["http_status"], e["path"], e["error"]) for e in entries] == [(200, "/hook", None)] * 2
    assert "job=" not in repr(entries)  # queries stay out of the journal
    sb.update(fail_task_rate=0.0)
    time.sleep(0.3)  # several ticker rounds: nothing is sent twice
    assert len(sink.received) == 2
    assert {t["callback_state"] for t in sb.tasks()} == {"sent", "none"}


def test_callback_failures_are_journaled_and_callbacks_can_be_off(sb: Sandbox, api: Api) -> None:
    with socket.socket() as probe:  # a port with nobody listening
        probe.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{probe.getsockname()[1]}/cb"
    video = api.ready_upload()
    api.create(api.tts_body(video, callback=dead))
    entry = wait_for(lambda: [e for e in sb.journal() if e["endpoint"] == "callback"])[0]
    assert entry["http_status"] is None and "ConnectError" in entry["error"]
    sb.update(emit_callbacks=False)
    task = api.create(api.tts_body(video, callback=dead))["data"]
    wait_for(lambda: [t for t in sb.tasks() if t["id"] == task][0]["callback_state"] == "skipped")
    assert len([e for e in sb.journal() if e["endpoint"] == "callback"]) == 1


# -- persistence ---------------------------------------------------------------------------------


def test_state_survives_a_restart(tmp_path: Path) -> None:
    data_dir = tmp_path / "sandbox"
    with Sandbox(data_dir, settings=FAST) as first:
        api = Api(first)
        token = api.login()
        video = api.ready_upload(b"persisted bytes")
        tasks = [api.create(api.tts_body(video))["data"] for _ in range(2)]
        api.wait_end(tasks[-1])
        api.close()
    assert (data_dir / "state.json").exists()
    assert not list(data_dir.glob("*.tmp"))
    with Sandbox(data_dir, settings=FAST) as second:
        api = Api(second)
        api.token = token  # tokens survive too
        assert [t["id"] for t in second.tasks()] == tasks
        assert api.file(video)["status"] == 1
        done = api.detail(tasks[0])
        assert done["status"] == 20 and done["video_url"].startswith(second.base_url)
        assert api.http.get(done["video_url"]).content == b"persisted bytes"
        page = api.ok("POST", "/open/v1/video_lip_sync/list", json={})
        assert [t["id"] for t in page["list"]] == tasks[::-1]
        assert second.journal()[0]["endpoint"] == "file_detail"  # the journal is per run
        api.close()


def test_unreadable_state_is_reported(tmp_path: Path) -> None:
    (tmp_path / "state.json").write_text("{broken")
    with pytest.raises(RuntimeError, match="delete it"):
        Sandbox(tmp_path).start()


# -- control endpoint ----------------------------------------------------------------------------


def test_control_endpoint(sb: Sandbox, api: Api) -> None:
    control = httpx.Client(base_url=sb.base_url, trust_env=False)
    assert control.get("/_sandbox/settings").json() == sb.settings.as_dict()
    changed = control.post("/_sandbox/settings", json={"error-rate": "0.5", "queue_seconds": 1})
    assert changed.status_code == 200 and changed.json()["error_rate"] == 0.5
    assert sb.settings.error_rate == 0.5 and sb.settings.queue_seconds == 1.0
    for body, word in (({"error_rate": 2}, "error_rate"), ({"nope": 1}, "nope"),
                       ({"balance_mode": "x"}, "balance_mode"), ([1], "object")):
        refused = control.post("/_sandbox/settings", json=body)
        assert refused.status_code == 400 and word in refused.json()["error"]
    assert control.post("/_sandbox/settings", content=b"{").status_code == 400
    sb.update(error_rate=0.0)
    api.login()
    seq = sb.journal()[-1]["seq"]
    api.call("GET", "/open/v1/list_common_audio")
    since = control.get("/_sandbox/journal", params={"since": seq}).json()
    assert [e["endpoint"] for e in since] == ["list_common_audio"]
    assert control.get("/_sandbox/journal", params={"since": "x"}).status_code == 400
    assert control.get("/_sandbox/tasks").json() == []
    assert control.get("/_sandbox/nope").status_code == 404
    slot = api.slot()
    forced = control.post("/_sandbox/file_status", json={"id": slot["file_id"], "status": 100})
    assert forced.json()["status"] == 100
    assert control.post("/_sandbox/file_status", json={"id": "x", "status": 99}).status_code == 400
    assert all(e["endpoint"] != "control" and not e["path"].startswith("/_sandbox")
               for e in sb.journal())  # control requests are not journaled
    control.close()


# -- settings --------------------------------------------------------------------------------------


def test_settings_from_mapping_coerces_and_validates() -> None:
    base = SandboxSettings()
    new = settings_from_mapping({"drop-rate": "0.25", "balance_creates": "none", "seed": "7",
                                 "emit_callbacks": "false", "creates_per_minute": 3.0}, base)
    assert (new.drop_rate, new.balance_creates, new.seed, new.emit_callbacks) == (0.25, None, 7, False)
    assert new.creates_per_minute == 3 and base.drop_rate == 0.0
    assert settings_from_mapping({"balance_creates": 5}).balance_creates == 5
    for bad in ({"drop_rate": 1.5}, {"slow_seconds": -1}, {"seed": "x"}, {"seed": True},
                {"emit_callbacks": "maybe"}, {"balance_mode": "later"}, {"queries_per_second": -1},
                {"file_ready_delay": "nan"}, {"unknown": 1}, {"balance_creates": -1}):
        with pytest.raises(ValueError, match=next(iter(bad)).replace("_", ".")):
            settings_from_mapping(bad)


def test_every_setting_has_a_flag_help_and_doc() -> None:
    options = cli_options()
    names = [o["name"] for o in options]
    assert names == list(SandboxSettings().as_dict())
    doc = sandbox_pkg.__doc__ or ""
    for option in options:
        assert option["flag"] == "--" + option["name"].replace("_", "-")
        assert option["help"] and option["name"] in doc
    balance = next(o for o in options if o["name"] == "balance_creates")
    assert balance["type"] is int and balance["default"] is None


def test_update_rejects_bad_values_atomically(sb: Sandbox) -> None:
    with pytest.raises(ValueError):
        sb.update(error_rate=0.5, drop_rate=7)
    assert sb.settings.error_rate == 0.0


# -- lifecycle -------------------------------------------------------------------------------------


def test_stop_leaks_no_threads_even_with_open_and_slow_connections(tmp_path: Path) -> None:
    before = set(threading.enumerate())
    sandbox = Sandbox(tmp_path / "sb", settings=SandboxSettings(slow_rate=1.0, slow_seconds=30)).start()
    idle = socket.create_connection(("127.0.0.1", sandbox.port))  # an idle keep-alive client
    slow_result: list[object] = []

    def slow_call() -> None:
        try:
            httpx.get(sandbox.base_url + "/open/v1/list_common_audio", timeout=30, trust_env=False)
        except httpx.HTTPError as exc:
            slow_result.append(exc)

    caller = threading.Thread(target=slow_call)
    caller.start()
    wait_for(lambda: len(set(threading.enumerate()) - before) >= 6)  # 3 own + 2 handlers + caller
    started = time.monotonic()
    sandbox.stop()
    assert time.monotonic() - started < 3
    caller.join(5)
    idle.close()
    assert set(threading.enumerate()) == before
    sandbox.stop()  # a second stop is harmless
    with pytest.raises(httpx.ConnectError):
        httpx.get(sandbox.base_url + "/_sandbox/settings", trust_env=False)


def test_context_manager_and_restart_on_the_same_port(tmp_path: Path) -> None:
    sandbox = Sandbox(tmp_path)
    with sandbox:
        port = sandbox.port
        assert httpx.get(sandbox.base_url + "/_sandbox/settings", trust_env=False).status_code == 200
    with sandbox:
        assert sandbox.port == port
        assert httpx.get(sandbox.base_url + "/_sandbox/settings", trust_env=False).status_code == 200
