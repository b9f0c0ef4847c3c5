"""The admin commands of the ``hotfolder`` CLI: stats, prune, presets, init, doctor, voices,
explain, sandbox. Thin like :mod:`hotfolder.cli`, whose group, options and error handling they use.
"""

from __future__ import annotations

import errno
import json
import os
import sys
from pathlib import Path
from typing import Any

import click

from hotfolder import control
from hotfolder.cli import F, config_option, json_option, load_settings, main, open_ledger
from hotfolder.log import scrub
from hotfolder.textwidth import display_width, pad


def _length(seconds: float) -> str:
    """A video length a person reads at a glance: 42 s, 3.5 min, 2.1 h."""
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


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
               f"{_length(data['video_seconds'])} of video made")
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
                       f"{_length(f['video_seconds'])} of video")
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
