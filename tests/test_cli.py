"""The CLI: every command has help, the contract's exit codes and JSON, steering commands."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from helpers import MEDIA, write_config
from hotfolder import config
from hotfolder.cli import main
from hotfolder.daemon import Daemon

CONTRACT_KEYS = {"id", "name", "state", "remote_id", "error", "created_at", "updated_at"}


def invoke(*args: str, env: dict[str, str] | None = None) -> Any:
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


@pytest.mark.parametrize("command", sorted(main.commands))
def test_every_command_has_help(command: str) -> None:
    result = invoke(command, "--help")
    assert result.exit_code == 0, result.output
    assert main.commands[command].help, f"{command} has no docstring"
    assert "Usage:" in result.output


def test_python_dash_m_entry_point() -> None:
    out = subprocess.run([sys.executable, "-m", "hotfolder", "--version"], capture_output=True, text=True, check=True)
    assert "hotfolder" in out.stdout


@pytest.mark.parametrize("command", ["run", "status", "doctor", "voices"])
def test_invalid_config_exits_2_naming_the_key(tmp_path: Path, command: str) -> None:
    path = write_config(tmp_path, "http://127.0.0.1:9", watch={"settle_seconds": -3})
    result = CliRunner().invoke(main, [command, "--config", str(path)])
    assert result.exit_code == 2
    assert "watch.settle_seconds" in result.output


def test_status_json_and_steering(tmp_path: Path, sandbox: Any) -> None:
    path = write_config(tmp_path, sandbox.base_url)
    settings = config.load(path, env={})
    inbox = settings.folders.inbox
    (inbox / "ok.mp4").write_bytes((MEDIA / "portrait.mp4").read_bytes())
    (inbox / "ok.txt").write_text("hello")
    (inbox / "bad.mp4").write_bytes(b"")
    (inbox / "bad.txt").write_text("hello")
    assert Daemon(settings, once=True).run() == 1

    result = invoke("status", "--json", "--config", str(path))
    rows = json.loads(result.output)
    assert all(CONTRACT_KEYS <= set(r) for r in rows)
    by_name = {r["name"]: r for r in rows}
    assert by_name["ok.mp4"]["state"] == "done" and by_name["ok.mp4"]["remote_id"]
    assert by_name["bad.mp4"]["state"] == "failed" and "bad.mp4" in by_name["bad.mp4"]["error"]
    assert by_name["ok.mp4"]["created_at"].endswith("+00:00")

    table = invoke("status", "--config", str(path)).output
    assert "ok.mp4" in table and "done" in table and "failed" in table
    only = json.loads(invoke("status", "--json", "--state", "failed", "--config", str(path)).output)
    assert [r["name"] for r in only] == ["bad.mp4"]

    shown = json.loads(invoke("show", "--json", "ok.mp4", "--config", str(path)).output)
    assert [e["kind"] for e in shown["events"]][0] == "created" and shown["state"] == "done"

    # Retry re-validates: the empty video still cannot work.
    result = CliRunner().invoke(main, ["retry", str(by_name["bad.mp4"]["id"]), "--config", str(path)])
    assert result.exit_code == 1 and "would fail again" in result.output
    (settings.folders.failed / "bad.mp4").write_bytes((MEDIA / "portrait.mp4").read_bytes())
    assert invoke("retry", "bad.mp4", "--config", str(path)).exit_code == 0
    assert not (settings.folders.failed / "bad.error.json").exists()
    assert Daemon(settings, once=True).run() == 0
    assert (settings.folders.outbox / "bad.mp4").exists()
    assert (settings.folders.archive / "bad.mp4").exists()

    missing = CliRunner().invoke(main, ["show", "nope.mp4", "--config", str(path)])
    assert missing.exit_code == 1 and "no job" in missing.output


def test_cancel_moves_inputs_to_failed(tmp_path: Path) -> None:
    path = write_config(tmp_path, "http://127.0.0.1:9")
    settings = config.load(path, env={})
    from hotfolder.intake import Intake
    from hotfolder.ledger import Ledger

    (settings.folders.inbox / "w.mp4").write_bytes((MEDIA / "portrait.mp4").read_bytes())
    intake = Intake(settings, Ledger(settings.ledger_path), clock=lambda: 1000.0)
    intake.scan()
    intake.clock = lambda: 1010.0
    assert intake.scan().created
    assert invoke("cancel", "w.mp4", "--config", str(path)).exit_code == 0
    assert (settings.folders.failed / "w.mp4").exists()
    error = json.loads((settings.folders.failed / "w.error.json").read_text())
    assert error["code"] == "cancelled"
    again = CliRunner().invoke(main, ["cancel", "w.mp4", "--config", str(path)])
    assert again.exit_code == 1 and "already cancelled" in again.output


def test_explain(tmp_path: Path) -> None:
    path = write_config(tmp_path, "http://127.0.0.1:9", watch={"settle_seconds": 3600})
    inbox = config.load(path, env={}).folders.inbox
    (inbox / ".hidden.mp4").write_bytes(b"x")
    (inbox / "clip.mp4.part").write_bytes(b"x")
    (inbox / "fresh.mp4").write_bytes(b"x")
    (inbox / "sub").mkdir()
    (inbox / "sub" / "a.txt").write_text("x")

    def verdict(name: str) -> str:
        return invoke("explain", name, "--config", str(path)).output

    assert ": ignored:" in verdict(".hidden.mp4")
    assert ": ignored:" in verdict("clip.mp4.part")
    assert ": unsettled:" in verdict("fresh.mp4")
    assert ": missing:" in verdict("nothing.mp4")
    assert ": not_in_inbox:" in verdict(str(tmp_path / "hotfolder.toml"))


def test_explain_pairing_verdicts(tmp_path: Path) -> None:
    path = write_config(tmp_path, "http://127.0.0.1:9", watch={"settle_seconds": 0.001})
    inbox = config.load(path, env={}).folders.inbox
    (inbox / "v.mp4").write_bytes(b"x")
    (inbox / "o.txt").write_text("x")
    (inbox / "a.mp4").write_bytes(b"x")
    (inbox / "a.txt").write_text("x")
    (inbox / "a.wav").write_bytes(b"x")
    out = {n: invoke("explain", n, "--config", str(path)).output for n in ("v.mp4", "o.txt", "a.mp4")}
    assert ": waiting:" in out["v.mp4"]
    assert ": orphan:" in out["o.txt"]
    assert ": ambiguous:" in out["a.mp4"]


def test_init_writes_a_valid_private_config(tmp_path: Path) -> None:
    result = invoke("init", str(tmp_path / "hf"))
    assert result.exit_code == 0
    cfg = tmp_path / "hf" / "hotfolder.toml"
    assert cfg.stat().st_mode & 0o077 == 0
    assert all((tmp_path / "hf" / d).is_dir() for d in ("inbox", "outbox", "archive", "failed"))
    settings = config.load(cfg, env={"CHANJING_APP_ID": "a", "CHANJING_SECRET_KEY": "b"})
    assert settings.folders.inbox == (tmp_path / "hf" / "inbox").resolve()
    again = CliRunner().invoke(main, ["init", str(tmp_path / "hf")])
    assert again.exit_code == 1 and "already exists" in again.output


def test_doctor_and_voices(tmp_path: Path, sandbox: Any) -> None:
    path = write_config(tmp_path, sandbox.base_url)
    for d in ("outbox", "archive", "failed"):
        (tmp_path / d).mkdir()
    path.chmod(0o644)
    result = CliRunner().invoke(main, ["doctor", "--config", str(path)])
    assert "credentials" in result.output and "accepted" in result.output
    assert "chmod 600" in result.output and result.exit_code == 1
    path.chmod(0o600)
    assert CliRunner().invoke(main, ["doctor", "--config", str(path)]).exit_code == 0
    voices = json.loads(invoke("voices", "--json", "--config", str(path)).output)
    assert any(v["id"] == "C-f2429d07554749839849497589199916" for v in voices)
    bad = write_config(tmp_path / "b", sandbox.base_url, api={"secret_key": "wrong"})
    result = CliRunner().invoke(main, ["doctor", "--config", str(bad)])
    assert result.exit_code == 1 and "BAD  credentials" in result.output
