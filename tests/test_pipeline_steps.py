"""The pipeline's steps one at a time against the sandbox: upload, submit, download.

Each step records its checkpoint in the ledger, records its intent before the side effect, and can
be cut anywhere and run again without repeating what it did (the sandbox's journal counts the
calls). A "crash" here is an exception that no handler catches (like SIGKILL, it leaves the ledger
as it was at that instant), raised from a wrapper around one client call. Faults on the wire are
the sandbox's own, chosen by seed.
"""

from __future__ import annotations

import random
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers import MEDIA, FakeClock, wait_for, write_config
from hotfolder import config
from hotfolder.chanjing import ChanjingClient
from hotfolder.errors import OutcomeUnknown, RetryLater
from hotfolder.intake import build_params, file_facts
from hotfolder.ledger import Job, Ledger
from hotfolder.outcomes import BILLING_KEY, paused_until
from hotfolder.pipeline import SERVICES, NotNow, Pipeline
from hotfolder.poller import Poller
from hotfolder.states import State


class Crash(BaseException):
    """The process dies here: nothing after this point runs (no handler catches it)."""


def crash_on_call(fn: Callable[..., Any], nth: int, before: Callable[[], None] | None = None) -> Callable[..., Any]:
    """``fn``, except that its ``nth`` call (1-based) crashes before it is made; ``before`` runs at
    every call, before anything else."""
    calls = [0]

    def wrapper(*args: Any, **kw: Any) -> Any:
        calls[0] += 1
        if before is not None:
            before()
        if calls[0] == nth:
            raise Crash(f"killed at call {nth} of {fn.__name__}")
        return fn(*args, **kw)

    return wrapper


def spy(fn: Callable[..., Any], before: Callable[[], None]) -> Callable[..., Any]:
    """``fn``, with ``before`` run at each call just before it is made."""
    return crash_on_call(fn, nth=0, before=before)


def drop_seed(after: bool) -> int:
    """A sandbox seed whose first fault decision drops the request after processing it (the work
    is done, the answer is lost) or before (nothing done). The sandbox draws four numbers per
    request and the third decides which; the journal's ``processed`` confirms it in each test."""
    for seed in range(1000):
        rng = random.Random(seed)
        sub = [rng.random() for _ in range(4)][2]
        if (sub >= 0.5) == after:
            return seed
    raise AssertionError("no seed found")


