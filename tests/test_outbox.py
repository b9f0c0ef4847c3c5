"""Atomic placement and no-clobber moves."""

from __future__ import annotations

from pathlib import Path

import pytest

from hotfolder import outbox
from hotfolder.errors import InputError


def test_free_stem_and_group_plan(tmp_path: Path) -> None:
    (tmp_path / "clip.mp4").write_bytes(b"x")
    (tmp_path / "clip-2.txt").write_bytes(b"x")
    assert outbox.free_stem(tmp_path, "clip", [".mp4", ".txt"]) == "clip-3"
    plan = outbox.plan_group_move({"video": "/in/clip.mp4", "text": "/in/clip.txt"}, tmp_path, "clip")
    assert plan == {"video": str(tmp_path / "clip-3.mp4"), "text": str(tmp_path / "clip-3.txt")}


def test_place_never_overwrites_and_is_idempotent(tmp_path: Path) -> None:
    tmp, final = tmp_path / ".t", tmp_path / "sub" / "out.mp4"
    tmp.write_bytes(b"data")
    outbox.place(tmp, final)
    assert final.read_bytes() == b"data" and not tmp.exists()
    outbox.place(tmp, final)   # re-run after a crash: nothing to do
    tmp.write_bytes(b"other")
    with pytest.raises(FileExistsError):
        outbox.place(tmp, final)
    assert final.read_bytes() == b"data"


def test_move_is_idempotent_and_no_clobber(tmp_path: Path) -> None:
    src, dst = tmp_path / "a.txt", tmp_path / "arch" / "a.txt"
    src.write_text("x")
    outbox.move(src, dst)
    assert dst.read_text() == "x" and not src.exists()
    outbox.move(src, dst)
    src.write_text("y")
    with pytest.raises(FileExistsError):
        outbox.move(src, dst)
    assert src.read_text() == "y"


@pytest.mark.parametrize("rel", ["../x", "/etc/passwd", "a/../../x", "..", "a/.."])
def test_safe_join_refuses_escapes(tmp_path: Path, rel: str) -> None:
    with pytest.raises(InputError):
        outbox.safe_join(tmp_path, rel)


def test_write_json_atomic(tmp_path: Path) -> None:
    outbox.write_json(tmp_path / "e.json", {"message": "é"})
    assert '"é"' in (tmp_path / "e.json").read_text(encoding="utf-8")
    assert [p.name for p in tmp_path.iterdir()] == ["e.json"]
