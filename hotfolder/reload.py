"""A config reload (SIGHUP, ``systemctl reload``): what a new config may change in a running daemon.

A valid new config applies to every job not yet submitted: lip-sync defaults (the parameters of
queued jobs are computed again from the new defaults and their own ``<stem>.json``), limits,
watch settings and retry settings. What cannot change under running transfers (the API's address
and credentials, the folders, the ledger) is kept, and the log says a restart is needed for it.
Nothing here sends anything: a job whose create may already be on its way keeps its parameters.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from hotfolder.config import Settings
from hotfolder.errors import InputError
from hotfolder.ledger import Ledger
from hotfolder.log import get_logger
from hotfolder.states import State

log = get_logger("hotfolder.reload")
RESTART_ONLY = ("api", "folders", "ledger_path", "server")
NOT_YET_SUBMITTED = (State.QUEUED, State.UPLOADING, State.SUBMITTING)


def merge(old: Settings, new: Settings) -> tuple[Settings, list[str], list[str]]:
    """The settings to run with (``new``, except what needs a restart), the sections that changed
    and take effect, and those that need a restart."""
    applied, restart = [], []
    keep: dict[str, Any] = {}
    for f in dataclasses.fields(Settings):
        if f.name == "config_path" or getattr(old, f.name) == getattr(new, f.name):
            continue
        if f.name in RESTART_ONLY:
            restart.append(f.name)
            keep[f.name] = getattr(old, f.name)
        else:
            applied.append(f.name)
    return dataclasses.replace(new, **keep), applied, restart


def reparam_unsubmitted(ledger: Ledger, settings: Settings) -> int:
    """Compute the parameters of every job not yet submitted again from ``settings``; returns how
    many changed. A job whose create was already attempted keeps what it sent."""
    from hotfolder.intake import build_params

    changed = 0
    for job in ledger.jobs(NOT_YET_SUBMITTED):
        if job.create_intent_at is not None:
            continue
        try:
            params = build_params(settings, {r: Path(p) for r, p in job.files.items()
                                             if not r.startswith("extra:")}, job.name)
        except (InputError, OSError):
            continue   # the step itself will find and report it
        if params != job.params and ledger.update(job.id, job.state, event="params_reloaded", params=params):
            changed += 1
    return changed


def apply(daemon: Any, new: Settings) -> None:
    """Give a running daemon's parts a valid new config (what a restart does not need), and
    recompute the parameters of jobs not yet submitted when the defaults or presets changed."""
    from hotfolder.intake import make_preset_folders
    from hotfolder.watcher import make_watcher

    merged, applied, restart = merge(daemon.settings, new)
    daemon.settings = merged
    if daemon.listener is not None:
        daemon.listener.settings = merged   # new presets in the upload form, new defaults for retries
    daemon.pipeline.reconfigure(merged)
    daemon.poller.settings = merged
    daemon.intake.reconfigure(merged)
    daemon.notify.reconfigure(merged)
    if "watch" in applied:
        daemon.watcher.stop()
        daemon.watcher = make_watcher(merged.folders.inbox, daemon.wake, merged.watch.mode, merged.watch.poll_seconds)
        daemon.next_rescan = 0.0
    make_preset_folders(merged)
    reparams = reparam_unsubmitted(daemon.ledger, merged) if {"lipsync", "presets"} & set(applied) else 0
    log.info("config_reloaded", applied=applied, jobs_reparametrised=reparams)
    if restart:
        log.warning("reload_needs_restart", sections=restart,
                    hint="these keep their old values until `systemctl restart hotfolder`")