class Steps:
    """A pipeline wired to the sandbox, a real ledger on a FakeClock and real folders."""

    def __init__(self, root: Path, sandbox: Any, client: ChanjingClient) -> None:
        self.sandbox = sandbox
        self.settings = config.load(write_config(root, sandbox.base_url), env={})
        for folder in (self.settings.folders.outbox, self.settings.folders.archive, self.settings.folders.failed):
            folder.mkdir(parents=True, exist_ok=True)
        import time

        self.clock = FakeClock(time.time())   # near the sandbox's wall clock: task create times compare
        self.ledger = Ledger(self.settings.ledger_path, clock=self.clock)
        self.client = client
        self.pipeline = Pipeline(self.settings, self.ledger, client, clock=self.clock, rng=random.Random(5))
        self.inbox = self.settings.folders.inbox
        self.sources: dict[str, bytes] = {}

    def job(self, stem: str, driver: str = "txt", video: bytes | None = None) -> int:
        """A queued job whose inputs are real files in the inbox (distinct video bytes unless given)."""
        base = (MEDIA / "portrait.mp4").read_bytes()
        data = video if video is not None else base + (16).to_bytes(4, "big") + b"free" + stem.encode().ljust(8)[:8]
        files = {"video": self.inbox / f"{stem}.mp4"}
        files["video"].write_bytes(data)
        if driver == "txt":
            files["text"] = self.inbox / f"{stem}.txt"
            files["text"].write_text(f"script of {stem}", encoding="utf-8")
        else:
            files["audio"] = self.inbox / f"{stem}.wav"
            shutil.copyfile(MEDIA / "speech.wav", files["audio"])
        self.sources[stem] = data
        return self.ledger.add_job(name=f"{stem}.mp4", rel_dir="", stem=stem, state=State.QUEUED,
                                   files={k: str(v) for k, v in files.items()},
                                   inputs={k: file_facts(v) for k, v in files.items()},
                                   params=build_params(self.settings, files, f"{stem}.mp4"))

    def get(self, job_id: int) -> Job:
        return self.ledger.get(job_id)

    def events(self, job_id: int) -> list[str]:
        return [e["kind"] for e in self.ledger.events(job_id)]

    def calls(self, endpoint: str, ok_only: bool = True) -> list[dict[str, Any]]:
        """The sandbox's journal entries of ``endpoint`` (answered successfully, by default)."""
        out = []
        for e in self.sandbox.journal():
            if e["endpoint"] != endpoint:
                continue
            if ok_only and not (e["code"] == 0 or (e["code"] is None and e["http_status"] in (200, 206))):
                continue
            out.append(e)
        return out

    def submitted(self, stem: str, driver: str = "txt") -> int:
        job_id = self.job(stem, driver)
        assert self.pipeline.upload(self.get(job_id)).state == State.SUBMITTING
        return job_id

    def generated(self, stem: str) -> int:
        """A job whose remote task has succeeded (driven by the real poller)."""
        job_id = self.submitted(stem)
        assert self.pipeline.submit(self.get(job_id)).state == State.GENERATING
        poller = Poller(self.settings, self.ledger, self.client, self.pipeline.outcomes, self.clock)
        wait_for(lambda: poller.poll_once() or self.get(job_id).state == State.DOWNLOADING, timeout=20,
                 interval=0.1, message="the task to succeed")
        assert self.get(job_id).state == State.DOWNLOADING
        return job_id


@pytest.fixture
def steps(tmp_path: Path, sandbox: Any, make_client: Callable[..., ChanjingClient]) -> Iterator[Steps]:
    yield Steps(tmp_path, sandbox, make_client())


