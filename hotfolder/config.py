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
class ServerSettings:
    listen: str = "127.0.0.1:8750"     # "" turns the listener off
    token: str = field(default="", repr=False)

    @property
    def host_port(self) -> tuple[str, int] | None:
        """(host, port) to bind, or None when the listener is off."""
        return parse_listen(self.listen) if self.listen else None

    @property
    def loopback(self) -> bool:
        hp = self.host_port
        return hp is not None and is_loopback(hp[0])


NOTIFY_EVENTS = ("done", "failed", "paused", "resumed")


@dataclass(frozen=True)
class NotifySettings:
    webhook: str = ""
    webhook_secret: str = field(default="", repr=False)
    exec: tuple[str, ...] = ()
    apprise: tuple[str, ...] = field(default=(), repr=False)   # URLs may hold passwords
    events: tuple[str, ...] = NOTIFY_EVENTS
    timeout_seconds: float = 10.0       # per delivery attempt (webhook request, exec run)
    give_up_hours: float = 24.0         # a receiver failing this long is given up on

    def targets(self, kind: str) -> tuple[str, ...]:
        """The configured targets that want events of ``kind``."""
        if kind not in self.events:
            return ()
        return tuple(t for t, on in (("webhook", self.webhook), ("exec", self.exec), ("apprise", self.apprise)) if on)


DEDUPE_MODES = ("reuse", "again")


