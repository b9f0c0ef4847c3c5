"""The client's uploads and downloads against the real sandbox: drops, expired URLs, cuts, resumes.

Seeded faults, asserted in the journal (see tests/test_client.py).
"""

from __future__ import annotations

import os
import random
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from client_fixtures import FAST_LIMITS, VIDEO, MakeClient, entries, finished, last_seq, ready_video, settled, tts
from client_fixtures import client as client  # a fixture
from client_fixtures import make_client as make_client  # a fixture
from helpers import FAST_SANDBOX
from hotfolder.chanjing import ChanjingClient, Task
from hotfolder.errors import RetryLater, UrlExpired
from hotfolder.retry import Backoff


@pytest.fixture
def big_video(tmp_path: Path) -> Path:
    """3 MiB + a bit of random bytes named .mp4 (the sandbox stores bytes; results are them)."""
    path = tmp_path / "big.mp4"
    path.write_bytes(random.Random(1).randbytes(3 * 2**20 + 12345))
    return path


@pytest.mark.parametrize("seed, stored_first", [(9, False), (10, True)])
def test_a_dropped_upload_is_retried(sandbox: Any, client: ChanjingClient, big_video: Path, seed: int,
                                     stored_first: bool) -> None:
    slot = client.create_upload_url("lip_sync_video", big_video.name)
    sandbox.update(drop_rate=0.5, seed=seed)  # seed 9: the first PUT is cut before storing; 10: after
    client.put_file(slot, big_video)
    sandbox.update(drop_rate=0.0)
    puts = settled(sandbox, "upload_put", 2)
    assert [(e["fault"], e["processed"], e["http_status"]) for e in puts] == \
        [("drop", stored_first, None), (None, True, 200)]
    assert client.wait_file_ready(slot.file_id, timeout=10).bytes == big_video.stat().st_size


def test_an_expired_upload_url_is_url_expired(sandbox: Any, client: ChanjingClient) -> None:
    sandbox.update(upload_url_ttl=0)
    slot = client.create_upload_url("lip_sync_video", "clip.mp4")
    with pytest.raises(UrlExpired) as info:
        client.put_file(slot, VIDEO)
    assert info.value.code == 403 and "expired" in str(info.value)
    with pytest.raises(UrlExpired):
        client.upload(VIDEO, "lip_sync_video")  # every fresh slot is expired too: gives up
    assert len(settled(sandbox, "create_upload_url", 4)) == 4
    sandbox.update(upload_url_ttl=900)
    assert client.upload(VIDEO, "lip_sync_video")


