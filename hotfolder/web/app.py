"""The dashboard's endpoints, served by :class:`hotfolder.server.Listener` (see ``docs/dashboard.md``).

Pages (server-rendered with Jinja2, autoescaped; a small script renders the live parts from JSON
with ``textContent`` only, never ``innerHTML``):

====================================  ==========================================================
``GET /``                             the queue, ended jobs (paged, filtered), upload, stats
``GET /jobs/<id>``                    one job: state, error and hint, parameters, history
``GET /login``, ``POST /login``       the token form (only when the listener is not on loopback)
``POST /logout``                      ends the browser's session
====================================  ==========================================================

Data (JSON, ``Cache-Control: no-store``):

====================================  ==========================================================
``GET /api/queue?page=N&show=S``      counts, unfinished jobs, one page of ended ones, the
                                      account banner; with an ETag (304 when nothing changed)
``GET /api/jobs/<id>``                what the job page shows
``GET /api/stats?days=N``             ``hotfolder stats`` (cached for a minute)
``POST /api/jobs/<id>/retry|cancel``  the CLI's ``retry``/``cancel`` (the same library calls)
``POST /api/resume``                  the CLI's ``resume`` (lift a billing/quota pause)
``POST /upload``                      multipart: ``csrf``, ``preset``, ``script``, ``video``,
                                      ``driver`` (fields before files), streamed to the inbox
``GET /files/<id>/video|cover``       a done job's outputs, only from the outbox (Range works)
``GET /static/<name>``                the page's CSS, script and icon, from the package
====================================  ==========================================================

Every ledger read runs on the listener's I/O thread and every byte of an upload or a download on
its file thread; the event loop only parses and forwards.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import mimetypes
import os
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, quote

import jinja2
from starlette.requests import ClientDisconnect, Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

from hotfolder import __version__, control
from hotfolder.errors import HotfolderError
from hotfolder.log import get_logger, scrub
from hotfolder.web import auth, upload, views

if TYPE_CHECKING:
    from hotfolder.server import Listener

log = get_logger("hotfolder.web")

NO_STORE = {"Cache-Control": "no-store"}
PAGE_HEADERS = {
    "Cache-Control": "no-store",
    # Everything the page uses comes from this listener; nothing inline runs (the page's data is
    # a JSON block, which is not executed).
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; media-src 'self'; style-src 'self'; "
                               "script-src 'self'; connect-src 'self'; form-action 'self'; "
                               "frame-ancestors 'none'; base-uri 'none'; object-src 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",   # "no-referrer" would make Chrome send "Origin: null" with forms
}
MAX_FORM_BYTES = 8 * 1024              # the login and logout forms
MAX_FIELD_BYTES = {"csrf": 200, "preset": 400}
MAX_SCRIPT_BYTES = 1 << 20             # as intake reads a .txt sidecar
WRITE_CHUNK = 1 << 20                  # an upload reaches the disk in writes of this size
READ_CHUNK = 512 * 1024
DRAIN_AFTER_REFUSAL = 32 << 20         # read this much more of a refused upload, so the browser sees the answer
FAILED_LOGIN_DELAY_S = 0.5
STATIC_TYPES = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                ".svg": "image/svg+xml", ".png": "image/png", ".ico": "image/x-icon"}
_RANGE = re.compile(r"bytes=(\d*)-(\d*)$")


class _Static:
    """The package's static files, read once (a few kilobytes), served from memory with a
    content hash in their URL so a browser may cache them for good."""

    def __init__(self) -> None:
        self.files: dict[str, tuple[bytes, str, str]] = {}
        folder = resources.files("hotfolder.web").joinpath("static")
        for entry in folder.iterdir():
            suffix = Path(entry.name).suffix
            if entry.is_file() and suffix in STATIC_TYPES:
                data = entry.read_bytes()
                self.files[entry.name] = (data, STATIC_TYPES[suffix], hashlib.sha256(data).hexdigest()[:12])

    def url(self, name: str) -> str:
        return f"/static/{name}?v={self.files[name][2]}"


class Dashboard:
    """The dashboard's routes, bound to a listener (its ledger, settings, threads and keys)."""

    def __init__(self, listener: Listener) -> None:
        self.listener = listener
        self.env = jinja2.Environment(loader=jinja2.PackageLoader("hotfolder.web", "templates"),
                                      autoescape=True, trim_blocks=True, lstrip_blocks=True,
                                      undefined=jinja2.StrictUndefined)
        self.static = _Static()
        self.env.globals.update(static=self.static.url, version=__version__)
        for name in ("index.html", "job.html", "login.html", "message.html"):
            self.env.get_template(name)   # parsed now: a broken template fails at start, not on a visit
        self.stats_cache = views.StatsCache()

    def routes(self) -> list[Route]:
        c = self.listener.contained
        return [
            Route("/", c(self.index), methods=["GET"]),
            Route("/jobs/{job_id:int}", c(self.job_page), methods=["GET"]),
            Route("/login", c(self.login_page), methods=["GET"]),
            Route("/login", c(self.login), methods=["POST"]),
            Route("/logout", c(self.logout), methods=["POST"]),
            Route("/api/queue", c(self.api_queue), methods=["GET"]),
            Route("/api/jobs/{job_id:int}", c(self.api_job), methods=["GET"]),
            Route("/api/stats", c(self.api_stats), methods=["GET"]),
            Route("/api/jobs/{job_id:int}/retry", c(self.api_retry), methods=["POST"]),
            Route("/api/jobs/{job_id:int}/cancel", c(self.api_cancel), methods=["POST"]),
            Route("/api/resume", c(self.api_resume), methods=["POST"]),
            Route("/upload", c(self.upload), methods=["POST"]),
            Route("/files/{job_id:int}/{kind:str}", c(self.files), methods=["GET"]),
            Route("/static/{name:str}", c(self.static_file), methods=["GET"]),
        ]

    # -- helpers ------------------------------------------------------------------------------
    @property
    def settings(self) -> Any:
        return self.listener.settings   # read at each request: a reload may bring new presets

    @property
    def ledger(self) -> Any:
        return self.listener.ledger

    def _io(self, fn: Callable[..., Any], *args: Any) -> Awaitable[Any]:
        return self.listener.call(fn, *args)

    def _file_io(self, fn: Callable[..., Any], *args: Any) -> Awaitable[Any]:
        return self.listener.file_call(fn, *args)

    def _csrf(self, request: Request) -> str:
        access: auth.Access | None = request.scope.get(ACCESS_KEY)
        return self.listener.keys.csrf_for(access.binding) if access and access.needs_csrf else ""

    def page(self, template: str, status: int = 200, headers: dict[str, str] | None = None,
             **context: Any) -> HTMLResponse:
        """A rendered page (autoescaped) with the security headers every page has."""
        html = self.env.get_template(template).render(**context)
        return HTMLResponse(scrub(html), status_code=status, headers={**PAGE_HEADERS, **(headers or {})})

    def _common(self, request: Request) -> dict[str, Any]:
        access: auth.Access | None = request.scope.get(ACCESS_KEY)
        return {"csrf": self._csrf(request), "can_log_out": bool(access and access.can_log_out)}

    def _wake(self) -> None:
        if self.listener.wake is not None:
            try:
                self.listener.wake()
            except Exception:
                log.exception("dashboard_wake_failed")

    # -- pages --------------------------------------------------------------------------------
    async def index(self, request: Request) -> Response:
        show = request.query_params.get("show", "all")
        page = _int(request.query_params.get("page"), 0)
        snapshot = await self._io(views.queue, self.ledger, self.settings, page, show)
        snapshot["csrf"] = self._csrf(request)
        presets = sorted(self.settings.presets)
        return self.page("index.html", snapshot=snapshot, presets=presets, **self._common(request))

    async def job_page(self, request: Request) -> Response:
        job_id = request.path_params["job_id"]
        detail = await self._io(views.job_detail, self.ledger, self.settings, job_id)
        if detail is None:
            return self.page("message.html", status=404, title="No such job",
                             message=f"There is no job {job_id}. It may have been pruned from the history.",
                             **self._common(request))
        detail["csrf"] = self._csrf(request)
        return self.page("job.html", detail=detail, **self._common(request))

    def login_response(self, request: Request | None, target: str, error: str | None = None,
                       status: int = 401) -> HTMLResponse:
        """The login form (also what a page request without a session gets, with status 401)."""
        return self.page("login.html", status=status, next=auth.safe_next(target), error=error,
                         csrf=self.listener.keys.csrf_for("login"), can_log_out=False,
                         headers={"WWW-Authenticate": 'Bearer realm="hotfolder"'} if status == 401 else None)

    async def login_page(self, request: Request) -> Response:
        if self.listener.loopback or request.scope.get(ACCESS_KEY) is not None:
            return RedirectResponse(auth.safe_next(request.query_params.get("next")), status_code=303)
        return self.login_response(request, request.query_params.get("next", "/"), status=200)

    async def login(self, request: Request) -> Response:
        form = await _small_form(request)
        if form is None:
            return _json({"ok": False, "error": "the login form is too large"}, 413)
        target = form.get("next", "/")
        if self.listener.loopback:
            return RedirectResponse(auth.safe_next(target), status_code=303)
        if not self.listener.keys.csrf_ok("login", form.get("csrf")):
            return self.login_response(request, target, "The form had expired: please try again.", status=403)
        token = self.settings.server.token
        if not auth.bearer_ok(f"Bearer {form.get('token', '')}", token):
            log.warning("dashboard_login_refused", client=request.client.host if request.client else None)
            await asyncio.sleep(FAILED_LOGIN_DELAY_S)   # slows guessing down; the loop serves others meanwhile
            return self.login_response(request, target, "That is not the token of this hotfolder "
                                       "([server] token in its config).")
        log.info("dashboard_login", client=request.client.host if request.client else None)
        response = RedirectResponse(auth.safe_next(target), status_code=303)
        response.set_cookie(auth.SESSION_COOKIE, self.listener.keys.new_session(), max_age=auth.SESSION_SECONDS,
                            path="/", httponly=True, samesite="lax", secure=request.url.scheme == "https")
        return response

    async def logout(self, request: Request) -> Response:
        form = await _small_form(request)
        access: auth.Access | None = request.scope.get(ACCESS_KEY)
        if form is None or access is None or not self.listener.keys.csrf_ok(access.binding, form.get("csrf")):
            return _json({"ok": False, "error": "csrf"}, 403)
        response = RedirectResponse("/", status_code=303)
        response.delete_cookie(auth.SESSION_COOKIE, path="/", httponly=True, samesite="lax")
        return response

    # -- data ---------------------------------------------------------------------------------
    async def api_queue(self, request: Request) -> Response:
        show = request.query_params.get("show", "all")
        page = _int(request.query_params.get("page"), 0)
        csrf = self._csrf(request)
        # The ETag is a digest of what the answer depends on (and of this browser's token): a poll
        # that finds nothing changed costs a few indexed reads, not a rebuilt answer.
        basis = await self._io(views.fingerprint, self.ledger, self.settings, page, show)
        etag = f'"{hashlib.sha1(f"{basis}:{csrf}".encode()).hexdigest()[:24]}"'
        if request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers={"ETag": etag, **NO_STORE})
        data = await self._io(views.queue, self.ledger, self.settings, page, show)
        data["csrf"] = csrf
        body = json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        return Response(body, media_type="application/json", headers={"ETag": etag, **NO_STORE})

    async def api_job(self, request: Request) -> Response:
        detail = await self._io(views.job_detail, self.ledger, self.settings, request.path_params["job_id"])
        if detail is None:
            return _json({"ok": False, "error": f"no job {request.path_params['job_id']}"}, 404)
        detail["csrf"] = self._csrf(request)
        return _json(detail)

    async def api_stats(self, request: Request) -> Response:
        days = min(366, max(1, _int(request.query_params.get("days"), 14)))
        return _json(await self._io(self.stats_cache.get, self.ledger, days))

    async def api_retry(self, request: Request) -> Response:
        return await self._act(request, "retry", lambda ref: control.retry(self.ledger, self.settings, ref))

    async def api_cancel(self, request: Request) -> Response:
        return await self._act(request, "cancel", lambda ref: control.cancel(self.ledger, self.settings, ref))

    async def _act(self, request: Request, what: str, fn: Callable[[str], Any]) -> Response:
        job_id = request.path_params["job_id"]
        try:
            job = await self._io(fn, str(job_id))
        except HotfolderError as exc:
            return _json({"ok": False, "error": scrub(str(exc))}, 409)
        log.info(f"dashboard_{what}", job_id=job.id, job=job.name)
        self._wake()
        rec = await self._io(lambda: views.job_view(self.settings, control.job_record(job)))
        return _json({"ok": True, "job": rec})

    async def api_resume(self, request: Request) -> Response:
        result = await self._io(control.resume, self.ledger, self.settings)
        log.info("dashboard_resume", **result)
        self._wake()
        return _json({"ok": True, **result})

    # -- upload -------------------------------------------------------------------------------
    async def upload(self, request: Request) -> Response:
        access: auth.Access = request.scope[ACCESS_KEY]
        ctype, options = _options_header(request.headers.get("content-type"))
        boundary = options.get("boundary")
        if ctype != "multipart/form-data" or not boundary:
            return _json({"ok": False, "error": "send the upload form (multipart/form-data)"}, 415)
        receiver = _UploadReceiver(self, access, boundary, request.headers.get(auth.CSRF_HEADER),
                                   _int(request.headers.get("content-length"), 0))
        stream = request.stream()
        try:
            result = await receiver.run(stream)
        except upload.UploadError as exc:
            await self._file_io(receiver.discard)
            await _drain(stream)
            log.info("dashboard_upload_refused", reason=exc.message)
            return _json({"ok": False, "error": scrub(exc.message)}, exc.status)
        except ClientDisconnect:
            await self._file_io(receiver.discard)
            log.info("dashboard_upload_cut_off", hint="the browser went away mid-upload; nothing was placed")
            return Response(status_code=400)
        except BaseException:
            await asyncio.shield(self._file_io(receiver.discard))
            raise
        log.info("dashboard_upload", video=result["video"], driver=result["driver"], bytes=result["bytes"])
        self._wake()
        return _json({"ok": True, **result})

    # -- files --------------------------------------------------------------------------------
    async def files(self, request: Request) -> Response:
        kind = request.path_params["kind"]
        if kind not in ("video", "cover"):
            return _json({"ok": False, "error": "no such file"}, 404)
        path: Path | None = await self._io(views.output_path, self.ledger, self.settings,
                                           request.path_params["job_id"], kind)
        if path is None:
            return _json({"ok": False, "error": "this job has no such output in the outbox"}, 404)
        try:
            size = (await self._file_io(os.stat, path)).st_size
        except OSError:
            return _json({"ok": False, "error": "the file is gone from the outbox"}, 404)
        media = "video/mp4" if kind == "video" else (mimetypes.guess_type(path.name)[0] or "image/jpeg")
        disposition = "attachment" if request.query_params.get("download") else "inline"
        headers = {"Accept-Ranges": "bytes", "Cache-Control": "private, max-age=3600",
                   "Content-Disposition": f"{disposition}; filename*=UTF-8''{quote(path.name)}",
                   "X-Content-Type-Options": "nosniff"}
        start, end, status = 0, size - 1, 200
        wanted = _RANGE.match(request.headers.get("range", "").strip())
        if wanted and size:
            first, last = wanted.groups()
            if first:
                start, end = int(first), min(int(last), size - 1) if last else size - 1
            elif last:
                start, end = max(0, size - int(last)), size - 1
            if start > end or start >= size:
                return Response(status_code=416, headers={"Content-Range": f"bytes */{size}"})
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        headers["Content-Length"] = str(end - start + 1 if size else 0)
        if request.method == "HEAD":
            return Response(status_code=status, headers=headers, media_type=media)
        return StreamingResponse(self._read(path, start, end + 1), status_code=status, headers=headers,
                                 media_type=media)

    async def _read(self, path: Path, start: int, stop: int) -> AsyncIterator[bytes]:
        offset = start
        while offset < stop:
            data = await self._file_io(_read_at, path, offset, min(READ_CHUNK, stop - offset))
            if not data:
                break
            offset += len(data)
            yield data

    async def static_file(self, request: Request) -> Response:
        found = self.static.files.get(request.path_params["name"])
        if found is None:
            return Response("not found", status_code=404, media_type="text/plain")
        data, media, digest = found
        etag = f'"{digest}"'
        cache = "public, max-age=31536000, immutable" if request.query_params.get("v") == digest else "no-cache"
        headers = {"ETag": etag, "Cache-Control": cache, "X-Content-Type-Options": "nosniff"}
        if request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers=headers)
        return Response(data, media_type=media, headers=headers)


