"""The HTTP layer: a ThreadingHTTPServer whose handler speaks the Chanjing wire format.

Routing: ``/open/v1/...`` API endpoints (JSON envelope, HTTP 200 even for API errors),
``/_storage/...`` object storage (see :mod:`hotfolder.sandbox.storage_http`), ``/_sandbox/...``
control (see :mod:`hotfolder.sandbox.control`); anything else is gin's plain-text 404.
"""

from __future__ import annotations

import json
import logging
import socket
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, Callable
from urllib.parse import parse_qsl, urlsplit

from hotfolder.sandbox import control, faults, storage
from hotfolder.sandbox.storage_http import StorageMixin
from hotfolder.sandbox.validation import (
    CODE_INTERNAL, ApiFailure, page_info, parse_json_object, query_page, validate_create,
    validate_list, validate_token_request,
)
from hotfolder.sandbox.voices import voice_list

if TYPE_CHECKING:
    from hotfolder.sandbox.app import Sandbox

log = logging.getLogger("hotfolder.sandbox")

MAX_API_BODY = 1024 * 1024

# (method, path) -> (endpoint name, rate-limit bucket or None)
API_ROUTES: dict[tuple[str, str], tuple[str, str | None]] = {
    ("POST", "/open/v1/access_token"): ("access_token", None),
    ("GET", "/open/v1/common/create_upload_url"): ("create_upload_url", "file"),
    ("GET", "/open/v1/common/file_detail"): ("file_detail", "file"),
    ("POST", "/open/v1/video_lip_sync/create"): ("create", "create"),
    ("GET", "/open/v1/video_lip_sync/detail"): ("detail", "query"),
    ("POST", "/open/v1/video_lip_sync/list"): ("list", "query"),
    ("GET", "/open/v1/list_common_audio"): ("list_common_audio", None),
}


