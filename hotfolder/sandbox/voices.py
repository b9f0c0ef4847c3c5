"""The public voice list the sandbox serves (``list_common_audio``), and its audition samples."""

from __future__ import annotations

import io
import wave
from functools import lru_cache
from typing import Any

# (id, name, gender, lang, desc). The first id is the one in the vendor's example request;
# the rest are made up in the same shape ("C-" + 32 hex digits).
_VOICES: tuple[tuple[str, str, str, str, str], ...] = (
    ("C-f2429d07554749839849497589199916", "晓晓", "female", "cn", "温柔知性女声"),
    ("C-0a1b2c3d4e5f40718293a4b5c6d7e8f9", "云扬", "male", "cn", "沉稳新闻男声"),
    ("C-1b2c3d4e5f60418293a4b5c6d7e8f90a", "晓蕾", "female", "cn", "活泼少女音"),
    ("C-2c3d4e5f6071429384a5b6c7d8e9f0a1", "云哲", "male", "cn", "磁性解说男声"),
    ("C-3d4e5f607182439485b6c7d8e9f0a1b2", "小美", "female", "cn", "亲切客服女声"),
    ("C-4e5f60718293449586c7d8e9f0a1b2c3", "阿强", "male", "cn", "东北方言男声"),
    ("C-5f6071829304459687d8e9f0a1b2c3d4", "粤语晓敏", "female", "yue", "粤语女声"),
    ("C-60718293a415469788e9f0a1b2c3d4e5", "Emma", "female", "en", "American English, warm"),
    ("C-718293a4b526479889f0a1b2c3d4e5f6", "James", "male", "en", "British English, calm"),
    ("C-8293a4b5c637489980a1b2c3d4e5f607", "童童", "female", "cn", "童声"),
    ("C-93a4b5c6d748499a91b2c3d4e5f60718", "老陈", "male", "cn", "老年男声,讲故事"),
    ("C-a4b5c6d7e8594a0ba2c3d4e5f6071829", "Yuki", "female", "ja", "日本語 女性"),
)

VOICE_IDS: frozenset[str] = frozenset(v[0] for v in _VOICES)


def voice_list(base_url: str) -> list[dict[str, Any]]:
    """Every public voice as the API lists it; ``audition`` points at the sandbox's sample."""
    return [
        {
            "id": vid,
            "name": name,
            "gender": gender,
            "lang": lang,
            "desc": desc,
            "speed": 1,
            "pitch": 1,
            "grade": 0,
            "audition": f"{base_url}/_storage/audition/{vid}.wav",
        }
        for vid, name, gender, lang, desc in _VOICES
    ]


@lru_cache(maxsize=1)
def audition_wav() -> bytes:
    """A valid 0.2 s mono 16 kHz silent WAV, served as every voice's audition sample."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16000)
        out.writeframes(b"\x00\x00" * 3200)
    return buf.getvalue()
