"""What a new user trips over: each test is one item of the "new user" issue, checked the way a
person meets it (real subprocesses, real folders and ledger files, real loopback HTTP against the
sandbox), never through implementation details."""

from __future__ import annotations

import http.server
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import httpx
import pytest
from click.testing import CliRunner

from helpers import EXAMPLES, FAST_SANDBOX, MEDIA, VOICE, all_jobs, wait_for, write_config
from hotfolder import config
from hotfolder import intake as intake_module
from hotfolder.cli import main
from hotfolder.daemon import Daemon
from hotfolder.intake import Intake, list_inbox
from hotfolder.ledger import Ledger
from hotfolder.locks import DaemonLock
from hotfolder.states import State
from test_bad_inputs import MATRIX
from test_daemon import Env, Running

VIDEO = (MEDIA / "portrait.mp4").read_bytes()
HOTFOLDER = [sys.executable, "-m", "hotfolder"]
NO_LISTENER = {"listen": ""}          # daemons in tests never bind the default listener port
FAIL_VERDICTS = {"bad_input", "ambiguous", "unusable"}
ANSI = "\x1b["
# The environment a command sees: nothing of the developer's own hotfolder or terminal setup.
_FOREIGN_ENV = ("HOTFOLDER_CONFIG", "CHANJING_BASE_URL", "CHANJING_APP_ID", "CHANJING_SECRET_KEY", "NO_COLOR",
                "CREDENTIALS_DIRECTORY", "NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "HOTFOLDER_DEBUG")


# -- helpers ----------------------------------------------------------------------------------------
def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _FOREIGN_ENV}
    env.update(extra)
    return env


def hf(*args: Any, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """`hotfolder ARGS` as a user runs it: a real process, output captured."""
    return subprocess.run([*HOTFOLDER, *map(str, args)], capture_output=True, text=True, timeout=timeout,
                          env=clean_env(**(env or {})), stdin=subprocess.DEVNULL)


def invoke(*args: Any, env: dict[str, str] | None = None) -> Any:
    """The CLI in-process; an exception other than SystemExit is kept in ``result.exception``."""
    return CliRunner().invoke(main, [str(a) for a in args], env=env, catch_exceptions=True)


def env_for(root: Path, sandbox: Any, **sections: dict[str, Any]) -> Env:
    return Env(root, sandbox, server=NO_LISTENER, **sections)


def drop_pair(env: Env, stem: str, script: str = "hello") -> None:
    env.drop(f"{stem}.mp4", VIDEO)
    env.drop(f"{stem}.txt", script)


def age(path: Path, seconds: float = 7200.0) -> None:
    """Make ``path`` look untouched for ``seconds`` (settled, as far as `explain` can tell)."""
    then = time.time() - seconds
    os.utime(path, (then, then))


def make_folders(env: Env) -> None:
    for folder in (env.settings.folders.outbox, env.settings.folders.archive, env.settings.folders.failed):
        folder.mkdir(parents=True, exist_ok=True)
    env.config_path.chmod(0o600)


def states(env: Env) -> dict[str, str]:
    return {name: str(job.state) for name, job in env.jobs().items()}


def credentials_line(output: str) -> str:
    return next(line for line in output.splitlines() if " credentials " in line)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def assert_clean_failure(label: str, code: int, out: str, err: str, report: bool = False) -> None:
    """No traceback, no internal error; a failure says so in one line (plus click's usage lines)."""
    text = out + err
    assert "Traceback" not in text, f"{label}: traceback\n{text}"
    assert "internal error" not in text, f"{label}: an unexpected exception\n{text}"
    if code != 0 and not report:
        lines = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith(("Usage:", "Try '"))]
        assert len(lines) == 1, f"{label}: expected a one-line message, got\n{text}"


def display_width(text: str) -> int:
    return sum(0 if unicodedata.combining(ch) else 2 if unicodedata.east_asian_width(ch) in "WF" else 1
               for ch in text)


