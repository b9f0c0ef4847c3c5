"""The outcomes of a job that cannot go on as planned: fail, defer (retry later), pause for billing.

Unit tests of :class:`hotfolder.outcomes.Outcomes` on a real ledger and real folders, with a
FakeClock and a seeded random generator: no API, no daemon.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from helpers import FakeClock, write_config
from hotfolder import config
from hotfolder.errors import (AuthError, BillingPaused, FileRejected, InputError, PermanentError, RateLimited,
                              RetryLater)
from hotfolder.ledger import Job, Ledger
from hotfolder.outcomes import BILLING_KEY, PAUSE_REASON_KEY, Outcomes, lift_pause, pause_reason, paused_until
from hotfolder.retry import JOB_BACKOFF
from hotfolder.states import State

WEBHOOK = "http://127.0.0.1:9/hook"


class World:
    """Settings, folders, a ledger and an Outcomes on a FakeClock."""

    def __init__(self, root: Path, seed: int = 1234, **sections: dict[str, Any]) -> None:
        self.settings = config.load(write_config(root, "http://127.0.0.1:9", **sections), env={})
        self.clock = FakeClock()
        self.ledger = Ledger(self.settings.ledger_path, clock=self.clock)
        self.outcomes = Outcomes(self.settings, self.ledger, clock=self.clock, rng=random.Random(seed))
        self.inbox = self.settings.folders.inbox

    def job(self, stem: str = "clip", state: State = State.UPLOADING, driver: str = "txt") -> Job:
        """A job whose inputs are real files in the inbox, driven to ``state``."""
        role = "text" if driver == "txt" else "audio"
        files = {"video": self.inbox / f"{stem}.mp4", role: self.inbox / f"{stem}.{driver}"}
        for path in files.values():
            path.write_bytes(f"bytes of {path.name}".encode())
        job_id = self.ledger.add_job(name=f"{stem}.mp4", rel_dir="", stem=stem, state=State.QUEUED,
                                     files={k: str(v) for k, v in files.items()},
                                     inputs={k: {"size": 1, "mtime_ns": 1, "sha256": "ab" * 32} for k in files},
                                     params={"text": "hello"})
        path = [State.QUEUED, State.UPLOADING, State.SUBMITTING, State.GENERATING, State.DOWNLOADING]
        for src, dst in zip(path, path[1:path.index(state) + 1]):
            fields: dict[str, Any] = {}
            if dst == State.SUBMITTING:
                fields = {"create_intent_at": self.clock()}
            if dst == State.GENERATING:
                fields = {"remote_id": f"task-{stem}", "create_intent_at": self.clock()}
            self.ledger.advance(job_id, src, dst, **fields)
        return self.ledger.get(job_id)

    def notifications(self) -> list[dict[str, Any]]:
        rows = self.ledger.conn.execute("SELECT kind, target, job_id, body FROM notifications ORDER BY id").fetchall()
        return [{"kind": k, "target": t, "job_id": j, "body": json.loads(b)} for k, t, j, b in rows]

    def events(self, job_id: int) -> list[str]:
        return [e["kind"] for e in self.ledger.events(job_id)]


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path)


# -- fail ---------------------------------------------------------------------------------------
def test_fail_ends_the_job_moves_its_inputs_and_writes_the_error_file(world: World) -> None:
    job = world.job("clip")
    world.outcomes.fail(job, PermanentError("the voice does not exist", code=40000, endpoint="create"))
    ended = world.ledger.get(job.id)
    assert ended.state == State.FAILED and ended.error_code == "40000" and not ended.moves_pending
    assert "the voice does not exist" in ended.error and ended.finished_at == world.clock()
    failed = world.settings.folders.failed
    assert sorted(p.name for p in failed.iterdir()) == ["clip.error.json", "clip.mp4", "clip.txt"]
    assert list(world.inbox.iterdir()) == []
    doc = json.loads((failed / "clip.error.json").read_text(encoding="utf-8"))
    assert doc["code"] == "40000" and doc["job_id"] == job.id and "voice" in doc["message"]
    assert f"hotfolder retry {job.id}" in doc["retry"]
    assert world.events(job.id)[-2:] == ["failed", "inputs_moved"]


def test_fail_codes_and_messages(world: World) -> None:
    rejected = world.job("rejected")
    world.outcomes.fail(rejected, FileRejected("file status 98", code=98, endpoint="file_detail"))
    job = world.ledger.get(rejected.id)
    assert job.error_code == "98" and "check its content and format" in job.error
    given = world.job("given")
    world.outcomes.fail(given, RuntimeError("no code of its own"), code="task_stuck")
    assert world.ledger.get(given.id).error_code == "task_stuck"
    plain = world.job("plain")
    world.outcomes.fail(plain, RuntimeError("a bug"))
    assert world.ledger.get(plain.id).error_code == "error"
    intake = world.job("intake", state=State.QUEUED)
    world.outcomes.fail_at_intake(intake.id, InputError("intake.mp4 has no video track", path="intake.mp4"))
    job = world.ledger.get(intake.id)
    assert job.state == State.FAILED and job.error_code == "bad_input"
    doc = json.loads((world.settings.folders.failed / "intake.error.json").read_text(encoding="utf-8"))
    assert doc["code"] == "bad_input" and "fix the input" in doc["retry"]


def test_fail_loses_to_a_job_that_changed_meanwhile(world: World) -> None:
    job = world.job("raced", state=State.SUBMITTING)
    world.ledger.advance(job.id, State.SUBMITTING, State.CANCELLED, error="cancelled by the user",
                         error_code="cancelled")
    world.outcomes.fail(job, PermanentError("too late"))   # `job` is the stale snapshot
    current = world.ledger.get(job.id)
    assert current.state == State.CANCELLED and current.error_code == "cancelled"
    assert (world.inbox / "raced.mp4").exists()   # nobody planned a move for the failure


def test_a_failure_is_notified_when_a_webhook_wants_it(tmp_path: Path) -> None:
    world = World(tmp_path, notify={"webhook": WEBHOOK})
    job = world.job("hooked")
    world.outcomes.fail(job, PermanentError("refused", code=40000))
    [row] = world.notifications()
    assert row["kind"] == "failed" and row["target"] == "webhook" and row["job_id"] == job.id
    assert row["body"]["event"] == "failed" and row["body"]["job"]["error_code"] == "40000"


# -- defer --------------------------------------------------------------------------------------
def _delays(world: World, job_id: int, errors: list[BaseException]) -> list[float]:
    out = []
    for exc in errors:
        world.outcomes.defer(world.ledger.get(job_id), exc)
        job = world.ledger.get(job_id)
        out.append(job.next_attempt_at - world.clock())
        world.clock.advance(max(0.0, out[-1]))   # the retry comes when it is due
    return out


def test_backoff_grows_half_jittered_up_to_its_cap(world: World) -> None:
    job = world.job("flaky")
    delays = _delays(world, job.id, [RetryLater("503 from the gateway", code=503) for _ in range(14)])
    for attempt, delay in enumerate(delays):
        cap = min(JOB_BACKOFF.cap, JOB_BACKOFF.base * 2 ** attempt)
        assert cap * 0.5 <= delay <= cap, (attempt, delay, cap)
    assert delays[-1] >= 450 and delays[-4] >= 450           # the ladder tops out at 15 minutes
    assert sorted(delays[:5]) == delays[:5]                   # and climbs to it (halves never overlap)
    current = world.ledger.get(job.id)
    assert current.state == State.UPLOADING and current.attempts == 14 and current.same_error_count == 14
    assert current.first_trouble_at is not None and "503" in current.error
    assert world.events(job.id).count("retry_scheduled") == 14
    # The jitter comes from the injected generator: the same seed, the same schedule.
    again = World(world.settings.config_path.parent / "again", seed=1234)
    assert _delays(again, again.job("flaky").id, [RetryLater("503", code=503) for _ in range(14)]) == delays
    other = World(world.settings.config_path.parent / "other", seed=99)
    assert _delays(other, other.job("flaky").id, [RetryLater("503", code=503) for _ in range(14)]) != delays


def test_retry_after_is_honoured(world: World) -> None:
    job = world.job("limited")
    [delay] = _delays(world, job.id, [RateLimited("slow down", code=40001, retry_after=600.0)])
    assert delay == 600.0                                     # far above the first rung (1-2 s)
    [delay] = _delays(world, job.id, [RateLimited("slow down", code=40001, retry_after=0.5)])
    assert 2.0 <= delay <= 4.0                                # a short hint never shortens the ladder


def test_past_the_deadline_the_job_gives_up(world: World) -> None:
    job = world.job("hopeless", state=State.SUBMITTING)
    world.outcomes.defer(job, RetryLater("connection refused"))
    first = world.ledger.get(job.id).first_trouble_at
    world.clock.advance(world.settings.retry.deadline_hours * 3600 - 1)
    world.outcomes.defer(world.ledger.get(job.id), RetryLater("connection refused"))
    assert world.ledger.get(job.id).state == State.SUBMITTING and world.ledger.get(job.id).first_trouble_at == first
    world.clock.advance(2)
    world.outcomes.defer(world.ledger.get(job.id), RetryLater("connection refused"))
    ended = world.ledger.get(job.id)
    assert ended.state == State.FAILED and ended.error_code == "gave_up"
    assert "gave up after 3 attempts over 24.0 h" in ended.error and "connection refused" in ended.error
    assert (world.settings.folders.failed / "hopeless.error.json").exists()


def test_the_same_bug_five_times_poisons_the_job(world: World) -> None:
    job = world.job("poison")
    poison_after = world.settings.retry.poison_after
    _delays(world, job.id, [KeyError("a bug in a step")] * (poison_after - 1))
    assert world.ledger.get(job.id).state == State.UPLOADING
    _delays(world, job.id, [KeyError("a bug in a step")])
    ended = world.ledger.get(job.id)
    assert ended.state == State.FAILED and ended.error_code == "poisoned"
    assert f"failed the same way {poison_after} times" in ended.error


def test_different_errors_reset_the_poison_count(world: World) -> None:
    job = world.job("mixed")
    errors: list[BaseException] = [KeyError("one"), ValueError("two")] * 6
    _delays(world, job.id, errors)
    current = world.ledger.get(job.id)
    assert current.state == State.UPLOADING and current.same_error_count == 1 and current.attempts == 12


@pytest.mark.parametrize("exc", [RetryLater("503", code=503), RateLimited("40001", code=40001),
                                 AuthError("10400", code=10400), OSError(28, "No space left on device")],
                         ids=["retry_later", "rate_limited", "auth", "disk"])
def test_transient_errors_are_never_poisoned(world: World, exc: BaseException) -> None:
    job = world.job("transient")
    _delays(world, job.id, [exc] * (world.settings.retry.poison_after * 3))
    current = world.ledger.get(job.id)
    assert current.state == State.UPLOADING and current.same_error_count == world.settings.retry.poison_after * 3


def test_defer_leaves_jobs_that_are_not_active_alone(world: World) -> None:
    waiting = world.ledger.add_job(name="w.mp4", rel_dir="", stem="w", state=State.WAITING, files={}, inputs={},
                                   params={})
    world.outcomes.defer(world.ledger.get(waiting), RetryLater("x"))
    job = world.job("ended")
    world.outcomes.fail(job, PermanentError("no"))
    world.outcomes.defer(world.ledger.get(job.id), RetryLater("x"))
    for job_id in (waiting, job.id):
        assert "retry_scheduled" not in world.events(job_id) and world.ledger.get(job_id).attempts == 0


# -- billing pause --------------------------------------------------------------------------------
def test_billing_pause_requeues_records_the_reason_and_notifies_once(tmp_path: Path) -> None:
    world = World(tmp_path, notify={"webhook": WEBHOOK}, retry={"billing_recheck_seconds": 600})
    submitting = world.job("first", state=State.SUBMITTING)
    generating = world.job("second", state=State.GENERATING)
    uploading = world.job("third", state=State.UPLOADING)
    start = world.clock()
    world.outcomes.pause_billing(submitting, BillingPaused("余额不足，请充值", code=50000, endpoint="create"))
    requeued = world.ledger.get(submitting.id)
    assert requeued.state == State.QUEUED and requeued.create_intent_at is None and requeued.remote_id is None
    assert "waiting for account balance" in requeued.error and "余额不足" in requeued.error
    assert world.events(submitting.id)[-1] == "billing_paused"
    assert paused_until(world.ledger, world.clock()) == start + 600
    assert pause_reason(world.ledger) == "余额不足，请充值 (code 50000, on create)"
    assert world.outcomes.describe() == {"until": start + 600, "reason": pause_reason(world.ledger)}
    [paused] = world.notifications()
    assert paused["kind"] == "paused" and paused["target"] == "webhook" and paused["job_id"] is None
    assert paused["body"]["event"] == "paused" and "余额不足" in paused["body"]["reason"]
    # A task that ended 30 for the balance: requeued too, the pause extended, no second `paused`.
    world.clock.advance(120)
    world.outcomes.pause_billing(generating, BillingPaused("蝉豆不足", code=30))
    requeued = world.ledger.get(generating.id)
    assert requeued.state == State.QUEUED and requeued.remote_id is None
    assert world.ledger.unknown_remote_ids(["task-second"]) == set()   # its old task is never adopted
    assert paused_until(world.ledger, world.clock()) == start + 120 + 600
    assert pause_reason(world.ledger).startswith("蝉豆不足")
    assert [n["kind"] for n in world.notifications()] == ["paused"]
    # A job past the create (or not at it yet) keeps its state; the pause is still recorded.
    world.outcomes.pause_billing(uploading, BillingPaused("余额不足", code=50000))
    assert world.ledger.get(uploading.id).state == State.UPLOADING
    assert [n["kind"] for n in world.notifications()] == ["paused"]
    # The pause ends: one `resumed`.
    assert lift_pause(world.ledger, world.settings, "a create went through")
    assert world.ledger.get_value(BILLING_KEY) is None and world.ledger.get_value(PAUSE_REASON_KEY) is None
    assert paused_until(world.ledger, world.clock()) is None and world.outcomes.describe() == {}
    kinds = [n["kind"] for n in world.notifications()]
    assert kinds == ["paused", "resumed"]
    resumed = world.notifications()[-1]
    assert resumed["body"]["event"] == "resumed" and resumed["body"]["reason"] == "a create went through"
    # Not paused: lifting is a no-op (no write, no notification).
    assert not lift_pause(world.ledger, world.settings)
    assert len(world.notifications()) == 2
    # A new pause after the lift is a new `paused` event.
    world.outcomes.pause_billing(world.job("fourth", state=State.SUBMITTING), BillingPaused("余额不足", code=50000))
    assert [n["kind"] for n in world.notifications()] == ["paused", "resumed", "paused"]


def test_billing_pause_without_notify_targets_records_no_notification(world: World) -> None:
    job = world.job("quiet", state=State.SUBMITTING)
    world.outcomes.pause_billing(job, BillingPaused("quota used up", code=40002))
    assert world.ledger.get(job.id).state == State.QUEUED
    assert paused_until(world.ledger, world.clock()) == world.clock() + world.settings.retry.billing_recheck_seconds
    assert lift_pause(world.ledger, world.settings)
    assert world.notifications() == []


def test_only_the_configured_events_are_notified(tmp_path: Path) -> None:
    world = World(tmp_path, notify={"webhook": WEBHOOK, "events": ["resumed"]})
    world.outcomes.pause_billing(world.job("a", state=State.SUBMITTING), BillingPaused("余额不足", code=50000))
    assert world.notifications() == []
    lift_pause(world.ledger, world.settings, "`hotfolder resume`")
    assert [n["kind"] for n in world.notifications()] == ["resumed"]
