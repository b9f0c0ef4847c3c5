"""The delivery transports of the notification worker: how one ledger row reaches a receiver.

This module owns the three targets, not the scheduling (order, backoff, give-up: :mod:`hotfolder.notify`):
the **webhook** POST of the recorded body with its ``X-Hotfolder-Signature`` HMAC (:func:`signature`,
:func:`post_webhook`); the **exec** hook, fed the event on stdin in a scrubbed environment with the
``HOTFOLDER_*`` variables (:func:`hook_environment`, :func:`run_exec`), killed with its process group on
timeout or stop; and **apprise**, one notification per configured URL (:func:`send_apprise`).

Each returns ``None`` when the receiver took the row, else a one-line error holding no secret (URLs
shown as ``scheme://host:port``, texts masked against the configured URLs). A delivery cut short by
the stop flag raises :class:`Stopped`; :func:`off_thread` runs a blocking one so stop is honoured at once.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import os
import selectors
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx

from hotfolder.config import NotifySettings
from hotfolder.log import scrub

__all__ = ["APPRISE_INSTALL_HINT", "Stopped", "hook_environment", "off_thread", "post_webhook", "run_exec",
           "send_apprise", "signature"]

STOP_SLICE_S = 0.2          # the longest the thread goes without looking at the stop flag
OUTPUT_LIMIT = 4096         # bytes of an exec hook's stdout and of its stderr kept for the log
ERROR_TEXT_LIMIT = 500      # characters of a receiver's answer kept in an error
DRAIN_GRACE_S = 0.5         # after an exec hook exits, how long a background child may hold its pipes
APPRISE_INSTALL_HINT = "pip install 'hotfolder[apprise]' (or pip install apprise) and restart"

# Variables an exec hook never inherits: the API secret under its documented name, and systemd's
# channel to the service manager (a hook must not be able to tell systemd the daemon is ready or
# alive). Any variable whose value holds a registered secret is dropped too (hook_environment).
_NEVER_INHERITED = frozenset({"CHANJING_SECRET_KEY", "NOTIFY_SOCKET"})
_NEVER_INHERITED_PREFIXES = ("WATCHDOG_",)


class Stopped(Exception):
    """The stop flag was set during a delivery: it is abandoned, and stays undelivered."""


# -- pure helpers (no ledger, no network) -----------------------------------------------------------
def signature(secret: str, body: bytes) -> str:
    """The ``X-Hotfolder-Signature`` value: ``sha256=`` and the hex HMAC-SHA256 of the raw body."""
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def _event_of(row: dict[str, Any]) -> dict[str, Any]:
    """The event a row carries (its body is the JSON text made when it was recorded)."""
    try:
        event = json.loads(row["body"])
    except (TypeError, ValueError):
        return {}
    return event if isinstance(event, dict) else {}


def _is_secret_variable(name: str, value: str) -> bool:
    if name in _NEVER_INHERITED or name.startswith(_NEVER_INHERITED_PREFIXES):
        return True
    # scrub() masks every registered secret: a value it changes holds one (a token, a URL with a
    # password, the webhook secret under whatever name a person exported it).
    return bool(value) and scrub(value) != value


def hook_environment(event: dict[str, Any], base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of an exec hook for ``event``: ``base`` (default: this process's) without
    secrets and systemd's variables, plus the ``HOTFOLDER_*`` variables (empty when they do not
    apply: ``HOTFOLDER_OUTPUT`` for a failed job, the job's for paused/resumed, …)."""
    source = os.environ if base is None else base
    env = {k: v for k, v in source.items() if not _is_secret_variable(k, v)}
    job = event.get("job") if isinstance(event.get("job"), dict) else {}
    outputs = job.get("outputs") if isinstance(job.get("outputs"), dict) else {}

    def text(value: Any) -> str:
        return "" if value is None else scrub(str(value))

    env.update({
        "HOTFOLDER_EVENT": text(event.get("event")),
        "HOTFOLDER_EVENT_ID": text(event.get("id")),
        "HOTFOLDER_JOB_ID": text(job.get("id")),
        "HOTFOLDER_JOB_NAME": text(job.get("name")),
        "HOTFOLDER_JOB_STATE": text(job.get("state")),
        "HOTFOLDER_OUTPUT": text(outputs.get("video")),
        "HOTFOLDER_ERROR": text(job.get("error")),
        "HOTFOLDER_REASON": text(event.get("reason")),
    })
    return env