@pytest.fixture
def daemons(tmp_path: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Daemons started as real processes, stopped with SIGTERM at the end whatever happens."""
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


# -- 1. a scan racing a job's end -------------------------------------------------------------------
def test_files_gone_between_listing_and_taking_make_no_job(tmp_path: Path, sandbox: Any) -> None:
    env = env_for(tmp_path, sandbox)
    drop_pair(env, "done")
    stale = list_inbox(env.inbox) or []                 # the listing a scan started from…
    assert env.run_once() == 0                          # …while done.* ended: moved to archive/
    drop_pair(env, "moved")
    drop_pair(env, "half")
    stale = sorted(stale + (list_inbox(env.inbox) or []))
    # …and a person moved moved.* away and removed half.txt only.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for name in ("moved.mp4", "moved.txt"):
        shutil.move(env.inbox / name, elsewhere / name)
    (env.inbox / "half.txt").unlink()

    ledger = env.ledger()
    before = {j.id for j in all_jobs(ledger)}
    intake = Intake(env.settings, ledger, clock=lambda: 1000.0)
    intake.scan(listing=stale)
    intake.clock = lambda: 2000.0                        # long settled: the scan tries to take them
    result = intake.scan(listing=stale)
    assert result.created == []
    after = all_jobs(ledger)
    assert {j.id for j in after} == before, [(j.name, j.state, j.error) for j in after]
    assert all(j.state != State.FAILED for j in after)
    assert not any(env.settings.folders.failed.rglob("*.error.json"))
    # The next scan sees the truth: the video without its script waits for one.
    intake.clock = lambda: 3000.0
    intake.scan()
    intake.clock = lambda: 4000.0
    intake.scan()
    assert env.jobs()["half.mp4"].state == State.WAITING


def test_run_once_exits_0_when_inputs_vanish_under_a_scan(tmp_path: Path, sandbox: Any,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    # Settling takes two looks at least 0.01 s apart: the second scan that lists gone.* takes it.
    env = env_for(tmp_path, sandbox, watch={"settle_seconds": 0.01})
    drop_pair(env, "stays")
    drop_pair(env, "gone")
    away = tmp_path / "away"
    away.mkdir()
    real = intake_module.list_inbox
    seen: dict[str, int] = {}

    def racing(inbox: Path) -> Any:
        """The second listing that shows gone.* is stale by the time it is used: the files are
        moved away right after it was made (a job's end, a person, a sync tool)."""
        listing = real(inbox)
        if any(rel == "gone.mp4" for rel, _s, _m in listing or []):
            seen["listed"] = seen.get("listed", 0) + 1
            if seen["listed"] == 2:
                for name in ("gone.mp4", "gone.txt"):
                    shutil.move(env.inbox / name, away / name)
        return listing

    monkeypatch.setattr(intake_module, "list_inbox", racing)
    assert env.run_once() == 0
    assert seen["listed"] == 2, "the race was not exercised"
    assert states(env) == {"stays.mp4": "done"}
    assert sorted(p.name for p in away.iterdir()) == ["gone.mp4", "gone.txt"]


# -- 2. logging never breaks a job ------------------------------------------------------------------
@pytest.mark.parametrize("reader", ["closed at once", "head -2"])
def test_a_log_reader_that_goes_away_breaks_nothing(tmp_path: Path, sandbox: Any, reader: str) -> None:
    env = env_for(tmp_path, sandbox)
    for i in range(3):
        drop_pair(env, f"clip{i}", f"script {i}")
    command = [*HOTFOLDER, "run", "--once", "--config", str(env.config_path)]
    if reader == "closed at once":
        read_end, write_end = os.pipe()
        os.close(read_end)                                # nobody will ever read
        try:
            proc = subprocess.run([*command, "--log-console"], stdout=write_end, stderr=write_end,
                                  stdin=subprocess.DEVNULL, env=clean_env(), timeout=90)
        finally:
            os.close(write_end)
        code = proc.returncode
    else:
        line = " ".join(f"'{c}'" for c in command) + " 2>&1 | head -2 >/dev/null; exit ${PIPESTATUS[0]}"
        code = subprocess.run(["bash", "-c", line], env=clean_env(), timeout=90, stdin=subprocess.DEVNULL).returncode
    assert code == 0
    assert states(env) == {f"clip{i}.mp4": "done" for i in range(3)}
    assert all((env.settings.folders.outbox / f"clip{i}.mp4").exists() for i in range(3))


# -- 3. run --once and a missing inbox --------------------------------------------------------------
def test_run_once_gives_up_on_a_missing_inbox_with_exit_3(tmp_path: Path, sandbox: Any) -> None:
    env = env_for(tmp_path, sandbox)
    shutil.rmtree(env.inbox)
    started = time.monotonic()
    assert Daemon(env.settings, once=True, inbox_grace=0.5).run() == 3
    assert time.monotonic() - started < 10
    assert not env.inbox.exists()                         # never created: a mount point stays empty


def test_run_once_takes_an_inbox_that_comes_back_within_the_grace(tmp_path: Path, sandbox: Any) -> None:
    env = env_for(tmp_path, sandbox)
    shutil.rmtree(env.inbox)
    daemon = Daemon(env.settings, once=True, inbox_grace=30)
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(daemon.run()), name="test-once")
    thread.start()
    try:
        wait_for(lambda: daemon.first_scan_done, message="the first scan (inbox missing)")
        staging = tmp_path / "mounting"
        staging.mkdir()
        (staging / "back.mp4").write_bytes(VIDEO)
        (staging / "back.txt").write_text("welcome back")
        staging.rename(env.inbox)                        # the share is mounted, with its files
        thread.join(timeout=60)
    finally:
        if thread.is_alive():
            daemon.stop.set()
            daemon.wake()
            thread.join(timeout=15)
    assert result == [0]
    assert states(env) == {"back.mp4": "done"}


def test_the_daemon_keeps_waiting_for_a_missing_inbox(tmp_path: Path, sandbox: Any) -> None:
    env = env_for(tmp_path, sandbox)
    shutil.rmtree(env.inbox)
    stop = threading.Event()
    daemon = Daemon(env.settings, stop=stop, inbox_grace=0.2)   # the grace is for --once only
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(daemon.run()), name="test-daemon")
    thread.start()
    try:
        wait_for(lambda: daemon.first_scan_done, message="the first scan (inbox missing)")
        missing_since = time.monotonic()
        wait_for(lambda: time.monotonic() - missing_since > 1.0, message="the inbox to stay missing past the grace")
        assert thread.is_alive() and not result
        staging = tmp_path / "mounting"
        staging.mkdir()
        (staging / "late.mp4").write_bytes(VIDEO)
        (staging / "late.txt").write_text("finally")
        staging.rename(env.inbox)
        wait_for(lambda: states(env).get("late.mp4") == "done", timeout=60, message="the job after the mount")
    finally:
        stop.set()
        daemon.wake()
        thread.join(timeout=15)
    assert result == [0]


# -- 4. inputs hotfolder cannot use, and `explain` -------------------------------------------------------
def test_explain_tells_the_truth_for_every_file_before_the_daemon_runs(tmp_path: Path, sandbox: Any) -> None:
    env = env_for(tmp_path, sandbox)
    for files, _state, _words in MATRIX.values():
        for name, data in files.items():
            age(env.drop(name, data))
    verdicts: dict[str, str] = {}
    for case, (files, state, words) in MATRIX.items():
        for name in files:
            result = invoke("explain", name, "--config", env.config_path)
            assert result.exit_code == 0 and result.exception is None, (case, result.output)
            path, verdict, message = result.output.strip().split(": ", 2)
            verdicts[name] = verdict
            if state == "failed":
                assert verdict in FAIL_VERDICTS, f"{case}: {name}: {result.output}"
                assert "fail" in message, f"{case}: {name}: {result.output}"
                for word in words:
                    assert word.lower() in message.lower(), f"{case}: {word!r} not in {result.output!r}"
            else:
                assert verdict == "ready", f"{case}: {name}: {result.output}"
                assert "no daemon is running" in message
    assert not env.settings.ledger_path.exists(), "explain only looks: it must not create the ledger"
    # What explain said is what happens.
    assert env.run_once() == 1
    jobs = env.jobs()
    for case, (files, state, _words) in MATRIX.items():
        video = next(n for n in files if n in jobs)
        assert jobs[video].state == state, f"{case}: explained {verdicts[video]}, became {jobs[video].state}"


