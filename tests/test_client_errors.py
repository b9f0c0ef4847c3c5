"""Pure mapping cases of the client, with httpx.MockTransport: envelopes and HTTP answers that no
real server produces on demand, token bookkeeping under a fake clock, lenient parsing.
(Storage and file readiness: tests/test_client_mock_transfer.py.)"""

from __future__ import annotations

import json
import threading

import httpx
import pytest
import structlog

from client_fixtures import SECRET, TOKEN_PREFIX, FakeApi, FakeClock, envelope
from hotfolder.chanjing import LipSyncRequest, MemoryTokenStore, Token
from hotfolder.chanjing.mapping import classify, parse_retry_after
from hotfolder.chanjing.transfer import content_range
from hotfolder.errors import (ApiError, AuthError, BillingPaused, OutcomeUnknown, PermanentError, RateLimited,
                              RetryLater)


REQ = LipSyncRequest(video_file_id="v1", text="你好", audio_man_id="C-1")


# -- the code table -------------------------------------------------------------------------------
@pytest.mark.parametrize("code, msg, endpoint, expected", [
    (10400, "AccessToken已失效", "detail", AuthError),
    (10401, "", "list", AuthError),
    (40001, "超出RPM/QPS限制", "create", RateLimited),
    (400, "参数格式错误", "create", PermanentError),
    (40000, "参数错误: page_size", "list", PermanentError),
    (40000, "app_id or secret_key is wrong", "access_token", AuthError),
    (50000, "系统内部错误", "detail", RetryLater),
    (50000, "文件还未完成上传", "create", RetryLater),
    (50000, "file not ready", "create", RetryLater),
    (50000, "文本中包含不支持的字符(emoji),请修改后重试", "create", PermanentError),
    (50000, "文本包含表情", "create", PermanentError),
    (50000, "无权限访问该文件", "create", PermanentError),
    (50000, "No permission on file", "create", PermanentError),
    (50000, "参数有误", "create", PermanentError),
    (50000, "余额不足,请充值后重试", "create", BillingPaused),
    (40000, "蝉豆不足", "create", BillingPaused),
    (50000, "账户欠费", "create", BillingPaused),
    (50000, "扣费失败", "create", BillingPaused),
    (50000, "余额不足", "detail", RetryLater),  # billing words only matter on a create
    (12345, "something new", "detail", PermanentError),
])
def test_code_table(code: int, msg: str, endpoint: str, expected: type) -> None:
    err = classify(code, msg, endpoint=endpoint, trace_id="t-1")
    assert type(err) is expected
    assert (err.code, err.endpoint, err.trace_id) == (code, endpoint, "t-1")
    assert msg in err.msg


def test_unknown_code_keeps_the_message() -> None:
    err = classify(777, "", endpoint="detail")
    assert isinstance(err, PermanentError) and "777" in err.msg


def test_retry_after_forms() -> None:
    assert parse_retry_after("3", 0) == 3.0
    assert parse_retry_after("Thu, 01 Jan 1970 00:01:40 GMT", 40.0) == pytest.approx(60.0)
    assert parse_retry_after("soon", 0) is None
    assert parse_retry_after(None, 0) is None


def test_content_range_forms() -> None:
    assert content_range("bytes 100-199/1000") == (100, 1000)
    assert content_range("bytes */1000") == (None, 1000)
    assert content_range("bytes 0-9/*") == (0, None)
    assert content_range(None) == (None, None)


# -- envelopes and HTTP answers through the client ---------------------------------------------------
def test_string_codes_are_accepted() -> None:
    api = FakeApi().on("detail", envelope("40001", msg="slow"), envelope("0", {"id": "t", "status": "20"}))
    with api.client() as client:
        task = client.task_detail("t")
    assert task.status == 20 and len(api.calls("detail")) == 2


