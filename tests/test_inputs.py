"""Inputs people actually have: presets per folder, `submit` from anywhere on disk."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from helpers import MEDIA, VOICE, all_jobs, write_config
from hotfolder.cli import main
from test_daemon import Env, Running

OTHER = "C-0a1b2c3d4e5f40718293a4b5c6d7e8f9"


def _request(sandbox: Any, remote_id: str) -> dict[str, Any]:
    return next(t for t in sandbox.tasks() if t["id"] == remote_id)["request"]


def test_a_job_under_a_preset_folder_uses_the_preset(tmp_path: Path, sandbox: Any) -> None:
    env = Env(tmp_path, sandbox, **{"presets.anna": {"audio_man_id": OTHER, "speed": 1.25}})
    with Running(env) as running:   # the daemon creates the preset folders at start
        from helpers import wait_for

        wait_for(lambda: running.daemon.first_scan_done, message="started")
        assert (env.inbox / "anna").is_dir()
    env.drop("anna/deep/a.mp4", MEDIA / "portrait.mp4")
    env.drop("anna/deep/a.txt", "with anna's voice")
    env.drop("anna/deep/b.mp4", MEDIA / "portrait.mp4")
    env.drop("anna/deep/b.txt", "the sidecar wins")
    env.drop("anna/deep/b.json", json.dumps({"speed": 0.8}))
    env.drop("plain.mp4", MEDIA / "portrait.mp4")
    env.drop("plain.txt", "the defaults")
    for f in (env.inbox / "anna" / "deep").iterdir():
        os.utime(f, (f.stat().st_mtime - 10, f.stat().st_mtime - 10))   # settled, as if copied a while ago
    explain = CliRunner().invoke(main, ["explain", "anna/deep/a.mp4", "--config", str(env.config_path)]).output
    assert "preset 'anna'" in explain
    assert env.run_once() == 0
    jobs = {j.name: j for j in all_jobs(env.ledger())}
    a = _request(sandbox, jobs["anna/deep/a.mp4"].remote_id)["tts_config"]
    b = _request(sandbox, jobs["anna/deep/b.mp4"].remote_id)["tts_config"]
    plain = _request(sandbox, jobs["plain.mp4"].remote_id)["tts_config"]
    assert (a["audio_man_id"], a["speed"]) == (OTHER, 1.25)
    assert (b["audio_man_id"], b["speed"]) == (OTHER, 0.8)          # <stem>.json > preset
    assert (plain["audio_man_id"], plain["speed"]) == (VOICE, 1.0)   # preset only under its folder
    assert (env.settings.folders.outbox / "anna" / "deep" / "a.mp4").exists()
    assert (env.settings.folders.archive / "anna" / "deep" / "a.txt").exists()
    shown = json.loads(CliRunner().invoke(main, ["show", "a", "--json", "--config", str(env.config_path)]).output)
    assert shown["preset"] == "anna" and shown["params"]["voice"] == OTHER
    listed = json.loads(CliRunner().invoke(main, ["presets", "--json", "--config", str(env.config_path)]).output)
    assert listed[0]["name"] == "anna" and listed[0]["effective"]["speed"] == 1.25


def test_an_invalid_preset_is_a_config_error_naming_the_key(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, "http://127.0.0.1:9", **{"presets.anna": {"speed": 7}})
    result = subprocess.run([sys.executable, "-m", "hotfolder", "status", "--config", str(cfg)],
                            capture_output=True, text=True)
    assert result.returncode == 2 and "[presets.anna]: speed" in result.stderr and "Traceback" not in result.stderr


def test_submit_from_anywhere_waits_and_copies_the_result(tmp_path: Path, sandbox: Any) -> None:
    env = Env(tmp_path, sandbox, **{"presets.anna": {"audio_man_id": OTHER}})
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    video = elsewhere / "promo.mp4"
    video.write_bytes((MEDIA / "portrait.mp4").read_bytes())
    out = tmp_path / "result.mp4"
    proc = subprocess.run([sys.executable, "-m", "hotfolder", "submit", str(video), "--text-string", "hello there",
                           "--preset", "anna", "--out", str(out), "--config", str(env.config_path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert Path(proc.stdout.strip()) == out and out.read_bytes()[4:8] == b"ftyp"
    assert video.exists() and video.read_bytes() == (MEDIA / "portrait.mp4").read_bytes()   # untouched
    assert [p for p in env.inbox.rglob("*") if p.is_file()] == []   # nothing went through the inbox
    job = all_jobs(env.ledger())[0]
    assert job.name == "submit/promo.mp4" and job.state == "done"
    assert _request(sandbox, job.remote_id)["tts_config"]["audio_man_id"] == OTHER
    assert "generating" in proc.stderr and "done" in proc.stderr   # the progress lines


def test_submit_with_a_running_daemon_and_a_failure_exits_1(tmp_path: Path, sandbox: Any) -> None:
    env = Env(tmp_path, sandbox)
    audio_job = tmp_path / "v.mp4"
    audio_job.write_bytes((MEDIA / "portrait.mp4").read_bytes())
    with Running(env):
        ok = subprocess.run([sys.executable, "-m", "hotfolder", "submit", str(audio_job), "--audio",
                             str(MEDIA / "speech.wav"), "--config", str(env.config_path)],
                            capture_output=True, text=True, timeout=120)
        assert ok.returncode == 0, ok.stderr
        assert Path(ok.stdout.strip()).exists()
        sandbox.update(fail_task_rate=1.0)
        bad = subprocess.run([sys.executable, "-m", "hotfolder", "submit", str(audio_job), "--text-string", "x",
                              "--config", str(env.config_path)], capture_output=True, text=True, timeout=120)
        assert bad.returncode == 1 and "failed" in bad.stderr and "Traceback" not in bad.stderr
    refused = subprocess.run([sys.executable, "-m", "hotfolder", "submit", str(audio_job), "--config",
                              str(env.config_path)], capture_output=True, text=True, timeout=60)
    assert refused.returncode == 1 and "exactly one of" in refused.stderr
