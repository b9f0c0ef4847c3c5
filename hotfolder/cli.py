"""The ``hotfolder`` command line: thin click commands (parse, call, print).

Library errors become :class:`click.ClickException` (exit 1); an invalid config exits 2 naming
the key, as the contract says. No SQL and no HTTP here.
"""

from __future__ import annotations

import errno
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from hotfolder import __version__, config, control
from hotfolder.errors import ConfigError, HotfolderError
from hotfolder.log import configure, quiet_broken_pipe, scrub
from hotfolder.textwidth import clip_left, display_width, pad

F = TypeVar("F", bound=Callable[..., Any])


def config_option(fn: F) -> F:
    """``--config PATH`` (or $HOTFOLDER_CONFIG), shared by every command that needs a config."""
    return click.option("--config", "config_path", envvar="HOTFOLDER_CONFIG", type=click.Path(dir_okay=False),
                        help="Config file (TOML). Default: $HOTFOLDER_CONFIG.")(fn)


def json_option(fn: F) -> F:
    """``--json`` for commands that list things."""
    return click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")(fn)


def load_settings(path: str | None) -> config.Settings:
    """Load the config, exiting 2 with the file and the key named if it is invalid."""
    try:
        return config.load(path)
    except ConfigError as exc:
        message = str(exc)
        try:
            where = str(config.find_config_path(path).resolve())
        except (ConfigError, OSError, RuntimeError):
            where = ""
        prefix = f"invalid config {where}" if where and where not in message else "invalid config"
        click.echo(f"hotfolder: {prefix}: {message}", err=True)
        sys.exit(2)


def open_ledger(settings: config.Settings, must_exist: bool = False) -> Any:
    """The ledger; with ``must_exist``, a read-only command on a fresh install says so instead of
    creating one."""
    from hotfolder.ledger import Ledger

    if must_exist and not settings.ledger_path.exists():
        raise click.ClickException(f"no ledger yet at {settings.ledger_path}: no job was ever recorded "
                                   "(start `hotfolder run`)")
    return Ledger(settings.ledger_path)


def _os_error_message(exc: OSError) -> str:
    """An OSError as one line a person can act on: what failed, on which file."""
    what = exc.strerror or str(exc) or type(exc).__name__
    files = [str(f) for f in (exc.filename, getattr(exc, "filename2", None)) if f]
    return f"{what} ({' -> '.join(files)})" if files else what


class Group(click.Group):
    """Library errors become click errors here, in one place: a message, never a traceback.

    An OSError that escaped a command (a folder that cannot be made, a full disk) is said in one
    line too. Anything else is a bug: one line that says so, and the traceback only when
    ``HOTFOLDER_DEBUG`` is set (for the bug report)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except HotfolderError as exc:
            raise click.ClickException(scrub(str(exc))) from exc
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except OSError as exc:
            if isinstance(exc, BrokenPipeError):
                raise
            raise click.ClickException(scrub(_os_error_message(exc))) from exc
        except Exception as exc:
            if os.environ.get("HOTFOLDER_DEBUG"):
                raise
            if ctx.invoked_subcommand == "run":
                # The daemon's operators read its logs (the journal): the traceback goes there.
                from hotfolder.log import get_logger

                get_logger("hotfolder.cli").exception("daemon_crashed")
            raise click.ClickException(
                f"internal error: {type(exc).__name__}: {scrub(str(exc))} - this is a bug in hotfolder; please "
                "report it (run again with HOTFOLDER_DEBUG=1 for the traceback)") from exc


def _flush_output() -> None:
    """Flush the command's output while click still runs, so a reader that went away
    (`hotfolder status | head -1`) is handled here, once: stdout goes to /dev/null and the command
    exits 1, instead of the interpreter's last flush printing "Exception ignored … BrokenPipeError"."""
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        quiet_broken_pipe()
        sys.exit(1)


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="hotfolder")
def main() -> None:
    """hotfolder: drop a video plus a script (.txt) or speech (.wav/.mp3/.m4a) into the inbox;
    get a lip-synced MP4 and its cover in the outbox."""
    # Warnings only, on stderr: stdout belongs to the command's output (e.g. --json). `run`
    # reconfigures with its own level.
    configure("warning", stream=sys.stderr)
    click.get_current_context().call_on_close(_flush_output)


@main.command()
@config_option
@click.option("--once", is_flag=True, help="Drive the jobs present now to done/failed, then exit "
              "(0 all done, 1 any failed, 3 the inbox is missing).")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False))
@click.option("--log-json/--log-console", default=None, help="Force JSON lines or console logs "
              "(default: console on a terminal, JSON otherwise; colours only on a terminal without NO_COLOR).")
