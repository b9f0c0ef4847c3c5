"""The :class:`Sandbox` object (lifecycle, threads, callbacks) and :func:`serve_forever`."""

from __future__ import annotations

import json
import queue
import signal
import sys
import threading
import time
import uuid
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any, Callable
from urllib.parse import urlsplit

import httpx

from hotfolder.sandbox.faults import Faults
from hotfolder.sandbox.journal import Journal
from hotfolder.sandbox.server import SandboxHTTPServer
from hotfolder.sandbox.settings import SandboxSettings, settings_from_mapping
from hotfolder.sandbox.state import State

TICK = 0.05  # how often ended tasks are looked for (callbacks); cheap: only pending ones
CALLBACK_TIMEOUT = 3.0


class Sandbox:
    """A local emulator of the Chanjing API on a real loopback HTTP server.

    ``data_dir`` holds the uploaded blobs, results and ``state.json`` (files, tasks, tokens),
    so a sandbox restarted on the same directory keeps its tasks. ``clock`` is the time source
    of the service state (token/URL expiry, readiness, task progress, rate windows).
    """

    def __init__(
        self,
        data_dir: Path | str,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        app_id: str = "sandbox",
        secret_key: str = "sandbox",
        settings: SandboxSettings | None = None,
        clock: Callable[[], float] = time.time,
        access_log: bool = False,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.host = host
        self.port = port
        self.app_id = app_id
        self._secret_key = secret_key
        self._settings = settings_from_mapping({}, settings)  # a copy: callers keep theirs
        self.clock = clock
        self.access_log = access_log
        self.faults = Faults(self._settings.seed)
        self._journal = Journal(clock)
        self.stop_event = threading.Event()
        self._update_lock = threading.Lock()
        self._state: State | None = None
        self._server: SandboxHTTPServer | None = None
        self._threads: list[threading.Thread] = []
        self._callbacks: queue.Queue[tuple[str, str, dict[str, Any]] | None] = queue.Queue()

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> "Sandbox":
        """Load the state, bind the port and serve on background threads; returns when
        the socket is listening."""
        if self._server is not None:
            raise RuntimeError("sandbox already started")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.stop_event.clear()
        self._state = State(self.data_dir, lambda: self._settings, self.faults, self.clock,
                            accounts={self.app_id: self._secret_key})
        self._server = SandboxHTTPServer((self.host, self.port), self)
        self.port = self._server.server_address[1]
        self._state.base_url = self.base_url
        server = self._server
        self._threads = [
            threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                             name="sandbox-http", daemon=True),
            threading.Thread(target=self._tick, name="sandbox-ticker", daemon=True),
            threading.Thread(target=self._send_callbacks, name="sandbox-callbacks", daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, cut open connections, join every thread. Safe to call twice."""
        server = self._server
        if server is None:
            return
        self.stop_event.set()  # also wakes handlers sleeping on a "slow" fault
        server.shutdown()
        server.close_connections()
        server.server_close()  # joins the handler threads
        self._callbacks.put(None)
        for thread in self._threads:
            thread.join()
        self._threads = []
        self._server = None

    def __enter__(self) -> "Sandbox":
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # -- public API -------------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        """``http://HOST:PORT`` (the port is known once started)."""
        return f"http://{self.host}:{self.port}"

    @property
    def settings(self) -> SandboxSettings:
        """The current settings (replace them with :meth:`update`)."""
        return self._settings

    @property
    def state(self) -> State:
        if self._state is None:
            raise RuntimeError("sandbox not started")
        return self._state

    def update(self, **changes: Any) -> SandboxSettings:
        """Change settings at run time (validated; ValueError names a bad field).

        New timings apply to files and tasks created afterwards. Setting ``seed`` restarts
        the fault sequence; setting ``balance_creates`` resets the remaining balance.
        """
        with self._update_lock:
            new = settings_from_mapping(changes, self._settings)
            self._settings = new
            keys = {k.replace("-", "_") for k in changes}
            if "seed" in keys:
                self.faults.reseed(new.seed)
            if "balance_creates" in keys and self._state is not None:
                self._state.set_balance(new.balance_creates)
            return new

    def journal(self, since: int = 0) -> list[dict[str, Any]]:
        """Journal entries with ``seq`` > ``since`` (see :class:`Journal`)."""
        return self._journal.since(since)

    def tasks(self) -> list[dict[str, Any]]:
        """Every task, oldest first: API fields plus ``app_id``, ``request``, ``created_at``
        and ``callback_state``."""
        return self.state.snapshot()

    def set_file_status(self, file_id: str, status: int | None) -> None:
        """Force an uploaded file's status (99 deleted, 100 cleaned up, 98 rejected); None
        restores the normal lifecycle. KeyError for an unknown id."""
        self.state.set_file_status(file_id, status)

    # -- background work ------------------------------------------------------------------------
    def _tick(self) -> None:
        # Task status is a function of time; this notices ended tasks that owe a callback.
        while not self.stop_event.wait(TICK):
            for item in self.state.due_callbacks(self._settings.emit_callbacks):
                self._callbacks.put(item)

    def _send_callbacks(self) -> None:
        with httpx.Client(timeout=CALLBACK_TIMEOUT, trust_env=False) as client:
            while (item := self._callbacks.get()) is not None:
                if self.stop_event.is_set():
                    continue  # shutting down: drain the queue without sending
                task_id, url, view = item
                self._post_callback(client, task_id, url, view)

    def _post_callback(self, client: httpx.Client, task_id: str, url: str, view: dict[str, Any]) -> None:
        body = {"trace_id": uuid.uuid4().hex, "code": 0, "msg": "success", "data": view}
        arrived = self.clock()
        status: int | None = None
        error: str | None = None
        try:
            response = client.post(url, content=json.dumps(body, ensure_ascii=False).encode(),
                                   headers={"Content-Type": "application/json"})
            status = response.status_code
        except httpx.HTTPError as exc:  # the receiver's problem, never ours: record and move on
            error = f"{type(exc).__name__}: {exc}"
        parts = urlsplit(url)
        self._journal.record(
            method="POST", path=parts.path or "/", endpoint="callback", code=None,
            http_status=status, fault=None, processed=True, time=arrived,
            task_id=task_id, url=f"{parts.scheme}://{parts.netloc}{parts.path}", error=error,
        )
        if self.access_log:
            sys.stderr.write(f"callback {task_id} -> {parts.netloc}{parts.path}: {status or error}\n")


def serve_forever(
    port: int,
    data_dir: Path | str,
    app_id: str = "sandbox",
    secret_key: str = "sandbox",
    settings: SandboxSettings | None = None,
    host: str = "127.0.0.1",
) -> None:
    """Run a sandbox in the foreground with an access log on stderr until SIGINT/SIGTERM."""
    stop = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    sandbox = Sandbox(data_dir, host=host, port=port, app_id=app_id, secret_key=secret_key,
                      settings=settings, access_log=True)
    try:
        sandbox.start()
        sys.stderr.write(
            f"hotfolder sandbox listening on {sandbox.base_url} (app_id {app_id!r}), "
            f"data in {Path(data_dir).resolve()}; stop with Ctrl-C\n"
        )
        while not stop.wait(0.5):
            pass
    finally:
        sandbox.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        sys.stderr.write("hotfolder sandbox stopped\n")
