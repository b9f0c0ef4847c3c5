"""Telling systemd how the daemon is doing: the sd_notify protocol, without libsystemd.

The protocol (``man sd_notify``) is one datagram per message on an ``AF_UNIX``/``SOCK_DGRAM``
socket whose address is in ``$NOTIFY_SOCKET``: a file system path, or an abstract socket when it
starts with ``@``. A message is newline-separated ``KEY=value`` assignments. systemd identifies
the sender by the kernel-attached credentials, so nothing else is needed.

Not under systemd (no ``$NOTIFY_SOCKET``) every call is a cheap no-op, so the daemon calls it
unconditionally. A send that fails never raises: the daemon's work matters more than its report
to systemd; the first failure of a run of failures is logged, the rest are not.
"""

from __future__ import annotations

import os
import re
import socket
import threading
import time
from collections.abc import Mapping, MutableMapping

from hotfolder.log import get_logger

log = get_logger(__name__)

ENV_SOCKET = "NOTIFY_SOCKET"
ENV_WATCHDOG_USEC = "WATCHDOG_USEC"
ENV_WATCHDOG_PID = "WATCHDOG_PID"

# systemd reads a notification into a buffer of this size (NOTIFY_BUFFER_MAX = PIPE_BUF) and
# drops longer messages whole: stay under it.
MAX_MESSAGE_BYTES = 4096
# `systemctl status` shows STATUS= on one line: a summary, not a report.
STATUS_MAX_CHARS = 200
# A datagram send normally never blocks; if systemd is wedged and its queue full, don't hang the
# main loop (or the watchdog thread) on it.
SEND_TIMEOUT_S = 2.0

_FIELD_NAME = re.compile(r"[A-Z][A-Z0-9_]*")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


def _one_line(value: object) -> str:
    """``value`` as text with no newline or other control character (each run becomes a space).

    A newline inside a value would start a new assignment: a status text could otherwise say
    ``READY=1`` or ``WATCHDOG=1`` on the daemon's behalf.
    """
    return _CONTROL.sub(" ", str(value)).strip()


def _address(raw: str | None) -> str | None:
    """The socket address ``$NOTIFY_SOCKET`` names, for :meth:`socket.socket.sendto`; None if unusable."""
    if not raw:
        return None
    if raw.startswith("@"):
        # Abstract namespace: the kernel name starts with a NUL byte instead of '@'.
        return "\0" + raw[1:]
    if raw.startswith("/"):
        return raw
    # Anything else (e.g. the vsock: form used between VMs) is not spoken here.
    return None