@pytest.mark.parametrize("files, words", [
    ({"fl.mp4": VIDEO, "fl.flac": b"fLaC\x00\x00\x00\x22" + b"\x00" * 64}, ["fl.flac", ".wav", ".mp3", ".m4a"]),
    ({"og.mp4": VIDEO, "og.ogg": b"OggS" + b"\x00" * 64}, ["og.ogg", ".wav", ".mp3", ".m4a"]),
    ({"op.mp4": VIDEO, "op.opus": b"OggS" + b"\x00" * 64}, ["op.opus", ".wav"]),
    ({"mk.mkv": b"\x1aE\xdf\xa3" + b"\x00" * 64, "mk.txt": "hi"}, ["mk.mkv", ".mp4", ".mov", ".webm"]),
], ids=["flac", "ogg", "opus", "mkv"])
def test_formats_the_api_does_not_take_fail_at_intake_naming_the_accepted_ones(
        tmp_path: Path, sandbox: Any, files: dict[str, Any], words: list[str]) -> None:
    env = env_for(tmp_path, sandbox)
    for name, data in files.items():
        age(env.drop(name, data))
    video = next(n for n in files if n.endswith((".mp4", ".mkv")))
    explained = hf("explain", video, "--config", env.config_path)
    assert explained.returncode == 0
    assert re.search(r": (unusable|bad_input): .*fail", explained.stdout), explained.stdout
    assert env.run_once() == 1                               # failed, not waiting silently
    job = env.jobs()[video]
    assert job.state == State.FAILED
    error = json.loads((env.settings.folders.failed / f"{Path(video).stem}.error.json").read_text())
    for word in words:
        assert word in error["message"], (word, error["message"])
    assert not [e for e in sandbox.journal() if e["endpoint"] == "create_upload_url"]   # cost nothing


def test_explain_says_whether_a_daemon_is_running(tmp_path: Path, sandbox: Any) -> None:
    env = env_for(tmp_path, sandbox, watch={"settle_seconds": 3600})   # the daemon will not take it
    for name in ("pair.mp4", "pair.txt", "lone.mkv"):
        age(env.drop(name, VIDEO if name.endswith(("mp4", "mkv")) else "hello"))
    alone = hf("explain", "pair.mp4", "--config", env.config_path)
    assert ": ready: " in alone.stdout and "no daemon is running" in alone.stdout
    lone = hf("explain", "lone.mkv", "--config", env.config_path)
    from hotfolder import convert

    if convert.find_ffmpeg() is None:   # it could never be converted: say so now
        assert ": unusable: " in lone.stdout and "ffmpeg" in lone.stdout
    else:                               # it will be converted once its driver comes
        assert ": waiting: " in lone.stdout
    with Running(env) as running:
        wait_for(lambda: running.daemon.first_scan_done, message="the daemon's first scan")
        live = hf("explain", "pair.mp4", "--config", env.config_path)
    assert ": ready: " in live.stdout and f"pid {os.getpid()}" in live.stdout, live.stdout


# -- 5. no traceback ever reaches the user ----------------------------------------------------------
class World:
    """An installation (with a history: a done, a failed and a sidecar-less cancelled job, two
    jobs named clip.mp4), plus config files a user gets wrong."""

    def __init__(self, root: Path, sandbox: Any, history: bool = True) -> None:
        self.env = env = env_for(root / "home", sandbox)
        env.config_path.chmod(0o600)
        if history:
            drop_pair(env, "ok")
            env.drop("bad.mp4", b"not a video at all")
            env.drop("bad.txt", "hi")
            env.drop("lonely.mp4", VIDEO)
            drop_pair(env, "a/clip")
            drop_pair(env, "b/clip")
            assert env.run_once() == 1
            assert invoke("cancel", "lonely", "--config", env.config_path).exit_code == 0
        self.cfg = env.config_path
        self.missing = root / "nope.toml"
        self.garbage = root / "garbage.toml"
        self.garbage.write_text("garbage [[[ = \n")
        self.binary = root / "binary.toml"
        self.binary.write_bytes(b"\xff\xfe\x00\x81" * 64)
        self.empty = root / "empty.toml"
        self.empty.write_text("")
        self.directory = root / "a-folder.toml"
        self.directory.mkdir()
        closed = free_port()
        self.unreachable = write_config(root / "unreachable", f"http://127.0.0.1:{closed}", server=NO_LISTENER)
        self.not_api = write_config(root / "not-api", sandbox.base_url + "/nope", server=NO_LISTENER)
        self.proc_ledger = write_config(root / "proc-ledger", sandbox.base_url, server=NO_LISTENER,
                                        ledger={"path": "/proc/hotfolder-nope/ledger.db"})
        self.file = root / "a-file"
        self.file.write_text("x")
        self.busy_port = sandbox.port


