"""Setting up and checking an installation: `hotfolder init` and `hotfolder doctor`.

`doctor` only looks: it never creates the ledger, a folder or a lock file. It checks the
credentials themselves (a cached token proves nothing about the secret) by asking for a new
token; because issuing a token invalidates the previous one, the new token is put in the
ledger's shared token store, where a running daemon picks it up after a single refused call
(:class:`~hotfolder.locks.LedgerTokenStore`). Without a ledger no daemon can be running, and the
token is simply dropped.
"""

from __future__ import annotations

import os
import stat
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hotfolder.config import Settings
from hotfolder.errors import ApiError, AuthError, HotfolderError, PermanentError, RetryLater
from hotfolder.ledger import Ledger, filesystem_type
from hotfolder.log import scrub


class SetupError(HotfolderError):
    """`init` cannot do what was asked (the message says why and what to do)."""


@dataclass(frozen=True)
class Check:
    """One line of `doctor`: ``level`` is ``ok``, ``warn`` (worth knowing, not wrong) or ``bad``."""

    name: str
    level: str
    message: str

    @property
    def ok(self) -> bool:
        return self.level != "bad"


def secret_file_warnings(settings: Settings) -> list[str]:
    """Files holding the secret that others can read."""
    warnings = []
    candidates = []
    if settings.config_path is not None and settings.api.secret_source == "config":
        candidates.append(settings.config_path)
    if settings.api.secret_source not in ("config", "env"):
        candidates.append(Path(settings.api.secret_source))
    for path in candidates:
        try:
            mode = path.stat().st_mode
        except OSError:
            continue
        if mode & (stat.S_IRGRP | stat.S_IROTH):
            warnings.append(f"{path} holds the secret_key and is readable by others "
                            f"(mode {stat.filemode(mode)}): run `chmod 600 {path}`")
    return warnings


CONFIG_TEMPLATE = '''# hotfolder configuration. Keys and defaults: see docs/configuration.md.
# Keep this file private (chmod 600) if it holds the secret.

[api]
base_url = "https://open-api.chanjing.cc"   # env CHANJING_BASE_URL overrides
app_id = ""                                  # env CHANJING_APP_ID overrides
secret_key = ""                              # env CHANJING_SECRET_KEY overrides (or secret_key_file,
                                             # or a systemd credential named secret_key)
callback_url = ""                            # optional public URL the API POSTs to when a task ends

[folders]             # absolute paths, so this file can be moved (e.g. to /etc/hotfolder/)
inbox = {inbox}       # drop <stem>.mp4 + <stem>.txt (script) or <stem>.wav/.mp3/.m4a here
outbox = {outbox}     # <stem>.mp4 and <stem>.jpg appear here
archive = {archive}   # inputs of finished jobs
failed = {failed}     # inputs of failed jobs + <stem>.error.json

[ledger]
path = {ledger}   # must be on a local disk (not NFS/SMB)
# keep_days = 90                  # prune ended jobs older than this, daily (default: keep all)

[watch]
settle_seconds = 5    # a file must be unchanged this long before it is taken
poll_interval = 10    # seconds between remote status checks
rescan_seconds = 60   # full inbox rescan, in case a file event was missed
mode = "auto"         # auto | events | polling (auto: polling on network and FUSE filesystems)
poll_seconds = 5      # how often the inbox is listed in polling mode

[limits]
creates_per_minute = 10
file_calls_per_minute = 30
queries_per_second = 10
uploads = 2
tasks_in_flight = 10
downloads = 2

[lipsync]             # defaults; a <stem>.json sidecar overrides them per job
model = 0
# audio_man_id = "C-..."   # the voice for .txt scripts: `hotfolder voices` lists them
speed = 1.0
pitch = 1.0
volume = 100
backway = 1
drive_mode = ""
'''