@dataclass(frozen=True)
class DedupeSettings:
    mode: str = "reuse"     # reuse: the same inputs and parameters again reuse the earlier result


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
    presets = _presets(data.get("presets", {}), validate_lipsync)
    return Settings(
        api=api,
        folders=folders,
        ledger_path=ledger_path,
        ledger=_numbers(LedgerSettings, ledger_raw, "ledger", zero_ok={"keep_days"}),
        watch=_watch(data.get("watch", {})),
        limits=_numbers(LimitSettings, data.get("limits", {}), "limits"),
        retry=_numbers(RetrySettings, data.get("retry", {}), "retry"),
        disk=_numbers(DiskSettings, data.get("disk", {}), "disk"),
        server=_server(data.get("server", {})),
        notify=_notify(data.get("notify", {})),
        dedupe=_dedupe(data.get("dedupe", {})),
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


def parse_listen(value: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port``) as (host, port); ValueError when it is not that."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{value!r} is not host:port")
    return host.strip("[]"), int(port)


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback name or address (127.0.0.0/8, ::1, localhost)."""
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _server(raw: Mapping[str, Any]) -> ServerSettings:
    listen = raw.get("listen", ServerSettings.listen)
    token = raw.get("token", "")
    if not isinstance(listen, str):
        raise ConfigError("server.listen must be a string like \"127.0.0.1:8750\" (or \"\" for off)",
                          key="server.listen")
    if not isinstance(token, str):
        raise ConfigError("server.token must be a string", key="server.token")
    settings = ServerSettings(listen=listen.strip(), token=token)
    if settings.listen:
        try:
            parse_listen(settings.listen)
        except ValueError:
            raise ConfigError(f"server.listen must be host:port (e.g. 127.0.0.1:8750 or 0.0.0.0:8750), got "
                              f"{listen!r}", key="server.listen") from None
        if not settings.loopback and len(token) < 16:
            raise ConfigError(f"server.token is required (16 characters or more) when server.listen ({listen}) "
                              "is not a loopback address: anyone on the network could steer the daemon. "
                              "Generate one with `python3 -c 'import secrets; print(secrets.token_urlsafe(24))'`",
                              key="server.token")
    return settings


def _notify(raw: Mapping[str, Any]) -> NotifySettings:
    for key in ("webhook", "webhook_secret"):
        if key in raw and not isinstance(raw[key], str):
            raise ConfigError(f"notify.{key} must be a string", key=f"notify.{key}")
    webhook = raw.get("webhook", "")
    if webhook:
        parsed = urlparse(webhook)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ConfigError(f"notify.webhook must be an http(s) URL, got {webhook!r}", key="notify.webhook")
    lists: dict[str, tuple[str, ...]] = {}
    for key in ("exec", "apprise", "events"):
        value = raw.get(key, list(NOTIFY_EVENTS) if key == "events" else [])
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise ConfigError(f"notify.{key} must be a list of strings", key=f"notify.{key}")
        lists[key] = tuple(value)
    unknown = [e for e in lists["events"] if e not in NOTIFY_EVENTS]
    if unknown:
        raise ConfigError(f"notify.events: unknown event {unknown[0]!r}; the events are {', '.join(NOTIFY_EVENTS)}",
                          key="notify.events")
    numbers = _numbers(NotifySettings, {k: v for k, v in raw.items() if k in ("timeout_seconds", "give_up_hours")},
                       "notify")
    return NotifySettings(webhook=webhook, webhook_secret=raw.get("webhook_secret", ""), exec=lists["exec"],
                          apprise=lists["apprise"], events=lists["events"],
                          timeout_seconds=numbers.timeout_seconds, give_up_hours=numbers.give_up_hours)


def _presets(raw: Any, validate: Any) -> dict[str, dict[str, Any]]:
    """``[presets.NAME]`` tables: NAME is a folder name directly under the inbox, each table any
    ``[lipsync]`` key."""
    from hotfolder.pairing import is_ignored

    out: dict[str, dict[str, Any]] = {}
    for name, table in raw.items():
        key = f"presets.{name}"
        if not isinstance(table, dict):
            raise ConfigError(f"[{key}] must be a table of [lipsync] keys", key=key)
        if not name or "/" in name or "\\" in name or name in (".", "..") or is_ignored(f"{name}/x") is not None:
            raise ConfigError(f"[{key}]: {name!r} cannot be a folder name in the inbox (no slashes, not hidden, "
                              "not a NAS/OS special folder)", key=key)
        try:
            out[name] = validate(dict(table), f"config [{key}]")
        except Exception as exc:  # InputError from the shared rule table
            raise ConfigError(str(exc), key=f"{key}.{getattr(exc, 'key', '') or ''}".rstrip(".")) from exc
    return out


def _dedupe(raw: Mapping[str, Any]) -> DedupeSettings:
    mode = raw.get("mode", "reuse")
    if not isinstance(mode, str) or mode.lower() not in DEDUPE_MODES:
        raise ConfigError(f"dedupe.mode must be \"reuse\" (the same drop again reuses the result) or \"again\" "
                          f"(always pay for a new video), got {mode!r}", key="dedupe.mode")
    return DedupeSettings(mode=mode.lower())


def _watch(raw: Mapping[str, Any]) -> WatchSettings:
    mode = raw.get("mode", "auto")
    if not isinstance(mode, str) or mode.lower() not in WATCH_MODES:
        raise ConfigError(f"watch.mode must be one of {', '.join(WATCH_MODES)}, got {mode!r}", key="watch.mode")
    numbers = _numbers(WatchSettings, {k: v for k, v in raw.items() if k != "mode"}, "watch")
    return WatchSettings(**{**numbers.__dict__, "mode": mode.lower()})


def _numbers(cls: type, raw: Mapping[str, Any], section: str, zero_ok: frozenset[str] | set[str] = frozenset()) -> Any:
    """Build a dataclass of positive numbers, checking each value's type and sign."""
    out: dict[str, Any] = {}
    for name, f in cls.__dataclass_fields__.items():
        if name not in raw or f.type in ("str", str) or "tuple" in str(f.type):
            continue
        value = raw[name]
        want_int = f.type in ("int", int)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (want_int and not isinstance(value, int)):
            kind = "a whole number" if want_int else "a number"
            raise ConfigError(f"{section}.{name} must be {kind}, got {value!r}", key=f"{section}.{name}")
        if value <= 0 and not ((section == "disk" or name in zero_ok) and value == 0):
            raise ConfigError(f"{section}.{name} must be greater than 0, got {value!r}", key=f"{section}.{name}")
        out[name] = value
    return cls(**out)
