"""The ``hotfolder`` command line: thin click commands (parse, call, print).

Library errors become :class:`click.ClickException` (exit 1); an invalid config exits 2 naming
the key, as the contract says. No SQL and no HTTP here.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
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


def _stream_json(batches: Any) -> None:
    """Batches of JSON texts as one JSON array, an object per line: memory stays flat and a
    million jobs take seconds, not minutes."""
    out = sys.stdout
    first = True
    for batch in batches:
        if not batch:
            continue
        out.write(("[" if first else ",") + "\n,".join(batch) + "\n")
        first = False
    out.write("[]\n" if first else "]\n")
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
    record["preset"] = control.preset_of(settings, found)
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


# The other commands live in their own modules (this one stays thin); importing them registers them.
from hotfolder import cli_admin, cli_submit  # noqa: E402,F401


if __name__ == "__main__":  # pragma: no cover
    main()