class SandboxHTTPServer(ThreadingHTTPServer):
    """Threading server that can cut its open connections, so ``stop`` never waits on a
    client's idle keep-alive connection and every handler thread can be joined."""

    daemon_threads = False
    block_on_close = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], app: "Sandbox") -> None:
        self.app = app
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()
        super().__init__(address, Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._conns_lock:
            self._conns.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._conns_lock:
            self._conns.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """Shut every open connection down; their handler threads then end."""
        with self._conns_lock:
            conns = list(self._conns)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class BodyError(Exception):
    """The request body could not be read; answer ``status`` as plain text and close."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status
        self.text = text


class Handler(StorageMixin, BaseHTTPRequestHandler):
    """One connection. Methods named ``_api_<endpoint>`` implement the API endpoints."""

    protocol_version = "HTTP/1.1"
    server_version = "nginx"
    sys_version = ""
    timeout = 60  # an idle keep-alive connection is dropped after this long
    server: SandboxHTTPServer

    # -- plumbing --------------------------------------------------------------------------------
    def setup(self) -> None:
        super().setup()
        # Headers and body leave in separate writes; without this, Nagle's algorithm and the
        # client's delayed ACK add 40 ms to every answer.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    @property
    def app(self) -> "Sandbox":
        return self.server.app

    def handle_expect_100(self) -> bool:
        # Defer "100 Continue" until the request has passed its checks (as S3 does), so a
        # refused upload is refused before its body is sent.
        self._expect_continue = True
        return True

    def send_continue(self) -> None:
        """Send the deferred ``100 Continue`` if the client asked for one."""
        if getattr(self, "_expect_continue", False):
            self._expect_continue = False
            self.send_response_only(100)
            self.end_headers()

    def version_string(self) -> str:
        return self.server_version

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (stdlib signature)
        pass  # access lines come from _record, without query strings (they hold signatures)

    def access_log(self, method: str, path: str, status: int | None, note: str) -> None:
        if self.app.access_log:
            stamp = time.strftime("%H:%M:%S")
            sys.stderr.write(f"{stamp} {method} {path} {status if status else '---'} {note}\n")

    def _record(self, endpoint: str, code: int | None, status: int | None, fault: str | None,
                processed: bool, arrived: float, **extra: Any) -> None:
        # Callers record *before* sending the answer's last byte: a client that has its answer
        # can rely on finding the entry in the journal.
        self.app._journal.record(
            method=self.command, path=self._path, endpoint=endpoint, code=code,
            http_status=status, fault=fault, processed=processed, time=arrived, **extra,
        )
        note = endpoint + (f" code={code}" if code is not None else "")
        note += f" fault={fault}" if fault else ""
        self.access_log(self.command, self._path, status, note)

    def send_bytes(self, status: int, body: bytes, content_type: str,
                   headers: dict[str, str] | None = None, close: bool = False) -> None:
        """A complete answer with Content-Length (HEAD gets the headers only)."""
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)

    def send_json(self, status: int, value: Any) -> None:
        body = json.dumps(value, ensure_ascii=False).encode()
        self.send_bytes(status, body, "application/json; charset=utf-8")

    def not_found(self) -> None:
        """gin's answer for an unknown route (and for a known path with the wrong method)."""
        self.send_bytes(404, b"404 page not found", "text/plain")

    def drop(self) -> None:
        """Close the connection without a single byte of answer."""
        self.close_connection = True

    def read_body(self) -> bytes:
        """The request body (Content-Length or chunked), at most MAX_API_BODY bytes."""
        self.send_continue()
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked()
        raw = self.headers.get("Content-Length")
        if raw is None:
            return b""
        try:
            length = int(raw)
        except ValueError:
            raise BodyError(400, "bad Content-Length") from None
        if length < 0:
            raise BodyError(400, "bad Content-Length")
        if length > MAX_API_BODY:
            raise BodyError(413, "request body too large")
        body = self.rfile.read(length)
        if len(body) != length:
            raise BodyError(400, "request body shorter than its Content-Length")
        return body

    def _read_chunked(self) -> bytes:
        parts: list[bytes] = []
        total = 0
        while True:
            line = self.rfile.readline(1024)
            try:
                size = int(line.split(b";")[0].strip(), 16)
            except ValueError:
                raise BodyError(400, "bad chunked encoding") from None
            if size == 0:
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(parts)
            total += size
            if total > MAX_API_BODY:
                raise BodyError(413, "request body too large")
            parts.append(self.rfile.read(size))
            self.rfile.readline(1024)

    # -- dispatch -----------------------------------------------------------------------------
    def _dispatch(self) -> None:
        url = urlsplit(self.path)
        self._path = url.path
        query = dict(parse_qsl(url.query, keep_blank_values=True))
        try:
            if url.path.startswith("/_sandbox/"):
                control.handle(self, url.path, query)
            elif (self.command, url.path) in API_ROUTES:
                self._api(*API_ROUTES[(self.command, url.path)], query)
            elif url.path.startswith(storage.UPLOAD_PREFIX) and self.command == "PUT":
                self.handle_upload(url.path, query)
            elif self.command in ("GET", "HEAD") and url.path.startswith(
                (storage.RESULT_PREFIX, storage.FILES_PREFIX, storage.AUDITION_PREFIX)
            ):
                self.handle_download(url.path, query)
            else:
                arrived = self.app.clock()
                self._record("unknown", None, 404, None, False, arrived)
                self.not_found()
        except (BrokenPipeError, ConnectionResetError, socket.timeout):
            self.close_connection = True

    do_GET = do_POST = do_PUT = do_HEAD = do_DELETE = do_PATCH = do_OPTIONS = _dispatch

    # -- API -------------------------------------------------------------------------------------
    def _api(self, endpoint: str, bucket: str | None, query: dict[str, str]) -> None:
        app = self.app
        arrived = app.clock()
        settings = app.settings
        decision = app.faults.decide(settings, faults.API)
        fault = decision.name
        if decision.slow:
            app.stop_event.wait(settings.slow_seconds)
        if decision.kind == "drop" and decision.before:
            self._record(endpoint, None, None, fault, False, arrived)
            self.drop()
            return
        if decision.kind == "gateway" and decision.before:
            self._record(endpoint, None, decision.gateway_status, fault, False, arrived)
            self.send_bytes(decision.gateway_status, faults.gateway_html(decision.gateway_status),
                            "text/html", close=True)
            return
        try:
            body = self.read_body()
        except BodyError as exc:
            self._record(endpoint, None, exc.status, fault, False, arrived)
            self.send_bytes(exc.status, exc.text.encode(), "text/plain", close=True)
            return
        processed = decision.kind != "error"
        if decision.kind == "error":
            code, msg, data = CODE_INTERNAL, "系统内部错误", None
        else:
            code, msg, data = self._call(endpoint, bucket, query, body)
        envelope = {"trace_id": uuid.uuid4().hex, "code": code, "msg": msg, "data": data}
        if decision.kind == "drop":  # after processing: the work is done, the answer is lost
            self._record(endpoint, code, None, fault, True, arrived)
            self.drop()
        elif decision.kind == "gateway":  # 504: the gateway gave up while the service worked
            self._record(endpoint, code, decision.gateway_status, fault, True, arrived)
            self.send_bytes(decision.gateway_status, faults.gateway_html(decision.gateway_status),
                            "text/html", close=True)
        else:
            self._record(endpoint, code, 200, fault, processed, arrived)
            self.send_json(200, envelope)

    def _call(self, endpoint: str, bucket: str | None, query: dict[str, str],
              body: bytes) -> tuple[int, str, Any]:
        """Run one endpoint: ``(code, msg, data)``."""
        state = self.app.state
        try:
            app_id = ""
            if endpoint != "access_token":
                app_id = state.authenticate(self.headers.get("access_token"))
                if bucket is not None:
                    state.check_rate(app_id, bucket)
            handler: Callable[[str, dict[str, str], bytes], Any] = getattr(self, f"_api_{endpoint}")
            return 0, "success", handler(app_id, query, body)
        except ApiFailure as failure:
            return failure.code, failure.msg, None
        except Exception:  # a sandbox bug must look like the real thing's 50000, and be loud
            log.exception("sandbox: %s failed", endpoint)
            return CODE_INTERNAL, "系统内部错误", None

    def _api_access_token(self, app_id: str, query: dict[str, str], body: bytes) -> Any:
        given_app, given_secret = validate_token_request(parse_json_object(body))
        return self.app.state.issue_token(given_app, given_secret)

    def _api_create_upload_url(self, app_id: str, query: dict[str, str], body: bytes) -> Any:
        return self.app.state.create_upload(app_id, query.get("service", ""), query.get("name", ""))

    def _api_file_detail(self, app_id: str, query: dict[str, str], body: bytes) -> Any:
        return self.app.state.file_detail(app_id, query.get("id", ""))

    def _api_create(self, app_id: str, query: dict[str, str], body: bytes) -> Any:
        request = validate_create(parse_json_object(body))
        return self.app.state.create_task(app_id, request)

    def _api_detail(self, app_id: str, query: dict[str, str], body: bytes) -> Any:
        return self.app.state.task_detail(app_id, query.get("id", ""))

    def _api_list(self, app_id: str, query: dict[str, str], body: bytes) -> Any:
        page, size = validate_list(parse_json_object(body, empty_ok=True))
        return self.app.state.list_tasks(app_id, page, size)

    def _api_list_common_audio(self, app_id: str, query: dict[str, str], body: bytes) -> Any:
        page, size = query_page(query, "size")
        voices = voice_list(self.app.base_url)
        chunk = voices[(page - 1) * size : page * size]
        return {"list": chunk, "page_info": page_info(page, size, len(voices))}
