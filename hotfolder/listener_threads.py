"""The listener's serving machinery: uvicorn in a thread, the blocking-call threads, the socket.

Owns what :class:`hotfolder.server.Listener` runs on, not what it answers:

- :class:`QuietServer`, uvicorn's server without signal handlers (the daemon owns SIGTERM/SIGHUP),
  telling when it listens; :func:`new_server` configures it, :func:`serve` runs it in the
  listener's thread and :func:`shut_down` stops it (graceful first, then forced) within a deadline;
- the bridge routing uvicorn's stdlib log lines into hotfolder's structlog;
- :class:`IoThread`, one thread running blocking calls in order, off the event loop (the
  ``hotfolder-listener-io`` and ``hotfolder-listener-files`` threads);
- :func:`bind`, the listening socket bound before uvicorn runs, and :func:`bind_advice`, what to
  do when that fails.
"""

from __future__ import annotations

import concurrent.futures
import errno
import logging
import queue
import socket
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import uvicorn
from starlette.types import ASGIApp

from hotfolder.log import get_logger, scrub

log = get_logger("hotfolder.server")   # the listener's logger: its lines keep their name
T = TypeVar("T")

# -- uvicorn, tamed ---------------------------------------------------------------------------------
class QuietServer(uvicorn.Server):
    """uvicorn's server without signal handling (the daemon owns the signals), telling when it
    listens (or failed to)."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = threading.Event()

    def capture_signals(self) -> Any:
        # uvicorn already skips this off the main thread; overriding makes it explicit and
        # independent of that detail (older uvicorn versions installed handlers unconditionally).
        return _nothing()

    def install_signal_handlers(self) -> None:   # uvicorn < 0.29 called this one
        return None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        try:
            await super().startup(sockets=sockets)
        finally:
            self.ready.set()


class _Nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def _nothing() -> _Nothing:
    return _Nothing()


class _ToStructlog(logging.Handler):
    """uvicorn logs through stdlib logging; its lines go to hotfolder's structlog instead of the
    root logger (which, unconfigured, would print raw lines on stderr)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = scrub(record.getMessage())
        except Exception:
            message = scrub(str(record.msg))
        if record.exc_info:
            log.error("listener_request_crashed", message=message, exc_info=record.exc_info)
        elif record.levelno >= logging.WARNING:
            log.warning("listener_server_warning", message=message)
        else:
            log.debug("listener_server", message=message)


_bridge_lock = threading.Lock()
_bridge: _ToStructlog | None = None


def route_uvicorn_logs() -> None:
    """Install the bridge once per process (several listeners, e.g. in tests, share it)."""
    global _bridge
    with _bridge_lock:
        if _bridge is not None:
            return
        _bridge = _ToStructlog(level=logging.WARNING)
        root = logging.getLogger("uvicorn")   # parent of uvicorn.error / uvicorn.asgi
        root.addHandler(_bridge)
        root.setLevel(logging.WARNING)        # its INFO lines ("Started server process") are noise here
        root.propagate = False


# -- the blocking side ------------------------------------------------------------------------------
class IoThread:
    """One thread that runs the listener's blocking calls, in order, off the event loop."""

    def __init__(self, name: str, on_exit: Callable[[], None]) -> None:
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._on_exit = on_exit
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.thread.start()

    def submit(self, fn: Callable[..., T], *args: Any) -> concurrent.futures.Future[T]:
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        self._queue.put((future, fn, args))
        return future

    def _run(self) -> None:
        try:
            while (item := self._queue.get()) is not None:
                future, fn, args = item
                if not future.set_running_or_notify_cancel():
                    continue
                try:
                    future.set_result(fn(*args))
                except BaseException as exc:   # handed to the awaiting request, never lost
                    future.set_exception(exc)
        finally:
            try:
                self._on_exit()   # e.g. close this thread's ledger connection
            except Exception:
                pass

    def close(self, timeout: float) -> None:
        self._queue.put(None)
        self.thread.join(timeout)



def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (the first address ``host`` resolves to)."""
    family, kind, proto, _name, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    sock = socket.socket(family, kind, proto)
    try:
        # Lets a restarted daemon bind while the old connections sit in TIME_WAIT. On Linux it
        # does NOT allow two live listeners on one port (that would need SO_REUSEPORT).
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except BaseException:
        sock.close()
        raise
    return sock


def bind_advice(exc: OSError, host: str, port: int) -> str:
    if isinstance(exc, socket.gaierror):
        return f"'{host}' does not resolve to an address: set [server] listen to an IP address, e.g. 127.0.0.1:{port}"
    if exc.errno == errno.EADDRINUSE:
        return (f"port {port} is already taken by another program (another hotfolder?): stop it, or set "
                f"[server] listen to a free port; `ss -ltnp 'sport = :{port}'` shows who holds it")
    if exc.errno == errno.EADDRNOTAVAIL:
        return (f"{host} is not an address of this machine: set [server] listen to one of its addresses, "
                f"127.0.0.1 (this machine only) or 0.0.0.0 (every interface, with a token)")
    if exc.errno in (errno.EACCES, errno.EPERM):
        return f"binding port {port} is not permitted (ports below 1024 need privileges): use a port above 1024"
    return "check [server] listen (host:port), or set it to \"\" to run without the listener"


# -- start and stop ---------------------------------------------------------------------------------
def new_server(app: ASGIApp) -> QuietServer:
    """uvicorn serving ``app``: no lifespan, no logging config, no access log (the callback's URL
    carries a secret token), no signal handlers; its log lines go to structlog."""
    route_uvicorn_logs()
    config = uvicorn.Config(
        app, lifespan="off", log_config=None, access_log=False,
        http="h11", ws="none", loop="asyncio",
        server_header=False, proxy_headers=False,
        timeout_keep_alive=5, timeout_graceful_shutdown=1,
        limit_concurrency=64,   # beyond this uvicorn answers 503: a runaway client cannot pile up
    )
    return QuietServer(config)


def serve(server: QuietServer, sock: socket.socket) -> None:
    """Run ``server`` on the bound ``sock`` until it stops (the listener thread's target)."""
    try:
        server.run(sockets=[sock])
    except BaseException as exc:   # uvicorn may sys.exit() on a startup failure: a thread must not
        log.error("listener_crashed", error=scrub(f"{type(exc).__name__}: {exc}"))
    finally:
        server.ready.set()


def shut_down(server: QuietServer, thread: threading.Thread, helpers: tuple[IoThread | None, ...],
              sock: socket.socket | None, timeout: float) -> bool:
    """Stop ``server`` and join its thread and the ``helpers`` within about ``timeout`` seconds,
    then close ``sock``. False when a thread was still running (it ends with the process)."""
    deadline = time.monotonic() + timeout
    # Graceful first: finish responses being written (uvicorn allows them 1 s), close idle
    # keep-alive connections; then cut what is left.
    server.should_exit = True
    thread.join(max(0.0, deadline - time.monotonic() - 0.5))
    if thread.is_alive():
        server.force_exit = True
        thread.join(max(0.0, deadline - time.monotonic() - 0.2))
    for helper in helpers:
        if helper is not None:
            helper.close(max(0.1, deadline - time.monotonic()))
    if sock is not None:
        sock.close()
    return not (thread.is_alive() or any(h is not None and h.thread.is_alive() for h in helpers))