ACCESS_KEY = "hotfolder.access"   # where the guard leaves the request's Access in the ASGI scope


class _UploadReceiver:
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
        _, options = _options_header(self.headers.get("content-disposition"))
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


# -- small helpers --------------------------------------------------------------------------------
def _json(data: Any, status: int = 200) -> JSONResponse:
    return JSONResponse(data, status_code=status, headers=NO_STORE)


def _int(raw: str | None, default: int) -> int:
    try:
        return int(raw) if raw is not None else default
    except ValueError:
        return default


def _options_header(value: str | None) -> tuple[str, dict[str, str]]:
    from python_multipart.multipart import parse_options_header

    ctype, options = parse_options_header(value or "")
    return ctype.decode("latin-1").lower(), {k.decode("latin-1").lower(): v.decode("utf-8", "replace")
                                            for k, v in options.items()}


async def _small_form(request: Request) -> dict[str, str] | None:
    """A small urlencoded form (login, logout), or None when it is larger than it can be."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            return None
    parsed = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
    return {k: v[0] for k, v in parsed.items()}


async def _drain(stream: AsyncIterator[bytes]) -> None:
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


def _read_at(path: Path, offset: int, size: int) -> bytes:
    with open(path, "rb") as fh:
        fh.seek(offset)
        return fh.read(size)

