"""Results are checked before they count, and quota codes pause like billing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from helpers import MEDIA, all_jobs, wait_for
from hotfolder.media.results import cover_problem, video_problem
from test_daemon import Env, Running


def test_result_checks_on_real_files(tmp_path: Path) -> None:
    good = MEDIA / "portrait.mp4"
    assert video_problem(good, 1000) is None and video_problem(good, None) is None
    assert "lasts 1.0 s" in (video_problem(good, 30_000) or "")
    cut = tmp_path / "cut.mp4"
    data = good.read_bytes()
    cut.write_bytes(data[: int(len(data) * 0.6)])
    assert video_problem(cut, 1000)
    cover = tmp_path / "c.jpg"
    cover.write_bytes(b"\xff\xd8\xff\xe0" + b"\0" * 20)
    assert cover_problem(cover) is None
    cover.write_bytes(b"<html>")
    assert "not a JPEG" in (cover_problem(cover) or "")


def test_a_broken_result_is_downloaded_again_then_the_job_fails_naming_the_task(tmp_path: Path,
                                                                                 sandbox: Any) -> None:
    env = Env(tmp_path, sandbox)
    sandbox.update(corrupt_result_rate=1.0)
    env.drop("cut.mp4", MEDIA / "portrait.mp4")
    env.drop("cut.txt", "a result that arrives broken")
    assert env.run_once() == 1
    job = all_jobs(env.ledger())[0]
    assert job.state == "failed" and job.error_code == "broken_result"
    assert job.remote_id in job.error and "twice" in job.error
    downloads = [e for e in sandbox.journal() if e["endpoint"] == "download" and e["fault"] == "corrupt"]
    assert len(downloads) == 2   # downloaded again (fresh URLs) before giving up
    details = [e for e in sandbox.journal() if e["endpoint"] == "detail"]
    assert details   # the fresh URLs came from detail
    assert not (env.settings.folders.outbox / "cut.mp4").exists()   # nothing broken counts as done
    kept = sorted(p.name for p in env.settings.folders.failed.iterdir())
    assert "cut.broken-video.mp4" in kept and "cut.broken-video-2.mp4" in kept   # never thrown away
    report = json.loads((env.settings.folders.failed / "cut.error.json").read_text(encoding="utf-8"))
    assert report["code"] == "broken_result" and job.remote_id in report["message"]


def test_a_result_broken_once_is_fetched_again_and_done(tmp_path: Path, sandbox: Any) -> None:
    env = Env(tmp_path, sandbox)
    sandbox.update(corrupt_result_rate=0.5, seed=3)
    for i in range(4):
        env.drop(f"r{i}.mp4", MEDIA / "portrait.mp4")
        env.drop(f"r{i}.txt", f"result number {i}")
    env.run_once()
    corrupt = [e for e in sandbox.journal() if e["fault"] == "corrupt"]
    assert corrupt, "the seed must corrupt at least one download"
    for job in all_jobs(env.ledger()):
        if job.state == "done":
            assert video_problem(Path(job.outputs["video"]), job.duration_ms) is None
            assert cover_problem(Path(job.outputs["cover"])) is None
        else:
            assert job.error_code == "broken_result"


def test_the_quota_code_pauses_submissions_instead_of_failing(tmp_path: Path, sandbox: Any) -> None:
    sandbox.update(balance_creates=0, balance_mode="quota")
    env = Env(tmp_path, sandbox, retry={"billing_recheck_seconds": 600})
    env.drop("q.mp4", MEDIA / "portrait.mp4")
    env.drop("q.txt", "over the quota")
    with Running(env):
        wait_for(lambda: env.ledger().get_value("billing_paused_until"), timeout=30, message="a quota pause")
        assert "额度" in (env.ledger().get_value("pause_reason") or "")
        assert all_jobs(env.ledger())[0].state not in ("failed", "done")
        import httpx

        httpx.post(f"{sandbox.base_url}/_sandbox/balance", json={"creates": None}, timeout=5)
        from hotfolder import control

        control.resume(env.ledger(), env.settings)   # `hotfolder resume`: no 600 s wait
        wait_for(lambda: all_jobs(env.ledger())[0].state == "done", timeout=30, message="done after resume")


def test_the_same_pair_dropped_again_reuses_the_result_with_zero_creates(tmp_path: Path, sandbox: Any) -> None:
    env = Env(tmp_path, sandbox)
    env.drop("promo.mp4", MEDIA / "portrait.mp4")
    env.drop("promo.txt", "the same words")
    assert env.run_once() == 0
    creates = len([e for e in sandbox.journal() if e["endpoint"] == "create"])
    # A sync tool copies the folder again; a person drops it again in a subfolder.
    env.drop("promo.mp4", MEDIA / "portrait.mp4")
    env.drop("promo.txt", "the same words")
    env.drop("again/promo.mp4", MEDIA / "portrait.mp4")
    env.drop("again/promo.txt", "the same words")
    assert env.run_once() == 0
    assert len([e for e in sandbox.journal() if e["endpoint"] == "create"]) == creates   # zero new creates
    jobs = {j.id: j for j in all_jobs(env.ledger())}
    first = min(jobs)
    reused = [j for j in jobs.values() if j.id != first]
    assert len(reused) == 2 and all(j.state == "done" and j.outputs["reused_from"] == first for j in reused)
    out = env.settings.folders.outbox
    assert (out / "promo-2.mp4").read_bytes() == (out / "promo.mp4").read_bytes()
    assert (out / "again" / "promo.mp4").exists()
    rows = json.loads(__import__("subprocess").run(
        [__import__("sys").executable, "-m", "hotfolder", "status", "--json", "--config", str(env.config_path)],
        capture_output=True, text=True, check=True).stdout)
    assert [r.get("reused_from") for r in rows] == [None, first, first]


def test_a_reused_result_whose_files_are_gone_comes_from_the_api_and_mode_again_pays(tmp_path: Path,
                                                                                      sandbox: Any) -> None:
    env = Env(tmp_path, sandbox)
    env.drop("x.mp4", MEDIA / "portrait.mp4")
    env.drop("x.txt", "words")
    assert env.run_once() == 0
    (env.settings.folders.outbox / "x.mp4").unlink()   # the team moved the result elsewhere
    env.drop("x.mp4", MEDIA / "portrait.mp4")
    env.drop("x.txt", "words")
    assert env.run_once() == 0
    assert len([e for e in sandbox.journal() if e["endpoint"] == "create"]) == 1
    second = all_jobs(env.ledger())[-1]
    assert second.outputs["reused_from"] == 1 and Path(second.outputs["video"]).exists()
    assert any(e["kind"] == "result_reused" and e["detail"]["from"] == "the API" for e in env.ledger().events(second.id))
    # Different parameters are different content: a new task.
    env.drop("x.mp4", MEDIA / "portrait.mp4")
    env.drop("x.txt", "other words")
    assert env.run_once() == 0
    assert len([e for e in sandbox.journal() if e["endpoint"] == "create"]) == 2
    again = Env(tmp_path / "b", sandbox, dedupe={"mode": "again"})
    for _ in range(2):
        again.drop("y.mp4", MEDIA / "portrait.mp4")
        again.drop("y.txt", "words")
        assert again.run_once() == 0
    assert len([e for e in sandbox.journal() if e["endpoint"] == "create"]) == 4