def test_gateway_html_is_retry_later_and_names_the_page() -> None:
    page = b"<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>"
    api = FakeApi().on("detail", httpx.Response(502, content=page, headers={"Content-Type": "text/html"}))
    with api.client() as client, pytest.raises(RetryLater) as info:
        client.task_detail("t")
    assert "502 Bad Gateway" in str(info.value) and info.value.code == 502
    assert len(api.calls("detail")) == 4  # 1 + max_retries (3)


def test_gateway_page_on_create_is_outcome_unknown_and_not_resent() -> None:
    api = FakeApi().on("create", httpx.Response(504, content=b"<html><title>504 Gateway Time-out</title></html>"))
    with api.client() as client, pytest.raises(OutcomeUnknown):
        client.create_lip_sync(REQ)
    assert len(api.calls("create")) == 1


def test_http_429_honours_retry_after() -> None:
    clock = FakeClock()
    api = FakeApi(clock).on("list", httpx.Response(429, headers={"Retry-After": "4"}),
                            envelope(data={"list": [], "page_info": {}}))
    with api.client() as client:
        page = client.list_tasks()
    assert page.tasks == [] and 4.0 in clock.sleeps


def test_plain_404_points_at_base_url() -> None:
    api = FakeApi().on("detail", httpx.Response(404, text="404 page not found"))
    with api.client() as client, pytest.raises(PermanentError, match="base_url"):
        client.task_detail("t")


def test_non_json_200_is_transient() -> None:
    api = FakeApi().on("detail", httpx.Response(200, text="<html>captive portal</html>"),
                       envelope(data={"id": "t", "status": 0}))
    with api.client() as client:
        assert client.task_detail("t").status == 0


def test_connect_error_on_create_is_retried_nothing_was_sent() -> None:
    api = FakeApi().on("create", httpx.ConnectError("refused"), envelope(data="task-1"))
    with api.client() as client:
        assert client.create_lip_sync(REQ) == "task-1"


@pytest.mark.parametrize("exc", [httpx.ReadTimeout("slow"), httpx.RemoteProtocolError("closed"),
                                 httpx.ReadError("reset"), httpx.WriteTimeout("stuck")])
def test_lost_answer_on_create_is_outcome_unknown(exc: Exception) -> None:
    api = FakeApi().on("create", exc, envelope(data="task-2"))
    with api.client() as client, pytest.raises(OutcomeUnknown) as info:
        client.create_lip_sync(REQ)
    assert len(api.calls("create")) == 1
    assert isinstance(info.value.__cause__, httpx.HTTPError)
    assert "reconcile" in str(info.value)


@pytest.mark.parametrize("reply", [envelope(40001, msg="超出限制"), envelope(50000, msg="系统内部错误")])
def test_api_refusals_on_create_are_retried(reply: httpx.Response) -> None:
    api = FakeApi().on("create", reply, envelope(data="task-3"))
    with api.client() as client:
        assert client.create_lip_sync(REQ) == "task-3"
    assert len(api.calls("create")) == 2


def test_create_success_without_an_id_is_outcome_unknown() -> None:
    api = FakeApi().on("create", envelope(data=None))
    with api.client() as client, pytest.raises(OutcomeUnknown):
        client.create_lip_sync(REQ)


def test_transport_errors_on_queries_are_retried() -> None:
    api = FakeApi().on("detail", httpx.ReadTimeout("slow"), httpx.ConnectError("no"),
                       envelope(data={"id": "t", "status": 10, "progress": "42"}))
    with api.client() as client:
        task = client.task_detail("t")
    assert (task.status, task.progress) == (10, 42)


def test_errors_carry_code_msg_trace_and_endpoint() -> None:
    api = FakeApi().on("list", envelope(40000, msg="参数错误: page", trace_id="abc"))
    with api.client() as client, pytest.raises(PermanentError) as info:
        client.list_tasks()
    err = info.value
    assert (err.code, err.msg, err.trace_id, err.endpoint) == (40000, "参数错误: page", "abc", "list")


