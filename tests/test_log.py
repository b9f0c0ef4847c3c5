"""Logging: never breaks a job, honours NO_COLOR and pipes, names loggers, masks secrets.

Real pipes, real files and a real pseudo-terminal wherever one does the job; a hand-made stream
only to play a full disk, which a test cannot produce on demand.
"""

from __future__ import annotations

import errno
import io
import json
import os
import subprocess
import sys
import textwrap
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hotfolder import log
from hotfolder.log import MASK, configure, dropped_lines, get_logger, job_context, register_secret

SECRET = "sk-live-7f3c9a1e55d04b2b"
ANSI = "\x1b["


@pytest.fixture(autouse=True)
def _registered_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    """Register SECRET for each test, and leave the process's secrets as they were afterwards."""
    monkeypatch.setattr(log, "_secrets", log._secrets)
    register_secret(SECRET)


@pytest.fixture
def no_color_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)


@pytest.fixture
def dead_pipe() -> Iterator[Any]:
    """A text stream on a real pipe whose read end is already closed: every flush hits EPIPE."""
    read_fd, write_fd = os.pipe()
    os.close(read_fd)
    stream = os.fdopen(write_fd, "w", encoding="utf-8")
    try:
        yield stream
    finally:
        stream.close()  # must not raise either: the unwritten bytes went to /dev/null


@pytest.fixture
def pipe() -> Iterator[tuple[Any, Any]]:
    """(write stream, read stream) of a real pipe: a non-TTY consumer such as journald or less."""
    read_fd, write_fd = os.pipe()
    writer = os.fdopen(write_fd, "w", encoding="utf-8")
    reader = os.fdopen(read_fd, "r", encoding="utf-8")
    try:
        yield writer, reader
    finally:
        writer.close()
        reader.close()


@pytest.fixture
def tty() -> Iterator[tuple[Any, int]]:
    """(write stream on the terminal side, master fd) of a real pseudo-terminal."""
    master, slave = os.openpty()
    stream = os.fdopen(slave, "w", encoding="utf-8")
    try:
        yield stream, master
    finally:
        stream.close()
        os.close(master)


def read_pipe(writer: Any, reader: Any) -> str:
    writer.close()
    return str(reader.read())


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


class FullDisk(io.TextIOBase):
    """A stream whose writes fail like a log file on a full disk until ``full`` is cleared."""

    def __init__(self) -> None:
        self.full = True
        self.lines: list[str] = []
        self.attempts = 0

    def write(self, text: str) -> int:
        self.attempts += 1
        if self.full:
            raise OSError(errno.ENOSPC, "No space left on device")
        self.lines.append(text)
        return len(text)

    def isatty(self) -> bool:
        return False


# -- logging never breaks a job --------------------------------------------------------------------
def test_a_pipe_with_no_reader_drops_and_counts_lines(dead_pipe: Any) -> None:
    configure("info", stream=dead_pipe)
    logger = get_logger("hotfolder.test")
    before = dropped_lines()
    for i in range(25):
        logger.info("step_done", step=i)  # raised BrokenPipeError into the job before
    assert dropped_lines() - before == 25
    # Configuring again on the same stream (the CLI does: group, then `run`) keeps it given up.
    configure("info", stream=dead_pipe)
    get_logger("hotfolder.test").warning("still_dropped")
    assert dropped_lines() - before == 26


def test_a_closed_file_drops_lines(tmp_path: Path) -> None:
    stream = (tmp_path / "hotfolder.log").open("w", encoding="utf-8")
    configure("info", stream=stream)
    logger = get_logger("hotfolder.test")
    logger.info("written")
    stream.close()
    before = dropped_lines()
    logger.info("after_close")  # ValueError: I/O operation on closed file
    logger.error("after_close_again")
    assert dropped_lines() - before == 2
    assert [e["event"] for e in json_lines((tmp_path / "hotfolder.log").read_text())] == ["written"]


def test_a_full_disk_is_contained_and_logging_resumes_when_space_returns() -> None:
    stream = FullDisk()
    configure("info", stream=stream)
    logger = get_logger("hotfolder.test")
    before = dropped_lines()
    logger.info("lost_one")
    logger.info("lost_two")
    assert dropped_lines() - before == 2 and stream.attempts == 2  # ENOSPC is not "gone for good"
    stream.full = False
    logger.info("kept")
    assert [json.loads(line)["event"] for line in stream.lines] == ["kept"]
    assert dropped_lines() - before == 2


