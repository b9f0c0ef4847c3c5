"""Frozen settings loaded from TOML, with env overrides and strict validation.

Every problem raises :class:`~hotfolder.errors.ConfigError` naming the key (``section.key``) so the
CLI can exit 2 with a message a person can act on. Relative paths resolve against the config
file's folder, so a config can travel with its folders.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from hotfolder.config_sections import (DEDUPE_MODES, NOTIFY_EVENTS, DedupeSettings, NotifySettings,  # noqa: F401 (re-exported)
                                       ServerSettings, dedupe_section, is_loopback, notify_section, numbers,
                                       parse_listen, presets_section, server_section)
from hotfolder.errors import ConfigError
from hotfolder.ratelimit import Limits

ENV_CONFIG = "HOTFOLDER_CONFIG"
ENV_CREDENTIALS = "CREDENTIALS_DIRECTORY"   # systemd LoadCredential=
CREDENTIAL_NAME = "secret_key"
ENV_OVERRIDES = {
    "base_url": "CHANJING_BASE_URL",
    "app_id": "CHANJING_APP_ID",
    "secret_key": "CHANJING_SECRET_KEY",
}


@dataclass(frozen=True)
class ApiSettings:
    base_url: str
    app_id: str
    secret_key: str = field(repr=False)
    callback_url: str = ""
    timeout_seconds: float = 30.0   # per HTTP request; also bounds how long a lost create may linger
    # Where the secret came from, so `doctor` can check that file's permissions.
    secret_source: str = "config"


@dataclass(frozen=True)
class Folders:
    inbox: Path
    outbox: Path
    archive: Path
    failed: Path


WATCH_MODES = ("auto", "events", "polling")


@dataclass(frozen=True)
class WatchSettings:
    settle_seconds: float = 5.0
    poll_interval: float = 10.0
    rescan_seconds: float = 60.0
    mode: str = "auto"           # auto | events | polling (see hotfolder.watcher)
    poll_seconds: float = 5.0    # how often the inbox is listed in polling mode


# The [limits] section is the client's own pacing/concurrency type: one definition, no copying.
LimitSettings = Limits


@dataclass(frozen=True)
class LedgerSettings:
    keep_days: float = 0.0       # > 0: ended jobs older than this are pruned once a day


@dataclass(frozen=True)
class RetrySettings:
    deadline_hours: float = 24.0          # transient trouble is retried this long, then failed
    poison_after: int = 5                 # the same failure this many times: stop retrying
    billing_recheck_seconds: float = 300.0
    file_ready_timeout: float = 300.0     # seconds to wait for an upload to become usable


@dataclass(frozen=True)
class DiskSettings:
    min_free_mb: int = 200                # intake pauses below this much free space


@dataclass(frozen=True)
class Settings:
    api: ApiSettings
    folders: Folders
    ledger_path: Path
    ledger: LedgerSettings = LedgerSettings()
    watch: WatchSettings = WatchSettings()
    limits: LimitSettings = LimitSettings()
    retry: RetrySettings = RetrySettings()
    disk: DiskSettings = DiskSettings()
    server: ServerSettings = ServerSettings()
    notify: NotifySettings = NotifySettings()
    dedupe: DedupeSettings = DedupeSettings()
    lipsync: Mapping[str, Any] = field(default_factory=dict)
    presets: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    config_path: Path | None = None

    def preset_for(self, rel_dir: str) -> tuple[str | None, dict[str, Any]]:
        """The preset of a job in the inbox folder ``rel_dir`` (its first component names it) and
        the effective defaults: ``[lipsync]`` with the preset's keys on top."""
        top = rel_dir.split("/", 1)[0] if rel_dir else ""
        if top in self.presets:
            return top, {**self.lipsync, **self.presets[top]}
        return None, dict(self.lipsync)


LIPSYNC_DEFAULTS: dict[str, Any] = {
    "model": 0,
    "speed": 1.0,
    "pitch": 1.0,
    "volume": 100,
    "backway": 1,
    "drive_mode": "",
}

