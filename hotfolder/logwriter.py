"""Where log lines go: a writer that can never break the code that logs.

A dead reader (a closed pipe, journald restarting), a full disk or a closed file must not turn
into job errors: every line goes through :class:`_GuardedWriter`, which contains the error,
counts the dropped line (:func:`dropped_lines`, shown in ``/metrics``) and stops using a stream
whose reader is gone for good. :func:`quiet_broken_pipe` is the CLI's one deliberate answer to
EPIPE on its own output. Configured by :mod:`hotfolder.log`, the one place logging is set up.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sys
import threading
from typing import Any, TextIO


# -- dropped lines --------------------------------------------------------------------------------
_dropped = 0
_dropped_lock = threading.Lock()


def dropped_lines() -> int:
    """How many log lines were dropped since the process started.

    A line is dropped when its stream cannot take it (broken pipe, full disk, closed file) or when
    logging it failed inside the logging layer. Meant for a metrics endpoint: a growing count means
    logs are being lost, while the jobs themselves carry on.
    """
    return _dropped


def _count_dropped(lines: int = 1) -> None:
    global _dropped
    with _dropped_lock:
        _dropped += lines


# -- the guarded writer ---------------------------------------------------------------------------
def _point_at_devnull(stream: Any) -> bool:
    """Make ``stream``'s file descriptor write to os.devnull; flush what it still buffers there.

    After a broken pipe, a buffered stream keeps the unwritten bytes and tries them again at every
    flush, including the interpreter's last one at exit (which then prints "Exception ignored ...
    BrokenPipeError" and turns the exit status into 120). Pointing the descriptor at /dev/null lets
    those flushes succeed harmlessly. Returns False if ``stream`` has no usable descriptor.
    """
    try:
        fd = stream.fileno()
    except (AttributeError, ValueError, OSError):  # io.UnsupportedOperation is both of the last two
        return False
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
    except OSError:
        return False
    try:
        os.dup2(devnull, fd)
    except OSError:
        return False
    finally:
        os.close(devnull)
    with contextlib.suppress(Exception):
        stream.flush()
    return True


def quiet_broken_pipe(stream: TextIO | None = None) -> None:
    """Handle a broken pipe on the CLI's own output, once and deliberately.

    Call it where the command line catches ``BrokenPipeError`` writing or flushing its output
    (``hotfolder status | head -1``): it points ``stream`` (default ``sys.stdout``) at os.devnull
    with ``dup2``, the recipe from the Python docs on SIGPIPE, so the interpreter's final flush
    neither prints "Exception ignored ... BrokenPipeError" nor exits with status 120. The caller
    then exits (status 1 by convention)::

        try:
            ...
            sys.stdout.flush()
        except BrokenPipeError:
            quiet_broken_pipe()
            sys.exit(1)
    """
    _point_at_devnull(sys.stdout if stream is None else stream)


class _GuardedWriter:
    """Writes whole lines to one stream and never lets an error out.

    * a peer that is gone (EPIPE, connection reset) or a closed/invalid file is permanent: the
      writer goes dead and drops every later line (after a broken pipe its descriptor is also
      pointed at os.devnull, see :func:`_point_at_devnull`);
    * anything else (ENOSPC, EIO, a stream that raises) may pass (the disk gets space again): that
      line is dropped and the next one is tried.

    Dropped lines are counted (:func:`dropped_lines`). The lock is reentrant because a signal
    handler runs in the main thread between bytecodes: if it logs while that thread is inside
    :meth:`write`, a plain lock would deadlock the process.
    """

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self._lock = threading.RLock()
        self._dead = stream is None  # sys.stderr is None under pythonw and some service managers

    @property
    def dead(self) -> bool:
        """True once the stream is known to be gone for good."""
        return self._dead

    def write(self, line: str) -> None:
        """Write ``line`` and a newline in one call, then flush; drop it on any error."""
        with self._lock:
            if self._dead:
                _count_dropped()
                return
            try:
                try:
                    self.stream.write(line + "\n")
                except UnicodeEncodeError:
                    # A stream with a narrow strict encoding (ASCII file, C locale): escape and
                    # retry rather than lose the line. Note UnicodeError is a ValueError, so this
                    # must come before the "closed file" check below.
                    self.stream.write(line.encode("ascii", "backslashreplace").decode("ascii") + "\n")
                self.stream.flush()
            except ConnectionError:  # BrokenPipeError, ConnectionResetError: the reader is gone
                self._dead = True
                _point_at_devnull(self.stream)
                _count_dropped()
            except OSError as exc:
                if exc.errno == errno.EBADF:
                    self._dead = True  # never dup2 onto a bad descriptor: its number may be reused
                _count_dropped()
            except ValueError:
                if getattr(self.stream, "closed", False):
                    self._dead = True  # "I/O operation on closed file"
                _count_dropped()
            except Exception:  # a custom stream can raise anything; it is still only a log line
                _count_dropped()


class _GuardedLogger:
    """The wrapped logger structlog hands rendered lines to; every level writes the same way.

    ``name`` is what ``get_logger(name)`` passed on to the factory: :func:`_add_logger_name` puts
    it on the line.
    """

    def __init__(self, writer: _GuardedWriter, name: str | None = None) -> None:
        self._writer = writer
        self.name = name

    def __repr__(self) -> str:
        return f"<_GuardedLogger {self.name!r} stream={self._writer.stream!r}>"

    def msg(self, message: str) -> None:
        """Write one rendered line."""
        self._writer.write(message)

    log = debug = info = warn = warning = msg
    err = error = critical = exception = fatal = failure = msg


class _GuardedLoggerFactory:
    """A logger factory: one :class:`_GuardedLogger` per name, all sharing one writer (one lock).

    structlog calls it with ``get_logger``'s positional arguments each time a lazy module logger
    is used (``cache_logger_on_first_use=False``), so the name survives being captured at import
    time, before :func:`configure`.
    """

    def __init__(self, writer: _GuardedWriter) -> None:
        self.writer = writer
        self._loggers: dict[str | None, _GuardedLogger] = {}
        self._lock = threading.Lock()

    def __call__(self, *args: Any) -> _GuardedLogger:
        name = args[0] if args and isinstance(args[0], str) else None
        logger = self._loggers.get(name)
        if logger is None:
            with self._lock:
                logger = self._loggers.setdefault(name, _GuardedLogger(self.writer, name))
        return logger


# The writer of the last configure(): the CLI configures twice (group, then `run`) with the same
# stream, and a writer that already saw a broken pipe must stay dead rather than start again.
_writer: _GuardedWriter | None = None
_writer_lock = threading.Lock()


def _writer_for(stream: Any) -> _GuardedWriter:
    global _writer
    with _writer_lock:
        if _writer is None or _writer.stream is not stream:
            _writer = _GuardedWriter(stream)
        return _writer
