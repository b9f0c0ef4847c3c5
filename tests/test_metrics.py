"""Metrics: a real ledger driven through its verbs, real CallRecords, the exposition parsed back."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from helpers import FakeClock
from hotfolder import log as hlog
from hotfolder.chanjing import CallRecord
from hotfolder.errors import AuthError, RateLimited, RetryLater
from hotfolder.ledger import Ledger
from hotfolder.ledger.notices import Notice
from hotfolder.metrics import CONTENT_TYPE, Metrics, api_code_label
from hotfolder.outcomes import BILLING_KEY
from hotfolder.states import State
from hotfolder.trouble import TROUBLE_KEY

SECRET = "sk-metrics-SECRET-0123456789"


def new_job(ledger: Ledger, name: str, state: State = State.QUEUED) -> int:
    stem = name.rsplit("/", 1)[-1].rsplit(".", 1)[0]
    return ledger.add_job(name=name, rel_dir="", stem=stem, state=state, files={"video": f"/in/{name}"},
                          inputs={"video": {"size": 1}}, params={"text": "你好"})


def samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the exposition, parsed back: {(name, sorted labels): value}."""
    body, content_type = metrics.render()
    assert content_type == CONTENT_TYPE
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(body.decode("utf-8")):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(found: dict[Any, float], name: str, **labels: str) -> float | None:
    return found.get((name, tuple(sorted(labels.items()))))


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def ledger(tmp_path: Path, clock: FakeClock) -> Ledger:
    return Ledger(tmp_path / "state" / "ledger.db", clock=clock)


@pytest.fixture
def metrics(ledger: Ledger, clock: FakeClock) -> Metrics:
    m = Metrics(ledger, clock=clock)
    ledger.listeners.append(m.on_transition)
    return m


def drive_to_done(ledger: Ledger, job_id: int, duration_ms: int) -> None:
    path = [State.QUEUED, State.UPLOADING, State.SUBMITTING, State.GENERATING, State.DOWNLOADING]
    for src, dst in zip(path, path[1:]):
        assert ledger.advance(job_id, src, dst, **({"duration_ms": duration_ms} if dst == State.DOWNLOADING else {}))
    assert ledger.advance(job_id, State.DOWNLOADING, State.DONE)


def test_levels_and_transitions_match_the_ledger(ledger: Ledger, metrics: Metrics, clock: FakeClock) -> None:
    first = new_job(ledger, "a.mp4")
    clock.advance(30)
    done1, done2 = new_job(ledger, "b.mp4"), new_job(ledger, "c.mp4")
    failed = new_job(ledger, "d.mp4")
    generating = new_job(ledger, "e.mp4")
    new_job(ledger, "f.mp4", State.WAITING)
    new_job(ledger, "g.mp4", State.FAILED)   # created failed (intake), no error code recorded
    drive_to_done(ledger, done1, 12_500)
    drive_to_done(ledger, done2, 2_000)
    assert ledger.advance(failed, State.QUEUED, State.UPLOADING)
    assert ledger.advance(failed, State.UPLOADING, State.FAILED, error="no", error_code="bad_input")
    for src, dst in [(State.QUEUED, State.UPLOADING), (State.UPLOADING, State.SUBMITTING),
                     (State.SUBMITTING, State.GENERATING)]:
        assert ledger.advance(generating, src, dst)
    clock.advance(45)

    found = samples(metrics)
    counts = ledger.counts()
    for state in State:
        assert value(found, "hotfolder_jobs", state=str(state)) == counts.get(str(state), 0), state
    assert counts == {"queued": 1, "done": 2, "failed": 2, "generating": 1, "waiting": 1}
    assert value(found, "hotfolder_tasks_in_flight") == 1
    assert value(found, "hotfolder_videos_waiting_for_sidecar") == 1
    # The only queued job is `first`, recorded 75 s of fake time ago.
    assert value(found, "hotfolder_oldest_queued_job_age_seconds") == pytest.approx(75.0)
    assert ledger.get(first).state == State.QUEUED
    assert value(found, "hotfolder_job_transitions_total", **{"from": "new", "to": "queued"}) == 5
    assert value(found, "hotfolder_job_transitions_total", **{"from": "new", "to": "waiting"}) == 1
    assert value(found, "hotfolder_job_transitions_total", **{"from": "new", "to": "failed"}) == 1
    assert value(found, "hotfolder_job_transitions_total", **{"from": "queued", "to": "uploading"}) == 4
    assert value(found, "hotfolder_job_transitions_total", **{"from": "downloading", "to": "done"}) == 2
    assert value(found, "hotfolder_job_transitions_total", **{"from": "uploading", "to": "failed"}) == 1
    assert value(found, "hotfolder_job_failures_total", code="bad_input") == 1
    assert value(found, "hotfolder_job_failures_total", code="unknown") == 1
    assert value(found, "hotfolder_video_produced_seconds_total") == pytest.approx(14.5)
    assert value(found, "hotfolder_billing_paused") == 0
    assert value(found, "hotfolder_ledger_readable") == 1
    for kind in ("auth", "rate_limited", "unreachable"):
        assert value(found, "hotfolder_api_trouble", kind=kind) == 0