# (label, argv with {placeholders}, allowed exit codes, words the output must contain)
HOSTILE: list[tuple[str, list[str], set[int], list[str]]] = [
    ("status bogus state", ["status", "--config", "{cfg}", "--state", "bogus"], {1}, ["bogus", "waiting", "done"]),
    ("status json bogus state", ["status", "--json", "--config", "{cfg}", "--state", "nope"], {1}, ["nope"]),
    ("status state any case", ["status", "--config", "{cfg}", "--state", "DONE", "--state", "Failed"], {0}, ["ok.mp4"]),
    ("status limit 0", ["status", "--config", "{cfg}", "--limit", "0"], {2}, ["--limit"]),
    ("status limit junk", ["status", "--config", "{cfg}", "--limit", "many"], {2}, ["--limit"]),
    ("show unknown id", ["show", "--config", "{cfg}", "999999"], {1}, ["no job"]),
    ("show empty ref", ["show", "--config", "{cfg}", ""], {1}, ["no job"]),
    ("show path escape", ["show", "--config", "{cfg}", "../../etc/passwd"], {1}, ["no job"]),
    ("show ambiguous stem", ["show", "--config", "{cfg}", "clip"], {1}, ["a/clip.mp4", "b/clip.mp4"]),
    ("show ambiguous file name", ["show", "--config", "{cfg}", "clip.mp4"], {1}, ["a/clip.mp4", "b/clip.mp4"]),
    ("show by stem", ["show", "--config", "{cfg}", "ok"], {0}, ["ok.mp4"]),
    ("retry unknown", ["retry", "--config", "{cfg}", "424242"], {1}, ["no job"]),
    ("retry a done job", ["retry", "--config", "{cfg}", "ok.mp4"], {1}, ["done"]),
    ("retry a sidecar-less cancelled job", ["retry", "--config", "{cfg}", "lonely"], {1}, ["lonely.txt"]),
    ("retry a still-bad job", ["retry", "--config", "{cfg}", "bad"], {1}, ["would fail again"]),
    ("cancel unknown", ["cancel", "--config", "{cfg}", "nobody"], {1}, ["no job"]),
    ("cancel a done job", ["cancel", "--config", "{cfg}", "ok"], {1}, ["already done"]),
    ("resume when not paused", ["resume", "--config", "{cfg}"], {0}, ["not paused"]),
    ("prune junk age", ["prune", "--config", "{cfg}", "--older-than", "junk"], {1}, ["junk"]),
    ("prune negative age", ["prune", "--config", "{cfg}", "--older-than=-5d"], {1}, ["-5d"]),
    ("prune zero age", ["prune", "--config", "{cfg}", "--older-than", "0"], {1}, ["more than 0"]),
    ("prune empty age", ["prune", "--config", "{cfg}", "--older-than", ""], {1}, ["age"]),
    ("prune no age", ["prune", "--config", "{cfg}"], {2}, ["--older-than"]),
    ("stats zero days", ["stats", "--config", "{cfg}", "--days", "0"], {2}, ["--days"]),
    ("explain outside the inbox", ["explain", "--config", "{cfg}", "/etc/passwd"], {0}, ["not_in_inbox"]),
    ("explain escaping the inbox", ["explain", "--config", "{cfg}", "../../../etc/passwd"], {0}, ["not_in_inbox"]),
    ("explain nothing", ["explain", "--config", "{cfg}", "ghost.mp4"], {0}, ["missing"]),
    ("explain a folder", ["explain", "--config", "{cfg}", "{inbox}"], {0}, ["folder"]),
    ("explain a null byte", ["explain", "--config", "{cfg}", "x\x00y.mp4"], {0, 1}, []),
    ("doctor, API unreachable", ["doctor", "--config", "{unreachable}"], {1}, ["cannot reach"]),
    ("doctor, not the API", ["doctor", "--config", "{not_api}"], {1}, ["404"]),
    ("voices, API unreachable", ["voices", "--config", "{unreachable}"], {1}, ["connect"]),
    ("voices, not the API", ["voices", "--config", "{not_api}"], {1}, ["404"]),
    ("run, bad log level", ["run", "--once", "--config", "{cfg}", "--log-level", "loud"], {2}, ["--log-level"]),
    ("init under /proc", ["init", "/proc/hotfolder-nope"], {1}, ["/proc/hotfolder-nope"]),
    ("init onto a file", ["init", "{file}"], {2}, ["a-file"]),
    ("init over an installation", ["init", "{home}"], {1}, ["already exists"]),
    ("init inside an inbox", ["init", "{inbox}/sub"], {1}, ["inbox"]),
    ("sandbox port out of range", ["sandbox", "--port", "70000", "--data", "{data}"], {2}, ["70000"]),
    ("sandbox negative port", ["sandbox", "--port=-1", "--data", "{data}"], {2}, ["-1"]),
    ("sandbox bad fault rate", ["sandbox", "--port", "0", "--data", "{data}", "--drop-rate", "5"], {2}, ["drop"]),
]
# These go through a real process, as a user meets them.
SUBPROCESS = {"retry a sidecar-less cancelled job", "doctor, API unreachable", "voices, API unreachable",
              "show ambiguous stem", "status bogus state", "init under /proc"}


def _fill(argv: list[str], world: World, tmp_path: Path) -> list[str]:
    values = {"cfg": world.cfg, "unreachable": world.unreachable, "not_api": world.not_api,
              "inbox": world.env.inbox, "file": world.file, "home": world.env.root, "data": tmp_path / "sb-data"}
    return [a.format(**{k: str(v) for k, v in values.items()}) if "{" in a else a for a in argv]


def test_no_command_shows_a_traceback_whatever_it_is_given(tmp_path: Path, sandbox: Any) -> None:
    world = World(tmp_path, sandbox)
    covered: set[str] = set()
    for label, argv, codes, words in HOSTILE:
        args = _fill(argv, world, tmp_path)
        covered.add(args[0])
        if label in SUBPROCESS:
            proc = hf(*args)
            code, out, err = proc.returncode, proc.stdout, proc.stderr
        else:
            result = invoke(*args)
            assert result.exception is None or isinstance(result.exception, SystemExit), \
                f"{label}: {result.exception!r}\n{result.output}"
            code, out, err = result.exit_code, result.stdout, result.stderr
        assert code in codes, f"{label}: exit {code}\n{out}{err}"
        assert_clean_failure(label, code, out, err, report=args[0] == "doctor")
        for word in words:
            assert word in out + err, f"{label}: {word!r} not in\n{out}{err}"
    # Every command, even one added later, meets the config a user gets wrong.
    for name, command in main.commands.items():
        takes_config = any(p.name == "config_path" for p in command.params)
        if not takes_config:
            assert name in covered, f"{name}: add hostile cases for it to HOSTILE"
            continue
        required: list[str] = []
        for param in command.params:
            if isinstance(param, click.Argument) and param.required:
                # A path that must exist (submit's VIDEO) gets a real file: the config is the subject.
                exists = isinstance(param.type, click.Path) and param.type.exists
                required.append(str(MEDIA / "portrait.mp4") if exists else "1")
            elif isinstance(param, click.Option) and param.required:
                required += [param.opts[0], "1d"]
        for bad in (world.missing, world.garbage, world.binary, world.empty, world.directory):
            result = invoke(name, *required, "--config", bad)
            label = f"{name} --config {bad.name}"
            assert isinstance(result.exception, SystemExit), f"{label}: {result.exception!r}\n{result.output}"
            assert result.exit_code == 2, f"{label}: exit {result.exit_code}\n{result.output}"
            assert_clean_failure(label, result.exit_code, result.stdout, result.stderr)
            assert bad.name in result.output, f"{label}: the message does not name the file\n{result.output}"