def _inside_an_inbox(folder: Path, extra_configs: list[Path]) -> str | None:
    """The config whose hotfolder folders contain ``folder`` (an ancestor's hotfolder.toml, or one
    named by ``extra_configs``), as a message; None if there is none."""
    candidates = [p / "hotfolder.toml" for p in folder.parents] + extra_configs
    for cfg in candidates:
        try:
            data = tomllib.loads(cfg.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        folders = data.get("folders") if isinstance(data, dict) else None
        if not isinstance(folders, dict):
            continue
        for key in ("inbox", "outbox", "archive", "failed"):
            value = folders.get(key)
            if not isinstance(value, str) or not value:
                continue
            target = Path(value).expanduser()
            target = (target if target.is_absolute() else cfg.parent / target).resolve()
            if folder == target or target in folder.parents:
                return f"{folder} is inside the {key} folder of {cfg} ({target})"
    return None


def toml_string(text: str) -> str:
    """``text`` as a TOML basic string: quotes, backslashes and control characters escaped (a
    folder may be named anything)."""
    out = []
    for ch in text:
        if ch in ('"', "\\"):
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _render_template(folder: Path) -> str:
    """The commented config for an installation in ``folder``, with absolute paths."""
    values = {name: toml_string(f"{folder.as_posix()}/{name}") for name in ("inbox", "outbox", "archive", "failed")}
    values["ledger"] = toml_string(f"{folder.as_posix()}/state/ledger.db")
    text = CONFIG_TEMPLATE
    for name, value in values.items():
        text = text.replace("{" + name + "}", value)
    return text


def init(folder: Path, other_configs: list[Path] | None = None) -> Path:
    """Write a commented config into ``folder`` (absolute paths) and create its folders; never
    overwrites, and refuses a folder that lies inside another installation's folders."""
    folder = Path(os.path.abspath(folder.expanduser()))
    clash = _inside_an_inbox(folder, other_configs or [])
    if clash:
        raise SetupError(f"refusing to set up hotfolder here: {clash}; hotfolder would take its own files "
                         "as inputs. Choose a folder outside it")
    path = folder / "hotfolder.toml"
    text = _render_template(folder)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise SetupError(f"{os.fsdecode(folder)!r} is not a UTF-8 name, which a TOML config cannot hold: "
                         "choose a folder with a UTF-8 name") from None
    if path.exists():
        raise SetupError(f"{path} already exists; edit it, or choose another folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        for name in ("inbox", "outbox", "archive", "failed", "state"):
            (folder / name).mkdir(exist_ok=True)
    except OSError as exc:
        raise SetupError(f"cannot set up {folder}: {exc.strerror or exc} ({exc.filename or folder}); choose a "
                         "folder you can write to") from exc
    return path


def _cannot_create(path: Path) -> str | None:
    """Why ``path`` (a folder, or a file's folder, that does not exist yet) cannot be created by
    this user, or None if it can (its nearest existing ancestor is a writable folder)."""
    ancestor = next((p for p in path.parents if p.exists()), None)
    if ancestor is None or not ancestor.is_dir():
        return f"{path} cannot be created: {ancestor or path.anchor} is not a folder"
    if not os.access(ancestor, os.W_OK | os.X_OK):
        return f"{path} cannot be created: {ancestor} is not writable by this user"
    return None


def _folder_check(name: str, folder: Path) -> Check:
    from hotfolder.outbox import free_bytes

    fstype = filesystem_type(folder) or "unknown"
    if not folder.is_dir():
        if name == "inbox":
            return Check("folder inbox", "bad", f"{folder} does not exist: create it (or mount the share); "
                         "the daemon waits for it, `run --once` gives up after a short while")
        problem = _cannot_create(folder)
        if problem:
            return Check(f"folder {name}", "bad", problem)
        return Check(f"folder {name}", "warn", f"{folder} does not exist yet: the daemon creates it at start")
    if not os.access(folder, os.W_OK | os.X_OK):
        return Check(f"folder {name}", "bad", f"{folder} is not writable by this user")
    from hotfolder.mounts import describe, is_remote

    where = describe(folder) if is_remote(fstype) else f"{fstype}, local"
    return Check(f"folder {name}", "ok", f"{folder} ({where}; {free_bytes(folder) // 2**20} MiB free)")


def _credentials(settings: Settings, ledger: Ledger | None) -> tuple[Check, Any]:
    """Check the app_id/secret_key themselves; returns the check and a client for more calls."""
    from hotfolder.chanjing import ChanjingClient
    from hotfolder.locks import LedgerTokenStore
    from hotfolder.log import register_secret

    register_secret(settings.api.secret_key)
    client = ChanjingClient(settings.api.base_url, settings.api.app_id, settings.api.secret_key,
                            token_store=LedgerTokenStore(ledger) if ledger is not None else None,
                            limits=settings.limits, timeout=min(settings.api.timeout_seconds, 15.0),
                            max_retries=1)
    url = settings.api.base_url
    try:
        client.verify_credentials()
    except AuthError as exc:
        return Check("credentials", "bad", f"the API at {url} refused app_id {settings.api.app_id!r} with "
                     f"this secret_key: {scrub(str(exc))}; check both (and CHANJING_* env vars)"), client
    except PermanentError as exc:
        return Check("credentials", "bad", f"{url} does not answer like the Chanjing API ({scrub(str(exc))}): "
                     "check api.base_url; the credentials were not checked"), client
    except RetryLater as exc:
        return Check("credentials", "bad", f"cannot reach the API at {url} ({scrub(str(exc))}): check the "
                     "network, a proxy, or api.base_url; the credentials were not checked"), client
    except ApiError as exc:
        return Check("credentials", "bad", f"{url}: {scrub(str(exc))}"), client
    shared = " and shared through the ledger with a running daemon" if ledger is not None else ""
    return Check("credentials", "ok", f"the API at {url} accepted app_id {settings.api.app_id!r} and the "
                 f"secret_key (a fresh token was issued{shared})"), client


def _voice_checks(settings: Settings, client: Any) -> list[Check]:
    """Is each configured audio_man_id among the public voices? A miss is only a warning: it may
    be the account's own custom voice, which that list does not show."""
    wanted = {"[lipsync]": settings.lipsync.get("audio_man_id")}
    for name, preset in getattr(settings, "presets", {}).items():
        if preset.get("audio_man_id"):
            wanted[f"[presets.{name}]"] = preset["audio_man_id"]
    if not wanted["[lipsync]"]:
        del wanted["[lipsync]"]
    out = []
    if "[lipsync]" not in wanted:
        out.append(Check("voice", "warn", "[lipsync] audio_man_id is not set: .txt scripts need a voice "
                         "(`hotfolder voices` lists them), unless a preset or each job's .json names one"))
    if not wanted:
        return out
    try:
        public = {v.id: v for v in client.all_voices()}
    except ApiError as exc:
        return out + [Check("voice", "warn", f"could not list the public voices: {scrub(str(exc))}")]
    for where, voice in wanted.items():
        if voice in public:
            out.append(Check("voice", "ok", f"{where} audio_man_id {voice} is the public voice "
                             f"{public[voice].name or '(unnamed)'}"))
        else:
            out.append(Check("voice", "warn", f"{where} audio_man_id {voice} is not among the "
                             f"{len(public)} public voices: fine if it is your account's own custom voice, "
                             "else pick one from `hotfolder voices`"))
    return out


def doctor(settings: Settings, deep: bool = False) -> list[Check]:
    """Checks a person runs before trusting the daemon. ``deep`` adds SQLite's full integrity
    check, which reads the whole ledger (minutes on a very large one)."""
    from hotfolder.control import daemon_pid

    checks = [Check("config", "ok", f"valid ({settings.config_path})")]
    for name in ("inbox", "outbox", "archive", "failed"):
        checks.append(_folder_check(name, getattr(settings.folders, name)))
    for warning in secret_file_warnings(settings):
        checks.append(Check("secret permissions", "bad", warning))
    ledger: Ledger | None = None
    if not settings.ledger_path.exists():
        problem = _cannot_create(settings.ledger_path)
        if problem:
            checks.append(Check("ledger", "bad", f"{problem}: fix [ledger] path"))
        else:
            checks.append(Check("ledger", "ok", f"{settings.ledger_path} does not exist yet: the daemon creates it "
                                "at its first start"))
    else:
        try:
            ledger = Ledger(settings.ledger_path)
            if deep:
                integrity = ledger.integrity()
                checks.append(Check("ledger", "ok" if integrity == "ok" else "bad",
                                    f"{settings.ledger_path}: integrity {integrity}, jobs {ledger.counts() or 'none'}"))
            else:
                checks.append(Check("ledger", "ok", f"{settings.ledger_path}: opens, schema current, jobs "
                                    f"{ledger.counts() or 'none'} (`doctor --deep` checks every page)"))
        except HotfolderError as exc:
            checks.append(Check("ledger", "bad", str(exc)))
    from hotfolder import convert

    ffmpeg = convert.find_ffmpeg()
    checks.append(Check("ffmpeg", "ok", f"{ffmpeg}: mkv, avi, flac, ogg… are converted before upload") if ffmpeg
                  else Check("ffmpeg", "warn", "not found: jobs in mkv, avi, flac, ogg… fail at intake; "
                             f"{convert.install_hint()}"))
    pid = daemon_pid(settings)
    checks.append(Check("daemon", "ok", f"running (pid {pid})" if pid else "not running"))
    check, client = _credentials(settings, ledger)
    checks.append(check)
    try:
        if check.ok:
            checks.extend(_voice_checks(settings, client))
    finally:
        client.close()
    return checks
