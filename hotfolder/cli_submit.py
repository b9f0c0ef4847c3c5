"""`hotfolder submit` and `hotfolder presets`: one job from anywhere on disk, and the presets.

Thin like :mod:`hotfolder.cli`: the work is in :mod:`hotfolder.submit`.
"""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path

import click

from hotfolder import submit as submitting
from hotfolder.cli import config_option, json_option, load_settings, main, open_ledger
from hotfolder.log import configure


def _bar(progress: submitting.Progress) -> str:
    width = 24
    filled = round(width * max(0, min(100, progress.percent)) / 100)
    return f"{progress.state:<11} [{'#' * filled}{'.' * (width - filled)}] {progress.percent:>3}%  {progress.detail}"


@main.command()
@config_option
@click.argument("video", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--text", "text_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A script to speak (a .txt file).")
@click.option("--text-string", help="The script to speak, given here.")
@click.option("--audio", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Speech to lip-sync (.wav, .mp3, .m4a).")
@click.option("--preset", help="A [presets.NAME] of the config for the lip-sync parameters.")
@click.option("--out", type=click.Path(path_type=Path), help="Also copy the result here (a file or a folder).")
@click.option("--wait/--no-wait", default=True, show_default=True,
              help="Wait for the result (without a running daemon, drive the job here).")
def submit(config_path: str | None, video: Path, text_file: Path | None, text_string: str | None,
           audio: Path | None, preset: str | None, out: Path | None, wait: bool) -> None:
    """Make one video from files anywhere on disk (through the same ledger and pipeline)."""
    settings = load_settings(config_path)
    ledger = open_ledger(settings)
    job = submitting.create(settings, ledger, video.resolve(), text_file=text_file, text=text_string,
                            audio=audio, preset=preset)
    click.echo(f"job {job.id} ({job.name}) is queued", err=True)
    if not wait:
        click.echo(str(job.id))
        return
    configure("error", stream=sys.stderr)   # the progress line is the output; log only errors
    stop = threading.Event()
    tty = sys.stderr.isatty()

    def show(progress: submitting.Progress) -> None:
        if tty:
            click.echo(f"\r\033[K{_bar(progress)}", nl=False, err=True)
        else:
            click.echo(_bar(progress), err=True)

    follower = threading.Thread(target=lambda: submitting.follow(ledger, job.id, show, stop),
                                name="submit-progress", daemon=True)
    follower.start()
    from hotfolder.control import daemon_pid

    try:
        if daemon_pid(settings) is None:
            submitting.drive(settings, job.id, stop)
        follower.join()
    except KeyboardInterrupt:
        stop.set()
        follower.join(timeout=2)
        click.echo(f"\nstopped following job {job.id}; it resumes with the next `hotfolder run`", err=True)
        sys.exit(130)
    if tty:
        click.echo("", err=True)
    final = ledger.get(job.id)
    if str(final.state) != "done":
        raise click.ClickException(f"job {final.id} {final.state}: {final.error or 'no message'}")
    result = Path(final.outputs["video"])
    if out is not None:
        result = submitting.place_copy(final, out)
    click.echo(str(result))


@main.command()
@config_option
@json_option
def presets(config_path: str | None, as_json: bool) -> None:
    """List the presets ([presets.NAME]): their inbox folders and effective lip-sync values."""
    settings = load_settings(config_path)
    rows = []
    for name in sorted(settings.presets):
        _, effective = settings.preset_for(name)
        rows.append({"name": name, "folder": str(settings.folders.inbox / name),
                     "overrides": dict(settings.presets[name]), "effective": effective})
    if as_json:
        click.echo(json.dumps(rows, ensure_ascii=False, indent=2))
        return
    if not rows:
        click.echo("no presets: add [presets.NAME] tables to the config (any [lipsync] key); jobs under "
                   "inbox/NAME/ then use them")
        return
    for row in rows:
        changed = ", ".join(f"{k}={v}" for k, v in row["overrides"].items()) or "(same as [lipsync])"
        click.echo(f"{row['name']:<16} {row['folder']}\n{'':<16} {changed}")