def monotonic_usec() -> int:
    """CLOCK_MONOTONIC in microseconds, the clock RELOADING=1 must be stamped with."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


class Notifier:
    """Sends sd_notify messages to the service manager named by an environment.

    ``environ`` defaults to :data:`os.environ`; tests pass a dict. ``pid`` (default: the
    current process's id, looked up at each call so a forked child never pings for its parent)
    is compared with ``$WATCHDOG_PID``. Thread-safe: the main loop and the watchdog thread
    share one instance.
    """

    def __init__(self, environ: Mapping[str, str] | None = None, *, pid: int | None = None) -> None:
        env = os.environ if environ is None else environ
        self.socket_path: str | None = env.get(ENV_SOCKET) or None
        self._address = _address(self.socket_path)
        self._watchdog_usec_raw = env.get(ENV_WATCHDOG_USEC)
        self._watchdog_pid_raw = env.get(ENV_WATCHDOG_PID)
        self._pid = pid
        # Reentrant: a signal handler running on the main thread while it sends must not deadlock.
        self._lock = threading.RLock()
        self._sock: socket.socket | None = None
        self._last_status: str | None = None
        self._failing = False
        if self.socket_path and self._address is None:
            log.warning("sd_notify_unsupported_socket", notify_socket=self.socket_path)

    @classmethod
    def from_environ(cls, environ: MutableMapping[str, str] | None = None, *,
                     unset: bool = False) -> Notifier:
        """A notifier for ``environ`` (default :data:`os.environ`).

        With ``unset`` the three variables are removed from ``environ`` afterwards (as
        ``sd_notify(unset_environment=1)`` does), so child processes (ffmpeg, notify hooks)
        don't inherit a socket they have no business writing to.
        """
        env = os.environ if environ is None else environ
        notifier = cls(env)
        if unset:
            for name in (ENV_SOCKET, ENV_WATCHDOG_USEC, ENV_WATCHDOG_PID):
                env.pop(name, None)
        return notifier

    @property
    def enabled(self) -> bool:
        """True when there is a service manager to talk to."""
        return self._address is not None

    # -- sending ----------------------------------------------------------------------------

    def send_raw(self, message: str) -> bool:
        """Send ``message`` as one datagram, as is. Returns whether it was sent; never raises."""
        if self._address is None:
            return False
        data = message.encode("utf-8", errors="replace")
        if len(data) > MAX_MESSAGE_BYTES:
            # systemd would drop it whole, silently; dropping it here says why. (A caller's bug,
            # not an outage: it does not count as the socket failing.)
            log.warning("sd_notify_message_too_long", size=len(data), limit=MAX_MESSAGE_BYTES)
            return False
        with self._lock:
            try:
                if self._sock is None:
                    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                    sock.settimeout(SEND_TIMEOUT_S)
                    self._sock = sock
                self._sock.sendto(data, self._address)
            except OSError as exc:   # includes socket.timeout
                # The next send starts from a fresh socket: the old one may be in any state.
                self._close_socket()
                self._failed(exc)
                return False
            if self._failing:
                log.info("sd_notify_recovered", notify_socket=self.socket_path)
                self._failing = False
            return True

    def send(self, **fields: object) -> bool:
        """Send ``KEY=value`` assignments in one message, e.g. ``send(READY=1, STATUS="up")``.

        Values are flattened to one line. A field name that is not ``UPPER_CASE`` is a
        programming error and raises :class:`ValueError` (before anything is sent).
        """
        for name in fields:
            if not _FIELD_NAME.fullmatch(name):
                raise ValueError(f"not an sd_notify field name: {name!r}")
        if not fields or self._address is None:
            return False
        return self.send_raw("\n".join(f"{k}={_one_line(v)}" for k, v in fields.items()))

    # -- the messages hotfolder uses ----------------------------------------------------------

    def ready(self, status: str | None = None) -> bool:
        """``READY=1``: start-up (or a reload) is complete. Optionally with a status line."""
        if status is None:
            return self.send(READY=1)
        text = self._status_text(status)
        sent = self.send(READY=1, STATUS=text)
        if sent:
            with self._lock:
                self._last_status = text
        return sent

    def status(self, text: str) -> bool:
        """``STATUS=``: a one-line summary for ``systemctl status``.

        Sent only when it differs from the last one sent, so the main loop may call this on
        every turn. Returns whether a message went out.
        """
        line = self._status_text(text)
        with self._lock:
            if line == self._last_status or self._address is None:
                return False
            sent = self.send(STATUS=line)
            if sent:
                self._last_status = line
            return sent

    def stopping(self) -> bool:
        """``STOPPING=1``: shutting down (systemd then shows "deactivating")."""
        return self.send(STOPPING=1)

    def reloading(self) -> bool:
        """``RELOADING=1`` with ``MONOTONIC_USEC``: a reload started; send :meth:`ready` when done.

        The timestamp lets systemd (253+) tell this reload from an earlier one.
        """
        return self.send(RELOADING=1, MONOTONIC_USEC=monotonic_usec())

    def extend_timeout(self, seconds: float) -> bool:
        """``EXTEND_TIMEOUT_USEC``: start-up or shutdown needs ``seconds`` more from now."""
        return self.send(EXTEND_TIMEOUT_USEC=max(0, int(seconds * 1_000_000)))

    def watchdog(self) -> bool:
        """``WATCHDOG=1``: still alive. Only meaningful when :meth:`watchdog_interval` is not None."""
        return self.send(WATCHDOG=1)

    def watchdog_interval(self) -> float | None:
        """Seconds between ``WATCHDOG=1`` pings: half of ``$WATCHDOG_USEC``, as the man page advises.

        None when there is no watchdog for this process: no socket, no or an invalid
        ``$WATCHDOG_USEC``, or a ``$WATCHDOG_PID`` naming another process (the variables were
        inherited from a parent that is the one being watched).
        """
        if self._address is None:
            return None
        try:
            usec = int(self._watchdog_usec_raw or "")
        except ValueError:
            return None
        if usec <= 0:
            return None
        if self._watchdog_pid_raw:
            try:
                watched = int(self._watchdog_pid_raw)
            except ValueError:
                return None
            if watched != (self._pid if self._pid is not None else os.getpid()):
                return None
        return usec / 2 / 1_000_000

    def close(self) -> None:
        """Close the socket (a later send opens a new one)."""
        with self._lock:
            self._close_socket()

    # -- internals ----------------------------------------------------------------------------

    @staticmethod
    def _status_text(text: str) -> str:
        line = _one_line(text)
        if len(line) > STATUS_MAX_CHARS:
            line = line[: STATUS_MAX_CHARS - 1].rstrip() + "…"
        return line

    def _close_socket(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            except OSError:
                pass
            self._sock = None

    def _failed(self, exc: BaseException) -> None:
        with self._lock:
            if self._failing:
                return
            self._failing = True
        log.warning("sd_notify_failed", notify_socket=self.socket_path, error=repr(exc),
                    hint="systemd is not told about this daemon's state until a send succeeds")