class Later:
    """A clock running ``offset`` seconds ahead of the real one (moved by the test)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


def test_upload_gets_a_fresh_slot_when_its_url_expired(tmp_path: Path) -> None:
    from hotfolder.sandbox import Sandbox, SandboxSettings

    clock = Later()
    with Sandbox(tmp_path / "sb", settings=SandboxSettings(**FAST_SANDBOX), clock=clock) as sb:
        class SlowHands(httpx.BaseTransport):
            """Forwards to the network, but the first PUT arrives after its URL expired."""

            def __init__(self) -> None:
                self.inner = httpx.HTTPTransport()
                self.puts = 0

            def handle_request(self, request: httpx.Request) -> httpx.Response:
                if request.method == "PUT":
                    self.puts += 1
                    if self.puts == 1:
                        clock.offset += 901  # 15 minutes and a second later
                return self.inner.handle_request(request)

            def close(self) -> None:
                self.inner.close()

        with ChanjingClient(sb.base_url, "sandbox", "sandbox", limits=FAST_LIMITS, transport=SlowHands(),
                            backoff=Backoff(base=0.01, cap=0.05)) as client:
            file_id = client.upload(VIDEO, "lip_sync_video")
            assert client.wait_file_ready(file_id, timeout=10).status == 1
        puts = [e["http_status"] for e in settled(sb, "upload_put", 2)]
        assert puts == [403, 200] and len(entries(sb, "create_upload_url")) == 2


# -- downloads -----------------------------------------------------------------------------------------
def finished_big(client: ChanjingClient, big_video: Path) -> Task:
    file_id = ready_video(client, big_video)
    return finished(client, client.create_lip_sync(tts(file_id)))


def test_a_cut_download_resumes_with_a_range(sandbox: Any, make_client: MakeClient, big_video: Path,
                                            tmp_path: Path) -> None:
    client = make_client(max_retries=0)
    task = finished_big(client, big_video)
    dest = tmp_path / "result.mp4"
    sandbox.update(truncate_rate=1.0, seed=4)
    with pytest.raises(RetryLater, match=r"connection|cut short"):
        client.download(task.video_url or "", dest)
    part = tmp_path / "result.mp4.part"
    assert 0 < part.stat().st_size < big_video.stat().st_size and not dest.exists()
    sandbox.update(truncate_rate=0.0)
    mark = last_seq(sandbox)
    assert client.download(task.video_url or "", dest, expected_size=big_video.stat().st_size) == \
        big_video.stat().st_size
    assert dest.read_bytes() == big_video.read_bytes() and not part.exists()
    assert [e["http_status"] for e in settled(sandbox, "download", 1, mark)] == [206]


def test_downloads_survive_seeded_cuts_in_one_call(sandbox: Any, client: ChanjingClient, big_video: Path,
                                                   tmp_path: Path) -> None:
    task = finished_big(client, big_video)
    mark = last_seq(sandbox)
    sandbox.update(truncate_rate=0.5, seed=2)  # cut at 6 %, then 67 %, then 58 % of what is left
    dest = tmp_path / "result.mp4"
    client.download(task.video_url or "", dest)
    assert dest.read_bytes() == big_video.read_bytes()
    got = [(e["fault"], e["http_status"]) for e in settled(sandbox, "download", 4, mark)]
    assert got == [("truncate", 200), ("truncate", 206), ("truncate", 206), (None, 206)]


def test_an_expired_result_url_then_a_fresh_one_resumes(sandbox: Any, make_client: MakeClient, big_video: Path,
                                                        tmp_path: Path) -> None:
    client = make_client(max_retries=0)
    task = finished_big(client, big_video)
    dest = tmp_path / "result.mp4"
    sandbox.update(truncate_rate=1.0, seed=4)
    with pytest.raises(RetryLater):
        client.download(task.video_url or "", dest)  # leaves a .part behind
    have = (tmp_path / "result.mp4.part").stat().st_size
    sandbox.update(truncate_rate=0.0, result_url_ttl=0)
    stale = client.task_detail(task.id).video_url or ""
    with pytest.raises(UrlExpired) as info:
        client.download(stale, dest)
    assert info.value.code == 403
    sandbox.update(result_url_ttl=3600)
    fresh = client.task_detail(task.id).video_url or ""
    mark = last_seq(sandbox)
    client.download(fresh, dest)
    assert dest.read_bytes() == big_video.read_bytes() and have > 0
    assert [e["http_status"] for e in settled(sandbox, "download", 1, mark)] == [206]
    with pytest.raises(UrlExpired):  # an unknown result is refused the same way (404)
        client.download(fresh.replace(task.id, "0" * 32), tmp_path / "nothing.mp4")


def test_download_of_the_uploaded_file_via_its_storage_path(client: ChanjingClient, tmp_path: Path) -> None:
    info = client.wait_file_ready(client.upload(VIDEO, "lip_sync_video"), timeout=10)
    assert info.file_path
    client.download(info.file_path, tmp_path / "copy.mp4", expected_size=info.bytes)
    assert (tmp_path / "copy.mp4").read_bytes() == VIDEO.read_bytes()
    assert os.stat(tmp_path / "copy.mp4").st_size == info.bytes