def test_hostile_situations_in_real_processes(tmp_path: Path, sandbox: Any) -> None:
    """What only a real process shows: a port in use, a ledger that cannot be made, a held lock."""
    world = World(tmp_path, sandbox, history=False)
    busy = hf("sandbox", "--port", world.busy_port, "--data", tmp_path / "sb2", timeout=30)
    assert busy.returncode == 1 and "already in use" in busy.stderr
    assert_clean_failure("sandbox port in use", busy.returncode, busy.stdout, busy.stderr)
    no_dir = hf("sandbox", "--port", 0, "--data", "/proc/hotfolder-nope/sb", timeout=30)
    assert no_dir.returncode == 1 and "/proc/hotfolder-nope" in no_dir.stderr
    assert_clean_failure("sandbox data under /proc", no_dir.returncode, no_dir.stdout, no_dir.stderr)

    proc_ledger = hf("run", "--once", "--config", world.proc_ledger, timeout=30)
    assert proc_ledger.returncode == 1 and "/proc/hotfolder-nope" in proc_ledger.stderr
    assert_clean_failure("run with a ledger under /proc", proc_ledger.returncode, "", proc_ledger.stderr)
    for command in (["status"], ["explain", "x.mp4"], ["doctor"]):
        looked = hf(*command, "--config", world.proc_ledger)
        assert_clean_failure(f"{command[0]} with a ledger under /proc", looked.returncode, looked.stdout,
                             looked.stderr, report=command[0] == "doctor")

    lock = DaemonLock(world.env.settings.ledger_path)
    lock.acquire()                                        # "a daemon is running"
    try:
        second = hf("run", "--once", "--config", world.cfg, timeout=30)
    finally:
        lock.release()
    assert second.returncode == 1 and "another hotfolder daemon" in second.stderr
    assert_clean_failure("a second daemon", second.returncode, "", second.stderr)

    corrupt = write_config(tmp_path / "corrupt", sandbox.base_url, server=NO_LISTENER)
    (tmp_path / "corrupt" / "state").mkdir()
    (tmp_path / "corrupt" / "state" / "ledger.db").write_bytes(b"this is not SQLite" * 300)
    for command in (["status"], ["show", "1"], ["retry", "1"], ["run", "--once"]):
        broken = hf(*command, "--config", corrupt)
        assert broken.returncode == 1, (command, broken.stderr)
        assert_clean_failure(f"{command[0]} on a corrupt ledger", broken.returncode, broken.stdout, broken.stderr)

    odd = tmp_path / 'we"ird\\dir'
    made = hf("init", odd)
    assert made.returncode == 0, made.stderr
    works = hf("status", "--config", odd / "hotfolder.toml", env={"CHANJING_APP_ID": "a", "CHANJING_SECRET_KEY": "b"})
    assert works.returncode == 0, works.stderr
    assert str(odd / "inbox") in works.stdout


def test_a_bug_is_one_line_that_says_so_not_a_traceback(tmp_path: Path, sandbox: Any,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from hotfolder import control

    env = env_for(tmp_path, sandbox)
    env.ledger()

    def broken(*_args: Any) -> Any:
        raise ValueError("a bug nobody foresaw")

    monkeypatch.setattr(control, "find_job", broken)
    result = invoke("show", "1", "--config", env.config_path)
    assert isinstance(result.exception, SystemExit) and result.exit_code == 1
    assert "Traceback" not in result.output
    assert result.stderr.count("\n") == 1 and "a bug nobody foresaw" in result.stderr
    assert "HOTFOLDER_DEBUG" in result.stderr                  # how to get the traceback for a report
    debug = invoke("show", "1", "--config", env.config_path, env={"HOTFOLDER_DEBUG": "1"})
    assert isinstance(debug.exception, ValueError)


# -- 6. doctor tells the truth ------------------------------------------------------------------------
def test_doctor_checks_the_secret_itself_not_a_cached_token(tmp_path: Path, sandbox: Any) -> None:
    env = env_for(tmp_path, sandbox)
    make_folders(env)
    assert hf("voices", "--config", env.config_path).returncode == 0   # caches a token in the ledger
    assert env.ledger().get_value("token:sandbox")
    good = hf("doctor", "--config", env.config_path)
    assert good.returncode == 0, good.stdout
    write_config(tmp_path, sandbox.base_url, api={"secret_key": "not-the-secret"}, server=NO_LISTENER).chmod(0o600)
    bad = hf("doctor", "--config", env.config_path)
    assert bad.returncode == 1
    line = credentials_line(bad.stdout)
    assert line.startswith("BAD") and "refused" in line, bad.stdout


class _ErrorPage(http.server.BaseHTTPRequestHandler):
    """What sits at a wrong address: a web server's HTML page, never the API's JSON."""

    def _page(self) -> None:
        body = b"<html><body><h1>Welcome to nginx!</h1></body></html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _page

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def error_page() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _ErrorPage)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="error-page")
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join()


def test_doctor_reports_a_wrong_address_as_such(tmp_path: Path, sandbox: Any, error_page: str) -> None:
    for name, url in (("404", sandbox.base_url + "/nope"), ("page", error_page)):
        root = tmp_path / name
        path = write_config(root, url, server=NO_LISTENER)
        result = hf("doctor", "--config", path)
        assert result.returncode == 1
        line = credentials_line(result.stdout)
        assert line.startswith("BAD") and "base_url" in line, line
        assert "refused" not in line and "check both" not in line, line   # not bad credentials
    gateway = write_config(tmp_path / "gw", sandbox.base_url, server=NO_LISTENER)
    sandbox.update(gateway_error_rate=1.0)
    result = hf("doctor", "--config", gateway)
    line = credentials_line(result.stdout)
    assert line.startswith("BAD") and "refused" not in line and re.search(r"50[234]", line), line


