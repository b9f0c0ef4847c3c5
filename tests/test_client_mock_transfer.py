"""Uploads, downloads and file readiness with httpx.MockTransport: storage answers that the real
sandbox does not give on demand (a 200 to a Range, a 416 for a whole .part, an earlier 206...)."""

from __future__ import annotations

import threading
from pathlib import Path

import httpx
import pytest

from client_fixtures import FakeApi, FakeClock, blob, envelope
from hotfolder.chanjing import UploadSlot
from hotfolder.chanjing.transfer import CHUNK, file_chunks
from hotfolder.errors import FileRejected, Interrupted, PermanentError, RetryLater, UrlExpired


# -- files ------------------------------------------------------------------------------------------
def test_wait_file_ready_deadline_is_retry_later() -> None:
    clock = FakeClock()
    api = FakeApi(clock).on("file_detail", envelope(data={"id": "f", "status": 0}))
    with api.client() as client, pytest.raises(RetryLater, match="not ready after 30"):
        client.wait_file_ready("f", timeout=30)
    assert 30 <= sum(clock.sleeps) < 31


@pytest.mark.parametrize("status, words", [(98, "content-safety"), (99, "deleted"), (100, "30 days")])
def test_wait_file_ready_rejections(status: int, words: str) -> None:
    api = FakeApi().on("file_detail", envelope(data={"id": "f", "status": 0}),
                       envelope(data={"id": "f", "status": str(status), "msg": "审核未通过"}))
    with api.client() as client, pytest.raises(FileRejected) as info:
        client.wait_file_ready("f")
    assert info.value.code == status and words in str(info.value)


def test_stop_interrupts_waits() -> None:
    stop = threading.Event()
    stop.set()
    api = FakeApi().on("file_detail", envelope(data={"id": "f", "status": 0}))
    with api.client(stop=stop) as client, pytest.raises(Interrupted):
        client.wait_file_ready("f")


def test_put_streams_with_explicit_length_and_type(tmp_path: Path) -> None:
    path = tmp_path / "clip.mp4"
    size = CHUNK * 2 + 5
    path.write_bytes(b"x" * size)
    seen: dict[str, object] = {}

    class Storage(httpx.BaseTransport):
        """Looks at the request before anything reads its body (MockTransport reads it first)."""

        def handle_request(self, request: httpx.Request) -> httpx.Response:
            seen["stream"] = type(request.stream).__name__
            seen["headers"] = (request.headers.get("Content-Length"), request.headers.get("Content-Type"),
                               request.headers.get("Transfer-Encoding"))
            seen["chunks"] = [len(c) for c in request.stream]  # type: ignore[union-attr]
            return httpx.Response(200)

    slot = UploadSlot(sign_url="https://storage.test/put?sig=1", mime_type="video/mp4", file_id="f")
    progress: list[tuple[int, int]] = []
    with FakeApi().client(transport=Storage()) as client:
        client.put_file(slot, path, on_progress=lambda done, total: progress.append((done, total)))
    assert seen["stream"] != "ByteStream"  # an iterator over the open file, not bytes in memory
    assert seen["headers"] == (str(size), "video/mp4", None)
    assert seen["chunks"] == [CHUNK, CHUNK, 5]
    assert progress == [(CHUNK, size), (CHUNK * 2, size), (size, size)]


def test_file_chunks_notice_a_shrinking_file(tmp_path: Path) -> None:
    path = tmp_path / "a.bin"
    path.write_bytes(b"abc")
    with open(path, "rb") as fh, pytest.raises(RetryLater, match="shrank"):
        list(file_chunks(fh, 10))


def test_put_403_gets_a_fresh_slot(tmp_path: Path) -> None:
    path = tmp_path / "clip.mp4"
    path.write_bytes(b"data")
    slots = [envelope(data={"sign_url": f"https://storage.test/put/{n}", "mime_type": "video/mp4",
                            "file_id": f"file-{n}"}) for n in (1, 2)]
    expired = httpx.Response(403, content=b"<Error><Code>AccessDenied</Code><Message>Request has expired"
                                          b"</Message></Error>")
    api = FakeApi().on("create_upload_url", *slots).on("/put/1", expired).on("/put/2", httpx.Response(200))
    with api.client() as client:
        assert client.upload(path, "lip_sync_video") == "file-2"
    assert len(api.calls("/put/1")) == 1  # a refused URL is not retried as is


# -- downloads: server answers a real sandbox does not give ---------------------------------------------
def test_download_restarts_when_a_range_gets_200(tmp_path: Path) -> None:
    dest = tmp_path / "out.mp4"
    (tmp_path / "out.mp4.part").write_bytes(b"GARBAGE")
    api = FakeApi().on("/r.mp4", blob(200, b"0123456789"))
    with api.client() as client:
        assert client.download("https://cdn.test/r.mp4", dest) == 10
    assert dest.read_bytes() == b"0123456789" and not (tmp_path / "out.mp4.part").exists()
    assert api.calls("/r.mp4")[0].headers["Range"] == "bytes=7-"


def test_download_416_with_a_whole_part_just_finishes(tmp_path: Path) -> None:
    dest = tmp_path / "out.mp4"
    (tmp_path / "out.mp4.part").write_bytes(b"0123456789")
    api = FakeApi().on("/r.mp4", httpx.Response(416, headers={"Content-Range": "bytes */10"}))
    with api.client() as client:
        assert client.download("https://cdn.test/r.mp4", dest, expected_size=10) == 10
    assert dest.read_bytes() == b"0123456789"


def test_download_206_at_an_earlier_offset_overwrites_from_there(tmp_path: Path) -> None:
    dest = tmp_path / "out.mp4"
    (tmp_path / "out.mp4.part").write_bytes(b"01234XX")
    api = FakeApi().on("/r.mp4", blob(206, b"56789", Content_Range="bytes 5-9/10"))
    with api.client() as client:
        assert client.download("https://cdn.test/r.mp4", dest) == 10
    assert dest.read_bytes() == b"0123456789"


@pytest.mark.parametrize("status", [403, 404, 410])
def test_refused_result_url_is_url_expired(tmp_path: Path, status: int) -> None:
    api = FakeApi().on("/r.mp4", httpx.Response(status))
    with api.client() as client, pytest.raises(UrlExpired):
        client.download("https://cdn.test/r.mp4", tmp_path / "out.mp4")
    assert len(api.calls("/r.mp4")) == 1


def test_download_size_mismatch_is_permanent(tmp_path: Path) -> None:
    api = FakeApi().on("/r.mp4", blob(200, b"short"))
    with api.client() as client, pytest.raises(PermanentError, match="expected"):
        client.download("https://cdn.test/r.mp4", tmp_path / "out.mp4", expected_size=99)
    assert not (tmp_path / "out.mp4").exists()
