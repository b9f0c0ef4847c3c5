"""The ``hotfolder`` command line: thin click commands (parse, call, print).

Library errors become :class:`click.ClickException` (exit 1); an invalid config exits 2 naming
the key, as the contract says. No SQL and no HTTP here.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from hotfolder import __version__, config, control
from hotfolder.errors import ConfigError, HotfolderError
from hotfolder.log import configure, scrub

F = TypeVar("F", bound=Callable[..., Any])


def config_option(fn: F) -> F:
    """``--config PATH`` (or $HOTFOLDER_CONFIG), shared by every command that needs a config."""
    return click.option("--config", "config_path", envvar="HOTFOLDER_CONFIG", type=click.Path(dir_okay=False),
                        help="Config file (TOML). Default: $HOTFOLDER_CONFIG.")(fn)


def json_option(fn: F) -> F:
    """``--json`` for commands that list things."""
    return click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")(fn)


def load_settings(path: str | None) -> config.Settings:
    """Load the config, exiting 2 with the key named if it is invalid."""
    try:
        return config.load(path)
    except ConfigError as exc:
        click.echo(f"hotfolder: invalid config: {exc}", err=True)
        sys.exit(2)


def open_ledger(settings: config.Settings) -> Any:
    from hotfolder.ledger import Ledger

    try:
        return Ledger(settings.ledger_path)
    except HotfolderError as exc:
        raise click.ClickException(str(exc)) from exc


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="hotfolder")
def main() -> None:
    """hotfolder: drop a video plus a script (.txt) or speech (.wav/.mp3/.m4a) into the inbox;
    get a lip-synced MP4 and its cover in the outbox."""
    # Warnings only, on stderr: stdout belongs to the command's output (e.g. --json). `run`
    # reconfigures with its own level.
    configure("warning", stream=sys.stderr)


@main.command()
@config_option
@click.option("--once", is_flag=True, help="Drive the jobs present now to done/failed, then exit "
              "(0 if all done, 1 if any failed).")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"]))
@click.option("--log-json/--log-console", default=None, help="Force JSON lines or console logs "
              "(default: console on a terminal, JSON otherwise).")
def run(config_path: str | None, once: bool, log_level: str, log_json: bool | None) -> None:
    """Run the daemon until SIGTERM/SIGINT (or, with --once, until the jobs are finished)."""
    from hotfolder.daemon import Daemon

    settings = load_settings(config_path)
    configure(log_level, json_lines=log_json)
    daemon = Daemon(settings, once=once)
    daemon.install_signal_handlers()
    try:
        code = daemon.run()
    except HotfolderError as exc:
        raise click.ClickException(scrub(str(exc))) from exc
    sys.exit(code)


def _age(iso_ts: str | None) -> str:
    if not iso_ts:
        return ""
    from datetime import datetime

    seconds = max(0, time.time() - datetime.fromisoformat(iso_ts).timestamp())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


@main.command()
@config_option
@json_option
@click.option("--state", "states", multiple=True, help="Only jobs in this state (repeatable).")
def status(config_path: str | None, as_json: bool, states: tuple[str, ...]) -> None:
    """Show the jobs: name, state, progress, age, error."""
    settings = load_settings(config_path)
    ledger = open_ledger(settings)
    rows = control.status(ledger, list(states))
    if as_json:
        click.echo(json.dumps(rows, ensure_ascii=False, indent=2))
        return
    paused = control.billing_pause(ledger)
    if paused:
        click.echo(f"! submissions paused: the account is out of balance; next check at "
                   f"{control.iso(paused)}. Top up, and it resumes by itself.")
    if not rows:
        click.echo("no jobs yet: drop <name>.mp4 plus <name>.txt or <name>.wav into "
                   f"{settings.folders.inbox}")
        return
    name_w = min(48, max(len("NAME"), *(len(r["name"]) for r in rows)))
    click.echo(f"{'ID':>4}  {'NAME':<{name_w}}  {'STATE':<11}  {'PROG':>4}  {'AGE':>4}  ERROR")
    for r in rows:
        name = r["name"] if len(r["name"]) <= name_w else "…" + r["name"][-(name_w - 1):]
        prog = f"{r['progress']}%" if r["state"] in ("generating", "downloading", "done") else ""
        click.echo(f"{r['id']:>4}  {name:<{name_w}}  {r['state']:<11}  {prog:>4}  {_age(r['created_at']):>4}  "
                   f"{r['error'] or ''}")


@main.command()
@config_option
@json_option
@click.argument("job")
def show(config_path: str | None, as_json: bool, job: str) -> None:
    """Show one job (by id or name) and its event history."""
    settings = load_settings(config_path)
    ledger = open_ledger(settings)
    try:
        found = control.find_job(ledger, job)
    except HotfolderError as exc:
        raise click.ClickException(str(exc)) from exc
    record = control.job_record(found)
    events = [{**e, "at": control.iso(e["at"])} for e in ledger.events(found.id)]
    if as_json:
        click.echo(json.dumps({**record, "events": events}, ensure_ascii=False, indent=2))
        return
    for key, value in record.items():
        if value not in (None, {}, ""):
            click.echo(f"{key:>15}: {value}")
    click.echo("         events:")
    for e in events:
        move = f"{e['from_state'] or ''} -> {e['to_state']}" if e["to_state"] and e["from_state"] != e["to_state"] else ""
        detail = json.dumps(e["detail"], ensure_ascii=False) if e["detail"] else ""
        click.echo(f"  {e['at']}  {e['kind']:<16} {move:<26} {detail}")


@main.command()
@config_option
@click.argument("job")
def retry(config_path: str | None, job: str) -> None:
    """Put a failed (or cancelled) job back in the queue."""
    settings = load_settings(config_path)
    try:
        found = control.retry(open_ledger(settings), settings, job)
    except HotfolderError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"job {found.id} ({found.name}) is queued again")


@main.command()
@config_option
@click.argument("job")
def cancel(config_path: str | None, job: str) -> None:
    """Cancel a job; its inputs move to the failed folder."""
    settings = load_settings(config_path)
    try:
        found = control.cancel(open_ledger(settings), settings, job)
    except HotfolderError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"job {found.id} ({found.name}) is cancelled")


@main.command()
@click.argument("folder", default=".", type=click.Path(file_okay=False))
def init(folder: str) -> None:
    """Write a commented hotfolder.toml into FOLDER and create its folders."""
    try:
        path = control.init(Path(folder))
    except HotfolderError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"wrote {path}; set [api] app_id and secret_key (or the CHANJING_* env vars), "
               f"then `hotfolder doctor --config {path}`")


@main.command()
@config_option
def doctor(config_path: str | None) -> None:
    """Check the config, folders, ledger, credentials and secret file permissions."""
    settings = load_settings(config_path)
    results = control.doctor(settings)
    for name, ok, message in results:
        click.echo(f"{'ok ' if ok else 'BAD'}  {name:<20} {message}")
    if not all(ok for _, ok, _ in results):
        sys.exit(1)


@main.command()
@config_option
@json_option
def voices(config_path: str | None, as_json: bool) -> None:
    """List the public voices (the audio_man_id for .txt scripts)."""
    from hotfolder.daemon import make_client

    settings = load_settings(config_path)
    ledger = open_ledger(settings)
    client = make_client(settings, ledger)
    try:
        found = client.all_voices()
    except HotfolderError as exc:
        raise click.ClickException(scrub(str(exc))) from exc
    finally:
        client.close()
    rows = [{k: getattr(v, k, None) for k in ("id", "name", "gender", "lang", "desc", "audition")} for v in found]
    if as_json:
        click.echo(json.dumps(rows, ensure_ascii=False, indent=2))
        return
    for r in rows:
        click.echo(f"{r['id']:<38} {r['name'] or '':<16} {r['gender'] or '':<8} {r['lang'] or '':<8} {r['desc'] or ''}")


@main.command()
@config_option
@click.argument("path")
def explain(config_path: str | None, path: str) -> None:
    """Say why a file in the inbox has not been taken yet."""
    settings = load_settings(config_path)
    result = control.explain(settings, open_ledger(settings), path)
    click.echo(f"{result.path}: {result.verdict}: {result.message}")


def _sandbox_options(fn: F) -> F:
    from hotfolder.sandbox.settings import cli_options

    for opt in reversed(cli_options()):
        if opt["type"] is bool:
            fn = click.option(f"{opt['flag']}/--no-{opt['flag'][2:]}", opt["name"], default=None,
                              help=opt["help"])(fn)
        else:
            fn = click.option(opt["flag"], opt["name"], type=opt["type"], default=None,
                              help=f"{opt['help']} [default: {opt['default']}]")(fn)
    return fn


@main.command()
@click.option("--port", type=int, default=8765, show_default=True, help="Port on 127.0.0.1.")
@click.option("--data", "data_dir", required=True, type=click.Path(file_okay=False),
              help="Folder for uploaded files and the emulator's state.")
@click.option("--app-id", default="sandbox", show_default=True)
@click.option("--secret-key", default="sandbox", show_default=True)
@_sandbox_options
def sandbox(port: int, data_dir: str, app_id: str, secret_key: str, **settings: Any) -> None:
    """Run the local emulator of the Chanjing API on 127.0.0.1:PORT until stopped."""
    from hotfolder.sandbox import serve_forever
    from hotfolder.sandbox.settings import settings_from_mapping

    given = {k: v for k, v in settings.items() if v is not None}
    try:
        parsed = settings_from_mapping(given)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc
    serve_forever(port, Path(data_dir), app_id, secret_key, parsed)


if __name__ == "__main__":  # pragma: no cover
    main()