def test_no_queued_job_means_age_zero(ledger: Ledger, metrics: Metrics) -> None:
    new_job(ledger, "w.mp4", State.WAITING)
    found = samples(metrics)
    assert value(found, "hotfolder_oldest_queued_job_age_seconds") == 0
    assert value(found, "hotfolder_jobs", state="queued") == 0


def test_levels_follow_changes_made_by_another_process(tmp_path: Path, ledger: Ledger, metrics: Metrics,
                                                       clock: FakeClock) -> None:
    """Levels are read at scrape time, so a `hotfolder cancel` in another process shows at once."""
    job = new_job(ledger, "x.mp4")
    other = Ledger(ledger.path, clock=clock)   # another process: its transitions reach no listener
    assert other.advance(job, State.QUEUED, State.CANCELLED)
    found = samples(metrics)
    assert value(found, "hotfolder_jobs", state="cancelled") == 1
    assert value(found, "hotfolder_jobs", state="queued") == 0
    assert value(found, "hotfolder_job_transitions_total", **{"from": "queued", "to": "cancelled"}) is None


def test_pause_trouble_and_pending_notifications(ledger: Ledger, metrics: Metrics, clock: FakeClock) -> None:
    ledger.set_value(BILLING_KEY, str(clock() + 300))
    ledger.set_value(TROUBLE_KEY, json.dumps({"kind": "unreachable", "message": "down", "since": clock()}))
    body = lambda _job, event_id, at: {"event": "paused", "id": event_id}   # noqa: E731
    ledger.record_notice(Notice("paused", ("webhook", "exec"), body))
    found = samples(metrics)
    assert value(found, "hotfolder_billing_paused") == 1
    assert value(found, "hotfolder_api_trouble", kind="unreachable") == 1
    assert value(found, "hotfolder_api_trouble", kind="auth") == 0
    assert value(found, "hotfolder_notifications_pending") == 2
    clock.advance(301)   # the pause ran out (the key stays until a create lifts it)
    ledger.set_value(TROUBLE_KEY, None)
    found = samples(metrics)
    assert value(found, "hotfolder_billing_paused") == 0
    assert value(found, "hotfolder_api_trouble", kind="unreachable") == 0


def test_api_calls_by_endpoint_and_code(metrics: Metrics) -> None:
    records = [
        CallRecord("detail", 0, 200, 0.2, None),
        CallRecord("detail", 0, 200, 0.4, None),
        CallRecord("create", 10400, 200, 0.1, AuthError("token expired", code=10400)),
        CallRecord("list", 40001, 200, 0.1, RateLimited("slow down", code=40001)),
        CallRecord("detail", 50000, 200, 0.3, RetryLater("busy", code=50000)),
        CallRecord("detail", 503, 503, 0.05, RetryLater("gateway", code=503)),
        CallRecord("detail", None, None, 3.0, RetryLater("timed out")),
        CallRecord("list", 429, 429, 0.01, RateLimited("HTTP 429", code=429)),
    ]
    for record in records:
        metrics.observe_call(record)
    found = samples(metrics)
    expected = {("detail", "0"): 2, ("create", "10400"): 1, ("list", "40001"): 1, ("detail", "50000"): 1,
                ("detail", "http_503"): 1, ("detail", "none"): 1, ("list", "http_429"): 1}
    got = {(dict(labels)["endpoint"], dict(labels)["code"]): v for (name, labels), v in found.items()
           if name == "hotfolder_api_requests_total"}
    assert got == expected
    assert value(found, "hotfolder_api_request_duration_seconds_count", endpoint="detail") == 5
    assert value(found, "hotfolder_api_request_duration_seconds_sum", endpoint="detail") == pytest.approx(3.95)
    assert value(found, "hotfolder_api_request_duration_seconds_bucket", endpoint="detail", le="0.25") == 2


def test_code_labels() -> None:
    assert api_code_label(CallRecord("x", 0, 200, 0, None)) == "0"
    assert api_code_label(CallRecord("x", None, None, 0, None)) == "none"
    assert api_code_label(CallRecord("x", 502, 502, 0, None)) == "http_502"
    assert api_code_label(CallRecord("x", 10400, 200, 0, None)) == "10400"


