"""The local HTTP listener: ``/healthz``, ``/metrics``, the API's ``/callback`` and the dashboard.

Why Starlette served by uvicorn, in one background thread of the daemon:

- both are small, widely used and well kept; routing, HTTP parsing, keep-alive and a clean
  shutdown are theirs, not hand-written here on top of ``http.server``;
- request bodies arrive as a stream (``Request.stream()``): the callback's size limit is enforced
  while reading, and the dashboard's uploads go to disk chunk by chunk, never held in memory;
- it is asynchronous: an idle keep-alive connection or a dashboard's short-polling costs a few
  kilobytes in the event loop, never a thread each, so a browser tab left open cannot eat the
  daemon's threads.

Everything that may block runs on a helper thread, never in the event loop, so a slow disk
delays an answer but never stalls the listener: the ledger's SQLite, the health probes and the
daemon's ``task_hint`` on ``hotfolder-listener-io`` (with its own ledger connection: the ledger
gives each thread one), and the bytes of the dashboard's uploads and downloads on
``hotfolder-listener-files``, started with the first of them (a big upload to a slow inbox never
delays a page). The listener binds its socket itself, before uvicorn runs, so a port already
taken is known at once, logged with what to do, and :meth:`Listener.start` returns False: the
daemon goes on without it. uvicorn installs no signal handlers (the daemon owns SIGTERM/SIGHUP)
and configures no logging: its few messages are routed into hotfolder's structlog, access logs
are off (the callback's URL carries a secret token).

Access (:meth:`Listener.gate`, applied to every request before routing; the rules are in
:mod:`hotfolder.web.auth`): on a loopback address every endpoint is open to this machine, and
pages and actions answer only to a loopback ``Host`` (DNS rebinding). Otherwise every endpoint but
``/healthz`` (for probes and load balancers), ``/callback`` (which has its own secret token), the
login form and the static files needs ``Authorization: Bearer <[server] token>`` or the session
cookie the dashboard's login sets. Every state-changing request made with a browser's ambient
credentials needs the dashboard's CSRF token. No response and no log line ever holds a secret (API
secret key, access token, webhook secret, server token, callback token).

This module owns the listener's answers: routing, access, ``/healthz``, ``/metrics`` and
``/callback``. What it runs on (uvicorn in a thread, the helper threads, the socket) is in
:mod:`hotfolder.listener_threads`; the health body and the ledger probe in
:mod:`hotfolder.listener_health`; the dashboard's routes in :mod:`hotfolder.web.app`.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from hotfolder import __version__, callbacks
from hotfolder.config import Settings, is_loopback
from hotfolder.ledger import Ledger
from hotfolder.listener_health import (HEALTH_TIMEOUT_S, LEDGER_MIN_FREE_BYTES, PROBE_BUSY_S,  # noqa: F401
                                       PROBE_CACHE_S, LedgerProbe, health_report)
from hotfolder.listener_health import ledger_write_problem as _ledger_write_problem  # noqa: F401
from hotfolder.listener_threads import IoThread as _IoThread
from hotfolder.listener_threads import QuietServer as _Server
from hotfolder.listener_threads import bind as _bind
from hotfolder.listener_threads import bind_advice as _bind_advice
from hotfolder.listener_threads import new_server, serve, shut_down
from hotfolder.liveness import Liveness, folder_present
from hotfolder.log import get_logger, register_secret, scrub
from hotfolder.metrics import Metrics
from hotfolder.web import auth
from hotfolder.web.app import ACCESS_KEY, Dashboard

log = get_logger("hotfolder.server")
T = TypeVar("T")

MAX_CALLBACK_BYTES = 64 * 1024   # a task callback is a small JSON object; anything bigger is not one
MAX_TASK_ID_CHARS = 200
START_TIMEOUT_S = 5.0
STOP_TIMEOUT_S = 2.5             # stop() returns within this (the daemon's whole budget is 10 s)
OPEN_PATHS = frozenset({"/healthz", "/callback"})   # no Host check, no login (each is safe or has its own token)
PUBLIC_PATHS = frozenset({"/login"})               # no login needed (the Host check applies)
PUBLIC_PREFIXES = ("/static/",)
FORM_CSRF_PATHS = frozenset({"/login", "/logout", "/upload"})   # forms: they check their own csrf field
NO_STORE = {"Cache-Control": "no-store"}


# -- answers --------------------------------------------------------------------------------------
class _Guard:
    """ASGI middleware: every HTTP request passes :meth:`Listener.gate` before it is routed."""

    def __init__(self, app: ASGIApp, gate: Callable[[Scope], Response | None]) -> None:
        self.app = app
        self.gate = gate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            refusal = self.gate(scope)
            if refusal is not None:
                await refusal(scope, receive, send)
                return
        await self.app(scope, receive, send)


Endpoint = Callable[[Request], Awaitable[Response]]


def _contained(endpoint: Endpoint) -> Endpoint:
    """``endpoint`` whose crash becomes a 500 answer and one structured log line. Left to
    uvicorn, a crash would be logged as raw text and the connection closed under the client."""
    async def run(request: Request) -> Response:
        try:
            return await endpoint(request)
        except Exception:
            log.exception("listener_request_crashed", path=request.url.path)   # the path only: no query token
            return JSONResponse({"error": "internal error; see the daemon's log"}, status_code=500)
    return run



class Listener:
    """The daemon's HTTP listener (see the module's docstring).

    ``task_hint(task_id)`` is called for each accepted callback (the daemon hands it to the
    poller, which confirms the task with ``detail``); ``clock`` is wall time, for uptime and ages;
    ``wake()``, when given, is called after the dashboard changed something (a retry, a cancel,
    an upload) so the daemon looks at once instead of at its next turn.
    """

    def __init__(self, settings: Settings, ledger: Ledger, liveness: Liveness, metrics: Metrics,
                 task_hint: Callable[[str], None], clock: Callable[[], float] = time.time,
                 wake: Callable[[], None] | None = None) -> None:
        self.settings = settings
        self.ledger = ledger
        self.liveness = liveness
        self.metrics = metrics
        self.task_hint = task_hint
        self.clock = clock
        self.wake = wake
        self.started_at = clock()
        for secret in (settings.api.secret_key, settings.server.token, settings.notify.webhook_secret):
            register_secret(secret)   # the daemon does too; a listener built alone must be as careful
        self.keys = auth.Keys(settings.server.token)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._io: _IoThread | None = None
        self._files: _IoThread | None = None
        self._sock: socket.socket | None = None
        self._url: str | None = None
        self._probe = LedgerProbe()
        self._inbox_check = folder_present(settings.folders.inbox, "inbox")   # same words as the daemon's
        try:
            hp = settings.server.host_port
        except ValueError:
            hp = None
        # Fail closed: an address that cannot be read counts as reachable from the network.
        self._loopback = hp is not None and is_loopback(hp[0])
        self.dashboard = Dashboard(self)
        self.app = Starlette(
            routes=[
                Route("/healthz", _contained(self._healthz), methods=["GET"]),
                Route("/metrics", _contained(self._metrics), methods=["GET"]),
                Route("/callback", _contained(self._callback), methods=["POST"]),
                *self.dashboard.routes(),
            ],
            middleware=[Middleware(_Guard, gate=self.gate)],
        )

    @staticmethod
    def contained(endpoint: Endpoint) -> Endpoint:
        """``endpoint`` whose crash becomes a 500 answer and one log line (for the dashboard's routes)."""
        return _contained(endpoint)

    @property
    def loopback(self) -> bool:
        """Whether the listener is on a loopback address (then nobody needs to log in)."""
        return self._loopback

    # -- lifecycle ------------------------------------------------------------------------------
    @property
    def url(self) -> str | None:
        """``http://host:port`` where this listener can be reached from this machine (the bound
        port; an any-address bind shows as loopback), or None when it is not listening."""
        return self._url

    @property
    def thread(self) -> threading.Thread | None:
        """The thread serving HTTP (None until started)."""
        return self._thread

    def start(self) -> bool:
        """Bind ``[server] listen`` and serve in a background thread. False (logged with what to do,
        nothing raised) when the listener is off or cannot listen: the daemon goes on without it."""
        if self._thread is not None:
            return True
        listen = self.settings.server.listen
        if not listen:
            log.info("listener_off", hint="[server] listen is empty: no /healthz, /metrics or callbacks")
            return False
        try:
            host_port = self.settings.server.host_port
        except ValueError:
            host_port = None
        if host_port is None:
            log.error("listener_failed", listen=listen, error="not host:port",
                      action="set [server] listen to host:port, e.g. 127.0.0.1:8750",
                      consequence="the daemon runs without /healthz, /metrics and callbacks")
            return False
        host, port = host_port
        try:
            sock = _bind(host, port)
        except OSError as exc:
            log.error("listener_failed", listen=listen, error=exc.strerror or str(exc),
                      action=_bind_advice(exc, host, port),
                      consequence="the daemon runs without /healthz, /metrics and callbacks")
            return False
        self._sock = sock
        self._server = server = new_server(self.app)
        self._io = _IoThread("hotfolder-listener-io", on_exit=self.ledger.close)
        self._thread = threading.Thread(target=self._serve, name="hotfolder-listener", daemon=True)
        self._thread.start()
        if not server.ready.wait(START_TIMEOUT_S) or not server.started:
            log.error("listener_failed", listen=listen, error="the HTTP server did not start",
                      action="see the error above; restart hotfolder to try again",
                      consequence="the daemon runs without /healthz, /metrics and callbacks")
            self.stop()
            return False
        bound_host, bound_port = sock.getsockname()[:2]
        shown = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(bound_host, bound_host)
        self._url = f"http://[{shown}]:{bound_port}" if ":" in shown else f"http://{shown}:{bound_port}"
        log.info("listener_started", listen=listen, url=self._url, dashboard=f"{self._url}/",
                 auth="none (loopback only)" if self._loopback else
                 "bearer token or dashboard login (except /healthz, /callback)")
        self._io.submit(self._sweep_uploads)   # leftovers of a crash mid-upload; in the background
        return True

    def _sweep_uploads(self) -> None:
        from hotfolder.web.upload import sweep_stale

        try:
            removed = sweep_stale(self.settings)
        except Exception:
            log.exception("upload_sweep_failed")
            return
        if removed:
            log.info("upload_temps_removed", count=removed, why="left by an upload cut off by a crash")

    def _serve(self) -> None:
        server, sock = self._server, self._sock
        assert server is not None and sock is not None
        serve(server, sock)

    def stop(self) -> None:
        """Stop serving and join the threads, within about :data:`STOP_TIMEOUT_S` seconds."""
        server, thread, io, files = self._server, self._thread, self._io, self._files
        if server is None or thread is None:
            return
        if not shut_down(server, thread, (io, files), self._sock, STOP_TIMEOUT_S):
            log.warning("listener_stop_slow", hint="a request was still running; its thread ends with the process")
        self._server = self._thread = self._io = self._files = self._sock = None
        self._url = None
        log.info("listener_stopped")

    # -- access ---------------------------------------------------------------------------------
    def access(self, headers: Headers) -> auth.Access | None:
        """How a request may use the guarded endpoints, or None: always on a loopback listener;
        else with ``Authorization: Bearer <[server] token>`` (constant-time comparison) or the
        dashboard's session cookie. A valid bearer header counts as such even on loopback (a
        script: no CSRF token needed)."""
        token = self.settings.server.token
        if token and auth.bearer_ok(headers.get("authorization"), token):
            return auth.Access("bearer")
        if self._loopback:
            return auth.Access("loopback", "loopback")
        if not token:
            return None   # config refuses this; constructed by hand, stay closed
        nonce = self.keys.session_nonce(auth.cookie_value(headers.get("cookie")), self.clock())
        return auth.Access("session", f"s:{nonce}") if nonce else None

    def authorized(self, headers: Headers) -> bool:
        """Whether a request may use the guarded endpoints (see :meth:`access`)."""
        return self.access(headers) is not None

    def gate(self, scope: Scope) -> Response | None:
        """The answer refusing a request, or None to let it through (leaving its
        :class:`~hotfolder.web.auth.Access` in the scope): the Host check on loopback, then
        login, then CSRF for state-changing requests (see :mod:`hotfolder.web.auth`)."""
        path = scope.get("path", "")
        if path in OPEN_PATHS:
            return None
        headers = Headers(scope=scope)
        if self._loopback and not auth.loopback_host(headers.get("host")):
            log.warning("listener_host_refused", host=scrub(headers.get("host", ""))[:100], path=path[:200])
            return JSONResponse(
                {"error": "wrong host",
                 "hint": "this listener is on a loopback address and answers only to localhost, 127.0.0.1 or "
                         "[::1] in the Host header (a guard against DNS rebinding). Behind a reverse proxy, "
                         "forward the Host as 127.0.0.1, or listen on a network address with a [server] token"},
                status_code=421, headers=NO_STORE)
        found = self.access(headers)
        scope[ACCESS_KEY] = found
        method = scope.get("method", "GET")
        if found is None and path not in PUBLIC_PATHS and not path.startswith(PUBLIC_PREFIXES):
            if method in ("GET", "HEAD") and "text/html" in headers.get("accept", "") \
                    and not path.startswith(("/api/", "/files/")):
                query = scope.get("query_string", b"").decode("latin-1")
                return self.dashboard.login_response(None, path + (f"?{query}" if query else ""))
            return JSONResponse(
                {"error": "unauthorized",
                 "hint": "this listener is not on a loopback address: send 'Authorization: Bearer <token>' "
                         "with the [server] token of the daemon's config, or log in at /login"},
                status_code=401, headers={"WWW-Authenticate": 'Bearer realm="hotfolder"', **NO_STORE})
        if method not in auth.SAFE_METHODS and (found is None or found.needs_csrf):
            if not auth.same_origin(headers.get("origin"), headers.get("host"), headers.get("sec-fetch-site")):
                log.warning("listener_cross_site_refused", path=path[:200])
                return JSONResponse({"ok": False, "error": "cross-site request refused"}, status_code=403,
                                    headers=NO_STORE)
            if path not in FORM_CSRF_PATHS and \
                    (found is None or not self.keys.csrf_ok(found.binding, headers.get(auth.CSRF_HEADER))):
                return JSONResponse({"ok": False, "error": "csrf",
                                     "hint": "the page is out of date: reload it and try again"},
                                    status_code=403, headers=NO_STORE)
        return None

    # -- health ---------------------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        """The ``/healthz`` body (blocking: the ledger, the disk; see
        :func:`hotfolder.listener_health.health_report`)."""
        reasons = [scrub(r) for r in self.liveness.check().reasons]
        for extra in (self._inbox_check(), self._ledger_problem()):
            if extra and scrub(extra) not in reasons:
                reasons.append(scrub(extra))
        return health_report(self.ledger, reasons, self.clock(), self.started_at)

    def _ledger_problem(self) -> str | None:
        """Why the ledger cannot take a write now, or None (cached for :data:`PROBE_CACHE_S`)."""
        return self._probe.problem(self.ledger)

    # -- endpoints ------------------------------------------------------------------------------
    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a blocking ``fn`` on the I/O thread (ledger, health) and await its result."""
        assert self._io is not None
        return await asyncio.wrap_future(self._io.submit(fn, *args))

    _call = call

    async def file_call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a blocking ``fn`` on the file thread (upload and download bytes) and await it. The
        thread starts with the first upload or download (only the event loop calls this: no race)."""
        if self._files is None:
            assert self._server is not None, "the listener is not running"
            self._files = _IoThread("hotfolder-listener-files", on_exit=lambda: None)
        return await asyncio.wrap_future(self._files.submit(fn, *args))

    async def _healthz(self, request: Request) -> Response:
        try:
            body = await asyncio.wait_for(self._call(self.health), HEALTH_TIMEOUT_S)
        except asyncio.TimeoutError:
            body = {"status": "unhealthy", "version": __version__,
                    "reasons": [f"the health check did not finish within {HEALTH_TIMEOUT_S:g} s: the ledger's "
                                f"disk may hang ({self.ledger.path.parent})"]}
        return JSONResponse(body, status_code=200 if body["status"] == "ok" else 503, headers=NO_STORE)

    async def _metrics(self, request: Request) -> Response:
        data, content_type = await self._call(self.metrics.render)
        return Response(data, headers={"Content-Type": content_type, **NO_STORE})

    async def _callback(self, request: Request) -> Response:
        # The token first: a stranger gets 403 before a byte of the body is read.
        if not await self._call(callbacks.token_ok, self.ledger, request.query_params.get("token")):
            log.warning("callback_refused", reason="missing or wrong token", client=_client(request))
            return JSONResponse({"ok": False, "error": "forbidden"}, status_code=403)
        too_big = JSONResponse({"ok": False, "error": f"body over {MAX_CALLBACK_BYTES} bytes"}, status_code=413)
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > MAX_CALLBACK_BYTES:
            return too_big   # refused before reading; a body without a length is counted as it streams
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_CALLBACK_BYTES:
                return too_big
        task_id = callbacks.task_id_of(bytes(body))
        if task_id is None or len(task_id) > MAX_TASK_ID_CHARS:
            return JSONResponse({"ok": False, "error": "no task id in the body (expected {\"data\": {\"id\": …}})"},
                                status_code=400)
        try:
            await self._call(self.task_hint, task_id)
        except Exception:
            log.exception("callback_hint_failed", remote_id=task_id)
            return JSONResponse({"ok": False, "error": "internal error; the poller checks the task anyway"},
                                status_code=500)
        log.info("callback_received", remote_id=task_id)
        return JSONResponse({"ok": True})


def _client(request: Request) -> str | None:
    return request.client.host if request.client else None

