"""Local conversion of the formats the API does not take (hotfolder.convert).

The parsing and planning tests need nothing. The tests that convert need a real ffmpeg and skip
without one; the inputs are small real files in tests/media/convert/ (see its README), plus one
longer clip made at test time for the interruption tests. The one fake here is
``convert.find_ffmpeg`` returning None, to show what a machine without ffmpeg does.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
import threading
import time
import types
from pathlib import Path
from typing import Any

import pytest

from helpers import MEDIA, wait_for
from hotfolder import finish, media
from hotfolder.errors import Interrupted
from hotfolder.intake import Intake
from hotfolder import convert
from hotfolder.convert import Inspection, Stream
from hotfolder.states import State
from test_daemon import Env, Running

CONVERT = MEDIA / "convert"
MKV = CONVERT / "h264_aac.mkv"      # H.264 + AAC: remuxed
FLAC = CONVERT / "speech.flac"      # decoded to WAV
AVI = CONVERT / "mpeg4_mp3.avi"     # MPEG-4 Part 2 + MP3: transcoded
OGG = CONVERT / "speech.ogg"        # Ogg Opus: decoded to WAV
SKIP_REASON = "ffmpeg not found: apt-get install ffmpeg or pip install 'hotfolder[ffmpeg]'"


@pytest.fixture
def ffmpeg() -> str:
    found = convert.find_ffmpeg()
    if found is None:
        pytest.skip(SKIP_REASON)
    return found


@pytest.fixture(scope="module")
def long_avi(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 s of 640x360 MPEG-4 Part 2: a few seconds of libx264, long enough to be stopped."""
    found = convert.find_ffmpeg()
    if found is None:
        pytest.skip(SKIP_REASON)
    path = tmp_path_factory.mktemp("long") / "long.avi"
    subprocess.run([found, "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                    "testsrc2=size=640x360:rate=25", "-t", "12", "-c:v", "mpeg4", "-q:v", "8", "-an", str(path)],
                   check=True, timeout=120)
    return path


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def stream_bytes(ffmpeg: str, path: Path, *args: str) -> bytes:
    """One stream of ``path`` extracted by ffmpeg (``args`` pick it and its raw format)."""
    return subprocess.run([ffmpeg, "-hide_banner", "-loglevel", "error", "-i", str(path), *args, "-"],
                          check=True, capture_output=True, timeout=60).stdout


def events(env: Env, job_id: int, kind: str) -> list[dict[str, Any]]:
    return [e["detail"] for e in env.ledger().events(job_id) if e["kind"] == kind]


def uploads(sandbox: Any) -> list[dict[str, Any]]:
    return [e for e in sandbox.journal() if e["endpoint"] in ("create_upload_url", "upload_put")]


def work_files(env: Env) -> list[str]:
    work = convert.work_dir(env.settings)
    return sorted(p.name for p in work.iterdir()) if work.is_dir() else []


def ffmpeg_children(marker: str) -> list[int]:
    """Processes whose command line mentions ``marker`` (a work folder): ffmpeg left running."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker in (entry / "cmdline").read_bytes().decode(errors="replace"):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


# -- reading what ffmpeg says -----------------------------------------------------------------------

FFMPEG5_MKV = """\
Input #0, matroska,webm, from 'file:/in/clip.mkv':
  Metadata:
    ENCODER         : Lavf59.27.100
  Duration: 00:00:01.06, start: 0.000000, bitrate: 69 kb/s
  Stream #0:0: Video: h264 (High), yuv420p(progressive), 160x120 [SAR 1:1 DAR 4:3], 10 fps, 10 tbr, 1k tbn
    Metadata:
      DURATION        : 00:00:01.064000000
  Stream #0:1(eng): Audio: opus, 48000 Hz, 5.1(side), fltp (default)
  Stream #0:2: Attachment: ttf
    Metadata:
      filename        : font.ttf
  Stream #0:3: Video: mjpeg (Baseline), yuvj420p(pc, bt470bg/unknown/unknown), 600x600, 90k tbr, 90k tbn (attached pic)
At least one output file must be specified
"""

# ffmpeg 4: streams indented by four, the old rotate tag beside the display matrix
FFMPEG4_MOV = """\
Input #0, mov,mp4,m4a,3gp,3g2,mj2, from 'file:/in/IMG_0001.m4v':
  Metadata:
    major_brand     : qt
  Duration: 00:01:05.50, start: 0.000000, bitrate: 16000 kb/s
    Stream #0:0(und): Video: hevc (Main) (hvc1 / 0x31637668), yuv420p(tv, bt709), 1920x1080, 15994 kb/s, 29.97 fps, 29.97 tbr, 600 tbn, 1200 tbc (default)
    Metadata:
      rotate          : 90
      handler_name    : Core Media Video
    Side data:
      displaymatrix: rotation of -90.00 degrees
    Stream #0:1(und): Audio: aac (LC) (mp4a / 0x6134706D), 44100 Hz, stereo, fltp, 96 kb/s (default)
At least one output file must be specified
"""


def test_parse_streams_sizes_and_cover_art() -> None:
    info = convert.parse_inspection(FFMPEG5_MKV, "file:/in/clip.mkv")
    assert info is not None and info.duration_s == pytest.approx(1.06)
    assert [(s.index, s.kind, s.codec) for s in info.streams] == [
        (0, "video", "h264"), (1, "audio", "opus"), (2, "attachment", "ttf"), (3, "video", "mjpeg")]
    assert info.video == info.streams[0] and info.streams[3].attached_pic
    assert (info.video.width, info.video.height, info.video.rotation) == (160, 120, 0)
    assert (info.audio.sample_rate, info.audio.channels) == (48000, 6)
    assert info.display_size() == (160, 120)


def test_parse_rotation_old_and_new_spelling() -> None:
    info = convert.parse_inspection(FFMPEG4_MOV)
    assert info is not None and info.duration_s == pytest.approx(65.5)
    assert info.video.codec == "hevc" and info.video.rotation == 90        # -90 counter-clockwise
    assert info.display_size() == (1080, 1920)
    assert (info.audio.channels, info.audio.sample_rate) == (2, 44100)
    only_tag = FFMPEG4_MOV.replace("      displaymatrix: rotation of -90.00 degrees\n", "").replace(
        "rotate          : 90", "rotate          : 270")
    assert convert.parse_inspection(only_tag).video.rotation == 270        # the tag is clockwise
    turned = FFMPEG4_MOV.replace("rotation of -90.00", "rotation of 180.00")
    assert convert.parse_inspection(turned).display_size() == (1920, 1080)  # the matrix wins
    ffmpeg7 = FFMPEG4_MOV.replace("      rotate          : 90\n", "").replace("displaymatrix:", "Display Matrix:")
    assert convert.parse_inspection(ffmpeg7).video.rotation == 90          # ffmpeg 7's spelling


def test_parse_refuses_what_is_not_ffmpegs_own() -> None:
    assert convert.parse_inspection("file:/in/x.mkv: Invalid data found when processing input\n") is None
    evil = "file:/in/a':\n  Stream #0:0: Video: h264, 9000x9000\n.mkv"   # a file name posing as a stream
    text = (f"Input #0, matroska,webm, from '{evil}':\n"
            "  Metadata:\n"
            "    Stream #0:0: Video: h264, 7000x7000: a tag posing as a stream\n"   # (ffmpeg 4 indents streams so)
            "  Duration: N/A, start: 0, bitrate: N/A\n"
            "  Stream #0:0: Audio: flac, 16000 Hz, mono, s16\n"
            "  Stream #0:0: Video: h264, 8000x8000\n")
    info = convert.parse_inspection(text, evil)
    assert info is not None and [s.kind for s in info.streams] == ["audio"] and info.video is None
    assert info.duration_s is None


def test_which_files_are_converted_and_the_message_without_ffmpeg() -> None:
    assert convert.needs_conversion("a/Clip.MKV") == "video"
    assert convert.needs_conversion("x.amr") == "audio"
    assert convert.needs_conversion("x.mp4") is None and convert.needs_conversion("x.wav") is None
    message = convert.missing_ffmpeg_message("clip.mkv")
    assert message.startswith("clip.mkv is Matroska video, which the Chanjing API does not take")
    assert "apt-get install ffmpeg" in message and "pip install 'hotfolder[ffmpeg]'" in message


def test_find_ffmpeg_on_path_then_the_extra(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))                 # no ffmpeg on PATH
    monkeypatch.setitem(sys.modules, "imageio_ffmpeg", None)  # and the extra not installed
    assert convert.find_ffmpeg() is None
    assert convert.conversion_problem("clip.flac") == convert.missing_ffmpeg_message("clip.flac")
    bundled = tmp_path / "bundled" / "ffmpeg-linux64"
    bundled.parent.mkdir()
    bundled.write_text("#!/bin/sh\n")
    bundled.chmod(0o755)
    monkeypatch.setitem(sys.modules, "imageio_ffmpeg",
                        types.SimpleNamespace(get_ffmpeg_exe=lambda: str(bundled)))
    assert convert.find_ffmpeg() == str(bundled)
    on_path = tmp_path / "ffmpeg"
    on_path.write_text("#!/bin/sh\n")
    on_path.chmod(0o755)
    assert convert.find_ffmpeg() == str(on_path)               # PATH first


# -- what to make of an input -------------------------------------------------------------------------

def _video(codec: str, audio: str | None, channels: int = 2) -> Inspection:
    streams = [Stream(0, "video", codec, 640, 360)]
    if audio:
        streams.append(Stream(1, "audio", audio, sample_rate=48000, channels=channels))
    return Inspection(tuple(streams), 1.0)


def _summary(plans: list[convert.Plan]) -> list[tuple[str, str, str | None, str | None]]:
    return [(p.ext, p.method, p.video, p.audio) for p in plans]


def test_remux_when_the_codecs_allow_it_else_transcode() -> None:
    assert _summary(convert.plans("video", _video("h264", "aac"))) == [
        ("mp4", "remux", "copy", "copy"), ("mp4", "transcode", "libx264", "aac")]
    assert _summary(convert.plans("video", _video("hevc", None)))[0] == ("mp4", "remux", "copy", None)
    assert "hvc1" in convert.plans("video", _video("hevc", None))[0].args
    partial = convert.plans("video", _video("h264", "amr_nb", channels=6))[0]   # 3GP phone video
    assert (partial.method, partial.video, partial.audio) == ("remux", "copy", "aac")
    assert partial.args[partial.args.index("-ac") + 1] == "2"
    assert _summary(convert.plans("video", _video("vp9", "opus")))[0] == ("webm", "remux", "copy", "copy")
    assert _summary(convert.plans("video", _video("vp9", "aac"))) == [("mp4", "transcode", "libx264", "aac")]
    (only,) = convert.plans("video", _video("mpeg4", "mp3"))
    assert only.method == "transcode" and only.encoders == ("libx264", "aac")
    for option in ("libx264", "veryfast", "20", "yuv420p", "128k", "+faststart"):
        assert option in only.args
    assert "-an" not in only.args and "-ac" not in only.args


def test_audio_targets() -> None:
    def audio(codec: str, rate: int, channels: int) -> Inspection:
        return Inspection((Stream(0, "audio", codec, sample_rate=rate, channels=channels),), 1.0)

    assert _summary(convert.plans("audio", audio("aac", 44100, 2))) == [
        ("m4a", "remux", None, "copy"), ("wav", "transcode", None, "pcm_s16le")]
    flac = convert.plans("audio", audio("flac", 16000, 1))
    assert _summary(flac) == [("wav", "transcode", None, "pcm_s16le")]
    assert "-ar" not in flac[0].args and "-ac" not in flac[0].args      # rate and mono kept
    hi = convert.plans("audio", audio("pcm_s24be", 96000, 6))[0].args   # a studio AIFF
    assert hi[hi.index("-ar") + 1] == "48000" and hi[hi.index("-ac") + 1] == "2"


# -- intake -----------------------------------------------------------------------------------------

def test_without_ffmpeg_the_job_fails_at_intake_and_costs_nothing(
        tmp_path: Path, sandbox: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(convert, "find_ffmpeg", lambda: None)
    env = Env(tmp_path, sandbox)
    env.drop("clip.mkv", MKV)
    env.drop("clip.flac", FLAC)
    env.drop("talk.mp4", MEDIA / "portrait.mp4")
    env.drop("talk.ogg", OGG)
    assert env.run_once() == 1
    jobs = env.jobs()
    for video, driver in (("clip.mkv", "clip.flac"), ("talk.mp4", "talk.ogg")):
        assert jobs[video].state == State.FAILED and jobs[video].error_code == "bad_input"
        error = json.loads((env.settings.folders.failed / f"{Path(video).stem}.error.json").read_text())
        assert "apt-get install ffmpeg" in error["message"] and "hotfolder[ffmpeg]" in error["message"]
        assert (env.settings.folders.failed / driver).exists()
    assert jobs["clip.mkv"].error.startswith("clip.mkv is Matroska video")
    assert jobs["talk.mp4"].error.startswith("talk.ogg is Ogg audio")
    assert (env.settings.folders.failed / "clip.mkv").read_bytes() == MKV.read_bytes()
    assert uploads(sandbox) == [] and sandbox.tasks() == []


def test_unreadable_or_wrong_inputs_fail_at_intake_naming_the_file(
        tmp_path: Path, sandbox: Any, ffmpeg: str) -> None:
    env = Env(tmp_path, sandbox)
    env.drop("junk.mkv", b"\x1aE\xdf\xa3" + b"\x00" * 60)
    env.drop("junk.txt", "hi")
    env.drop("sound.avi", OGG)             # readable, but only sound
    env.drop("sound.txt", "hi")
    env.drop("pic.mp4", MEDIA / "portrait.mp4")
    env.drop("pic.flac", MKV)             # a video where speech should be: it has sound, so it converts
    env.drop("mute.mp4", MEDIA / "portrait.mp4")
    env.drop("mute.amr", MEDIA / "portrait.mp4")   # no sound at all
    assert env.run_once() == 1
    jobs = env.jobs()
    assert "junk.mkv cannot be read as Matroska video" in jobs["junk.mkv"].error
    assert ".mp4, .mov or .webm" in jobs["junk.mkv"].error
    assert jobs["sound.avi"].error.startswith("sound.avi has only sound")
    assert jobs["mute.mp4"].error.startswith("mute.amr has no sound")
    assert jobs["pic.mp4"].state == State.DONE
    failed = [j.name for j in jobs.values() if j.state == State.FAILED]
    assert sorted(failed) == ["junk.mkv", "mute.mp4", "sound.avi"]
    assert len([u for u in uploads(sandbox) if u["endpoint"] == "upload_put"]) == 2   # pic's two files


# -- over the sandbox ---------------------------------------------------------------------------------

def test_mkv_and_flac_pair_is_remuxed_converted_and_archived(tmp_path: Path, sandbox: Any, ffmpeg: str) -> None:
    env = Env(tmp_path, sandbox)
    env.drop("team/clip.mkv", MKV)
    env.drop("team/clip.flac", FLAC)
    assert env.run_once() == 0
    job = env.jobs()["team/clip.mkv"]
    assert job.state == State.DONE, job.error
    # The converted files were uploaded, named after the stem.
    video_rec, audio_rec = sandbox.state.files[job.video_file_id], sandbox.state.files[job.audio_file_id]
    assert (video_rec.name, video_rec.service) == ("clip.mp4", "lip_sync_video")
    assert (audio_rec.name, audio_rec.service) == ("clip.wav", "lip_sync_audio")
    video_blob, audio_blob = sandbox.state.blob_path(job.video_file_id), sandbox.state.blob_path(job.audio_file_id)
    # The video: remuxed, not re-encoded: an MP4 whose H.264 and AAC are the MKV's, bit for bit.
    (video_event,) = [e for e in events(env, job.id, "converted") if e["role"] == "video"]
    assert (video_event["method"], video_event["video"], video_event["audio"]) == ("remux", "copy", "copy")
    assert video_event["seconds"] >= 0 and video_event["bytes"] == video_blob.stat().st_size
    info = media.probe_path(video_blob)
    assert (info.container, info.width, info.height) == ("mp4", 160, 120)
    assert info.duration_s == pytest.approx(convert.inspect(MKV, ffmpeg).duration_s, abs=0.1)
    for args in (("-map", "0:v:0", "-c", "copy", "-f", "h264"), ("-map", "0:a:0", "-c", "copy", "-f", "adts")):
        assert stream_bytes(ffmpeg, video_blob, *args) == stream_bytes(ffmpeg, MKV, *args)
    # The audio: FLAC decoded to WAV, the same samples.
    (audio_event,) = [e for e in events(env, job.id, "converted") if e["role"] == "audio"]
    assert (audio_event["method"], audio_event["audio"]) == ("transcode", "pcm_s16le")
    head = audio_blob.read_bytes()[:12]
    assert head[:4] == b"RIFF" and head[8:12] == b"WAVE"
    pcm = ("-f", "s16le", "-ac", "1")
    assert stream_bytes(ffmpeg, audio_blob, *pcm) == stream_bytes(ffmpeg, FLAC, *pcm)
    # What was made is what the sandbox returned; the originals are archived untouched.
    out, archive = env.settings.folders.outbox, env.settings.folders.archive
    assert (out / "team/clip.mp4").read_bytes() == video_blob.read_bytes()
    assert (archive / "team/clip.mkv").read_bytes() == MKV.read_bytes()
    assert (archive / "team/clip.flac").read_bytes() == FLAC.read_bytes()
    assert sorted(p.name for p in (archive / "team").iterdir()) == ["clip.flac", "clip.mkv"]
    assert [p for p in env.inbox.rglob("*") if p.is_file()] == []
    task = next(t for t in sandbox.tasks() if t["id"] == job.remote_id)["request"]
    assert (task["screen_width"], task["screen_height"]) == (160, 120)
    assert work_files(env) == []   # uploaded, then its job ended: nothing left behind
    assert not any("convert" in key for key in job.params)   # the request is what it would be for an MP4


def test_avi_is_transcoded_and_a_rotated_m4v_keeps_its_shape(tmp_path: Path, sandbox: Any, ffmpeg: str) -> None:
    env = Env(tmp_path, sandbox)
    env.drop("old.avi", AVI)
    env.drop("old.txt", "an old clip")
    env.drop("phone.m4v", MEDIA / "rotated.mp4")   # an iPhone-style portrait clip (coded 320x180)
    env.drop("phone.txt", "held upright")
    assert env.run_once() == 0
    jobs = env.jobs()
    old, phone = jobs["old.avi"], jobs["phone.m4v"]
    (event,) = events(env, old.id, "converted")
    assert (event["method"], event["video"], event["audio"]) == ("transcode", "libx264", "aac")
    made = convert.inspect(sandbox.state.blob_path(old.video_file_id), ffmpeg)
    assert [(s.kind, s.codec) for s in made.streams] == [("video", "h264"), ("audio", "aac")]
    assert made.display_size() == (160, 120)
    assert (env.settings.folders.archive / "old.avi").read_bytes() == AVI.read_bytes()
    assert events(env, phone.id, "converted")[0]["method"] == "remux"
    task = next(t for t in sandbox.tasks() if t["id"] == phone.remote_id)["request"]
    assert (task["screen_width"], task["screen_height"]) == (180, 320)
    assert (env.settings.folders.outbox / "old.mp4").exists() and (env.settings.folders.outbox / "phone.mp4").exists()


def test_the_same_original_is_converted_and_uploaded_once(tmp_path: Path, sandbox: Any, ffmpeg: str) -> None:
    env = Env(tmp_path, sandbox)
    for name in ("one", "two", "three"):
        env.drop(f"{name}.mkv", MKV)
        env.drop(f"{name}.ogg", OGG)
    assert env.run_once() == 0
    jobs = env.jobs()
    assert len({j.video_file_id for j in jobs.values()}) == 1 and len({j.audio_file_id for j in jobs.values()}) == 1
    converted = [e for j in jobs.values() for e in events(env, j.id, "converted") if not e["reused"]]
    assert sorted(e["role"] for e in converted) == ["audio", "video"]   # the others reused it, or the upload
    assert len([u for u in uploads(sandbox) if u["endpoint"] == "upload_put"]) == 2
    assert work_files(env) == []


def test_a_conversion_checkpoint_is_removed_when_its_job_ends(tmp_path: Path, sandbox: Any, ffmpeg: str) -> None:
    """A conversion left by an interrupted upload stage goes once no unfinished job needs it."""
    env = Env(tmp_path, sandbox)
    for name in ("a", "b"):
        env.drop(f"{name}.mkv", MKV)
        env.drop(f"{name}.txt", "hi")
    ledger = env.ledger()
    intake = Intake(env.settings, ledger, clock=lambda: 100.0)
    intake.scan()
    intake.clock = lambda: 200.0
    a_id, b_id = intake.scan().created
    converter = convert.Converter(convert.work_dir(env.settings), 1, threading.Event())
    made = converter.convert(env.inbox / "a.mkv", sha256(MKV), "video")
    assert made.method == "remux" and made.path.exists()
    assert finish.end_job(ledger, env.settings, ledger.get(a_id), State.FAILED, error="boom", code="error")
    assert made.path.exists()                     # b, still queued, has the same content
    assert finish.end_job(ledger, env.settings, ledger.get(b_id), State.CANCELLED, error="cancelled by the user")
    assert not made.path.exists() and work_files(env) == []
    failed = env.settings.folders.failed
    assert (failed / "a.mkv").read_bytes() == MKV.read_bytes() and (failed / "b.mkv").read_bytes() == MKV.read_bytes()


def test_leftover_conversions_are_swept_at_start(tmp_path: Path, sandbox: Any) -> None:
    from hotfolder.daemon import make_client
    from hotfolder.pipeline import Pipeline

    env = Env(tmp_path, sandbox)
    env.drop("q.mp4", MEDIA / "portrait.mp4")   # any queued job's input hashes count (no ffmpeg needed)
    env.drop("q.txt", "hi")
    ledger = env.ledger()
    intake = Intake(env.settings, ledger, clock=lambda: 100.0)
    intake.scan()
    intake.clock = lambda: 200.0
    assert len(intake.scan().created) == 1
    work = convert.work_dir(env.settings)
    work.mkdir(parents=True)
    needed = work / f"{sha256(MEDIA / 'portrait.mp4')}.mp4"   # q is queued
    orphan = work / f"{'0' * 64}.wav"                          # its job is gone
    stale = work / f".{'1' * 64}.1.cafe00000000.tmp"                          # left by a killed process
    for path in (needed, orphan, stale):
        path.write_bytes(b"x")
    with make_client(env.settings, ledger) as client:
        Pipeline(env.settings, ledger, client)
    assert sorted(p.name for p in work.iterdir()) == [needed.name]


# -- the Converter: checkpoints, bounds, stopping ----------------------------------------------------------

def test_a_finished_conversion_is_reused_after_a_restart(tmp_path: Path, ffmpeg: str) -> None:
    work = tmp_path / "work"
    first = convert.Converter(work, 2, threading.Event())
    made = first.convert(OGG, sha256(OGG), "audio")
    assert (made.ext, made.method, made.reused, first.runs) == ("wav", "transcode", False, 1)
    assert made.path == work / f"{sha256(OGG)}.wav"
    mtime = made.path.stat().st_mtime_ns
    crashed = work / f".{sha256(FLAC)}.1.deadbeef0000.tmp"   # a conversion a killed process left half-written
    crashed.write_bytes(b"half")
    second = convert.Converter(work, 2, threading.Event())   # "the restart"
    assert not crashed.exists()
    again = second.convert(OGG, sha256(OGG), "audio")
    assert again.reused and again.path == made.path and second.runs == 0
    assert made.path.stat().st_mtime_ns == mtime
    assert OGG.read_bytes()[:4] == b"OggS"   # the original is only read


def test_conversions_wait_for_a_slot_and_the_wait_yields_to_stop(tmp_path: Path, ffmpeg: str) -> None:
    stop = threading.Event()
    converter = convert.Converter(tmp_path / "work", 1, stop)
    assert converter.slots.acquire(blocking=False)   # the one slot is taken (a conversion running)
    threading.Timer(0.3, stop.set).start()
    started = time.monotonic()
    with pytest.raises(Interrupted, match="waited"):
        converter.convert(FLAC, sha256(FLAC), "audio")
    assert time.monotonic() - started < 3 and converter.runs == 0


def test_a_stopped_conversion_leaves_nothing_and_is_done_again(tmp_path: Path, long_avi: Path, ffmpeg: str) -> None:
    work = tmp_path / "work"
    stop = threading.Event()
    converter = convert.Converter(work, 1, stop)
    digest = sha256(long_avi)

    def stop_once_running() -> None:
        wait_for(lambda: list(work.glob(".*.tmp")), timeout=30, interval=0.01, message="ffmpeg's output")
        stop.set()

    trigger = threading.Thread(target=stop_once_running)
    trigger.start()
    with pytest.raises(Interrupted):
        converter.convert(long_avi, digest, "video")
    stopped_after = time.monotonic()
    trigger.join()
    assert time.monotonic() - stopped_after < 2
    assert list(work.iterdir()) == []                      # no partial output, final or temporary
    assert ffmpeg_children(str(work)) == []                # ffmpeg was killed, not left running
    fresh = convert.Converter(work, 1, threading.Event())  # after the restart: made from scratch
    made = fresh.convert(long_avi, digest, "video")
    assert (made.method, made.reused, fresh.runs) == ("transcode", False, 1)
    assert media.probe_path(made.path).duration_s == pytest.approx(12.0, abs=0.2)
    assert [p.name for p in work.iterdir()] == [f"{digest}.mp4"]


@pytest.mark.slow
def test_stopping_the_daemon_mid_conversion_resumes_at_the_next_start(
        tmp_path: Path, sandbox: Any, long_avi: Path, ffmpeg: str) -> None:
    env = Env(tmp_path, sandbox)
    env.drop("long.avi", long_avi)
    env.drop("long.txt", "a long clip")
    work = convert.work_dir(env.settings)
    with Running(env):
        wait_for(lambda: work.is_dir() and list(work.glob(".*.tmp")), timeout=60, interval=0.01,
                 message="the conversion to start")
    job = env.jobs()["long.avi"]
    assert job.state == State.UPLOADING and job.video_file_id is None
    assert work_files(env) == [] and ffmpeg_children(str(work)) == []
    assert not [u for u in uploads(sandbox) if u["endpoint"] == "upload_put"]
    assert (env.inbox / "long.avi").read_bytes() == long_avi.read_bytes()
    assert env.run_once() == 0
    job = env.jobs()["long.avi"]
    assert job.state == State.DONE
    assert [e["method"] for e in events(env, job.id, "converted")] == ["transcode"]
    assert (env.settings.folders.archive / "long.avi").read_bytes() == long_avi.read_bytes()
    assert work_files(env) == []


def test_a_conversion_ffmpeg_cannot_finish_fails_the_job_with_its_words(
        tmp_path: Path, sandbox: Any, ffmpeg: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """ffmpeg refusing (here: asked for an encoder option it rejects) is a permanent failure
    naming the file and quoting ffmpeg, before anything is uploaded."""
    real = convert.plans

    def broken(kind: convert.Kind, info: Inspection) -> list[convert.Plan]:
        return [convert.Plan(p.ext, p.method, p.video, p.audio, p.args + ("-b:a", "nonsense"), p.encoders)
                for p in real(kind, info)]

    monkeypatch.setattr(convert, "plans", broken)
    env = Env(tmp_path, sandbox)
    env.drop("bad.mp4", MEDIA / "portrait.mp4")
    env.drop("bad.flac", FLAC)
    assert env.run_once() == 1
    job = env.jobs()["bad.mp4"]
    assert job.state == State.FAILED and job.error_code == "bad_input"
    assert job.error.startswith("ffmpeg could not convert bad.flac (FLAC audio): transcode: ")
    assert re.search(r"nonsense|Invalid argument", job.error)   # ffmpeg's own words (5.1 / 7 and on)
    assert not [u for u in uploads(sandbox) if u["endpoint"] == "upload_put"]
    assert (env.settings.folders.failed / "bad.flac").read_bytes() == FLAC.read_bytes()
    assert work_files(env) == []
