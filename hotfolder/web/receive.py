"""The dashboard's ``POST /upload``: a multipart form parsed as it streams in, written to the inbox.

Owns the upload endpoint (:func:`receive_upload`, behind :meth:`hotfolder.web.app.Dashboard.upload`)
and :class:`UploadReceiver`, which parses the form with ``python-multipart`` chunk by chunk and
hands every file part to :class:`hotfolder.web.upload.PairUpload` through the listener's file
thread: never more than a chunk in memory, never a byte of disk I/O in the event loop. Fields
(``csrf``, ``preset``, ``script``) come before the files (``video``, ``driver``); a refused upload
is discarded and the rest of its body drained, so the browser sees the answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from hotfolder.log import get_logger, scrub
from hotfolder.web import auth, upload

if TYPE_CHECKING:
    from hotfolder.web.app import Dashboard

log = get_logger("hotfolder.web")

NO_STORE = {"Cache-Control": "no-store"}
MAX_FIELD_BYTES = {"csrf": 200, "preset": 400}
MAX_SCRIPT_BYTES = 1 << 20             # as intake reads a .txt sidecar
WRITE_CHUNK = 1 << 20                  # an upload reaches the disk in writes of this size
DRAIN_AFTER_REFUSAL = 32 << 20         # read this much more of a refused upload, so the browser sees the answer


async def receive_upload(dashboard: Dashboard, request: Request, access: auth.Access) -> Response:
    """``POST /upload`` for a request already let through with ``access``."""
    ctype, options = options_header(request.headers.get("content-type"))
    boundary = options.get("boundary")
    if ctype != "multipart/form-data" or not boundary:
        return _json({"ok": False, "error": "send the upload form (multipart/form-data)"}, 415)
    receiver = UploadReceiver(dashboard, access, boundary, request.headers.get(auth.CSRF_HEADER),
                               _int(request.headers.get("content-length"), 0))
    stream = request.stream()
    try:
        result = await receiver.run(stream)
    except upload.UploadError as exc:
        await dashboard._file_io(receiver.discard)
        await drain(stream)
        log.info("dashboard_upload_refused", reason=exc.message)
        return _json({"ok": False, "error": scrub(exc.message)}, exc.status)
    except ClientDisconnect:
        await dashboard._file_io(receiver.discard)
        log.info("dashboard_upload_cut_off", hint="the browser went away mid-upload; nothing was placed")
        return Response(status_code=400)
    except BaseException:
        await asyncio.shield(dashboard._file_io(receiver.discard))
        raise
    log.info("dashboard_upload", video=result["video"], driver=result["driver"], bytes=result["bytes"])
    dashboard._wake()
    return _json({"ok": True, **result})


class UploadReceiver:
    """Parses one multipart upload as it streams in, writing file parts straight to their staged
    temps (through the listener's file thread) and never holding more than a chunk in memory."""

    def __init__(self, dashboard: Dashboard, access: auth.Access, boundary: str, header_csrf: str | None,
                 length: int) -> None:
        from python_multipart.multipart import MultipartParser

        self.d = dashboard
        self.access = access
        self.length = length
        self.csrf_ok = not access.needs_csrf or dashboard.listener.keys.csrf_ok(access.binding, header_csrf)
        self.events: list[tuple[str, Any]] = []
        self.headers: dict[str, str] = {}
        self._field, self._value = b"", b""
        self.parser = MultipartParser(boundary.encode("latin-1"), callbacks={
            "on_part_begin": self._part_begin, "on_header_field": self._header_field,
            "on_header_value": self._header_value, "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished, "on_part_data": self._part_data,
            "on_part_end": self._part_end})
        self.pair: upload.PairUpload | None = None
        self.preset: str | None = None
        self.fields: dict[str, bytearray] = {}
        self.script: str | None = None
        self.current: tuple[str, str, Any] | None = None   # (kind, name, target)
        self.buffer = bytearray()

    # the parser's callbacks (synchronous): only record what happened
    def _part_begin(self) -> None:
        self.headers = {}

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _header_end(self) -> None:
        self.headers[self._field.decode("latin-1").lower()] = self._value.decode("utf-8", "replace")
        self._field, self._value = b"", b""

    def _headers_finished(self) -> None:
        _, options = options_header(self.headers.get("content-disposition"))
        self.events.append(("begin", (options.get("name", ""), options.get("filename"))))

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        self.events.append(("data", bytes(data[start:end])))

    def _part_end(self) -> None:
        self.events.append(("end", None))

    # the async side
    async def run(self, stream: AsyncIterator[bytes]) -> dict[str, Any]:
        from python_multipart.exceptions import MultipartParseError

        try:
            async for chunk in stream:
                self.parser.write(chunk)
                await self._handle()
            self.parser.finalize()
        except MultipartParseError as exc:
            raise upload.UploadError(f"the upload is not a valid form ({exc})") from exc
        await self._handle()
        if not self.csrf_ok:
            raise upload.UploadError("the form had expired: reload the page and upload again", status=403)
        if self.pair is None:
            await self._open_pair()
        assert self.pair is not None
        if self.script is not None and self.script.strip():
            await self.d._file_io(self.pair.set_script, self.script)
        return await self.d._file_io(self.pair.commit)

    async def _open_pair(self) -> None:
        self.pair = await self.d._file_io(upload.PairUpload, self.d.settings, self.preset or "")
        if self.length:
            await self.d._file_io(self.pair.check_space, self.length)

    async def _handle(self) -> None:
        events, self.events = self.events, []
        for kind, payload in events:
            if kind == "begin":
                await self._begin(*payload)
            elif kind == "data":
                await self._data(payload)
            else:
                await self._end()

    async def _begin(self, name: str, filename: str | None) -> None:
        if filename is None:   # a plain field
            self.current = ("field", name, bytearray())
            return
        if not filename:       # a file input left empty
            self.current = ("skip", name, None)
            return
        if not self.csrf_ok:
            raise upload.UploadError("the form had expired: reload the page and upload again", status=403)
        if name not in ("video", "driver"):
            raise upload.UploadError(f"unexpected file field {name!r}: send 'video' and 'driver'")
        if self.preset is None:
            raise upload.UploadError("the preset field must come before the files")
        if self.pair is None:
            await self._open_pair()
        assert self.pair is not None
        opener = self.pair.open_video if name == "video" else self.pair.open_driver
        self.current = ("file", name, await self.d._file_io(opener, filename))

    async def _data(self, data: bytes) -> None:
        if self.current is None:
            return
        kind, name, target = self.current
        if kind == "field":
            target += data
            limit = MAX_SCRIPT_BYTES if name == "script" else MAX_FIELD_BYTES.get(name, 1024)
            if len(target) > limit:
                raise upload.UploadError(f"the field {name!r} is too long", status=413)
        elif kind == "file":
            self.buffer += data
            if len(self.buffer) >= WRITE_CHUNK:
                await self._flush(target)

    async def _flush(self, staged: upload.StagedFile) -> None:
        data, self.buffer = bytes(self.buffer), bytearray()
        try:
            await self.d._file_io(staged.write, data)
        except OSError as exc:
            raise upload.UploadError(f"cannot write the upload into the inbox: {exc.strerror or exc}",
                                     status=507 if getattr(exc, "errno", None) == 28 else 500) from exc

    async def _end(self) -> None:
        if self.current is None:
            return
        kind, name, target = self.current
        self.current = None
        if kind == "file":
            await self._flush(target)
            return
        if kind != "field":
            return
        try:
            value = bytes(target).decode("utf-8")
        except UnicodeDecodeError:
            raise upload.UploadError(f"the field {name!r} is not UTF-8 text") from None
        if name == "csrf":
            self.csrf_ok = self.csrf_ok or self.d.listener.keys.csrf_ok(self.access.binding, value)
        elif name == "preset":
            if self.pair is not None:
                raise upload.UploadError("the preset field must come before the files")
            self.preset = value.strip()
        elif name == "script":
            self.script = value

    def discard(self) -> None:
        if self.pair is not None:
            self.pair.discard()



# -- small helpers ---------------------------------------------------------------------------------
def _json(data: Any, status: int = 200) -> JSONResponse:
    return JSONResponse(data, status_code=status, headers=NO_STORE)


def _int(raw: str | None, default: int) -> int:
    try:
        return int(raw) if raw is not None else default
    except ValueError:
        return default


def options_header(value: str | None) -> tuple[str, dict[str, str]]:
    from python_multipart.multipart import parse_options_header

    ctype, options = parse_options_header(value or "")
    return ctype.decode("latin-1").lower(), {k.decode("latin-1").lower(): v.decode("utf-8", "replace")
                                            for k, v in options.items()}


async def drain(stream: AsyncIterator[bytes]) -> None:
    """Read (and drop) the rest of a refused upload, up to a limit, so the browser gets the answer
    instead of a reset connection."""
    seen = 0
    try:
        async for chunk in stream:
            seen += len(chunk)
            if seen > DRAIN_AFTER_REFUSAL:
                return
    except (ClientDisconnect, RuntimeError):
        return