def _where(url: str) -> str:
    """A URL as a log line may show it: scheme, host and port; never a path, query or password
    (receivers commonly put their token there)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "<unparsable URL>"
    return f"{parts.scheme}://{host}{port}" if parts.scheme else "<URL>"


def _url_parts(url: str) -> list[str]:
    """Pieces of ``url`` that may be credentials, for masking one error text (not registered
    globally: a path segment like ``services`` must not be masked in every other log line)."""
    pieces = [url]
    try:
        parts = urlsplit(url)
    except ValueError:
        return pieces
    pieces += [parts.username or "", parts.password or "", parts.netloc.rpartition("@")[0]]
    # Apprise puts tokens in the host position too (tgram://<bot token>/<chat>).
    if parts.scheme not in ("http", "https"):
        pieces.append(parts.hostname or "")
    pieces += [seg for seg in parts.path.split("/") if seg]
    pieces += [value for _key, value in parse_qsl(parts.query, keep_blank_values=False)]
    if parts.fragment:
        pieces.append(parts.fragment)
    return [p for p in pieces if len(p) >= 4]


def _mask(text: str, urls: list[str]) -> str:
    """``text`` with registered secrets and the credential-like parts of ``urls`` masked."""
    pieces = sorted({p for url in urls for p in _url_parts(url)}, key=len, reverse=True)
    for piece in pieces:
        text = text.replace(piece, "***")
    return scrub(text)


def _one_line(text: str, limit: int = ERROR_TEXT_LIMIT) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "…"


class _Tail:
    """The last ``limit`` bytes written to it (what a hook printed last says most)."""

    def __init__(self, limit: int = OUTPUT_LIMIT) -> None:
        self.limit = limit
        self.data = bytearray()
        self.cut = False

    def add(self, chunk: bytes) -> None:
        self.data += chunk
        if len(self.data) > self.limit:
            del self.data[:len(self.data) - self.limit]
            self.cut = True

    def text(self) -> str:
        text = self.data.decode("utf-8", "replace").strip()
        return ("…" + text) if self.cut and text else text


def _apprise_message(event: dict[str, Any]) -> tuple[str, str, str]:
    """A short title, a body and an apprise notify type (by name) for ``event``."""
    kind = str(event.get("event", "event"))
    job = event.get("job") if isinstance(event.get("job"), dict) else None
    if job is None:
        title = f"hotfolder: {kind}"
        body = str(event.get("reason") or kind)
        return title, body, ("warning" if kind == "paused" else "info")
    name = str(job.get("name") or f"job {job.get('id')}")
    title = f"hotfolder: {name} {kind}"
    if kind == "failed":
        body = str(job.get("error") or "failed")
        return title, body, "failure"
    outputs = job.get("outputs") if isinstance(job.get("outputs"), dict) else {}
    body = str(outputs.get("video") or f"{name} {kind}")
    return title, body, ("success" if kind == "done" else "info")


class _CollectLog(logging.Handler):
    """Keeps what the apprise library logs during one delivery, to put it (masked) in our error
    instead of letting it reach stderr unscrubbed."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        with contextlib.suppress(Exception):
            self.messages.append(record.getMessage())


@contextlib.contextmanager
def _apprise_log_captured() -> Iterator[_CollectLog]:
    logger = logging.getLogger("apprise")
    handler = _CollectLog()
    propagate = logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate



# -- running a blocking delivery ---------------------------------------------------------------------
def off_thread(call: Callable[[], str | None], timeout: float, stop: threading.Event) -> str | None:
    """Run a blocking network call in a helper thread so that stop is honoured at once (the
    call is then abandoned; it ends by its own timeout, its answer is ignored)."""
    box: dict[str, Any] = {}
    done = threading.Event()

    def run() -> None:
        try:
            box["error"] = call()
        except Exception as exc:   # any failure of a delivery is just a failed attempt
            box["error"] = _one_line(scrub(f"{type(exc).__name__}: {exc}"))
        finally:
            done.set()

    threading.Thread(target=run, name="hotfolder-notify-send", daemon=True).start()
    # The call has its own timeouts; this bound only guards against one that ignores them.
    end = time.monotonic() + timeout * 2 + 5.0
    while not done.wait(STOP_SLICE_S):
        if stop.is_set():
            raise Stopped
        if time.monotonic() > end:
            return f"no answer within {timeout * 2 + 5.0:.0f} s"
    return box.get("error")


# -- webhook ----------------------------------------------------------------------------------------
def post_webhook(client: httpx.Client, row: dict[str, Any], settings: NotifySettings) -> str | None:
    """POST ``row``'s recorded body to ``settings.webhook`` (signed when a secret is set)."""
    body = row["body"].encode("utf-8")   # the recorded text, byte for byte (what is signed)
    headers = {"Content-Type": "application/json", "X-Hotfolder-Event": row["kind"],
               "X-Hotfolder-Delivery": row["event_id"], "User-Agent": "hotfolder-notify"}
    if settings.webhook_secret:
        headers["X-Hotfolder-Signature"] = signature(settings.webhook_secret, body)
    urls = [settings.webhook]
    try:
        with client.stream("POST", settings.webhook, content=body, headers=headers,
                           timeout=settings.timeout_seconds) as response:
            if 200 <= response.status_code < 300:
                return None
            answer = bytearray()
            for chunk in response.iter_bytes():
                answer += chunk
                if len(answer) >= ERROR_TEXT_LIMIT:
                    break
    except Exception as exc:   # connection trouble, timeouts, an invalid URL: all a failed attempt
        return f"webhook {_where(settings.webhook)}: {type(exc).__name__}: {_one_line(_mask(str(exc), urls))}"
    text = _one_line(_mask(answer.decode("utf-8", "replace"), urls))
    status = f"webhook {_where(settings.webhook)} answered HTTP {response.status_code}"
    return f"{status}: {text}" if text else status


# -- exec -------------------------------------------------------------------------------------------
def run_exec(row: dict[str, Any], settings: NotifySettings,
             stop: threading.Event) -> tuple[str | None, dict[str, str]]:
    """Run ``notify.exec`` for ``row``: (None, log fields) when it exited 0; (the error, log
    fields) when not. Raises :class:`Stopped` when ``stop`` was set while it ran."""
    argv = list(settings.exec)
    env = hook_environment(_event_of(row))
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env=env, close_fds=True, start_new_session=True)
    except FileNotFoundError:
        return (f"exec hook {argv[0]!r} not found: install it or fix notify.exec "
                "(it is tried again until the give-up deadline)"), {}
    except PermissionError:
        return f"exec hook {argv[0]!r} is not executable (chmod +x it, or fix notify.exec)", {}
    except OSError as exc:
        return f"exec hook {argv[0]!r} cannot be run: {exc.strerror or exc}", {}
    out, err = _Tail(), _Tail()
    try:
        outcome = _communicate(proc, argv[0], row["body"].encode("utf-8"), out, err,
                               settings.timeout_seconds, stop)
    finally:
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            with contextlib.suppress(OSError):
                if stream is not None:
                    stream.close()
    fields = {k: v for k, v in (("stdout", scrub(out.text())), ("stderr", scrub(err.text()))) if v}
    if outcome is not None:
        return outcome, fields
    if proc.returncode == 0:
        return None, fields
    status = (f"was killed by signal {-proc.returncode}" if proc.returncode < 0
              else f"exited with status {proc.returncode}")
    said = _one_line(scrub(err.text() or out.text()))
    return f"exec hook {argv[0]!r} {status}" + (f": {said}" if said else ""), fields


