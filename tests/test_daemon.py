"""The daemon end to end against the sandbox: real folders, real ledger, real loopback HTTP."""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path
from typing import Any

import pytest

from helpers import MEDIA, VOICE, all_jobs, wait_for, write_config
from hotfolder import config
from hotfolder.daemon import Daemon
from hotfolder.ledger import Ledger

TEXT = "大家好，欢迎来到 hotfolder。\nHello there."


class Env:
    """A hotfolder installation in tmp_path wired to the sandbox."""

    def __init__(self, root: Path, sandbox: Any, **sections: dict[str, Any]) -> None:
        self.root = root
        self.sandbox = sandbox
        self.config_path = write_config(root, sandbox.base_url, **sections)
        self.settings = config.load(self.config_path, env={})
        self.inbox = self.settings.folders.inbox

    def drop(self, rel: str, source: Path | bytes | str) -> Path:
        path = self.inbox / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(source, Path):
            shutil.copyfile(source, path)
        elif isinstance(source, bytes):
            path.write_bytes(source)
        else:
            path.write_text(source, encoding="utf-8")
        return path

    def run_once(self) -> int:
        return Daemon(self.settings, once=True).run()

    def ledger(self) -> Ledger:
        return Ledger(self.settings.ledger_path)

    def jobs(self) -> dict[str, Any]:
        return {j.name: j for j in all_jobs(self.ledger())}

    def creates(self) -> list[dict[str, Any]]:
        return [e for e in self.sandbox.journal() if e["endpoint"] == "create" and e["code"] == 0]


@pytest.fixture
def env(tmp_path: Path, sandbox: Any) -> Env:
    return Env(tmp_path, sandbox)


class Running:
    """A daemon on a background thread, stopped and joined at the end."""

    def __init__(self, env: Env) -> None:
        self.stop = threading.Event()
        self.daemon = Daemon(env.settings, stop=self.stop)
        self.result: list[int] = []
        self.thread = threading.Thread(target=lambda: self.result.append(self.daemon.run()), name="test-daemon")

    def __enter__(self) -> "Running":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.daemon.wake()
        self.thread.join(timeout=15)
        assert not self.thread.is_alive(), "daemon did not stop within 15 s"


def sent_text(sandbox: Any, task_id: str) -> Any:
    task = next(t for t in sandbox.tasks() if t["id"] == task_id)
    return task["request"]["tts_config"]["text"]


def test_text_and_audio_jobs_end_to_end(env: Env) -> None:
    video = (MEDIA / "portrait.mp4").read_bytes()
    env.drop("talk.mp4", MEDIA / "portrait.mp4")
    env.drop("talk.txt", TEXT)
    env.drop("song.mov", MEDIA / "landscape.mov")
    env.drop("song.wav", MEDIA / "speech.wav")
    assert env.run_once() == 0
    out = env.settings.folders.outbox
    assert (out / "talk.mp4").read_bytes() == video
    assert (out / "song.mp4").read_bytes() == (MEDIA / "landscape.mov").read_bytes()
    for cover in ("talk.jpg", "song.jpg"):
        assert (out / cover).read_bytes()[:2] == b"\xff\xd8"
    archive = env.settings.folders.archive
    assert sorted(p.name for p in archive.iterdir()) == ["song.mov", "song.wav", "talk.mp4", "talk.txt"]
    assert list(env.inbox.iterdir()) == []
    jobs = env.jobs()
    assert {j.state for j in jobs.values()} == {"done"}
    assert sent_text(env.sandbox, jobs["talk.mp4"].remote_id) == [TEXT]
    talk = next(t for t in env.sandbox.tasks() if t["id"] == jobs["talk.mp4"].remote_id)["request"]
    assert (talk["screen_width"], talk["screen_height"]) == (180, 320)   # the video's own size
    assert talk["tts_config"]["audio_man_id"] == VOICE
    song = next(t for t in env.sandbox.tasks() if t["id"] == jobs["song.mov"].remote_id)["request"]
    assert song["audio_type"] == "audio" and song.get("tts_config") is None
    assert len(env.creates()) == 2


def test_subfolders_keep_their_relative_path(env: Env) -> None:
    env.drop("team/a/clip.mp4", MEDIA / "portrait.mp4")
    env.drop("team/a/clip.txt", "hello")
    env.drop("team/b/clip.mp4", MEDIA / "portrait.mp4")
    env.drop("team/b/clip.m4a", MEDIA / "speech.m4a")
    assert env.run_once() == 0
    out, arch = env.settings.folders.outbox, env.settings.folders.archive
    for sub in ("team/a", "team/b"):
        assert (out / sub / "clip.mp4").exists() and (out / sub / "clip.jpg").exists()
    assert (arch / "team/a/clip.txt").exists() and (arch / "team/b/clip.m4a").exists()
    assert set(env.jobs()) == {"team/a/clip.mp4", "team/b/clip.mp4"}


@pytest.mark.parametrize("raw", [
    TEXT.encode("gb18030"),
    TEXT.encode("utf-16"),                       # with BOM
    b"\xef\xbb\xbf" + TEXT.replace("\n", "\r\n").encode("utf-8"),
], ids=["gbk", "utf16", "utf8-bom-crlf"])
def test_encodings_reach_the_api_as_the_right_characters(env: Env, raw: bytes) -> None:
    env.drop("x.mp4", MEDIA / "portrait.mp4")
    env.drop("x.txt", b"  " + raw if raw[:2] not in (b"\xff\xfe", b"\xfe\xff", b"\xef\xbb") else raw)
    assert env.run_once() == 0
    assert sent_text(env.sandbox, env.jobs()["x.mp4"].remote_id) == [TEXT]