# -- tokens ----------------------------------------------------------------------------------------
def test_token_is_fetched_lazily_and_reused() -> None:
    api = FakeApi().on("detail", envelope(data={"id": "t", "status": 0}))
    client = api.client()
    assert api.tokens_issued == 0
    for _ in range(5):
        client.task_detail("t")
    client.close()
    assert api.tokens_issued == 1
    sent = {r.headers["access_token"] for r in api.calls("detail")}
    assert sent == {f"{TOKEN_PREFIX}1"}
    token_body = json.loads(api.bodies[0])
    assert token_body == {"app_id": "app", "secret_key": SECRET}


def test_token_is_refreshed_five_minutes_before_it_expires() -> None:
    clock = FakeClock()
    api = FakeApi(clock, token_ttl=3600).on("detail", envelope(data={"id": "t", "status": 0}))
    with api.client() as client:
        client.task_detail("t")
        clock.now += 3600 - 301
        client.task_detail("t")
        assert api.tokens_issued == 1
        clock.now += 2
        client.task_detail("t")
        assert api.tokens_issued == 2


def test_expire_in_given_as_a_duration_or_missing() -> None:
    clock = FakeClock()
    api = FakeApi(clock).on("access_token", envelope(data={"access_token": "x", "expire_in": 7200}))
    store = MemoryTokenStore()
    with api.client(token_store=store) as client:
        client.task_detail("t")
    token = store.load("app")
    assert token is not None and token.expires_at == clock() + 7200
    api2 = FakeApi(clock).on("access_token", envelope(data={"access_token": "y"}))
    store2 = MemoryTokenStore()
    with api2.client(token_store=store2) as client:
        client.task_detail("t")
    assert store2.load("app") is not None


def test_10400_refreshes_once_and_retries() -> None:
    api = FakeApi()

    def detail(request: httpx.Request) -> httpx.Response:
        if request.headers.get("access_token") != api.valid_token:
            return envelope(10400, msg="AccessToken已失效")
        return envelope(data={"id": "t", "status": 20})

    api.on("detail", detail)
    store = MemoryTokenStore()
    store.refresh("app", None, lambda: Token("superseded", 2e9))  # e.g. left by another process
    with api.client(token_store=store) as client:
        assert client.task_detail("t").status == 20
    assert api.tokens_issued == 1 and len(api.calls("detail")) == 2


def test_10400_twice_is_auth_error_after_exactly_one_refresh() -> None:
    api = FakeApi().on("detail", envelope(10400, msg="AccessToken已失效"))
    with api.client() as client, pytest.raises(AuthError) as info:
        client.task_detail("t")
    assert info.value.code == 10400
    assert api.tokens_issued == 2 and len(api.calls("detail")) == 2


def test_wrong_credentials_are_auth_error_not_retried() -> None:
    api = FakeApi().on("access_token", envelope(40000, msg="参数错误: app_id or secret_key is wrong"))
    with api.client() as client, pytest.raises(AuthError, match="app_id/secret_key"):
        client.task_detail("t")
    assert len(api.calls("access_token")) == 1 and not api.calls("detail")


def test_threads_share_one_token_fetch() -> None:
    api = FakeApi().on("detail", envelope(data={"id": "t", "status": 0}))
    client = api.client()
    barrier = threading.Barrier(12)
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            barrier.wait()
            for _ in range(5):
                client.task_detail("t")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    client.close()
    assert not errors and api.tokens_issued == 1 and len(api.calls("detail")) == 60


def test_secrets_never_reach_errors_or_logs() -> None:
    api = FakeApi().on("detail", envelope(10400, msg="AccessToken已失效"))
    with structlog.testing.capture_logs() as logs, api.client() as client, pytest.raises(ApiError) as info:
        client.task_detail("t")
    text = repr(logs) + str(info.value) + repr(info.value.__dict__) + repr(client)
    assert SECRET not in text and TOKEN_PREFIX not in text
    assert any(e.get("event") == "api_call" for e in logs)
    assert "***" in repr(Token("abc", 1.0)) and "abc" not in repr(Token("abc", 1.0))