def test_doctor_warns_about_a_voice_that_is_not_public(tmp_path: Path, sandbox: Any) -> None:
    env = env_for(tmp_path, sandbox, lipsync={"audio_man_id": "C-my-own-cloned-voice"})
    make_folders(env)
    result = hf("doctor", "--config", env.config_path)
    assert result.returncode == 0, result.stdout       # a warning, not a failure
    voice = [ln for ln in result.stdout.splitlines() if " voice " in ln]
    assert voice and voice[0].startswith("warn") and "C-my-own-cloned-voice" in voice[0], result.stdout


def test_doctor_creates_nothing_on_a_fresh_config(tmp_path: Path, sandbox: Any) -> None:
    root = tmp_path / "fresh"
    path = write_config(root, sandbox.base_url, server=NO_LISTENER)
    path.chmod(0o600)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    result = hf("doctor", "--config", path)
    assert "ok   credentials" in result.stdout, result.stdout
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def test_doctor_does_not_break_a_running_daemons_token(tmp_path: Path, sandbox: Any) -> None:
    sandbox.update(generate_seconds=4.0)                   # tasks stay in flight while doctor runs
    env = env_for(tmp_path, sandbox)
    make_folders(env)
    for i in range(3):
        drop_pair(env, f"live{i}", f"script {i}")
    with Running(env):
        wait_for(lambda: "generating" in states(env).values(), message="a task in flight")
        for _ in range(2):
            checked = hf("doctor", "--config", env.config_path)
            assert "ok   credentials" in checked.stdout and "running (pid" in checked.stdout, checked.stdout
        wait_for(lambda: set(states(env).values()) == {"done"} and len(states(env)) == 3, timeout=60,
                 message="every job to finish")
    tokens = [e for e in sandbox.journal() if e["endpoint"] == "access_token" and e["code"] == 0]
    assert len(tokens) >= 3                                # the daemon's, and one per doctor run


# -- 7. a person can hurry the daemon -----------------------------------------------------------------------
def test_retry_in_a_running_daemon_is_acted_on_within_two_seconds(tmp_path: Path, sandbox: Any) -> None:
    env = env_for(tmp_path, sandbox, watch={"rescan_seconds": 60})
    env.drop("fix.mp4", b"not a video yet")
    env.drop("fix.txt", "hello")
    assert env.run_once() == 1
    (env.settings.folders.failed / "fix.mp4").write_bytes(VIDEO)      # the person fixes the input
    with Running(env) as running:
        wait_for(lambda: running.daemon.first_scan_done, message="the daemon's first scan")
        retried = hf("retry", "fix", "--config", env.config_path)
        assert retried.returncode == 0, retried.stderr
        ledger = env.ledger()
        job_id = ledger.find("fix.mp4").id
        started = wait_for(lambda: [e for e in ledger.events(job_id) if e["kind"] == "upload_started"],
                           timeout=10, message="the retried job to start")
        retry_at = max(e["at"] for e in ledger.events(job_id) if e["kind"] == "retry")
        assert started[-1]["at"] - retry_at < 2.5
        wait_for(lambda: ledger.get(job_id).state == State.DONE, timeout=30, message="the retried job to finish")


def test_resume_lifts_a_billing_pause_now(tmp_path: Path, sandbox: Any,
                                          daemons: list[subprocess.Popen[bytes]]) -> None:
    env = env_for(tmp_path, sandbox, retry={"billing_recheck_seconds": 600})
    sandbox.update(balance_creates=0, balance_mode="refuse")
    drop_pair(env, "pay")
    log_path = tmp_path / "daemon.log"
    with open(log_path, "wb") as log_file:
        daemons.append(subprocess.Popen([*HOTFOLDER, "run", "--log-json", "--config", str(env.config_path)],
                                           stdout=subprocess.DEVNULL, stderr=log_file, env=clean_env()))
    paused = wait_for(lambda: (out := hf("status", "--config", env.config_path).stdout)
                      and "submissions paused" in out and out, timeout=60, message="the billing pause")
    assert "hotfolder resume" in paused
    httpx.post(f"{sandbox.base_url}/_sandbox/balance", json={"creates": None}).raise_for_status()   # top-up
    resumed = hf("resume", "--config", env.config_path)
    assert resumed.returncode == 0 and "submissions resumed" in resumed.stdout, resumed.stdout
    wait_for(lambda: states(env).get("pay.mp4") == "done", timeout=30,
             message="the job to go on within seconds, not at the 600 s recheck")
    daemon = daemons[0]
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait(timeout=15) == 0
    # Logs print times as ISO 8601, never raw epochs.
    lines = [json.loads(ln) for ln in log_path.read_text(encoding="utf-8").splitlines() if ln.startswith("{")]
    pause_lines = [ln for ln in lines if ln.get("event") == "billing_paused"]
    assert pause_lines and re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", pause_lines[0]["until"])
    for line in lines:
        for key, value in line.items():
            if key in ("until", "since") or key.endswith("_at"):
                assert not isinstance(value, (int, float)) or value < 1e9, (key, line)


# -- 8. API trouble shows in status --------------------------------------------------------------------------
def test_status_shows_api_trouble_and_clears_it(tmp_path: Path, sandbox: Any) -> None:
    from hotfolder.sandbox import Sandbox, SandboxSettings

    env = env_for(tmp_path, sandbox)
    port, data_dir = sandbox.port, sandbox.data_dir
    with Running(env) as running:
        wait_for(lambda: running.daemon.first_scan_done, message="the daemon's first scan")
        sandbox.stop()                                     # the API goes away
        drop_pair(env, "stuck")

        def banner() -> str | None:
            out = hf("status", "--config", env.config_path).stdout
            return out if "API trouble since" in out else None

        shown = wait_for(banner, timeout=60, interval=0.3, message="the API trouble banner")
        assert "cannot be reached" in shown, shown
        row = next(ln for ln in shown.splitlines() if "stuck.mp4" in ln)
        assert "(held up: unreachable)" in row, shown
        back = Sandbox(data_dir, port=port, settings=SandboxSettings(**FAST_SANDBOX)).start()
        try:
            wait_for(lambda: states(env).get("stuck.mp4") == "done", timeout=90, message="the job after the outage")
            cleared = hf("status", "--config", env.config_path).stdout
            assert "API trouble" not in cleared, cleared
        finally:
            back.stop()