def test_identical_video_is_uploaded_once(env: Env) -> None:
    for name in ("one", "two", "three"):
        env.drop(f"{name}.mp4", MEDIA / "portrait.mp4")
        env.drop(f"{name}.txt", f"script {name}")
    assert env.run_once() == 0
    puts = [e for e in env.sandbox.journal() if e["endpoint"] == "upload_put" and e["http_status"] == 200]
    assert len(puts) == 1
    assert len({j.video_file_id for j in env.jobs().values()}) == 1


def test_name_collisions_get_a_suffix_never_overwrite(env: Env) -> None:
    out, arch = env.settings.folders.outbox, env.settings.folders.archive
    out.mkdir(parents=True)
    arch.mkdir(parents=True)
    (out / "clip.mp4").write_bytes(b"precious")
    (arch / "clip.txt").write_bytes(b"old script")
    env.drop("clip.mp4", MEDIA / "portrait.mp4")
    env.drop("clip.txt", "new script")
    assert env.run_once() == 0
    assert (out / "clip.mp4").read_bytes() == b"precious"
    assert (out / "clip-2.mp4").read_bytes() == (MEDIA / "portrait.mp4").read_bytes()
    assert (out / "clip-2.jpg").exists()
    assert (arch / "clip.txt").read_bytes() == b"old script"
    assert (arch / "clip-2.txt").read_text() == "new script" and (arch / "clip-2.mp4").exists()
    # The same name dropped again later is a new job.
    env.drop("clip.mp4", MEDIA / "portrait.mp4")
    env.drop("clip.txt", "again")
    assert env.run_once() == 0
    assert (out / "clip-3.mp4").exists() and len(all_jobs(env.ledger())) == 2


def test_run_once_exit_codes_and_waiting(env: Env) -> None:
    env.drop("lonely.mp4", MEDIA / "portrait.mp4")            # no sidecar: waits, does not count
    env.drop("good.mp4", MEDIA / "portrait.mp4")
    env.drop("good.txt", "fine")
    assert env.run_once() == 0
    assert env.jobs()["lonely.mp4"].state == "waiting"
    env.drop("bad.mp4", b"this is not a video at all")
    env.drop("bad.txt", "text")
    assert env.run_once() == 1
    failed = env.settings.folders.failed
    error = json.loads((failed / "bad.error.json").read_text(encoding="utf-8"))
    assert error["code"] == "bad_input" and error["job_id"] == env.jobs()["bad.mp4"].id
    assert "bad.mp4" in error["message"]
    assert (failed / "bad.mp4").exists() and (failed / "bad.txt").exists()
    assert env.sandbox.journal() and not [e for e in env.sandbox.journal()
                                          if e["endpoint"] == "create_upload_url" and "bad" in e["path"]]


def test_both_script_and_audio_fail_with_a_clear_error(env: Env) -> None:
    env.drop("amb.mp4", MEDIA / "portrait.mp4")
    env.drop("amb.txt", "words")
    env.drop("amb.wav", MEDIA / "speech.wav")
    assert env.run_once() == 1
    error = json.loads((env.settings.folders.failed / "amb.error.json").read_text(encoding="utf-8"))
    assert "amb.txt" in error["message"] and "amb.wav" in error["message"]
    assert sorted(p.name for p in env.settings.folders.failed.iterdir()) == \
        ["amb.error.json", "amb.mp4", "amb.txt", "amb.wav"]


def test_running_daemon_picks_up_a_late_sidecar(env: Env) -> None:
    with Running(env):
        env.drop("late.mp4", MEDIA / "portrait.mp4")
        wait_for(lambda: env.jobs().get("late.mp4") and env.jobs()["late.mp4"].state == "waiting",
                 message="a waiting job")
        env.drop("late.wav", MEDIA / "speech.wav")
        wait_for(lambda: env.jobs()["late.mp4"].state == "done", message="the job to finish")
    assert (env.settings.folders.outbox / "late.mp4").exists()


def test_overrides_sidecar_is_applied_and_validated(env: Env) -> None:
    env.drop("o.mp4", MEDIA / "portrait.mp4")
    env.drop("o.txt", "hi")
    env.drop("o.json", json.dumps({"model": 1, "speed": 1.5, "screen_width": 720, "screen_height": 1280}))
    env.drop("p.mp4", MEDIA / "portrait.mp4")
    env.drop("p.txt", "hi")
    env.drop("p.json", json.dumps({"volume": 500}))
    assert env.run_once() == 1
    jobs = env.jobs()
    req = next(t for t in env.sandbox.tasks() if t["id"] == jobs["o.mp4"].remote_id)["request"]
    assert (req["model"], req["tts_config"]["speed"], req["screen_width"]) == (1, 1.5, 720)
    assert jobs["p.mp4"].state == "failed" and "volume" in jobs["p.mp4"].error
    assert (env.settings.folders.archive / "o.json").exists()
    assert (env.settings.folders.failed / "p.json").exists()