# -- upload -------------------------------------------------------------------------------------
def test_upload_checkpoints_each_file_and_resumes_after_a_crash(steps: Steps,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    job_id = steps.job("song", driver="wav")
    monkeypatch.setattr(steps.client, "upload", crash_on_call(steps.client.upload, nth=2))
    with pytest.raises(Crash):
        steps.pipeline.upload(steps.get(job_id))
    job = steps.get(job_id)
    # The video's upload is recorded (its file id, and the content cache); the audio's is not.
    assert job.state == State.UPLOADING and job.video_file_id and job.audio_file_id is None
    assert steps.events(job_id) == ["created", "upload_started", "uploaded"]
    assert steps.ledger.cached_upload(job.inputs["video"]["sha256"], SERVICES["video"])["file_id"] == job.video_file_id
    assert len(steps.calls("upload_put")) == 1
    monkeypatch.undo()
    # Run again: only the audio is uploaded.
    job = steps.pipeline.upload(steps.get(job_id))
    assert job.state == State.SUBMITTING and job.audio_file_id and job.video_file_id == steps.get(job_id).video_file_id
    assert len(steps.calls("upload_put")) == 2 and len(steps.calls("create_upload_url")) == 2
    assert steps.events(job_id)[-2:] == ["uploaded", "files_ready"]
    # Run once more after it completed: nothing is uploaded again, nothing changes.
    again = steps.pipeline.upload(steps.get(job_id))
    assert again.state == State.SUBMITTING and (again.video_file_id, again.audio_file_id) == \
        (job.video_file_id, job.audio_file_id)
    assert len(steps.calls("upload_put")) == 2 and len(steps.calls("create_upload_url")) == 2
    # Another job with the same video bytes reuses the upload (and a text script needs none).
    twin = steps.job("twin", video=steps.sources["song"])
    twin_job = steps.pipeline.upload(steps.get(twin))
    assert twin_job.state == State.SUBMITTING and twin_job.video_file_id == job.video_file_id
    assert len(steps.calls("upload_put")) == 2


def test_inputs_changed_since_they_were_taken_start_the_upload_over(steps: Steps,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    job_id = steps.job("edited")
    monkeypatch.setattr(steps.client, "wait_file_ready", crash_on_call(steps.client.wait_file_ready, nth=1))
    with pytest.raises(Crash):
        steps.pipeline.upload(steps.get(job_id))
    monkeypatch.undo()
    first = steps.get(job_id).video_file_id
    assert first and len(steps.calls("upload_put")) == 1
    video = Path(steps.get(job_id).files["video"])
    video.write_bytes(video.read_bytes() + b"an edit")
    job = steps.pipeline.upload(steps.get(job_id))
    assert job.state == State.SUBMITTING and job.video_file_id != first
    assert "inputs_changed" in steps.events(job_id) and len(steps.calls("upload_put")) == 2
    assert job.inputs["video"]["size"] == video.stat().st_size


# -- submit -------------------------------------------------------------------------------------
def test_submit_records_the_intent_before_the_create_and_never_creates_twice(
        steps: Steps, monkeypatch: pytest.MonkeyPatch) -> None:
    job_id = steps.submitted("talk")
    seen: list[Job] = []
    monkeypatch.setattr(steps.client, "create_lip_sync",
                        spy(steps.client.create_lip_sync, lambda: seen.append(steps.get(job_id))))
    job = steps.pipeline.submit(steps.get(job_id))
    # At the moment the create left, the intent was already durable in the ledger.
    [at_create] = seen
    assert at_create.state == State.SUBMITTING and at_create.create_intent_at == steps.clock()
    assert steps.events(job_id)[-1] == "task_created" and steps.events(job_id)[-2] == "create_intent"
    [task] = steps.sandbox.tasks()
    assert job.state == State.GENERATING and job.remote_id == task["id"]
    assert steps.ledger.unknown_remote_ids([task["id"]]) == set()
    # Run again after it completed (directly, and through the driver): no second create.
    assert steps.pipeline.submit(steps.get(job_id)).remote_id == task["id"]
    steps.pipeline.run(job_id)
    assert len(steps.calls("create")) == 1 and len(steps.sandbox.tasks()) == 1 and len(seen) == 1


def test_a_refused_create_drops_its_intent_and_is_retried_later(steps: Steps,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    job_id = steps.submitted("refused")
    seen: list[Job] = []
    monkeypatch.setattr(steps.client, "create_lip_sync",
                        spy(steps.client.create_lip_sync, lambda: seen.append(steps.get(job_id))))
    steps.sandbox.update(error_rate=1.0)   # every API call answered 50000: nothing is created
    with pytest.raises(RetryLater):
        steps.pipeline.submit(steps.get(job_id))
    assert seen[0].create_intent_at is not None                      # recorded before it was sent
    job = steps.get(job_id)
    assert job.state == State.SUBMITTING and job.create_intent_at is None   # and dropped: a refusal proves nothing
    refused = steps.calls("create", ok_only=False)
    assert refused and all(e["code"] == 50000 for e in refused) and steps.sandbox.tasks() == []
    # Through the driver, the refusal becomes a retry later (kept in the ledger).
    steps.pipeline.run(job_id)
    job = steps.get(job_id)
    assert job.state == State.SUBMITTING and job.attempts == 1 and job.next_attempt_at > steps.clock()
    assert job.create_intent_at is None and steps.events(job_id)[-1] == "retry_scheduled"
    steps.sandbox.update(error_rate=0.0)
    steps.clock.now = job.next_attempt_at
    steps.pipeline.run(job_id)
    [task] = steps.sandbox.tasks()
    assert steps.get(job_id).state == State.GENERATING and steps.get(job_id).remote_id == task["id"]
    assert len(steps.calls("create")) == 1


def test_a_create_refused_for_the_balance_pauses_and_requeues_without_reuploading(steps: Steps) -> None:
    job_id = steps.submitted("broke")
    puts = len(steps.calls("upload_put"))
    steps.sandbox.update(balance_creates=0, balance_mode="refuse")
    steps.pipeline.run(job_id)
    job = steps.get(job_id)
    assert job.state == State.QUEUED and job.create_intent_at is None and steps.sandbox.tasks() == []
    assert paused_until(steps.ledger, steps.clock()) and "billing_paused" in steps.events(job_id)
    # Paused: the next run uploads nothing (the file ids are kept) and does not try to create.
    steps.pipeline.run(job_id)
    job = steps.get(job_id)
    assert job.state == State.SUBMITTING and len(steps.calls("upload_put")) == puts
    assert job.next_attempt_at == float(steps.ledger.get_value(BILLING_KEY))
    refused = len(steps.calls("create", ok_only=False))
    # Topped up and the pause over: one create, and the pause is lifted.
    steps.sandbox.update(balance_creates=None)
    steps.clock.now = job.next_attempt_at
    steps.pipeline.run(job_id)
    assert steps.get(job_id).state == State.GENERATING and len(steps.sandbox.tasks()) == 1
    assert len(steps.calls("create", ok_only=False)) == refused + 1
    assert steps.ledger.get_value(BILLING_KEY) is None


def test_a_lost_create_is_adopted_never_sent_again(steps: Steps) -> None:
    known = steps.submitted("earlier")
    steps.pipeline.submit(steps.get(known))         # a task the ledger knows: never a candidate
    job_id = steps.submitted("lost")
    steps.sandbox.update(seed=drop_seed(after=True), drop_rate=1.0)
    steps.pipeline.run(job_id)                      # the create is made, its answer is lost
    steps.sandbox.update(drop_rate=0.0)
    [lost] = [e for e in steps.calls("create", ok_only=False) if e["fault"]]
    assert lost["processed"] and lost["http_status"] is None and lost["fault"] == "drop"
    assert len(steps.sandbox.tasks()) == 2
    job = steps.get(job_id)
    # The intent stays (the outcome is unknown), and the job waits to reconcile.
    assert job.state == State.SUBMITTING and job.create_intent_at is not None and job.remote_id is None
    assert steps.events(job_id)[-1] == "retry_scheduled"
    steps.clock.now = job.next_attempt_at
    steps.pipeline.run(job_id)
    job = steps.get(job_id)
    tasks = {t["id"]: t for t in steps.sandbox.tasks()}
    assert job.state == State.GENERATING and job.remote_id in tasks and job.remote_id != steps.get(known).remote_id
    assert "script of lost" in str(tasks[job.remote_id]["request"])
    assert steps.events(job_id)[-1] == "task_adopted"
    assert len(steps.calls("create", ok_only=False)) == 2 and len(tasks) == 2   # nothing paid for twice
    assert steps.ledger.unknown_remote_ids(tasks) == set()


def test_a_create_that_never_arrived_is_reconciled_then_sent_once(steps: Steps) -> None:
    job_id = steps.submitted("unsent")
    other = steps.submitted("next")
    steps.sandbox.update(seed=drop_seed(after=False), drop_rate=1.0)
    with pytest.raises(OutcomeUnknown):
        steps.pipeline.submit(steps.get(job_id))
    steps.sandbox.update(drop_rate=0.0)
    [dropped] = steps.calls("create", ok_only=False)
    assert not dropped["processed"] and steps.sandbox.tasks() == []
    intent = steps.get(job_id).create_intent_at
    assert intent is not None
    # While that outcome is unknown, no other create may go out (it could be mistaken for it).
    with pytest.raises(NotNow, match="lost create"):
        steps.pipeline.submit(steps.get(other))
    # The task list shows nothing yet; a create may still be in the server's hands until it settles.
    with pytest.raises(NotNow) as wait:
        steps.pipeline.submit(steps.get(job_id))
    assert wait.value.at == intent + steps.settings.api.timeout_seconds + 5.0
    assert len(steps.calls("create", ok_only=False)) == 1
    steps.clock.now = wait.value.at
    job = steps.pipeline.submit(steps.get(job_id))
    [task] = steps.sandbox.tasks()
    assert job.state == State.GENERATING and job.remote_id == task["id"]
    reconciled = [e for e in steps.ledger.events(job_id) if e["kind"] == "reconciled"]
    assert reconciled and reconciled[0]["detail"] == {"found": None}
    assert steps.events(job_id)[-2:] == ["create_intent", "task_created"]
    assert steps.pipeline.submit(steps.get(other)).state == State.GENERATING
    assert len(steps.sandbox.tasks()) == 2 == len(steps.calls("create"))


# -- download -----------------------------------------------------------------------------------
def test_download_plans_its_outputs_first_and_resumes_after_a_crash(steps: Steps,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    job_id = steps.generated("clip")
    planned: list[dict[str, str]] = []
    record_plan = lambda: planned.append(steps.get(job_id).outputs)  # noqa: E731
    monkeypatch.setattr(steps.client, "download", crash_on_call(steps.client.download, nth=2, before=record_plan))
    with pytest.raises(Crash):
        steps.pipeline.download(steps.get(job_id))
    monkeypatch.undo()
    outbox = steps.settings.folders.outbox
    # Where the results go was durable before the first byte was fetched.
    assert planned[0]["video"] == str(outbox / "clip.mp4") and planned[0]["cover"] == str(outbox / "clip.jpg")
    job = steps.get(job_id)
    assert job.state == State.DOWNLOADING and "outputs_planned" in steps.events(job_id)
    assert (outbox / "clip.mp4").read_bytes() == steps.sources["clip"]
    assert sorted(p.name for p in outbox.iterdir()) == ["clip.mp4"]
    assert len(steps.calls("download")) == 1
    # Run again: only the cover is fetched; the video in place is kept, never fetched twice.
    steps.pipeline.download(steps.get(job_id))
    job = steps.get(job_id)
    assert job.state == State.DONE and job.outputs["video"] == planned[0]["video"]
    assert sorted(p.name for p in outbox.iterdir()) == ["clip.jpg", "clip.mp4"]
    assert (outbox / "clip.jpg").read_bytes()[:2] == b"\xff\xd8"
    assert len(steps.calls("download")) == 2
    assert sorted(p.name for p in steps.settings.folders.archive.iterdir()) == ["clip.mp4", "clip.txt"]
    assert list(steps.inbox.iterdir()) == []
    assert steps.events(job_id)[-2:] == ["done", "inputs_moved"]


def test_download_run_again_after_the_job_ended_is_a_no_op(steps: Steps) -> None:
    job_id = steps.generated("twice")
    steps.pipeline.download(steps.get(job_id))
    done = steps.get(job_id)
    assert done.state == State.DONE
    steps.pipeline.download(done)
    assert steps.get(job_id) == done and len(steps.calls("download")) == 2


def test_a_job_cancelled_during_its_download_gets_no_outputs(steps: Steps, monkeypatch: pytest.MonkeyPatch) -> None:
    from hotfolder import control

    job_id = steps.generated("changed_mind")
    cancelled: list[Job] = []

    def cancel_once() -> None:
        if not cancelled:   # a person runs `hotfolder cancel` while the video is being fetched
            cancelled.append(control.cancel(steps.ledger, steps.settings, str(job_id)))

    monkeypatch.setattr(steps.client, "download", spy(steps.client.download, cancel_once))
    steps.pipeline.run(job_id)
    job = steps.get(job_id)
    assert job.state == State.CANCELLED and "its result is ignored" in job.error
    assert (steps.settings.folders.failed / "changed_mind.error.json").exists()
    # "Its result is ignored": nothing of it reaches the outbox, no partial file is left behind.
    assert list(steps.settings.folders.outbox.iterdir()) == []
