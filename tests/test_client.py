"""The client against the real sandbox over loopback: every endpoint, error class and API fault.

Fault sequences are seeded (the sandbox draws four numbers a request from ``random.Random(seed)``),
so each test sees the same faults on every run; the seeds below were chosen for the sequence they
give and every test asserts that sequence in the journal, so a changed sandbox fails loudly
instead of passing vacuously. Nothing sleeps to guess: conditions are awaited with deadlines.
Uploads and downloads under faults: tests/test_client_transfer.py.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from client_fixtures import (AUDIO, FAST_LIMITS, VIDEO, MakeClient, entries, finished, last_seq, ready_video,
                             settled, tts)
from client_fixtures import client as client  # a fixture
from client_fixtures import make_client as make_client  # a fixture
from helpers import wait_for
from hotfolder.chanjing import ChanjingClient, Limits, LipSyncRequest, MemoryTokenStore
from hotfolder.errors import (AuthError, BillingPaused, FileRejected, OutcomeUnknown, PermanentError,
                              RateLimited, RetryLater)


# -- every endpoint ----------------------------------------------------------------------------------
def test_round_trip_through_every_endpoint(sandbox: Any, client: ChanjingClient, tmp_path: Path) -> None:
    voices = client.list_voices(page=1, size=5)
    assert len(voices) == 5 and voices.total_count >= 12 and all(v.id.startswith("C-") for v in voices)
    assert len(client.all_voices()) == voices.total_count

    slot = client.create_upload_url("lip_sync_video", "clip.mp4")
    assert slot.mime_type == "video/mp4" and slot.file_id and slot.key
    client.put_file(slot, VIDEO)  # the sandbox refuses chunked bodies (411): Content-Length was sent
    info = client.wait_file_ready(slot.file_id, timeout=10)
    assert (info.id, info.status, info.bytes, info.service) == (slot.file_id, 1, VIDEO.stat().st_size,
                                                                "lip_sync_video")
    audio_id = client.upload(AUDIO, "lip_sync_audio")
    assert client.wait_file_ready(audio_id, timeout=10).status == 1

    tts_id = client.create_lip_sync(tts(slot.file_id))
    audio_task = client.create_lip_sync(LipSyncRequest(video_file_id=slot.file_id, audio_type="audio",
                                                       audio_file_id=audio_id, volume=90))
    first = client.task_detail(tts_id)
    assert first.id == tts_id and first.status in (0, 10, 20)
    done = finished(client, tts_id)
    assert done.status == 20 and done.progress == 100 and done.video_url and done.preview_url
    assert finished(client, audio_task).status == 20

    page = client.list_tasks(page=1, page_size=50)
    assert [t.id for t in page.tasks] == [audio_task, tts_id]  # newest first
    assert (page.total_count, page.total_page) == (2, 1)
    one = client.list_tasks(page=2, page_size=1)
    assert [t.id for t in one.tasks] == [tts_id] and one.total_page == 2

    size = client.download(done.video_url, tmp_path / "out" / "result.mp4")
    assert (tmp_path / "out" / "result.mp4").read_bytes() == VIDEO.read_bytes() and size == VIDEO.stat().st_size
    cover = client.download(done.preview_url, tmp_path / "out" / "cover.jpg", expected_size=None)
    assert cover > 0 and (tmp_path / "out" / "cover.jpg").read_bytes()[:2] == b"\xff\xd8"
    assert not list((tmp_path / "out").glob("*.part"))

    seen = {e["endpoint"] for e in sandbox.journal()}
    assert {"access_token", "create_upload_url", "upload_put", "file_detail", "create", "detail", "list",
            "list_common_audio", "download"} <= seen
    assert len(entries(sandbox, "access_token")) == 1  # one token, reused


def test_threads_share_one_client_and_one_token(sandbox: Any, client: ChanjingClient) -> None:
    results: list[str] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            results.append(ready_video(client))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(set(results)) == 4
    assert len(entries(sandbox, "access_token")) == 1


# -- errors the API answers ----------------------------------------------------------------------------
def test_wrong_credentials_are_auth_error(sandbox: Any) -> None:
    with ChanjingClient(sandbox.base_url, "sandbox", "wrong", limits=FAST_LIMITS) as bad, \
            pytest.raises(AuthError, match="app_id/secret_key"):
        bad.list_tasks()
    assert len(settled(sandbox, "access_token", 1)) == 1  # not retried


def test_a_wrong_base_url_is_permanent(sandbox: Any) -> None:
    with ChanjingClient(sandbox.base_url + "/v2", "sandbox", "sandbox", limits=FAST_LIMITS) as lost, \
            pytest.raises(PermanentError, match="base_url") as info:
        lost.list_tasks()
    assert info.value.code == 404


def test_parameter_errors_are_permanent(client: ChanjingClient) -> None:
    with pytest.raises(PermanentError) as info:
        client.create_upload_url("lip_sync_video", "notes.txt")
    assert info.value.code == 40000 and info.value.trace_id
    file_id = ready_video(client)
    with pytest.raises(PermanentError) as info:
        client.create_lip_sync(LipSyncRequest(video_file_id=file_id, text="hi", audio_man_id="C-nobody"))
    assert info.value.code == 40000 and "C-nobody" in info.value.msg
    with pytest.raises(PermanentError) as info:
        client.create_lip_sync(tts(file_id, text="大家好😀"))
    assert info.value.code == 50000 and "emoji" in info.value.msg


def test_unknown_task_is_permanent(client: ChanjingClient) -> None:
    with pytest.raises(PermanentError, match="does not exist"):
        client.task_detail("no-such-task")


def test_create_with_a_file_not_ready_is_retry_later(sandbox: Any, make_client: MakeClient) -> None:
    sandbox.update(file_ready_delay=60)
    client = make_client(max_retries=1)
    file_id = client.upload(VIDEO, "lip_sync_video")
    with pytest.raises(RetryLater) as info:
        client.create_lip_sync(tts(file_id))
    assert not isinstance(info.value, OutcomeUnknown) and "未完成上传" in info.value.msg
    assert [e["code"] for e in settled(sandbox, "create", 2)] == [50000, 50000]  # an envelope: retried


def test_wait_file_ready_gives_up_at_its_deadline(sandbox: Any, client: ChanjingClient) -> None:
    sandbox.update(file_ready_delay=60)
    file_id = client.upload(VIDEO, "lip_sync_video")
    started = time.monotonic()
    with pytest.raises(RetryLater, match=r"not ready after 0\.5"):
        client.wait_file_ready(file_id, timeout=0.5)
    assert time.monotonic() - started < 3


def test_rejected_file_is_file_rejected(sandbox: Any, client: ChanjingClient) -> None:
    sandbox.update(reject_file_rate=1.0)
    file_id = client.upload(VIDEO, "lip_sync_video")
    with pytest.raises(FileRejected) as info:
        client.wait_file_ready(file_id, timeout=10)
    assert info.value.code == 98 and "content-safety" in str(info.value)
    sandbox.update(reject_file_rate=0.0)
    sandbox.set_file_status(file_id, 99)
    with pytest.raises(FileRejected, match="deleted"):
        client.wait_file_ready(file_id, timeout=10)


def test_failed_task_is_visible_via_detail(sandbox: Any, client: ChanjingClient) -> None:
    file_id = ready_video(client)
    sandbox.update(fail_task_rate=1.0)
    task = finished(client, client.create_lip_sync(tts(file_id)))
    assert task.status == 30 and task.msg and not task.video_url


def test_billing_refusal_is_billing_paused(sandbox: Any, client: ChanjingClient) -> None:
    file_id = ready_video(client)
    sandbox.update(balance_creates=0)
    with pytest.raises(BillingPaused) as info:
        client.create_lip_sync(tts(file_id))
    assert info.value.code == 50000 and "余额不足" in info.value.msg and info.value.endpoint == "create"
    assert len(settled(sandbox, "create", 1)) == 1  # not retried
    sandbox.update(balance_mode="fail_task")
    task = finished(client, client.create_lip_sync(tts(file_id)))  # accepted, then fails for billing
    assert task.status == 30 and "蝉豆不足" in (task.msg or "")


# -- tokens ----------------------------------------------------------------------------------------------
def issue_token_elsewhere(sb: Any) -> str:
    reply = httpx.post(sb.base_url + "/open/v1/access_token", json={"app_id": "sandbox", "secret_key": "sandbox"},
                       trust_env=False)
    return str(reply.json()["data"]["access_token"])


def test_a_token_invalidated_by_a_newer_one_is_refreshed_once(sandbox: Any, make_client: MakeClient) -> None:
    client = make_client(max_retries=0)  # the refresh is not a retry: it works without any
    client.list_tasks()
    issue_token_elsewhere(sandbox)
    mark = last_seq(sandbox)
    client.list_tasks()
    settled(sandbox, "list", 2, mark)
    after = [(e["endpoint"], e["code"]) for e in sandbox.journal(mark)]
    assert after == [("list", 10400), ("access_token", 0), ("list", 0)]


def test_clients_sharing_a_store_refresh_it_only_once(sandbox: Any, make_client: MakeClient) -> None:
    store = MemoryTokenStore()  # what the ledger's store does across processes
    a, b = make_client(token_store=store), make_client(token_store=store)
    a.list_tasks()
    b.list_tasks()
    assert len(entries(sandbox, "access_token")) == 1
    issue_token_elsewhere(sandbox)
    mark = last_seq(sandbox)
    a.list_tasks()
    b.list_tasks()  # its cached token is stale: 10400, and the store hands it a's fresh one
    after = [(e["endpoint"], e["code"]) for e in settled(sandbox, "list", 4, mark)]
    assert [c for _, c in after] == [10400, 0, 10400, 0]
    assert len(entries(sandbox, "access_token", mark)) == 1


# -- pacing ----------------------------------------------------------------------------------------------
def test_a_paced_client_stays_under_the_limits(sandbox: Any, make_client: MakeClient) -> None:
    sandbox.update(queries_per_second=20, file_calls_per_minute=300, creates_per_minute=120)
    client = make_client(limits=Limits(creates_per_minute=120, file_calls_per_minute=300, queries_per_second=20),
                         max_retries=0)  # a single 40001 would raise
    file_id = ready_video(client)
    task_id = client.create_lip_sync(tts(file_id))
    mark = last_seq(sandbox)
    started = time.monotonic()

    def queries() -> None:
        for _ in range(8):
            client.task_detail(task_id)
        client.list_tasks()

    def files() -> None:
        for _ in range(3):
            client.file_detail(file_id)

    def creates() -> None:
        client.create_lip_sync(tts(file_id))

    threads = [threading.Thread(target=f) for f in (queries, queries, queries, files, files, creates)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    assert len(settled(sandbox, "detail", 24, mark)) == 24 and len(settled(sandbox, "list", 3, mark)) == 3
    assert len(settled(sandbox, "create", 2)) == 2 and len(settled(sandbox, "file_detail", 7)) >= 7
    assert all(e["code"] != 40001 for e in sandbox.journal())
    assert elapsed >= 26 * (1 / 20)  # 27 queries, evenly paced


def test_an_unpaced_client_meets_the_limit(sandbox: Any, make_client: MakeClient) -> None:
    sandbox.update(queries_per_second=10)
    client = make_client(limits=Limits(0, 0, 0), max_retries=0)
    client.list_tasks()
    with pytest.raises(RateLimited) as info:
        for _ in range(30):
            client.list_tasks()
    assert info.value.code == 40001
    wait_for(lambda: any(e["code"] == 40001 for e in sandbox.journal()), message="a 40001 in the journal")


# -- faults on the way ----------------------------------------------------------------------------------
def test_api_errors_are_retried_then_raised(sandbox: Any, make_client: MakeClient) -> None:
    client = make_client(max_retries=2)
    client.list_tasks()
    mark = last_seq(sandbox)
    sandbox.update(error_rate=1.0)
    with pytest.raises(RetryLater) as info:
        client.list_tasks()
    assert info.value.code == 50000 and not isinstance(info.value, OutcomeUnknown)
    assert [e["code"] for e in settled(sandbox, "list", 3, mark)] == [50000] * 3


def test_gateway_pages_are_retried_and_never_resend_a_create(sandbox: Any, make_client: MakeClient) -> None:
    client = make_client(max_retries=2)
    file_id = ready_video(client)
    mark = last_seq(sandbox)
    sandbox.update(gateway_error_rate=1.0, seed=0)
    with pytest.raises(RetryLater) as info:
        client.task_detail("x")
    assert info.value.code in (502, 503, 504) and "HTML" in str(info.value)
    assert len(settled(sandbox, "detail", 3, mark)) == 3
    mark = last_seq(sandbox)
    with pytest.raises(OutcomeUnknown):
        client.create_lip_sync(tts(file_id))
    assert len(settled(sandbox, "create", 1, mark)) == 1
    sandbox.update(gateway_error_rate=0.5, seed=3)
    assert client.list_tasks().total_count >= 0


def test_slow_answers_time_out(sandbox: Any, make_client: MakeClient) -> None:
    client = make_client(max_retries=1, timeout=0.25)
    file_id = ready_video(client)
    mark = last_seq(sandbox)
    sandbox.update(slow_rate=1.0, slow_seconds=1.0)
    with pytest.raises(RetryLater, match="timed out") as info:
        client.list_tasks()
    assert not isinstance(info.value, OutcomeUnknown) and isinstance(info.value.__cause__, httpx.TimeoutException)
    with pytest.raises(OutcomeUnknown, match="timed out"):
        client.create_lip_sync(tts(file_id))
    # The API went on working after we stopped waiting: the task exists. Hence no resend.
    created = settled(sandbox, "create", 1, mark)
    assert len(created) == 1 and created[0]["processed"] and created[0]["code"] == 0
    assert len(sandbox.tasks()) == 1


@pytest.mark.parametrize("seed, processed", [(1, True), (0, False)])
def test_a_create_whose_answer_is_dropped_is_outcome_unknown(sandbox: Any, client: ChanjingClient,
                                                             seed: int, processed: bool) -> None:
    file_id = ready_video(client)
    mark = last_seq(sandbox)
    sandbox.update(drop_rate=1.0, seed=seed)  # seed 1: dropped after the task was made; 0: before
    with pytest.raises(OutcomeUnknown, match="reconcile"):
        client.create_lip_sync(tts(file_id))
    sandbox.update(drop_rate=0.0)
    created = settled(sandbox, "create", 1, mark)
    assert len(created) == 1 and created[0]["fault"] == "drop" and created[0]["processed"] is processed
    assert len(sandbox.tasks()) == (1 if processed else 0)
    listed = client.list_tasks()  # what the pipeline reconciles with
    assert listed.total_count == (1 if processed else 0)