def run(config_path: str | None, once: bool, log_level: str, log_json: bool | None) -> None:
    """Run the daemon until SIGTERM/SIGINT (or, with --once, until the jobs are finished)."""
    from hotfolder.daemon import Daemon

    settings = load_settings(config_path)
    configure(log_level.lower(), json_lines=log_json)
    from hotfolder.sdnotify import Notifier

    daemon = Daemon(settings, once=once, notifier=Notifier.from_environ(unset=True))
    daemon.install_signal_handlers()
    sys.exit(daemon.run())


def _age(iso_ts: str | None, now: float) -> str:
    if not iso_ts:
        return ""
    from datetime import datetime

    seconds = max(0, now - datetime.fromisoformat(iso_ts).timestamp())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


def _local(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def _table(rows: list[dict[str, Any]], now: float, trouble: dict[str, Any] | None) -> None:
    name_w = min(48, max(len("NAME"), *(display_width(r["name"]) for r in rows)))
    click.echo(f"{'ID':>6}  {pad('NAME', name_w)}  {'STATE':<11}  {'PROG':>4}  {'AGE':>4}  ERROR")
    for r in rows:
        name = r["name"] if display_width(r["name"]) <= name_w else "…" + clip_left(r["name"], name_w - 1)
        prog = f"{r['progress']}%" if r["state"] in ("generating", "downloading", "done") else ""
        error = r["error"] or ""
        if not error and trouble and r["state"] in ("generating", "submitting", "uploading", "downloading"):
            error = f"(held up: {trouble['kind'].replace('_', ' ')})"
        click.echo(f"{r['id']:>6}  {pad(name, name_w)}  {r['state']:<11}  {prog:>4}  {_age(r['created_at'], now):>4}  "
                   f"{error}")


@main.command()
@config_option
@json_option
@click.option("--state", "states", multiple=True, help="Only jobs in this state (repeatable, case-insensitive).")
@click.option("--limit", type=click.IntRange(min=1), default=None,
              help="At most N jobs (default: every unfinished job and the last 20 ended ones; --json: all).")
@click.option("--all", "show_all", is_flag=True, help="Every job ever recorded, oldest first (streamed).")
def status(config_path: str | None, as_json: bool, states: tuple[str, ...], limit: int | None,
           show_all: bool) -> None:
    """Show the jobs: unfinished ones, the most recent ended ones, totals per state."""
    settings = load_settings(config_path)
    wanted = control.parse_states(states)
    if not settings.ledger_path.exists():
        if as_json:
            click.echo("[]")
        else:
            click.echo(f"no jobs yet: drop <name>.mp4 plus <name>.txt or <name>.wav into {settings.folders.inbox}")
        return
    ledger = open_ledger(settings)
    if as_json:
        _stream_json(control.iter_status_json(ledger, wanted or None, limit))
        return
    if show_all:
        rows = control.iter_status(ledger, wanted or None, limit)
        batch: list[dict[str, Any]] = []
        now = time.time()
        for row in rows:
            batch.append(row)
            if len(batch) == 1000:
                _table(batch, now, None)
                batch = []
        if batch:
            _table(batch, now, None)
        return
    now = time.time()
    view = control.overview(ledger, wanted or None, limit or 20, now=now)
    if view.pause:
        said = f" (the API said: {view.pause['reason']})" if view.pause["reason"] else ""
        click.echo(f"! submissions paused: the account is out of balance or over a quota{said}; next try at "
                   f"{_local(view.pause['until'])}. Top up, then `hotfolder resume` (or wait).")
    if view.trouble:
        click.echo(f"! API trouble since {_local(view.trouble['since'])}: {view.trouble['message']}; jobs wait and "
                   "retry by themselves.")
    rows = view.unfinished + view.recent
    if not rows:
        if view.totals:
            click.echo("no jobs match" + (f" --state {','.join(states)}" if states else ""))
        else:
            click.echo("no jobs yet: drop <name>.mp4 plus <name>.txt or <name>.wav into "
                       f"{settings.folders.inbox}")
    else:
        _table(rows, now, view.trouble)
    if view.hidden_ended:
        click.echo(f"… {view.hidden_ended} older ended jobs not shown (--all, --state S, --limit N)")
    total = sum(view.totals.values())
    order = [str(s) for s in control.State]
    parts = [f"{view.totals[k]} {k}" for k in sorted(view.totals, key=order.index) if view.totals[k]]
    click.echo(f"total {total}: {', '.join(parts) or 'none'}")


def _stream_json(rows: Any) -> None:
    """JSON texts as one JSON array, an object per line, written in batches: memory stays flat
    and a million jobs take seconds, not minutes."""
    out = sys.stdout
    sep = "["
    batch: list[str] = []
    for row in rows:
        batch.append(sep + row)
        sep = ","
        if len(batch) >= 2000:
            out.write("\n".join(batch) + "\n")
            batch = []
    batch.append("]" if sep == "," else "[]")
    out.write("\n".join(batch) + "\n")
    out.flush()


@main.command()
@config_option
@json_option
@click.argument("job")
def show(config_path: str | None, as_json: bool, job: str) -> None:
    """Show one job (by id, name, file name or stem) with its parameters and event history."""
    settings = load_settings(config_path)
    ledger = open_ledger(settings, must_exist=True)
    found = control.find_job(ledger, job)
    record = control.job_record(found)
    params = control.sent_params(found)
    events = [{**e, "at": control.iso(e["at"])} for e in ledger.events(found.id)]
    if as_json:
        click.echo(json.dumps({**record, "params": params, "events": events}, ensure_ascii=False, indent=2))
        return
    for key, value in record.items():
        if value not in (None, {}, ""):
            click.echo(f"{key:>15}: {value}")
    for key, value in params.items():
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
    found = control.retry(open_ledger(settings, must_exist=True), settings, job)
    click.echo(f"job {found.id} ({found.name}) is queued again")


@main.command()
@config_option
@click.argument("job")
def cancel(config_path: str | None, job: str) -> None:
    """Cancel a job; its inputs move to the failed folder."""
    settings = load_settings(config_path)
    found = control.cancel(open_ledger(settings, must_exist=True), settings, job)
    click.echo(f"job {found.id} ({found.name}) is cancelled")


@main.command()
@config_option
def resume(config_path: str | None) -> None:
    """Lift a billing/quota pause now (after a top-up) and try every waiting job at once."""
    settings = load_settings(config_path)
    result = control.resume(open_ledger(settings, must_exist=True), settings)
    was = "submissions resumed" if result["was_paused"] else "submissions were not paused"
    click.echo(f"{was}; {result['jobs_due_now']} waiting job(s) will be tried now")


@main.command()
@config_option
@json_option
@click.option("--days", type=click.IntRange(1, 366), default=14, show_default=True, help="How many days back.")
def stats(config_path: str | None, as_json: bool, days: int) -> None:
    """Jobs per day, failures by code, time per stage, seconds of video produced, per folder."""
    settings = load_settings(config_path)
    if not settings.ledger_path.exists():
        raise click.ClickException(f"no ledger yet at {settings.ledger_path}: nothing was made yet")
    data = control.stats(open_ledger(settings), days=days)
    if as_json:
        click.echo(json.dumps(data, ensure_ascii=False, indent=2))
        return
    t = data["totals"]
    click.echo(f"last {days} days: {t['done']} done, {t['failed']} failed, {t['cancelled']} cancelled; "
               f"{data['video_seconds'] / 60:.1f} minutes of video made")
    peak = max([sum(d.values()) for d in data["per_day"].values()] + [1])
    for day, counts in data["per_day"].items():
        n = sum(counts.values())
        bar = "#" * round(30 * counts["done"] / peak) + "x" * round(30 * (counts["failed"] + counts["cancelled"]) / peak)
        click.echo(f"  {day}  {counts['done']:>5} done {counts['failed']:>4} failed  {bar}" if n else f"  {day}      -")
    if data["failures_by_code"]:
        click.echo("failures by code: " + ", ".join(f"{k} {v}" for k, v in data["failures_by_code"].items()))
    for stage, figures in data["stage_seconds"].items():
        if figures["count"]:
            click.echo(f"  {stage:<10} median {figures['median_s']:.1f} s, p90 {figures['p90_s']:.1f} s "
                       f"({figures['count']} jobs)")
    if len(data["per_folder"]) > 1 or "(top)" not in data["per_folder"]:
        click.echo("per folder:")
        for folder, f in data["per_folder"].items():
            click.echo(f"  {folder:<20} {int(f['done'])} done, {int(f['failed'])} failed, "
                       f"{f['video_seconds'] / 60:.1f} min of video")
    totals = ", ".join(f"{n} {s}" for s, n in sorted(data["all_time"].items()))
    click.echo(f"all time: {totals or 'nothing yet'}")


@main.command()
@config_option
@click.option("--older-than", required=True, help="Age of ended jobs to delete, e.g. 90d, 12h, 2w.")
@click.option("--vacuum", is_flag=True, help="Then VACUUM the ledger to give the space back to the disk.")
def prune(config_path: str | None, older_than: str, vacuum: bool) -> None:
    """Delete ended jobs (and their events) older than --older-than; never an unfinished job."""
    settings = load_settings(config_path)
    control.parse_age(older_than)   # a typo is said as such, before anything else
    removed = control.prune_history(open_ledger(settings, must_exist=True), older_than, vacuum=vacuum)
    click.echo(f"deleted {removed['jobs']} ended job(s) and {removed['events']} event(s)"
               + (" and vacuumed the ledger" if vacuum else ""))


@main.command()
@click.argument("folder", default=".", type=click.Path(file_okay=False))
def init(folder: str) -> None:
    """Write a commented hotfolder.toml into FOLDER and create its folders."""
    from hotfolder.doctor import init as do_init

    others = [Path(os.environ["HOTFOLDER_CONFIG"])] if os.environ.get("HOTFOLDER_CONFIG") else []
    import shlex

    path = do_init(Path(folder), others)
    click.echo(f"wrote {path}; set [api] app_id and secret_key (or the CHANJING_* env vars), "
               f"then `hotfolder doctor --config {shlex.quote(str(path))}`")


@main.command()
@config_option
@click.option("--deep", is_flag=True, help="Also run SQLite's full integrity check (reads the whole ledger).")
def doctor(config_path: str | None, deep: bool) -> None:
    """Check the config, folders, ledger, credentials, voices and secret file permissions."""
    from hotfolder.doctor import doctor as checks

    settings = load_settings(config_path)
    results = checks(settings, deep=deep)
    for check in results:
        label = {"ok": "ok", "warn": "warn", "bad": "BAD"}[check.level]
        click.echo(f"{label:<4} {check.name:<20} {check.message}")
    if not all(check.ok for check in results):
        sys.exit(1)


@main.command()
@config_option
@json_option
def voices(config_path: str | None, as_json: bool) -> None:
    """List the public voices (the audio_man_id for .txt scripts)."""
    from hotfolder.daemon import make_client

    from hotfolder.errors import ApiError

    settings = load_settings(config_path)
    # A person is waiting: one retry, not the daemon's patience.
    client = make_client(settings, open_ledger(settings), max_retries=1)
    try:
        found = client.all_voices()
    except ApiError as exc:
        raise click.ClickException(f"cannot list the voices at {settings.api.base_url}: {scrub(str(exc))}") from exc
    finally:
        client.close()
    rows = [{k: getattr(v, k, None) for k in ("id", "name", "gender", "lang", "desc", "audition")} for v in found]
    if as_json:
        click.echo(json.dumps(rows, ensure_ascii=False, indent=2))
        return
    cols = [("id", "AUDIO_MAN_ID"), ("name", "NAME"), ("gender", "GENDER"), ("lang", "LANG"), ("desc", "DESCRIPTION")]
    widths = {k: max([display_width(h)] + [display_width(str(r[k] or "")) for r in rows]) for k, h in cols[:-1]}
    click.echo("  ".join(pad(h, widths[k]) for k, h in cols[:-1]) + "  " + cols[-1][1])
    for r in rows:
        click.echo("  ".join(pad(str(r[k] or ""), widths[k]) for k, _ in cols[:-1]) + "  " + str(r["desc"] or ""))
    click.echo(f"{len(rows)} voices; put one in [lipsync] audio_man_id")


@main.command()
@config_option
@click.argument("path")
def explain(config_path: str | None, path: str) -> None:
    """Say why a file in the inbox has not been taken yet."""
    settings = load_settings(config_path)
    # Only looks: on a fresh install there is no ledger yet, and explaining must not create one.
    ledger = open_ledger(settings) if settings.ledger_path.exists() else None
    result = control.explain(settings, ledger, path)
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
@click.option("--port", type=click.IntRange(0, 65535), default=8765, show_default=True,
              help="Port on 127.0.0.1 (0: any free port).")
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
    in_use = click.ClickException(f"port {port} on 127.0.0.1 is already in use: stop what listens there, "
                                  "or pick another with --port")
    if port:
        # Said before anything starts (and so before anything says it stopped).
        import socket

        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)   # as the server will
            try:
                probe.bind(("127.0.0.1", port))
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise in_use from exc
    try:
        Path(data_dir).mkdir(parents=True, exist_ok=True)
        serve_forever(port, Path(data_dir), app_id, secret_key, parsed)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise in_use from exc
        raise click.ClickException(f"cannot run the sandbox: {exc.strerror or exc} "
                                   f"({exc.filename or data_dir})") from exc


if __name__ == "__main__":  # pragma: no cover
    main()
