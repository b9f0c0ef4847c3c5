"""The create endpoint's validation matrix: every documented rule, one case each."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from hotfolder.sandbox import Sandbox
from sandbox_fixtures import FAST, VOICE, Api

OK, FORMAT, PARAM, INTERNAL = 0, 400, 40000, 50000


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """One sandbox for the whole matrix, with a ready video, a ready audio and odd files."""
    data_dir: Path = tmp_path_factory.mktemp("create") / "sandbox"
    with Sandbox(data_dir, settings=FAST) as sandbox:
        api = Api(sandbox)
        files = {
            "video": api.upload(),
            "audio": api.upload(b"ID3" + b"a" * 50, "lip_sync_audio", "a.mp3"),
            "deleted": api.upload(),
        }
        for file_id in files.values():
            api.ready(file_id)
        sandbox.set_file_status(files["deleted"], 99)
        sandbox.update(reject_file_rate=1.0)
        files["rejected"] = api.upload()
        api.ready(files["rejected"], status=98)
        sandbox.update(reject_file_rate=0.0, file_ready_delay=3600)
        files["pending"] = api.upload()  # uploaded, still syncing
        files["audio_pending"] = api.upload(b"ID3", "lip_sync_audio", "b.mp3")
        files["empty"] = api.slot()["file_id"]  # never uploaded
        yield {"api": api, "sb": sandbox, **files}
        api.close()


def tts(**over: Any) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """A valid TTS body with ``over`` applied (a value of ... deletes the key)."""

    def build(env: dict[str, Any]) -> dict[str, Any]:
        body: dict[str, Any] = {"video_file_id": env["video"],
                                "tts_config": {"text": ["你好"], "audio_man_id": VOICE}}
        for key, value in over.items():
            nested = key.startswith("tts_") and key != "tts_config"
            target, name = (body["tts_config"], key[4:]) if nested else (body, key)
            if value is ...:
                target.pop(name, None)
            else:
                target[name] = value(env) if callable(value) else value
        return body

    return build


def audio(**over: Any) -> Callable[[dict[str, Any]], dict[str, Any]]:
    def build(env: dict[str, Any]) -> dict[str, Any]:
        body = {"video_file_id": env["video"], "audio_type": "audio", "audio_file_id": env["audio"]}
        body.update({k: v(env) if callable(v) else v for k, v in over.items()})
        return {k: v for k, v in body.items() if v is not ...}

    return build


CASES: list[tuple[str, Callable[[dict[str, Any]], Any], int, str]] = [
    # (name, body builder, expected code, substring of msg)
    ("minimal tts", tts(), OK, ""),
    ("text as a plain string", tts(tts_text="君不见黄河之水天上来"), OK, ""),
    ("every field", tts(screen_width=720, screen_height=1280, backway=2, drive_mode="random",
                        callback="https://example.com/cb?x=1", model=1, volume=1, audio_type="tts",
                        tts_speed=0.5, tts_pitch=2), OK, ""),
    ("model 2 (cartoon)", tts(model=2), OK, ""),
    ("empty callback", tts(callback=""), OK, ""),
    ("4000 characters", tts(tts_text=["字" * 2000, "字" * 2000]), OK, ""),
    ("audio driven", audio(), OK, ""),
    ("audio driven ignores tts_config", audio(tts_config={"text": ""}), OK, ""),
    # Format errors (400): not a JSON object, or a documented field of the wrong JSON type.
    ("array body", lambda e: [1], FORMAT, "object"),
    ("video_file_id number", tts(video_file_id=123), FORMAT, "video_file_id"),
    ("screen_width string", tts(screen_width="1080"), FORMAT, "screen_width"),
    ("screen_width float", tts(screen_width=1080.0), FORMAT, "screen_width"),
    ("model bool", tts(model=True), FORMAT, "model"),
    ("volume null", tts(volume=None), FORMAT, "volume"),
    ("callback null", tts(callback=None), FORMAT, "callback"),
    ("tts_config string", tts(tts_config="hi"), FORMAT, "tts_config"),
    ("text number", tts(tts_text=5), FORMAT, "tts_config.text"),
    ("text array of numbers", tts(tts_text=[1, 2]), FORMAT, "tts_config.text"),
    ("speed string", tts(tts_speed="1"), FORMAT, "tts_config.speed"),
    # Parameter errors (40000).
    ("unknown field", tts(resolution="1080p"), PARAM, "resolution"),
    ("unknown tts field", tts(tts_emotion="happy"), PARAM, "tts_config.emotion"),
    ("no video_file_id", tts(video_file_id=...), PARAM, "video_file_id"),
    ("empty video_file_id", tts(video_file_id=""), PARAM, "video_file_id"),
    ("unknown video", tts(video_file_id="0" * 32), PARAM, "video_file_id"),
    ("bad audio_type", tts(audio_type="text"), PARAM, "audio_type"),
    ("no tts_config", tts(tts_config=...), PARAM, "tts_config"),
    ("no text", tts(tts_text=...), PARAM, "text"),
    ("empty text", tts(tts_text=""), PARAM, "text"),
    ("blank text", tts(tts_text=" \n\t "), PARAM, "text"),
    ("empty array", tts(tts_text=[]), PARAM, "text"),
    ("array of blanks", tts(tts_text=["", "  "]), PARAM, "text"),
    ("4001 characters", tts(tts_text="a" * 4001), PARAM, "4000"),
    ("4001 characters over an array", tts(tts_text=["a" * 2000, "b" * 2001]), PARAM, "4000"),
    ("no voice", tts(tts_audio_man_id=...), PARAM, "audio_man_id"),
    ("unknown voice", tts(tts_audio_man_id="C-nope"), PARAM, "audio_man_id"),
    ("speed too low", tts(tts_speed=0.4), PARAM, "speed"),
    ("speed too high", tts(tts_speed=2.01), PARAM, "speed"),
    ("pitch too high", tts(tts_pitch=3), PARAM, "pitch"),
    ("volume 0", tts(volume=0), PARAM, "volume"),
    ("volume 101", tts(volume=101), PARAM, "volume"),
    ("model 3", tts(model=3), PARAM, "model"),
    ("backway 0", tts(backway=0), PARAM, "backway"),
    ("drive_mode", tts(drive_mode="rand"), PARAM, "drive_mode"),
    ("width 0", tts(screen_width=0), PARAM, "screen_width"),
    ("height 9000", tts(screen_height=9000), PARAM, "screen_height"),
    ("callback ftp", tts(callback="ftp://example.com/x"), PARAM, "callback"),
    ("callback not a URL", tts(callback="example.com/cb"), PARAM, "callback"),
    ("audio without file", audio(audio_file_id=...), PARAM, "audio_file_id"),
    ("unknown audio", audio(audio_file_id="1" * 32), PARAM, "audio_file_id"),
    ("rejected video (98)", tts(video_file_id=lambda e: e["rejected"]), PARAM, "98"),
    ("deleted video (99)", tts(video_file_id=lambda e: e["deleted"]), PARAM, "99"),
    # Internal-error code with a telling message, as the real service does.
    ("emoji", tts(tts_text="hello 😀"), INTERNAL, "emoji"),
    ("BMP emoji", tts(tts_text=["ok", "☀ sunny"]), INTERNAL, "emoji"),
    ("video still syncing", tts(video_file_id=lambda e: e["pending"]), INTERNAL, "文件还未完成上传"),
    ("video never uploaded", tts(video_file_id=lambda e: e["empty"]), INTERNAL, "文件还未完成上传"),
    ("audio still syncing", audio(audio_file_id=lambda e: e["audio_pending"]), INTERNAL, "文件还未完成上传"),
]


@pytest.mark.parametrize(("builder", "code", "fragment"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_create_validation(env: dict[str, Any], builder: Callable[[dict[str, Any]], Any],
                           code: int, fragment: str) -> None:
    envelope = env["api"].call("POST", "/open/v1/video_lip_sync/create", json=builder(env))
    assert envelope["code"] == code, envelope
    assert fragment in envelope["msg"]
    if code == OK:
        assert isinstance(envelope["data"], str) and len(envelope["data"]) == 32
    else:
        assert envelope["data"] is None


@pytest.mark.parametrize("raw", [b"", b"{", b"null", b'"text"', b"\xff\xfe"])
def test_create_unreadable_body(env: dict[str, Any], raw: bytes) -> None:
    envelope = env["api"].call("POST", "/open/v1/video_lip_sync/create", content=raw)
    assert envelope["code"] == FORMAT


def test_refused_creates_make_no_task(env: dict[str, Any]) -> None:
    before = len(env["sb"].tasks())
    env["api"].call("POST", "/open/v1/video_lip_sync/create", json={"video_file_id": env["video"]})
    assert len(env["sb"].tasks()) == before


def test_create_normalises_the_request(env: dict[str, Any]) -> None:
    task_id = env["api"].create(tts(tts_text="一句话")(env))["data"]
    request = next(t for t in env["sb"].tasks() if t["id"] == task_id)["request"]
    assert request["tts_config"] == {"text": ["一句话"], "audio_man_id": VOICE, "speed": 1, "pitch": 1}
    assert (request["screen_width"], request["screen_height"], request["volume"]) == (1080, 1920, 100)
    assert (request["backway"], request["drive_mode"], request["model"]) == (1, "", 0)