def _communicate(proc: subprocess.Popen[bytes], name: str, data: bytes, out: _Tail, err: _Tail,
                 timeout: float, stop: threading.Event) -> str | None:
    """Feed ``data`` to the hook's stdin and keep the tails of its output until it exits,
    the timeout (kill its process group: an error), or stop (kill it too: :class:`Stopped`).
    One thread, no unbounded buffers."""
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    deadline = time.monotonic() + timeout
    sel = selectors.DefaultSelector()
    tails = {proc.stdout.fileno(): out, proc.stderr.fileno(): err}
    for fd in tails:
        os.set_blocking(fd, False)
        sel.register(fd, selectors.EVENT_READ)
    stdin_fd = proc.stdin.fileno()
    os.set_blocking(stdin_fd, False)
    offset = 0
    if data:
        sel.register(stdin_fd, selectors.EVENT_WRITE)
    else:
        proc.stdin.close()
    exited_at: float | None = None
    try:
        while True:
            now = time.monotonic()
            if proc.poll() is not None:
                exited_at = exited_at or now
                readers = [k for k in sel.get_map().values() if k.fd in tails]
                # Its exit status is what counts. A background child of the hook may keep the
                # pipes open: read what is there, but don't wait for it.
                if not readers or now - exited_at > DRAIN_GRACE_S or now >= deadline:
                    return None
            elif now >= deadline:
                _kill(proc)
                return f"exec hook {name!r} timed out after {timeout:g} s (its process group was killed)"
            elif stop.is_set():
                _kill(proc)
                raise Stopped
            if not sel.get_map():
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(min(STOP_SLICE_S, deadline - now))
                continue
            for key, _mask_events in sel.select(min(STOP_SLICE_S, max(0.0, deadline - now))):
                if key.fd == stdin_fd:
                    try:
                        offset += os.write(stdin_fd, data[offset:offset + 65536])
                    except BlockingIOError:
                        continue
                    except OSError:   # BrokenPipeError: the hook does not read its stdin; fine
                        offset = len(data)
                    if offset >= len(data):
                        sel.unregister(stdin_fd)
                        proc.stdin.close()
                    continue
                try:
                    chunk = os.read(key.fd, 65536)
                except BlockingIOError:
                    continue
                except OSError:
                    chunk = b""
                if chunk:
                    tails[key.fd].add(chunk)
                else:
                    sel.unregister(key.fd)
    finally:
        sel.close()


def _kill(proc: subprocess.Popen[bytes]) -> None:
    """Kill the hook and everything it started (its own process group), and reap it."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        proc.kill()
    proc.wait()


# -- apprise ----------------------------------------------------------------------------------------
def send_apprise(row: dict[str, Any], urls: list[str], sent: set[str]) -> str | None:
    """Notify each URL not yet told of this row (a retry does not repeat the ones that took it)."""
    import apprise

    title, body, kind = _apprise_message(_event_of(row))
    notify_type = getattr(apprise.NotifyType, kind.upper(), apprise.NotifyType.INFO)
    failures = []
    for number, url in enumerate(urls, 1):
        if url in sent:
            continue
        where = f"apprise URL #{number} ({urlsplit(url).scheme or '?'}://)"
        client = apprise.Apprise()
        try:
            with _apprise_log_captured() as captured:
                if not client.add(url):
                    failures.append(f"{where}: not a URL apprise understands")
                    continue
                ok = client.notify(title=title, body=body, notify_type=notify_type)
        except Exception as exc:   # a plugin's bug must not end the worker: a failed attempt
            failures.append(f"{where}: {type(exc).__name__}: {_one_line(_mask(str(exc), urls), 200)}")
            continue
        if ok:
            sent.add(url)
        else:
            said = _one_line(_mask("; ".join(captured.messages), urls), 200)
            failures.append(f"{where}: not delivered" + (f" ({said})" if said else ""))
    return "; ".join(failures) or None