def test_bytes_stages_and_notifications(metrics: Metrics) -> None:
    metrics.observe_bytes("upload", 1000)
    metrics.observe_bytes("upload", 24)
    metrics.observe_bytes("download", 5_000_000)
    metrics.observe_bytes("sideways", 7)   # unknown: ignored, never raises
    metrics.observe_stage("upload", 12.0)
    metrics.observe_stage("generation", 400.0)
    metrics.observe_stage("generation", 90.0)
    metrics.observe_stage("download", 3.0)
    metrics.observe_stage("coffee", 1.0)
    metrics.notification_given_up("webhook")
    metrics.notification_delivered("exec")
    metrics.notification_delivered("exec")
    metrics.notification_given_up("https://user:pw@hooks.example/x")   # never a URL as a label
    found = samples(metrics)
    assert value(found, "hotfolder_uploaded_bytes_total") == 1024
    assert value(found, "hotfolder_downloaded_bytes_total") == 5_000_000
    assert value(found, "hotfolder_upload_duration_seconds_count") == 1
    assert value(found, "hotfolder_generation_duration_seconds_count") == 2
    assert value(found, "hotfolder_generation_duration_seconds_sum") == 490
    assert value(found, "hotfolder_generation_duration_seconds_bucket", le="120.0") == 1
    assert value(found, "hotfolder_download_duration_seconds_count") == 1
    assert value(found, "hotfolder_notifications_given_up_total", target="webhook") == 1
    assert value(found, "hotfolder_notifications_given_up_total", target="other") == 1
    assert value(found, "hotfolder_notifications_given_up_total", target="apprise") == 0
    assert value(found, "hotfolder_notifications_delivered_total", target="exec") == 2
    assert value(found, "hotfolder_log_lines_dropped_total") == hlog.dropped_lines()
    assert value(found, "hotfolder_build_info", version=__import__("hotfolder").__version__) == 1


def test_no_secret_or_free_text_in_labels(ledger: Ledger, metrics: Metrics) -> None:
    hlog.register_secret(SECRET)
    job = new_job(ledger, "secret.mp4")
    assert ledger.advance(job, State.QUEUED, State.FAILED, error=f"the key {SECRET} was refused",
                          error_code=f"key {SECRET}")
    metrics.observe_call(CallRecord(f"x {SECRET}", None, None, 0.1, RetryLater(SECRET)))
    body, _ = metrics.render()
    assert SECRET.encode() not in body
    found = samples(metrics)
    assert value(found, "hotfolder_job_failures_total", code="other") == 1


def test_two_instances_have_their_own_registries(tmp_path: Path) -> None:
    a = Metrics(Ledger(tmp_path / "a.db"))
    b = Metrics(Ledger(tmp_path / "b.db"))
    a.observe_bytes("upload", 5)
    assert value(samples(a), "hotfolder_uploaded_bytes_total") == 5
    assert value(samples(b), "hotfolder_uploaded_bytes_total") == 0


def test_a_failing_ledger_still_gives_a_scrape(ledger: Ledger, metrics: Metrics,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    def broken() -> dict[str, int]:
        raise OSError("disk I/O error")
    monkeypatch.setattr(ledger, "counts", broken)
    found = samples(metrics)
    assert value(found, "hotfolder_ledger_readable") == 0
    assert value(found, "hotfolder_jobs", state="queued") is None
    assert value(found, "hotfolder_log_lines_dropped_total") is not None


def test_listener_exceptions_never_break_a_transition(ledger: Ledger, metrics: Metrics) -> None:
    """A job object the metrics cannot read is skipped; the transition stands."""
    metrics.on_transition(None, None)
    metrics.on_transition(object(), "queued")   # type: ignore[arg-type]
    job = new_job(ledger, "ok.mp4")
    assert ledger.get(job).state == State.QUEUED


def test_scrape_cost_does_not_grow_with_history(ledger: Ledger, metrics: Metrics, clock: FakeClock) -> None:
    """Every query a scrape runs reads job_counts, a key, or an index (never a scan of jobs,
    events or notifications): the plan is checked by SQLite itself."""
    for i in range(30):
        job = new_job(ledger, f"h{i}.mp4")
        if i % 3:
            assert ledger.advance(job, State.QUEUED, State.CANCELLED)
    statements: list[str] = []
    ledger.conn.set_trace_callback(statements.append)
    try:
        metrics.render()
    finally:
        ledger.conn.set_trace_callback(None)
    selects = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
    assert any("job_counts" in s for s in selects)
    assert any("FROM jobs" in s for s in selects)   # the oldest queued job
    for sql in selects:
        for row in ledger.conn.execute(f"EXPLAIN QUERY PLAN {sql}"):
            detail = row[3]
            for table in ("jobs", "events", "notifications"):
                if detail.startswith(f"SCAN {table}") or f" {table} " in f" {detail} " and "SCAN" in detail:
                    assert "INDEX" in detail, f"{sql!r} scans {table}: {detail}"


def test_odd_values_are_ignored_not_raised(metrics: Metrics) -> None:
    metrics.observe_bytes("upload", "lots")   # type: ignore[arg-type]
    metrics.observe_bytes("upload", -5)
    metrics.observe_stage("upload", -1.0)
    metrics.observe_stage("upload", None)   # type: ignore[arg-type]
    found = samples(metrics)
    assert value(found, "hotfolder_uploaded_bytes_total") == 0
    assert value(found, "hotfolder_upload_duration_seconds_count") == 0