_SECTIONS: dict[str, tuple[str, ...]] = {
    "api": ("base_url", "app_id", "secret_key", "secret_key_file", "callback_url", "timeout_seconds"),
    "folders": ("inbox", "outbox", "archive", "failed"),
    "ledger": ("path", "keep_days"),
    "watch": tuple(WatchSettings.__dataclass_fields__),
    "limits": tuple(LimitSettings.__dataclass_fields__),
    "retry": tuple(RetrySettings.__dataclass_fields__),
    "disk": tuple(DiskSettings.__dataclass_fields__),
    "server": ("listen", "token"),
    "dedupe": ("mode",),
    "notify": ("webhook", "webhook_secret", "exec", "apprise", "events", "timeout_seconds", "give_up_hours"),
    "lipsync": (),  # validated by pairing.validate_lipsync
    "presets": (),  # [presets.NAME]: each a [lipsync] table (validated the same way)
}


def find_config_path(explicit: str | os.PathLike[str] | None) -> Path:
    """The config file to use: ``--config`` or ``$HOTFOLDER_CONFIG``."""
    raw = explicit or os.environ.get(ENV_CONFIG)
    if not raw:
        raise ConfigError(f"no config given: pass --config PATH or set {ENV_CONFIG}")
    return Path(raw).expanduser()


def load(path: str | os.PathLike[str] | None, env: Mapping[str, str] | None = None) -> Settings:
    """Read, validate and freeze the config at ``path`` (or ``$HOTFOLDER_CONFIG``)."""
    env = os.environ if env is None else env
    cfg_path = find_config_path(path).resolve()
    try:
        raw = cfg_path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"config file {cfg_path} does not exist: create one with `hotfolder init`")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {cfg_path}: {exc.strerror}") from exc
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {cfg_path} is not valid TOML: {exc}") from exc
    return from_mapping(data, base_dir=cfg_path.parent, env=env, config_path=cfg_path)


def from_mapping(
    data: Mapping[str, Any],
    *,
    base_dir: Path,
    env: Mapping[str, str] | None = None,
    config_path: Path | None = None,
) -> Settings:
    """Validate an already-parsed config mapping (used by :func:`load` and by tests)."""
    env = os.environ if env is None else env
    for section, value in data.items():
        if section not in _SECTIONS:
            raise ConfigError(
                f"unknown section [{section}]: known sections are "
                + ", ".join(f"[{s}]" for s in _SECTIONS),
                key=section,
            )
        if not isinstance(value, dict):
            raise ConfigError(f"[{section}] must be a table", key=section)
        if section not in ("lipsync", "presets"):
            for key in value:
                if key not in _SECTIONS[section]:
                    raise ConfigError(
                        f"unknown key {section}.{key}: known keys are "
                        + ", ".join(_SECTIONS[section]),
                        key=f"{section}.{key}",
                    )

    api = _api(dict(data.get("api", {})), env, base_dir)
    folders_raw = data.get("folders", {})
    folders = Folders(**{k: _path(folders_raw, "folders", k, base_dir) for k in _SECTIONS["folders"]})
    paths = {k: getattr(folders, k) for k in _SECTIONS["folders"]}
    for a, pa in paths.items():
        for b, pb in paths.items():
            if a < b and (pa == pb or pa in pb.parents or pb in pa.parents):
                raise ConfigError(
                    f"folders.{a} ({pa}) and folders.{b} ({pb}) overlap: give each its own folder",
                    key=f"folders.{b}",
                )
    ledger_path = _path(data.get("ledger", {}), "ledger", "path", base_dir)
    ledger_raw = {k: v for k, v in data.get("ledger", {}).items() if k != "path"}
    if folders.inbox in ledger_path.parents:
        raise ConfigError(f"ledger.path ({ledger_path}) is inside the inbox: put it elsewhere "
                          "(e.g. /var/lib/hotfolder/ledger.db)", key="ledger.path")
    from hotfolder.pairing import validate_lipsync  # late: pairing is pure and optional at import

    try:
        lipsync = {**LIPSYNC_DEFAULTS, **validate_lipsync(dict(data.get("lipsync", {})), "config [lipsync]")}
    except Exception as exc:  # InputError from the shared rule table
        raise ConfigError(str(exc), key=f"lipsync.{getattr(exc, 'key', '') or ''}".rstrip(".")) from exc
    presets = presets_section(data.get("presets", {}), validate_lipsync)
    return Settings(
        api=api,
        folders=folders,
        ledger_path=ledger_path,
        ledger=numbers(LedgerSettings, ledger_raw, "ledger", zero_ok={"keep_days"}),
        watch=_watch(data.get("watch", {})),
        limits=numbers(LimitSettings, data.get("limits", {}), "limits"),
        retry=numbers(RetrySettings, data.get("retry", {}), "retry"),
        disk=numbers(DiskSettings, data.get("disk", {}), "disk"),
        server=server_section(data.get("server", {})),
        notify=notify_section(data.get("notify", {})),
        dedupe=dedupe_section(data.get("dedupe", {})),
        lipsync=lipsync,
        presets=presets,
        config_path=config_path,
    )