def test_many_threads_on_a_broken_pipe_count_every_line(dead_pipe: Any) -> None:
    configure("info", stream=dead_pipe)
    logger = get_logger("hotfolder.test")
    errors: list[BaseException] = []
    before = dropped_lines()

    def worker(n: int) -> None:
        try:
            for i in range(200):
                logger.info("tick", worker=n, i=i)
        except BaseException as exc:  # pragma: no cover - the failure being tested for
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and dropped_lines() - before == 8 * 200


def test_many_threads_never_interleave_lines(tmp_path: Path) -> None:
    path = tmp_path / "hotfolder.log"
    with path.open("w", encoding="utf-8") as stream:
        configure("info", stream=stream)
        logger = get_logger("hotfolder.test")
        threads = [threading.Thread(target=lambda n=n: [logger.info("tick", worker=n, pad="x" * 300)
                                                         for _ in range(100)]) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    events = json_lines(path.read_text(encoding="utf-8"))  # every line parses: none torn
    assert len(events) == 800


class Unprintable:
    def __repr__(self) -> str:
        raise RuntimeError("repr exploded")

    __str__ = __repr__


def test_values_that_cannot_be_rendered_never_escape(pipe: tuple[Any, Any]) -> None:
    writer, reader = pipe
    configure("info", json_lines=True, stream=writer)
    logger = get_logger("hotfolder.test")
    before = dropped_lines()
    logger.info("odd_value", obj=Unprintable(), fine=1)
    logger.info("odd %s", Unprintable())  # interpolation fails before any processor runs
    loop: dict[str, Any] = {}
    loop["self"] = loop
    logger.info("circular", data=loop)
    events = json_lines(read_pipe(writer, reader))
    assert events[0]["event"] == "odd_value" and events[0]["obj"] == "<unrepresentable Unprintable>"
    assert events[0]["fine"] == 1 and events[0]["log_render_error"] == "RuntimeError"
    assert events[1] == {"event": "log_call_failed", "error": "RuntimeError"}
    assert events[2]["event"] == "circular" and "log_render_error" in events[2]
    assert dropped_lines() - before == 1  # only the line that could not be made at all


def test_console_rendering_of_an_unprintable_value(pipe: tuple[Any, Any]) -> None:
    writer, reader = pipe
    configure("info", json_lines=False, stream=writer)
    get_logger("hotfolder.test").info("odd_value", obj=Unprintable())
    assert "obj='<unrepresentable Unprintable>'" in read_pipe(writer, reader)


def test_a_renderer_that_always_fails_still_yields_a_line() -> None:
    def broken(_logger: Any, _name: str, _event: Any) -> str:
        raise TypeError("renderer bug")

    rendered = log._SafeRenderer(broken)(None, "info", {"event": f"upload {SECRET}", "n": 1})
    assert rendered == f"upload {MASK} log_render_error=TypeError"


# -- colours ---------------------------------------------------------------------------------------
def test_a_terminal_gets_colours_by_default(tty: tuple[Any, int], no_color_unset: None) -> None:
    stream, master = tty
    configure("info", stream=stream)  # default on a TTY: console lines
    get_logger("hotfolder.test").info("hello", n=1)
    out = os.read(master, 65536).decode()
    assert "hello" in out and ANSI in out  # the control: colours do show on a terminal


@pytest.mark.parametrize("json_lines_arg", [None, False])
def test_no_color_turns_colours_off_even_on_a_terminal(tty: tuple[Any, int], monkeypatch: pytest.MonkeyPatch,
                                                       json_lines_arg: bool | None) -> None:
    monkeypatch.setenv("NO_COLOR", "1")
    stream, master = tty
    configure("info", json_lines=json_lines_arg, stream=stream)
    get_logger("hotfolder.test").warning("hello", n=1)
    out = os.read(master, 65536).decode()
    assert "hello" in out and "n=1" in out and ANSI not in out


def test_an_empty_no_color_does_not_count(tty: tuple[Any, int], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NO_COLOR", "")  # no-color.org: only a non-empty value disables colours
    stream, master = tty
    configure("info", json_lines=False, stream=stream)
    get_logger("hotfolder.test").info("hello")
    assert ANSI in os.read(master, 65536).decode()


def test_console_forced_into_a_pipe_has_no_colours(pipe: tuple[Any, Any], no_color_unset: None) -> None:
    writer, reader = pipe
    configure("info", json_lines=False, stream=writer)
    get_logger("hotfolder.test").error("hello", n=1)
    out = read_pipe(writer, reader)
    assert "hello" in out and "n=1" in out and ANSI not in out


def test_a_pipe_gets_json_lines_by_default(pipe: tuple[Any, Any]) -> None:
    writer, reader = pipe
    configure("info", stream=writer)
    get_logger("hotfolder.test").info("hello")
    assert json_lines(read_pipe(writer, reader))[0]["event"] == "hello"


# -- fields ----------------------------------------------------------------------------------------
def test_the_logger_name_is_on_every_line_even_for_loggers_made_before_configure(
        pipe: tuple[Any, Any]) -> None:
    early = get_logger("hotfolder.daemon")  # like a module-level logger, made at import time
    writer, reader = pipe
    configure("info", json_lines=True, stream=writer)
    early.info("started")
    early.bind(extra=1).info("bound")
    get_logger().info("unnamed")  # defaults to the calling module
    events = json_lines(read_pipe(writer, reader))
    assert [e["logger"] for e in events] == ["hotfolder.daemon", "hotfolder.daemon", __name__]


def test_the_logger_name_shows_in_console_lines(pipe: tuple[Any, Any]) -> None:
    writer, reader = pipe
    configure("info", json_lines=False, stream=writer)
    get_logger("hotfolder.poller").info("tick")
    assert "hotfolder.poller" in read_pipe(writer, reader)


def test_job_context_fields(pipe: tuple[Any, Any]) -> None:
    writer, reader = pipe
    configure("info", json_lines=True, stream=writer)
    logger = get_logger("hotfolder.pipeline")
    with job_context(42, "intro-clip"):
        logger.info("submitted")
    logger.info("outside")
    inside, outside = json_lines(read_pipe(writer, reader))
    assert inside["job_id"] == 42 and inside["job"] == "intro-clip"
    assert "job_id" not in outside and "job" not in outside


def test_epochs_are_rendered_as_iso_utc(pipe: tuple[Any, Any]) -> None:
    writer, reader = pipe
    configure("info", json_lines=True, stream=writer)
    get_logger("hotfolder.test").info(
        "times", until=1796084400, deadline=1796084400.0, expires_at=1796084400.25,
        paused_until=1796084400, created_at="2026-01-01", attempt=3, bytes=2_000_000_000,
        retry_at=5, resumed_at=2_000_000_000, wait_s=1796084400.5, flag_at=True)
    event = json_lines(read_pipe(writer, reader))[0]
    assert event["until"] == "2026-12-01T00:20:00Z"
    assert event["deadline"] == "2026-12-01T00:20:00Z"
    assert event["expires_at"] == "2026-12-01T00:20:00.250Z"
    assert event["paused_until"] == "2026-12-01T00:20:00Z"
    # Left alone: strings, small numbers, non-time keys, the resume byte offset, booleans.
    assert event["created_at"] == "2026-01-01" and event["attempt"] == 3 and event["retry_at"] == 5
    assert event["bytes"] == 2_000_000_000 and event["resumed_at"] == 2_000_000_000
    assert event["wait_s"] == 1796084400.5 and event["flag_at"] is True


# -- secrets and exceptions ------------------------------------------------------------------------
def fail_with_secret() -> None:
    try:
        raise KeyError("lookup")
    except KeyError as exc:
        raise RuntimeError(f"upload refused for key {SECRET}") from exc


def test_secret_keys_and_values_are_masked(pipe: tuple[Any, Any]) -> None:
    writer, reader = pipe
    configure("info", json_lines=True, stream=writer)
    get_logger("hotfolder.test").info(
        f"calling with {SECRET}", webhook_secret="whsec-abc", password="pw", Authorization="Bearer x",
        url=f"https://api.example/x?k={SECRET}", nested={"token": "t-1", "items": [SECRET]})
    text = read_pipe(writer, reader)
    event = json_lines(text)[0]
    assert SECRET not in text and "whsec-abc" not in text and "t-1" not in text
    assert event["webhook_secret"] == event["password"] == event["Authorization"] == MASK
    assert event["event"] == f"calling with {MASK}" and event["nested"] == {"token": MASK, "items": [MASK]}


def test_an_exception_in_json_has_a_masked_structured_traceback(pipe: tuple[Any, Any]) -> None:
    writer, reader = pipe
    configure("info", json_lines=True, stream=writer)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # structlog warns about misordered exception processors
        try:
            fail_with_secret()
        except RuntimeError:
            get_logger("hotfolder.pipeline").exception("job_step_crashed")
    text = read_pipe(writer, reader)
    event = json_lines(text)[0]
    assert SECRET not in text and "exc_info" not in event
    chain = event["exception"]
    assert [e["exc_type"] for e in chain] == ["RuntimeError", "KeyError"]
    assert chain[0]["exc_value"] == f"upload refused for key {MASK}"
    assert any(f["name"] == "fail_with_secret" for f in chain[0]["frames"])
    assert all("locals" not in f for e in chain for f in e["frames"])  # locals could hold tokens


def test_an_exception_in_console_lines_is_rendered_and_masked(pipe: tuple[Any, Any]) -> None:
    writer, reader = pipe
    configure("info", json_lines=False, stream=writer)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        try:
            fail_with_secret()
        except RuntimeError as exc:
            get_logger("hotfolder.pipeline").error("job_step_crashed", exc_info=exc)
    text = read_pipe(writer, reader)
    assert SECRET not in text
    assert "Traceback (most recent call last)" in text and "fail_with_secret" in text
    assert f"RuntimeError: upload refused for key {MASK}" in text and "KeyError" in text


def test_an_exception_value_outside_exc_info_is_masked(pipe: tuple[Any, Any]) -> None:
    writer, reader = pipe
    configure("info", json_lines=True, stream=writer)
    get_logger("hotfolder.test").warning("retry_later", error=ValueError(f"bad {SECRET}"))
    text = read_pipe(writer, reader)
    assert SECRET not in text and MASK in json_lines(text)[0]["error"]


def test_a_secret_containing_another_is_masked_whole() -> None:
    register_secret("abcd")
    register_secret("abcd-efgh-ijkl")
    assert log.scrub("x abcd-efgh-ijkl y abcd") == f"x {MASK} y {MASK}"


# -- real processes --------------------------------------------------------------------------------
def child_env(buffered: bool) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONUNBUFFERED", None)
    if not buffered:
        env["PYTHONUNBUFFERED"] = "1"
    return env


@pytest.mark.parametrize("buffered", [True, False], ids=["buffered", "unbuffered"])
def test_a_process_logging_into_a_reader_that_goes_away_finishes(tmp_path: Path, buffered: bool) -> None:
    done = tmp_path / "done.txt"
    script = tmp_path / "chatty.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        from hotfolder.log import configure, dropped_lines, get_logger

        configure("info", json_lines=True, stream=sys.stderr)
        log = get_logger("hotfolder.chatty")
        for i in range(2000):  # ~1 MB: far more than a pipe holds, so the closed reader is hit
            log.info("line", i=i, pad="x" * 400)
        with open({str(done)!r}, "w") as f:
            f.write(f"finished dropped={{dropped_lines()}}")
    """), encoding="utf-8")
    # `python chatty.py 2>&1 | head -c 100`, with a Python reader.
    chatty = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, env=child_env(buffered))
    assert chatty.stderr is not None
    reader = subprocess.Popen([sys.executable, "-c", "import sys; print(len(sys.stdin.buffer.read(100)))"],
                              stdin=chatty.stderr, stdout=subprocess.PIPE, text=True)
    chatty.stderr.close()  # the reader now holds the only read end
    reader_out, _ = reader.communicate(timeout=60)
    assert chatty.wait(timeout=60) == 0  # not 1 (a traceback) nor 120 (failed flush at exit)
    assert reader_out.strip() == "100"
    status = done.read_text(encoding="utf-8")
    assert status.startswith("finished dropped=") and int(status.split("=")[1]) > 0


@pytest.mark.parametrize("quiet", [True, False])
def test_quiet_broken_pipe_makes_a_closed_stdout_exit_cleanly(tmp_path: Path, quiet: bool) -> None:
    script = tmp_path / "printer.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        from hotfolder.log import quiet_broken_pipe

        print("a small table")  # block-buffered into a pipe: the failure comes at the flush
        if {quiet}:
            try:
                sys.stdout.flush()
            except BrokenPipeError:
                quiet_broken_pipe()
                sys.exit(1)
    """), encoding="utf-8")
    read_fd, write_fd = os.pipe()
    os.close(read_fd)  # the reader has gone before the command wrote anything
    try:
        out = subprocess.run([sys.executable, str(script)], stdout=write_fd, stderr=subprocess.PIPE,
                             text=True, env=child_env(buffered=True), timeout=60)
    finally:
        os.close(write_fd)
    if quiet:
        assert out.returncode == 1 and out.stderr == ""
    else:  # the control: what the interpreter does without it
        assert out.returncode == 120 and "BrokenPipeError" in out.stderr

