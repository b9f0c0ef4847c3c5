"""sd_notify and the watchdog, against a real AF_UNIX datagram socket standing in for systemd.

The listener binds the socket the way systemd does (with SO_PASSCRED, so each datagram carries
the sender's pid: what NotifyAccess=main checks). Every wait is a poll of the socket, or of a
condition, with a deadline; no test sleeps to synchronise.
"""

from __future__ import annotations

import os
import shutil
import socket
import struct
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from helpers import FakeClock
from hotfolder.liveness import (Health, Liveness, Problem, WatchdogPinger, folder_present, folder_writable,
                                start_watchdog, status_line)
from hotfolder.sdnotify import STATUS_MAX_CHARS, Notifier, monotonic_usec

DEADLINE_S = 5.0
# 200 ms watchdog: the pinger pings every 100 ms.
WATCHDOG_USEC = "200000"


@dataclass
class Message:
    raw: str
    fields: dict[str, str]
    pid: int | None


class NotifyListener:
    """The service manager's end: a bound datagram socket that receives notifications."""

    def __init__(self, address: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.bind(address)
        self.seen: list[Message] = []

    def recv(self, timeout: float) -> Message | None:
        """The next datagram, or None if none arrives within ``timeout`` seconds."""
        self.sock.settimeout(timeout)
        try:
            data, ancdata, _flags, _addr = self.sock.recvmsg(8192, socket.CMSG_SPACE(struct.calcsize("3i")))
        except (TimeoutError, BlockingIOError):
            return None
        pid = None
        for level, kind, payload in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                pid, _uid, _gid = struct.unpack("3i", payload[: struct.calcsize("3i")])
        raw = data.decode("utf-8")
        fields = dict(line.split("=", 1) for line in raw.split("\n") if line)
        msg = Message(raw, fields, pid)
        self.seen.append(msg)
        return msg

    def wait_for(self, predicate: Callable[[Message], bool], what: str, timeout: float = DEADLINE_S) -> Message:
        """The first datagram matching ``predicate`` within ``timeout``; fail naming ``what`` if none."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            msg = self.recv(left)
            if msg is not None and predicate(msg):
                return msg
        pytest.fail(f"no {what} within {timeout} s; received: {[m.raw for m in self.seen]}")

    def drain(self) -> list[Message]:
        """Every datagram already queued, without waiting."""
        out = []
        while (msg := self.recv(0.0)) is not None:
            out.append(msg)
        return out

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def short_dir(tmp_path: Path) -> Iterator[Path]:
    """``tmp_path``, unless too long for a socket path (sun_path holds 107 bytes)."""
    if len(str(tmp_path / "notify.sock").encode()) < 100:
        yield tmp_path
        return
    short = Path(tempfile.mkdtemp(prefix="hf-sd-"))
    try:
        yield short
    finally:
        shutil.rmtree(short, ignore_errors=True)


@pytest.fixture
def listener(short_dir: Path) -> Iterator[tuple[NotifyListener, str]]:
    """A listener bound at a path; yields it and the $NOTIFY_SOCKET value naming it."""
    path = str(short_dir / "notify.sock")
    lst = NotifyListener(path)
    try:
        yield lst, path
    finally:
        lst.close()


class CountingLiveness(Liveness):
    """A Liveness counting calls of problems(): one per pinger turn, so tests can wait for turns."""

    def __init__(self, clock: Callable[[], float]) -> None:
        super().__init__(clock)
        self.calls = 0
        self.turned = threading.Condition()

    def problems(self, now: float | None = None, *, watchdog_only: bool = False) -> list[Problem]:
        found = super().problems(now, watchdog_only=watchdog_only)
        with self.turned:
            self.calls += 1
            self.turned.notify_all()
        return found

    def wait_turns(self, n: int, timeout: float = DEADLINE_S) -> None:
        """Wait until problems() has been called ``n`` more times, i.e. earlier turns completed."""
        with self.turned:
            target = self.calls + n
            if not self.turned.wait_for(lambda: self.calls >= target, timeout):
                pytest.fail(f"the pinger did not turn {n} times within {timeout} s")


def watchdog_env(path: str, pid: int | None = None) -> dict[str, str]:
    return {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": WATCHDOG_USEC,
            "WATCHDOG_PID": str(os.getpid() if pid is None else pid)}


# -- the protocol ---------------------------------------------------------------------------------

def test_ready_arrives_from_our_pid(listener: tuple[NotifyListener, str]) -> None:
    lst, path = listener
    n = Notifier({"NOTIFY_SOCKET": path})
    assert n.enabled
    assert n.ready() is True
    msg = lst.wait_for(lambda m: True, "READY=1")
    assert msg.raw == "READY=1"
    # systemd's NotifyAccess=main accepts only datagrams whose credentials name the main pid.
    assert msg.pid == os.getpid()


def test_status_is_one_line_and_sent_only_when_changed(listener: tuple[NotifyListener, str]) -> None:
    lst, path = listener
    n = Notifier({"NOTIFY_SOCKET": path})
    assert n.status("2 queued\n1 generating") is True
    assert lst.wait_for(lambda m: True, "STATUS").fields == {"STATUS": "2 queued 1 generating"}
    assert n.status("2 queued\n1 generating") is False      # unchanged: nothing sent
    assert n.status("2 queued 1 generating") is False       # same line once flattened
    # A marker sent after the duplicates is the very next datagram: the duplicates never left.
    n.stopping()
    assert lst.wait_for(lambda m: True, "STOPPING=1").raw == "STOPPING=1"
    assert n.status("1 queued") is True
    assert lst.wait_for(lambda m: True, "STATUS").fields == {"STATUS": "1 queued"}


def test_status_is_cut_to_a_sane_length(listener: tuple[NotifyListener, str]) -> None:
    lst, path = listener
    Notifier({"NOTIFY_SOCKET": path}).status("x" * 5000 + "\r\n" + "y" * 10)
    status = lst.wait_for(lambda m: "STATUS" in m.fields, "STATUS").fields["STATUS"]
    assert len(status) <= STATUS_MAX_CHARS and "\n" not in status and status.endswith("…")


def test_values_cannot_inject_assignments(listener: tuple[NotifyListener, str]) -> None:
    lst, path = listener
    n = Notifier({"NOTIFY_SOCKET": path})
    n.send(STATUS="evil\nREADY=1\nWATCHDOG=1")
    msg = lst.wait_for(lambda m: True, "STATUS")
    assert msg.fields == {"STATUS": "evil READY=1 WATCHDOG=1"}
    with pytest.raises(ValueError):
        n.send(status="lower case")


def test_ready_with_status_sets_the_status_it_dedupes_against(listener: tuple[NotifyListener, str]) -> None:
    lst, path = listener
    n = Notifier({"NOTIFY_SOCKET": path})
    n.ready("watching /srv/hotfolder/inbox")
    assert lst.wait_for(lambda m: True, "READY").fields == {"READY": "1", "STATUS": "watching /srv/hotfolder/inbox"}
    assert n.status("watching /srv/hotfolder/inbox") is False


def test_reloading_carries_monotonic_usec(listener: tuple[NotifyListener, str]) -> None:
    lst, path = listener
    n = Notifier({"NOTIFY_SOCKET": path})
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    n.reloading()
    after = monotonic_usec()
    msg = lst.wait_for(lambda m: True, "RELOADING=1")
    assert msg.fields["RELOADING"] == "1"
    assert before <= int(msg.fields["MONOTONIC_USEC"]) <= after
    n.ready()
    assert lst.wait_for(lambda m: True, "READY=1").raw == "READY=1"


def test_abstract_socket() -> None:
    name = f"hotfolder-test-{uuid.uuid4().hex}"
    lst = NotifyListener("\0" + name)
    try:
        n = Notifier({"NOTIFY_SOCKET": "@" + name})
        assert n.enabled and n.ready() and n.stopping()
        assert lst.wait_for(lambda m: True, "READY=1").raw == "READY=1"
        assert lst.wait_for(lambda m: True, "STOPPING=1").raw == "STOPPING=1"
    finally:
        lst.close()


def test_no_notify_socket_is_a_no_op() -> None:
    for env in ({}, {"NOTIFY_SOCKET": ""}, {"WATCHDOG_USEC": WATCHDOG_USEC, "WATCHDOG_PID": str(os.getpid())}):
        n = Notifier(env)
        assert not n.enabled
        assert n.ready() is False and n.status("x") is False and n.stopping() is False
        assert n.reloading() is False and n.watchdog() is False
        assert n.watchdog_interval() is None
        assert start_watchdog(n, Liveness(), threading.Event()) is None


def test_unsupported_socket_kind_is_disabled() -> None:
    assert not Notifier({"NOTIFY_SOCKET": "vsock:2:1234"}).enabled


def test_send_errors_never_raise_and_are_logged_once(short_dir: Path) -> None:
    path = str(short_dir / "nobody-listens.sock")
    n = Notifier({"NOTIFY_SOCKET": path})
    with capture_logs() as logs:
        assert n.ready() is False
        assert n.status("a") is False
        assert n.watchdog() is False
    assert [e["event"] for e in logs] == ["sd_notify_failed"]
    lst = NotifyListener(path)       # the manager comes back
    try:
        with capture_logs() as logs:
            assert n.status("a") is True    # not recorded as sent while failing: sent now
        assert [e["event"] for e in logs] == ["sd_notify_recovered"]
        assert lst.wait_for(lambda m: True, "STATUS").fields == {"STATUS": "a"}
    finally:
        lst.close()


def test_a_message_systemd_would_drop_is_not_sent(listener: tuple[NotifyListener, str]) -> None:
    lst, path = listener
    n = Notifier({"NOTIFY_SOCKET": path})
    with capture_logs() as logs:
        assert n.send_raw("X=" + "y" * 5000) is False
    assert [e["event"] for e in logs] == ["sd_notify_message_too_long"]
    assert n.send_raw("READY=1") is True
    assert lst.wait_for(lambda m: True, "READY=1").raw == "READY=1"


def test_watchdog_interval_from_environment(short_dir: Path) -> None:
    path = str(short_dir / "x.sock")
    me = os.getpid()
    assert Notifier(watchdog_env(path)).watchdog_interval() == pytest.approx(0.1)
    assert Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "60000000"}).watchdog_interval() == 30.0
    # WATCHDOG_PID names another process: the variables were inherited, the watchdog is not ours.
    assert Notifier(watchdog_env(path, pid=me + 1)).watchdog_interval() is None
    assert Notifier(watchdog_env(path, pid=me + 1), pid=me + 1).watchdog_interval() == pytest.approx(0.1)
    for bad in ("", "0", "-5", "soon"):
        assert Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": bad}).watchdog_interval() is None
    assert Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "1000", "WATCHDOG_PID": "x"}).watchdog_interval() is None
    assert Notifier({"NOTIFY_SOCKET": path}).watchdog_interval() is None


def test_from_environ_can_unset_for_children() -> None:
    env = {"NOTIFY_SOCKET": "/run/x.sock", "WATCHDOG_USEC": "1", "WATCHDOG_PID": "1", "PATH": "/bin"}
    n = Notifier.from_environ(env, unset=True)
    assert n.enabled and n.socket_path == "/run/x.sock"
    assert env == {"PATH": "/bin"}


# -- the watchdog pinger --------------------------------------------------------------------------

def test_watchdog_pings_periodically(listener: tuple[NotifyListener, str]) -> None:
    lst, path = listener
    stop = threading.Event()
    liveness = Liveness()
    liveness.register("main_loop", max_silence=60)
    pinger = start_watchdog(Notifier(watchdog_env(path)), liveness, stop)
    assert pinger is not None and pinger.name.startswith("hotfolder-") and pinger.daemon
    try:
        stamps = []
        for _ in range(3):
            lst.wait_for(lambda m: m.raw == "WATCHDOG=1", "WATCHDOG=1")
            stamps.append(time.monotonic())
        # Paced by the interval (100 ms), not a burst: two gaps take at least ~200 ms.
        assert stamps[-1] - stamps[0] >= 0.15
    finally:
        stop.set()
        pinger.join(DEADLINE_S)
    assert not pinger.is_alive()


def test_pings_stop_while_the_main_loop_is_silent_and_resume(listener: tuple[NotifyListener, str]) -> None:
    lst, path = listener
    clock = FakeClock(1000.0)
    liveness = CountingLiveness(clock)
    liveness.register("main_loop", max_silence=90)
    stop = threading.Event()
    pinger = WatchdogPinger(Notifier(watchdog_env(path)), liveness, stop)
    pinger.start()
    try:
        lst.wait_for(lambda m: m.raw == "WATCHDOG=1", "a first ping")
        clock.advance(95)                                   # the main loop hangs
        msg = lst.wait_for(lambda m: "STATUS" in m.fields, "the unhealthy STATUS")
        assert msg.fields["STATUS"] == "unhealthy: main loop has not turned for 95 s (limit 90 s)"
        clock.advance(30)                                   # same problem, older: no new report
        liveness.wait_turns(3)                              # three full turns since
        assert [m.raw for m in lst.drain()] == []           # no ping, no repeated status
        liveness.beat("main_loop")                          # it turns again
        lst.wait_for(lambda m: m.raw == "WATCHDOG=1", "pings to resume")
    finally:
        stop.set()
        pinger.join(DEADLINE_S)


def test_pings_stop_when_a_worker_dies(listener: tuple[NotifyListener, str]) -> None:
    lst, path = listener
    liveness = CountingLiveness(time.monotonic)
    release = threading.Event()
    worker = threading.Thread(target=release.wait, name="hotfolder-upload-1", daemon=True)
    liveness.register_thread(worker)          # registered before start: not counted as dead
    assert liveness.check().ok
    worker.start()
    stop = threading.Event()
    pinger = WatchdogPinger(Notifier(watchdog_env(path)), liveness, stop)
    pinger.start()
    try:
        lst.wait_for(lambda m: m.raw == "WATCHDOG=1", "a first ping")
        release.set()                          # the worker's loop ends: the thread is gone
        worker.join(DEADLINE_S)
        msg = lst.wait_for(lambda m: "STATUS" in m.fields, "the unhealthy STATUS")
        assert msg.fields["STATUS"] == "unhealthy: worker hotfolder-upload-1 died"
        liveness.wait_turns(3)
        assert [m.raw for m in lst.drain()] == []
        liveness.unregister_thread(worker)     # e.g. the pool was replaced
        lst.wait_for(lambda m: m.raw == "WATCHDOG=1", "pings to resume")
    finally:
        stop.set()
        pinger.join(DEADLINE_S)


def test_only_watchdog_checks_stop_the_pings(listener: tuple[NotifyListener, str]) -> None:
    """A missing NAS folder shows in /healthz but must not make systemd restart us in a loop."""
    lst, path = listener
    liveness = CountingLiveness(time.monotonic)
    liveness.add_check(lambda: "inbox /srv/hotfolder/inbox is missing", name="inbox")
    broken = threading.Event()
    liveness.add_check(lambda: "ledger connection lost" if broken.is_set() else None, name="ledger",
                       watchdog=True)
    assert liveness.check().reasons == ["inbox /srv/hotfolder/inbox is missing"]
    assert liveness.check(watchdog_only=True).ok
    stop = threading.Event()
    pinger = WatchdogPinger(Notifier(watchdog_env(path)), liveness, stop)
    pinger.start()
    try:
        lst.wait_for(lambda m: m.raw == "WATCHDOG=1", "pings despite the inbox check")
        broken.set()
        msg = lst.wait_for(lambda m: "STATUS" in m.fields, "the unhealthy STATUS")
        assert msg.fields["STATUS"] == "unhealthy: ledger connection lost"
        liveness.wait_turns(3)
        assert [m.raw for m in lst.drain()] == []
        broken.clear()
        lst.wait_for(lambda m: m.raw == "WATCHDOG=1", "pings to resume")
    finally:
        stop.set()
        pinger.join(DEADLINE_S)


def test_stop_event_ends_a_slow_pinger_at_once(listener: tuple[NotifyListener, str]) -> None:
    lst, path = listener
    stop = threading.Event()
    pinger = WatchdogPinger(Notifier({"NOTIFY_SOCKET": path}), Liveness(), stop, interval=3600)
    pinger.start()
    lst.wait_for(lambda m: m.raw == "WATCHDOG=1", "the first ping")
    stop.set()
    pinger.join(DEADLINE_S)        # waits on the event, not in a sleep: ends well before an hour
    assert not pinger.is_alive()


def test_pinger_without_a_watchdog_returns_at_once() -> None:
    pinger = WatchdogPinger(Notifier({}), Liveness(), threading.Event())
    pinger.start()
    pinger.join(DEADLINE_S)
    assert not pinger.is_alive() and pinger.pings == 0


# -- liveness on its own --------------------------------------------------------------------------

def test_expected_waits_are_not_silence() -> None:
    clock = FakeClock(1000.0)
    liveness = Liveness(clock)
    liveness.register("main_loop", max_silence=30)
    liveness.beat("main_loop", expect_wait=60)       # about to wait up to 60 s for work
    clock.advance(89)
    assert liveness.check().ok
    clock.advance(2)
    ok, reasons = liveness.check()
    assert not ok and reasons == ["main loop has not turned for 91 s (limit 90 s)"]
    liveness.beat("main_loop")                       # the next beat resets the allowance
    assert liveness.check().ok
    liveness.beat("nobody_registered_this")          # ignored
    assert liveness.check().as_dict() == {"ok": True, "reasons": []}


def test_busy_workers_are_stuck_only_when_configured() -> None:
    clock = FakeClock(1000.0)
    liveness = Liveness(clock)
    step_started = threading.Barrier(3)
    release = threading.Event()

    def work() -> None:
        with liveness.busy("upload of job 12"):
            step_started.wait(DEADLINE_S)
            release.wait(DEADLINE_S)

    limited = threading.Thread(target=work, name="hotfolder-upload-0", daemon=True)
    unlimited = threading.Thread(target=work, name="hotfolder-upload-1", daemon=True)
    liveness.register_thread(limited, max_busy=600)
    liveness.register_thread(unlimited)
    limited.start()
    unlimited.start()
    try:
        step_started.wait(DEADLINE_S)       # both are inside their step
        clock.advance(599)
        assert liveness.check().ok
        clock.advance(2)
        ok, reasons = liveness.check()
        assert not ok
        assert reasons == ["worker hotfolder-upload-0 stuck in upload of job 12 for 601 s (limit 600 s)"]
    finally:
        release.set()
        limited.join(DEADLINE_S)
        unlimited.join(DEADLINE_S)
    for thread in (limited, unlimited):
        liveness.unregister_thread(thread)
    assert liveness.check().ok
    with liveness.busy("not a watched thread"):      # no-op outside registered threads
        assert liveness.check().ok


def test_check_functions_add_reasons(tmp_path: Path) -> None:
    liveness = Liveness(FakeClock(1000.0))
    inbox = tmp_path / "inbox"
    liveness.add_check(folder_present(inbox, "inbox"))
    liveness.add_check(folder_writable(tmp_path, "ledger folder"))
    liveness.add_check(lambda: ["first", "second"], name="pair")
    liveness.add_check(lambda: None, name="fine")

    def broken() -> str:
        raise RuntimeError("disk on fire")

    liveness.add_check(broken)
    ok, reasons = liveness.check()
    assert not ok
    assert reasons == [f"inbox {inbox} is missing", "first", "second",
                       "check broken failed: RuntimeError('disk on fire')"]
    inbox.write_text("not a folder")
    assert liveness.check().reasons[0] == f"inbox {inbox} is not a folder"
    inbox.unlink()
    inbox.mkdir()
    assert liveness.check().reasons == ["first", "second", "check broken failed: RuntimeError('disk on fire')"]


def test_register_rejects_a_useless_limit() -> None:
    with pytest.raises(ValueError):
        Liveness().register("main_loop", max_silence=0)


def test_status_line() -> None:
    assert status_line({}) == "idle; nothing finished yet"
    counts = {"done": 41, "generating": 3, "failed": 2, "queued": 2, "waiting": 1}
    assert status_line(counts) == "1 waiting, 2 queued, 3 generating; 41 done, 2 failed"
    assert status_line({"done": 5}, Health(True, [])) == "idle; 5 done"
    sick = Health(False, ["worker hotfolder-upload-1 died"])
    assert status_line({"done": 5}, sick) == "unhealthy: worker hotfolder-upload-1 died | idle; 5 done"
