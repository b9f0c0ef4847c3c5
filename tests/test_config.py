"""Config loading: validation names the key, env overrides, relative paths."""

from __future__ import annotations

from pathlib import Path

import pytest

from hotfolder import config
from hotfolder.errors import ConfigError

BASE = """
[api]
app_id = "a"
secret_key = "s3cr3t-value"
[folders]
inbox = "in"
outbox = "out"
archive = "arch"
failed = "bad"
[ledger]
path = "state/l.db"
"""


def write(tmp_path: Path, extra: str = "", base: str = BASE) -> Path:
    path = tmp_path / "hf.toml"
    path.write_text(base + extra, encoding="utf-8")
    return path


def test_minimal_config_resolves_relative_paths_against_the_file(tmp_path: Path) -> None:
    s = config.load(write(tmp_path), env={})
    assert s.folders.inbox == (tmp_path / "in").resolve()
    assert s.ledger_path == (tmp_path / "state/l.db").resolve()
    assert s.api.base_url == "https://open-api.chanjing.cc"
    assert s.limits.creates_per_minute == 10 and s.limits.tasks_in_flight == 10
    assert s.watch.settle_seconds == 5 and s.watch.rescan_seconds == 60
    assert s.lipsync["model"] == 0 and s.lipsync["volume"] == 100
    assert "s3cr3t" not in repr(s)


def test_env_overrides(tmp_path: Path) -> None:
    env = {"CHANJING_BASE_URL": "http://127.0.0.1:9/", "CHANJING_APP_ID": "x", "CHANJING_SECRET_KEY": "y"}
    s = config.load(write(tmp_path), env=env)
    assert (s.api.base_url, s.api.app_id, s.api.secret_key) == ("http://127.0.0.1:9", "x", "y")
    assert s.api.secret_source == "env"


def test_config_path_from_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOTFOLDER_CONFIG", str(write(tmp_path)))
    assert config.load(None).api.app_id == "a"


@pytest.mark.parametrize("extra, key", [
    ("[watch]\nsettle_secs = 3\n", "watch.settle_secs"),
    ("[watch]\nsettle_seconds = -1\n", "watch.settle_seconds"),
    ("[watch]\nsettle_seconds = \"5\"\n", "watch.settle_seconds"),
    ("[limits]\nuploads = 1.5\n", "limits.uploads"),
    ("[limits]\nuploads = true\n", "limits.uploads"),
    ("[bogus]\nx = 1\n", "bogus"),
    ("[lipsync]\nvolume = 101\n", "lipsync.volume"),
    ("[lipsync]\nspeed = 3\n", "lipsync.speed"),
    ("[lipsync]\nnonsense = 1\n", "lipsync.nonsense"),
])
def test_bad_values_name_the_key(tmp_path: Path, extra: str, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        config.load(write(tmp_path, extra), env={})
    assert key in str(info.value) or info.value.key == key


def test_missing_secret_is_reported(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="api.secret_key"):
        config.load(write(tmp_path, base=BASE.replace('secret_key = "s3cr3t-value"\n', "")), env={})


def test_secret_key_file(tmp_path: Path) -> None:
    (tmp_path / "secret").write_text("from-file\n")
    base = BASE.replace('secret_key = "s3cr3t-value"', 'secret_key_file = "secret"')
    s = config.load(write(tmp_path, base=base), env={})
    assert s.api.secret_key == "from-file"
    assert s.api.secret_source == str(tmp_path / "secret")


def test_overlapping_folders_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="overlap"):
        config.load(write(tmp_path, base=BASE.replace('outbox = "out"', 'outbox = "in/out"')), env={})


def test_bad_url_and_bad_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="api.base_url"):
        config.load(write(tmp_path, base=BASE.replace('[api]\n', '[api]\nbase_url = "ftp://x"\n')), env={})
    with pytest.raises(ConfigError, match="not valid TOML"):
        config.load(write(tmp_path, "[[["), env={})
    with pytest.raises(ConfigError, match="does not exist"):
        config.load(tmp_path / "nope.toml", env={})
