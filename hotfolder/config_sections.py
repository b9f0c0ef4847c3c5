"""The newer config sections: the listener (``[server]``), notifications (``[notify]``),
duplicates (``[dedupe]``) and presets (``[presets.NAME]``), and the number checks every section
shares. Split from :mod:`hotfolder.config` (which re-exports them): each parser validates one
section and raises :class:`~hotfolder.errors.ConfigError` naming the key.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

from hotfolder.errors import ConfigError


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


def server_section(raw: Mapping[str, Any]) -> ServerSettings:
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


def notify_section(raw: Mapping[str, Any]) -> NotifySettings:
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
    values = numbers(NotifySettings, {k: v for k, v in raw.items() if k in ("timeout_seconds", "give_up_hours")},
                       "notify")
    return NotifySettings(webhook=webhook, webhook_secret=raw.get("webhook_secret", ""), exec=lists["exec"],
                          apprise=lists["apprise"], events=lists["events"],
                          timeout_seconds=values.timeout_seconds, give_up_hours=values.give_up_hours)


def presets_section(raw: Any, validate: Any) -> dict[str, dict[str, Any]]:
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


def dedupe_section(raw: Mapping[str, Any]) -> DedupeSettings:
    mode = raw.get("mode", "reuse")
    if not isinstance(mode, str) or mode.lower() not in DEDUPE_MODES:
        raise ConfigError(f"dedupe.mode must be \"reuse\" (the same drop again reuses the result) or \"again\" "
                          f"(always pay for a new video), got {mode!r}", key="dedupe.mode")
    return DedupeSettings(mode=mode.lower())


def numbers(cls: type, raw: Mapping[str, Any], section: str, zero_ok: frozenset[str] | set[str] = frozenset()) -> Any:
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