# -- requests we send ---------------------------------------------------------------------------------
def test_tts_text_is_sent_as_an_array_and_none_fields_are_left_out() -> None:
    api = FakeApi().on("create", envelope(data="task-9"))
    req = LipSyncRequest(video_file_id="v1", text="第一句。第二句。", audio_man_id="C-1", speed=1.2,
                         screen_width=720, screen_height=1280, drive_mode="")
    with api.client() as client:
        client.create_lip_sync(req)
    body = json.loads(api.bodies[-1])
    assert body == {"video_file_id": "v1", "audio_type": "tts", "screen_width": 720, "screen_height": 1280,
                    "drive_mode": "", "tts_config": {"text": ["第一句。第二句。"], "audio_man_id": "C-1",
                                                     "speed": 1.2}}


def test_audio_request_body() -> None:
    body = LipSyncRequest(video_file_id="v", audio_type="audio", audio_file_id="a", volume=80).to_api()
    assert body == {"video_file_id": "v", "audio_type": "audio", "audio_file_id": "a", "volume": 80}


@pytest.mark.parametrize("req", [
    LipSyncRequest(video_file_id="v", text="  ", audio_man_id="C"),
    LipSyncRequest(video_file_id="v", text="hi"),
    LipSyncRequest(video_file_id="v", audio_type="audio"),
    LipSyncRequest(video_file_id="", text="hi", audio_man_id="C"),
    LipSyncRequest(video_file_id="v", audio_type="video"),
])
def test_incomplete_requests_are_refused_before_sending(req: LipSyncRequest) -> None:
    api = FakeApi()
    with api.client() as client, pytest.raises(PermanentError, match="incomplete"):
        client.create_lip_sync(req)
    assert not api.requests


def test_list_page_size_is_capped_at_50() -> None:
    api = FakeApi().on("list", envelope(data={"list": []}))
    with api.client() as client:
        page = client.list_tasks(page=0, page_size=500)
    assert json.loads(api.bodies[-1]) == {"page": 1, "page_size": 50}
    assert (page.page, page.size, page.total_count, page.total_page) == (1, 50, 0, 0)


# -- lenient parsing ----------------------------------------------------------------------------------
def test_tasks_parse_leniently() -> None:
    api = FakeApi().on("list", envelope(data={"list": [
        {"id": 123, "status": "20", "progress": 100.0, "video_url": "http://x/v.mp4",
         "tts_config": {"text": "plain string"}, "create_time": "1700000000"},
        {"id": "b", "status": None},
        "garbage",
    ], "page_info": {"page": 1, "size": 50, "total_count": "3", "total_page": 1}}))
    with api.client() as client:
        page = client.list_tasks()
    first, second, third = page.tasks
    assert (first.id, first.status, first.progress, first.text, first.create_time) == \
        ("123", 20, 100, ["plain string"], 1700000000)
    assert first.duration is None and first.preview_url is None
    assert (second.id, second.status) == ("b", None)
    assert third.id == "" and page.total_count == 3


def test_detail_without_data_keeps_the_asked_id() -> None:
    api = FakeApi().on("detail", envelope(data=None))
    with api.client() as client:
        task = client.task_detail("abc")
    assert task.id == "abc" and task.status is None


def test_voices_parse_and_walk_pages() -> None:
    pages = [envelope(data={"list": [{"id": f"C-{i}", "name": "n", "speed": "1"} for i in range(50)],
                            "page_info": {"total_page": 2}}),
             envelope(data={"list": [{"id": "C-last"}], "page_info": {"total_page": 2}})]
    api = FakeApi().on("list_common_audio", *pages)
    with api.client() as client:
        voices = client.all_voices()
    assert len(voices) == 51 and voices[0].speed == 1.0 and voices[-1].id == "C-last"


def test_upload_slot_requires_url_and_id() -> None:
    api = FakeApi().on("create_upload_url", envelope(data={"mime_type": "video/mp4"}))
    with api.client() as client, pytest.raises(PermanentError):
        client.create_upload_url("lip_sync_video", "a.mp4")