# -- 9. smaller items -----------------------------------------------------------------------------------------
def _history(env: Env, done: int = 25) -> None:
    """A ledger with ``done`` ended jobs, one failed and two unfinished, in a known order."""
    ticks = iter(range(1_700_000_000, 1_800_000_000, 10))
    ledger = Ledger(env.settings.ledger_path, clock=lambda: float(next(ticks)))
    for i in range(done):
        ledger.add_job(name=f"old{i:02}.mp4", rel_dir="", stem=f"old{i:02}", state=State.DONE, files={},
                       inputs={}, params={})
    ledger.add_job(name="broken.mp4", rel_dir="", stem="broken", state=State.FAILED, files={}, inputs={},
                   params={}, error="broken.mp4 is not a video", error_code="bad_input")
    ledger.add_job(name="next.mp4", rel_dir="", stem="next", state=State.QUEUED, files={}, inputs={}, params={})
    ledger.add_job(name="alone.mp4", rel_dir="", stem="alone", state=State.WAITING, files={}, inputs={}, params={})
    ledger.close()


def _rows(output: str) -> list[str]:
    return [ln.split()[1] for ln in output.splitlines() if re.match(r"\s*\d+\s", ln)]


def test_status_for_a_person_and_for_scripts(tmp_path: Path, sandbox: Any) -> None:
    env = env_for(tmp_path, sandbox)
    empty = invoke("status", "--json", "--config", env.config_path)
    assert json.loads(empty.stdout) == []
    _history(env)
    cfg = env.config_path
    person = invoke("status", "--config", cfg)
    assert person.exit_code == 0
    names = _rows(person.stdout)
    assert {"next.mp4", "alone.mp4", "broken.mp4"} <= set(names)
    assert len(names) == 2 + 20                             # unfinished + the 20 most recent ended
    assert "old24.mp4" in names and "old00.mp4" not in names
    assert "6 older ended jobs not shown" in person.stdout
    assert person.stdout.splitlines()[-1] == "total 28: 1 waiting, 1 queued, 25 done, 1 failed"
    limited = _rows(invoke("status", "--limit", "3", "--config", cfg).stdout)
    assert set(limited) >= {"next.mp4", "alone.mp4"} and len(limited) == 5
    assert len(_rows(invoke("status", "--all", "--config", cfg).stdout)) == 28
    rows = json.loads(invoke("status", "--json", "--config", cfg).stdout)
    assert len(rows) == 28 and {"id", "name", "state", "remote_id", "error", "created_at", "updated_at"} <= set(rows[0])
    assert [r["name"] for r in json.loads(invoke("status", "--json", "--state", "FAILED", "--config", cfg).stdout)] \
        == ["broken.mp4"]
    both = json.loads(invoke("status", "--json", "--state", "failed", "--state", "Waiting", "--config", cfg).stdout)
    assert sorted(r["name"] for r in both) == ["alone.mp4", "broken.mp4"]
    bogus = hf("status", "--state", "bogus", "--config", cfg)
    assert bogus.returncode != 0 and "bogus" in bogus.stderr
    assert all(s.value in bogus.stderr for s in State)
    piped = hf("status", "--json", "--config", cfg)            # a real pipe, streamed
    assert len(json.loads(piped.stdout)) == 28


def _run_on_a_terminal(args: list[str], env: dict[str, str]) -> str:
    """Run ``args`` with stdout and stderr on a pseudo-terminal; what it wrote there."""
    master, slave = os.openpty()
    try:
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, env=env)
    finally:
        os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:                                    # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    assert proc.wait(timeout=60) == 0
    return b"".join(chunks).decode("utf-8", "replace")


def test_console_logs_honour_no_color_and_pipes(tmp_path: Path, sandbox: Any) -> None:
    env = env_for(tmp_path, sandbox)
    command = [*HOTFOLDER, "run", "--once", "--log-console", "--config", str(env.config_path)]
    coloured = _run_on_a_terminal(command, clean_env())
    assert "daemon_start" in coloured and ANSI in coloured      # a terminal gets colours…
    plain = _run_on_a_terminal(command, clean_env(NO_COLOR="1"))
    assert "daemon_start" in plain and ANSI not in plain        # …unless NO_COLOR says not
    piped = subprocess.run(command, capture_output=True, text=True, env=clean_env(), timeout=60)
    assert piped.returncode == 0 and "daemon_start" in piped.stderr
    assert ANSI not in piped.stderr + piped.stdout               # a pipe never gets escape codes


