"""The object-storage half of the HTTP handler: signed PUT uploads and ranged GET downloads.

Behaves like S3 where the real service uses it: exact Content-Type in the signature, 411 for a
body without Content-Length, 403 XML errors, and ``Range`` support on downloads.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Callable
from urllib.parse import unquote

from hotfolder.sandbox import faults, storage
from hotfolder.sandbox.storage import StorageDenied, Unsatisfiable
from hotfolder.sandbox.voices import VOICE_IDS, audition_wav

if TYPE_CHECKING:
    from hotfolder.sandbox.server import Handler

    _Base = Handler
else:
    _Base = object

COVER_PATH = Path(__file__).resolve().parent.parent / "assets" / "cover.jpg"


class StorageMixin(_Base):
    """Storage endpoints, mixed into :class:`hotfolder.sandbox.server.Handler`."""

    def _s3_error(self, exc: StorageDenied, close: bool = False,
                  headers: dict[str, str] | None = None) -> None:
        self.send_bytes(exc.status, storage.s3_error_xml(exc.code, exc.message), "application/xml",
                        headers, close=close)

    def handle_upload(self, path: str, query: dict[str, str]) -> None:
        """PUT of a signed upload URL: store the body as the file's content."""
        app = self.app
        arrived = app.clock()
        settings = app.settings
        decision = app.faults.decide(settings, faults.UPLOAD)
        fault = decision.name
        if decision.slow:
            app.stop_event.wait(settings.slow_seconds)
        if decision.kind == "drop" and decision.before:
            self._record("upload_put", None, None, fault, False, arrived)
            self.drop()
            return
        key = unquote(path[len(storage.UPLOAD_PREFIX):])
        raw_length = self.headers.get("Content-Length")
        if self.headers.get("Transfer-Encoding") or raw_length is None:
            # The body's end is unknown, so the connection cannot be reused after refusing it.
            self._record("upload_put", None, 411, fault, False, arrived)
            self._s3_error(StorageDenied(411, "MissingContentLength",
                                         "You must provide the Content-Length HTTP header."), close=True)
            return
        try:
            length = int(raw_length)
            if length < 0:
                raise ValueError(raw_length)
        except ValueError:
            self._record("upload_put", None, 400, fault, False, arrived)
            self._s3_error(StorageDenied(400, "InvalidArgument", "Bad Content-Length"), close=True)
            return
        try:
            storage.check_signature(app.state.signing_key, key, query,
                                    self.headers.get("Content-Type", ""), app.clock())
            record = app.state.file_by_key(key)
            if record is None:
                raise StorageDenied(403, "AccessDenied", "Access Denied")
        except StorageDenied as exc:
            self._refuse_upload(exc, length, lambda: self._record(
                "upload_put", None, exc.status, fault, False, arrived))
            return
        self.send_continue()
        received = storage.receive_body(self.rfile, length, app.data_dir / "tmp")
        if received is None:  # the client stopped short: nothing is stored, nobody to answer
            self.close_connection = True
            self._record("upload_put", None, None, fault, False, arrived)
            return
        tmp, md5 = received
        app.state.complete_upload(record.id, tmp, md5)
        if decision.kind == "drop":  # stored, but the answer is lost
            self._record("upload_put", None, None, fault, True, arrived)
            self.drop()
            return
        self._record("upload_put", None, 200, fault, True, arrived)
        self.send_bytes(200, b"", "application/xml", {"ETag": f'"{md5}"'})

    def _refuse_upload(self, exc: StorageDenied, length: int, record: Callable[[], None]) -> None:
        if getattr(self, "_expect_continue", False):
            # The client is waiting for our go-ahead and will not send the body: refuse now.
            self._expect_continue = False
            record()
            self._s3_error(exc, close=True)
            return
        # Swallow a body of moderate size so the client reads the 403 instead of a reset.
        whole = storage.drain(self.rfile, length)
        record()
        self._s3_error(exc, close=not whole)

    def _resolve(self, path: str, query: dict[str, str]) -> tuple[Path | bytes, str]:
        """What a download URL points at: ``(file path or bytes, content type)``."""
        app = self.app
        if path.startswith(storage.RESULT_PREFIX):
            name = unquote(path[len(storage.RESULT_PREFIX):])
            storage.check_signature(app.state.signing_key, name, query, "", app.clock())
            task_id, _, ext = name.rpartition(".")
            task = app.state.finished_result(task_id)
            if task is None or ext not in ("mp4", "jpg"):
                raise StorageDenied(404, "NoSuchKey", "The specified key does not exist.")
            if ext == "jpg":
                return COVER_PATH, "image/jpeg"
            return app.state.result_path(task_id, "mp4"), "video/mp4"
        if path.startswith(storage.FILES_PREFIX):
            record = app.state.file_by_key(unquote(path[len(storage.FILES_PREFIX):]))
            if record is None or record.uploaded_at is None or app.state.file_status(record) in (99, 100):
                raise StorageDenied(404, "NoSuchKey", "The specified key does not exist.")
            return app.state.blob_path(record.id), record.mime_type
        voice = unquote(path[len(storage.AUDITION_PREFIX):]).removesuffix(".wav")
        if voice not in VOICE_IDS:
            raise StorageDenied(404, "NoSuchKey", "The specified key does not exist.")
        return audition_wav(), "audio/wav"

    def handle_download(self, path: str, query: dict[str, str]) -> None:
        """GET/HEAD of a result, an uploaded file or a voice sample, with Range support."""
        app = self.app
        arrived = app.clock()
        settings = app.settings
        decision = app.faults.decide(settings, faults.DOWNLOAD)
        fault = decision.name
        if decision.slow:
            app.stop_event.wait(settings.slow_seconds)
        if decision.kind == "drop":
            self._record("download", None, None, fault, False, arrived)
            self.drop()
            return
        try:
            source, content_type = self._resolve(path, query)
        except StorageDenied as exc:
            self._record("download", None, exc.status, None if fault == "truncate" else fault, False, arrived)
            self._s3_error(exc)
            return
        if path.startswith(storage.RESULT_PREFIX) and settings.corrupt_result_rate \
                and app.faults.chance(settings.corrupt_result_rate):
            # A result that arrives whole but is broken (a truncated MP4, a cover that is an error
            # page): the transfer succeeds, only a check of the content can tell.
            source = _corrupted(source, content_type)
            fault = "corrupt"
        size = len(source) if isinstance(source, bytes) else source.stat().st_size
        try:
            span = storage.parse_range(self.headers.get("Range"), size)
        except Unsatisfiable as exc:
            self._record("download", None, 416, None if fault == "truncate" else fault, False, arrived)
            refusal = StorageDenied(416, "InvalidRange", f"The requested range is not satisfiable: {exc}")
            self._s3_error(refusal, headers={"Content-Range": f"bytes */{size}"})
            return
        first, last = span if span is not None else (0, size - 1)
        count = max(0, last - first + 1)
        status = 206 if span is not None else 200
        # Journaled before the answer leaves, so a client that got it always finds the entry.
        self._record("download", None, status, fault, True, arrived)
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(count))
        self.send_header("Accept-Ranges", "bytes")
        if span is not None:
            self.send_header("Content-Range", f"bytes {first}-{last}/{size}")
        self.end_headers()
        send = count
        if decision.truncate_fraction is not None and self.command != "HEAD":
            send = int(count * decision.truncate_fraction)  # < count: the body stops short
            self.close_connection = True
        if self.command != "HEAD":
            self._send_source(source, first, send)

    def _send_source(self, source: Path | bytes, first: int, count: int) -> None:
        if isinstance(source, bytes):
            self.wfile.write(source[first:first + count])
        else:
            storage.send_file_range(source, first, count, self.wfile.write)


def _corrupted(source: Path | bytes, content_type: str) -> bytes:
    """The broken version of a result: a video cut at 60 %, or a cover that is not a JPEG."""
    if content_type == "image/jpeg":
        return b"<html><body>502 Bad Gateway</body></html>"
    data = source if isinstance(source, bytes) else source.read_bytes()
    return data[: max(1, int(len(data) * 0.6))]
