"""The Chanjing API client (the only code that speaks to the API).

Import everything from here: ``from hotfolder.chanjing import ChanjingClient, Limits, ...``.
Modules: :mod:`.client` (the calls), :mod:`.models` (requests and lenient reply parsing),
:mod:`.tokens` (token stores), :mod:`.mapping` (codes and HTTP failures → errors),
:mod:`.transfer` (streamed uploads, resumable downloads).
"""

from hotfolder.chanjing.client import CallRecord, ChanjingClient
from hotfolder.chanjing.models import (FileInfo, LipSyncRequest, PageInfo, Task, TaskPage, Token, UploadSlot,
                                       Voice, VoicePage)
from hotfolder.chanjing.tokens import MemoryTokenStore, TokenStore
from hotfolder.ratelimit import Limits, RateLimiter
from hotfolder.retry import Backoff

__all__ = [
    "Backoff", "CallRecord", "ChanjingClient", "FileInfo", "Limits", "LipSyncRequest", "MemoryTokenStore", "PageInfo",
    "RateLimiter", "Task", "TaskPage", "Token", "TokenStore", "UploadSlot", "Voice", "VoicePage",
]