def test_init_refuses_an_inbox_and_writes_a_config_that_can_move(tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert hf("init", home).returncode == 0
    inside = hf("init", home / "inbox" / "nested")
    assert inside.returncode == 1 and "inbox" in inside.stderr
    assert not (home / "inbox" / "nested").exists()
    # Another installation, elsewhere, named by HOTFOLDER_CONFIG.
    other = hf("init", tmp_path / "elsewhere" / "srv")
    assert other.returncode == 0
    named = hf("init", tmp_path / "elsewhere" / "srv" / "outbox" / "x",
               env={"HOTFOLDER_CONFIG": str(tmp_path / "elsewhere" / "srv" / "hotfolder.toml")})
    assert named.returncode == 1 and "outbox" in named.stderr
    # Absolute paths: the config still works from /etc-like places.
    moved = tmp_path / "etc" / "hotfolder.toml"
    moved.parent.mkdir()
    shutil.copy(home / "hotfolder.toml", moved)
    settings = config.load(moved, env={"CHANJING_APP_ID": "a", "CHANJING_SECRET_KEY": "b"})
    assert settings.folders.inbox == (home / "inbox").resolve()
    assert settings.ledger_path.parent.parent == home.resolve()


def test_no_message_repeats_its_verdict(tmp_path: Path, sandbox: Any) -> None:
    env = env_for(tmp_path, sandbox)
    for name, data in {"wait.mp4": VIDEO, "go.mp4": VIDEO, "go.txt": "hi", "lost.txt": "hi",
                       "two.mp4": VIDEO, "two.txt": "hi", "two.wav": (MEDIA / "speech.wav").read_bytes(),
                       "odd.mkv": VIDEO}.items():
        age(env.drop(name, data))
    for name in ("wait.mp4", "go.mp4", "lost.txt", "two.mp4", "odd.mkv"):
        line = invoke("explain", name, "--config", env.config_path).stdout.strip()
        _path, verdict, message = line.split(": ", 2)
        first = re.split(r"\W+", message.lower())[0]
        assert first != verdict and not message.lower().startswith(verdict.replace("_", " ")), line
        assert not re.search(r"\b(\w+)\b: \1\b", line), line
    assert env.run_once() == 1                              # two.* fails: ambiguous
    table = invoke("status", "--config", env.config_path).stdout
    assert not re.search(r"\b(waiting|ready)\b[:\s]+\1\b", table), table


def test_voices_has_a_header_and_aligns_cjk_names(tmp_path: Path, sandbox: Any) -> None:
    env = env_for(tmp_path, sandbox)
    shown = hf("voices", "--config", env.config_path)
    assert shown.returncode == 0
    lines = shown.stdout.splitlines()
    assert lines[0].split()[:2] == ["AUDIO_MAN_ID", "NAME"]
    column = display_width(lines[0][:lines[0].index("GENDER")])
    voices = json.loads(hf("voices", "--json", "--config", env.config_path).stdout)
    assert any(display_width(v["name"]) > len(v["name"]) for v in voices)   # there are wide names
    for voice in voices:
        line = next(ln for ln in lines if ln.startswith(voice["id"]))
        at = line.index(voice["gender"], line.index(voice["name"]) + len(voice["name"]))
        assert display_width(line[:at]) == column, (line, lines[0])


def test_a_cancelled_jobs_error_file_does_not_blame_the_input(tmp_path: Path, sandbox: Any) -> None:
    env = env_for(tmp_path, sandbox)
    env.drop("waits.mp4", VIDEO)
    assert env.run_once() == 0
    assert hf("cancel", "waits", "--config", env.config_path).returncode == 0
    text = (env.settings.folders.failed / "waits.error.json").read_text(encoding="utf-8")
    document = json.loads(text)
    assert document["code"] == "cancelled"
    assert "fix the input" not in text.lower() and "unusable" not in text.lower(), text


def test_show_prints_what_was_sent_and_finds_a_job_by_its_stem(tmp_path: Path, sandbox: Any) -> None:
    env = env_for(tmp_path, sandbox, lipsync={"audio_man_id": VOICE, "speed": 1.25})
    env.drop("talk.mp4", VIDEO)
    env.drop("talk.txt", "hello there")
    env.drop("song.mov", MEDIA / "landscape.mov")
    env.drop("song.wav", MEDIA / "speech.wav")
    drop_pair(env, "x/clip")
    drop_pair(env, "y/clip")
    assert env.run_once() == 0
    jobs = env.jobs()
    requests = {t["id"]: t["request"] for t in sandbox.tasks()}

    talk = hf("show", "talk", "--config", env.config_path)
    assert talk.returncode == 0, talk.stderr
    sent = requests[jobs["talk.mp4"].remote_id]
    fields = dict(re.findall(r"^\s*(\w+): (.*)$", talk.stdout, re.M))
    assert fields["voice"] == sent["tts_config"]["audio_man_id"] == VOICE
    assert float(fields["speed"]) == sent["tts_config"]["speed"] == 1.25
    assert fields["size"] == f"{sent['screen_width']}x{sent['screen_height']}"
    assert "hello there" in fields["script"]

    song = hf("show", "song.mov", "--json", "--config", env.config_path)
    assert song.returncode == 0, song.stderr
    params = json.loads(song.stdout)["params"]
    sent = requests[jobs["song.mov"].remote_id]
    assert sent.get("tts_config") is None and sent["audio_type"] == "audio"
    assert "voice" not in params and "speed" not in params, params      # not sent for an audio job
    assert params["size"] == f"{sent['screen_width']}x{sent['screen_height']}"

    ambiguous = hf("show", "clip", "--config", env.config_path)
    assert ambiguous.returncode == 1 and "x/clip.mp4" in ambiguous.stderr and "y/clip.mp4" in ambiguous.stderr
    exact = hf("show", "x/clip.mp4", "--config", env.config_path)
    assert exact.returncode == 0 and "x/clip.mp4" in exact.stdout


def test_a_missing_secret_key_file_is_not_fatal_when_the_env_has_the_secret(tmp_path: Path, sandbox: Any) -> None:
    env = env_for(tmp_path, sandbox)
    text = env.config_path.read_text().replace('secret_key = "sandbox"',
                                               f'secret_key_file = "{tmp_path}/no-such-secret"')
    env.config_path.write_text(text)
    env.config_path.chmod(0o600)
    make_folders(env)
    without = hf("status", "--config", env.config_path)
    assert without.returncode == 2 and "api.secret_key_file" in without.stderr
    with_env = hf("doctor", "--config", env.config_path, env={"CHANJING_SECRET_KEY": "sandbox"})
    assert with_env.returncode == 0, with_env.stdout + with_env.stderr
    assert "ok   credentials" in with_env.stdout


def test_the_demo_says_the_sandbox_returns_the_input_video(tmp_path: Path) -> None:
    demo = subprocess.run([sys.executable, str(EXAMPLES / "demo.py")], cwd=tmp_path, capture_output=True,
                          text=True, env=clean_env(), timeout=110, stdin=subprocess.DEVNULL)
    assert demo.returncode == 0, demo.stdout + demo.stderr
    said = " ".join(demo.stdout.split()).lower()
    assert "sandbox" in said and "input video" in said and "lip-synced" in said, demo.stdout
    assert (tmp_path / "demo-run" / "outbox" / "presenter.mp4").exists()