def _api(raw: dict[str, Any], env: Mapping[str, str], base_dir: Path) -> ApiSettings:
    for key in ("base_url", "app_id", "secret_key", "secret_key_file", "callback_url"):
        if key in raw and not isinstance(raw[key], str):
            raise ConfigError(f"api.{key} must be a string", key=f"api.{key}")
    values = {k: raw.get(k, "") for k in ("base_url", "app_id", "secret_key", "callback_url")}
    values["base_url"] = values["base_url"] or "https://open-api.chanjing.cc"
    source = "config"
    if raw.get("secret_key_file") and raw.get("secret_key"):
        raise ConfigError(
            "api.secret_key and api.secret_key_file are both set: keep one", key="api.secret_key_file"
        )
    for key, var in ENV_OVERRIDES.items():
        if env.get(var):
            values[key] = env[var]
            if key == "secret_key":
                source = "env"
    credential = Path(env[ENV_CREDENTIALS]) / CREDENTIAL_NAME if env.get(ENV_CREDENTIALS) else None
    if source != "env" and credential is not None and credential.is_file():
        # systemd's LoadCredential=: the secret never sits in the environment or the config.
        values["secret_key"] = _read_secret(credential, "api.secret_key (systemd credential)")
        source = str(credential)
    elif source != "env" and raw.get("secret_key_file"):
        # Only read when it is the secret actually used: an env override makes a missing file moot.
        secret_path = Path(raw["secret_key_file"]).expanduser()
        secret_path = secret_path if secret_path.is_absolute() else base_dir / secret_path
        values["secret_key"] = _read_secret(secret_path, "api.secret_key_file")
        source = str(secret_path)
    for key in ("app_id", "secret_key"):
        if not values[key]:
            raise ConfigError(
                f"api.{key} is not set: put it in the config or set {ENV_OVERRIDES[key]}", key=f"api.{key}"
            )
    for key in ("base_url", "callback_url"):
        if values[key]:
            parsed = urlparse(values[key])
            if parsed.scheme not in ("http", "https") or not parsed.netloc:
                raise ConfigError(
                    f"api.{key} must be an http(s) URL, got {values[key]!r}", key=f"api.{key}"
                )
    values["base_url"] = values["base_url"].rstrip("/")
    timeout = raw.get("timeout_seconds", 30.0)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 1 <= timeout <= 600:
        raise ConfigError(f"api.timeout_seconds must be a number from 1 to 600, got {timeout!r}",
                          key="api.timeout_seconds")
    return ApiSettings(**values, timeout_seconds=float(timeout), secret_source=source)


def _read_secret(path: Path, key: str) -> str:
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"{key}: cannot read {path}: {exc.strerror}; fix the path or its permissions, "
                          f"or set {ENV_OVERRIDES['secret_key']}", key="api.secret_key_file") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{key}: {path} is not UTF-8 text", key="api.secret_key_file") from exc


def _path(section: Mapping[str, Any], name: str, key: str, base_dir: Path) -> Path:
    value = section.get(key)
    if value is None:
        raise ConfigError(f"{name}.{key} is not set", key=f"{name}.{key}")
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{name}.{key} must be a non-empty path string", key=f"{name}.{key}")
    path = Path(value).expanduser()
    return (path if path.is_absolute() else base_dir / path).resolve()


def _watch(raw: Mapping[str, Any]) -> WatchSettings:
    mode = raw.get("mode", "auto")
    if not isinstance(mode, str) or mode.lower() not in WATCH_MODES:
        raise ConfigError(f"watch.mode must be one of {', '.join(WATCH_MODES)}, got {mode!r}", key="watch.mode")
    values = numbers(WatchSettings, {k: v for k, v in raw.items() if k != "mode"}, "watch")
    return WatchSettings(**{**values.__dict__, "mode": mode.lower()})
