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

This module owns the routes, the pages, the JSON API, the downloads and the static files; the
streaming multipart parsing behind ``POST /upload`` is :mod:`hotfolder.web.receive`.
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
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

from hotfolder import __version__, control
from hotfolder.errors import HotfolderError
from hotfolder.log import get_logger, scrub
from hotfolder.web import auth, receive, views

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
READ_CHUNK = 512 * 1024
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
        """``POST /upload`` (see :mod:`hotfolder.web.receive`)."""
        return await receive.receive_upload(self, request, request.scope[ACCESS_KEY])

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


# -- small helpers --------------------------------------------------------------------------------
def _json(data: Any, status: int = 200) -> JSONResponse:
    return JSONResponse(data, status_code=status, headers=NO_STORE)


def _int(raw: str | None, default: int) -> int:
    try:
        return int(raw) if raw is not None else default
    except ValueError:
        return default


async def _small_form(request: Request) -> dict[str, str] | None:
    """A small urlencoded form (login, logout), or None when it is larger than it can be."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            return None
    parsed = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
    return {k: v[0] for k, v in parsed.items()}


def _read_at(path: Path, offset: int, size: int) -> bytes:
    with open(path, "rb") as fh:
        fh.seek(offset)
        return fh.read(size)

