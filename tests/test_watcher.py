"""Mount table parsing, watch-mode choice, the polling watcher, and a real FUSE mount (bindfs).

No fixed sleeps as synchronisation: a test waits for the wake callback (a threading.Event) with
a deadline, or for the watcher's scan counter to move on before asserting that nothing woke.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from hotfolder.mounts import Mount, describe, filesystem_type, find_mount, is_remote, read_mounts
from hotfolder.watcher import PollingWatcher, Watcher, choose_mode, make_watcher

from helpers import wait_for

POLL = 0.2          # seconds between polls in these tests
MARGIN = 2.0        # how late a wake may be on a loaded CI box

MOUNTINFO = (
    b"22 27 0:21 / /proc rw,relatime shared:5 - proc proc rw\n"
    b"27 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw,discard\n"
    # optional fields vary in number: none here, two on the next line
    b"60 27 0:50 / /mnt/a rw,relatime - nfs4 server:/export rw,vers=4.2\n"
    b"61 27 0:51 / /mnt/ab rw,relatime shared:7 master:3 - cifs //nas/share rw\n"
    b"62 60 0:52 / /mnt/a/deeper rw - fuse.sshfs me@host:/srv rw\n"
    b"63 27 0:53 / /media/My\\040Disk rw - fuseblk /dev/sdb1 rw\n"
    b"64 27 0:54 / /srv/tab\\011and\\134slash rw - ext4 /dev/sdc1 rw\n"
    b"65 27 0:55 / /mnt/stacked rw - ext4 /dev/sdd1 rw\n"
    b"66 65 0:56 / /mnt/stacked rw - fuse.rclone remote: rw\n"
    b"garbage line without separator\n"
)
PROC_MOUNTS = (
    b"/dev/vda / ext4 rw 0 0\n"
    b"server:/x /mnt/nas nfs4 rw 0 0\n"
    b"/dev/sdb1 /media/My\\040Disk fuseblk rw 0 0\n"
    b"short\n"
)


@pytest.fixture
def mountinfo(tmp_path: Path) -> Path:
    path = tmp_path / "mountinfo"
    path.write_bytes(MOUNTINFO)
    return path


# -- the mount table ----------------------------------------------------------------------------
def test_mountinfo_is_parsed_with_escapes_and_optional_fields(mountinfo: Path) -> None:
    table = read_mounts(mountinfo)
    assert table is not None
    assert Mount("/mnt/a", "nfs4", "server:/export") in table
    assert Mount("/mnt/ab", "cifs", "//nas/share") in table
    assert Mount("/media/My Disk", "fuseblk", "/dev/sdb1") in table
    assert Mount("/srv/tab\tand\\slash", "ext4", "/dev/sdc1") in table
    assert len(table) == 9   # the garbage line is skipped, not misread


def test_proc_mounts_format_is_recognised(tmp_path: Path) -> None:
    path = tmp_path / "mounts"
    path.write_bytes(PROC_MOUNTS)
    assert read_mounts(path) == [Mount("/", "ext4", "/dev/vda"), Mount("/mnt/nas", "nfs4", "server:/x"),
                                 Mount("/media/My Disk", "fuseblk", "/dev/sdb1")]
    # the ledger's old contract, unchanged
    assert filesystem_type(Path("/mnt/nas/db"), str(path)) == "nfs4"
    assert filesystem_type(Path("/var/lib"), str(path)) == "ext4"
    assert filesystem_type(Path("/media/My Disk/x"), str(path)) == "fuseblk"


def test_longest_mount_point_wins_component_wise(mountinfo: Path) -> None:
    def mount_of(path: str) -> str:
        mount = find_mount(path, mountinfo)
        assert mount is not None
        return mount.mount_point

    assert mount_of("/mnt/a/file") == "/mnt/a"
    assert mount_of("/mnt/a") == "/mnt/a"
    assert mount_of("/mnt/ab/file") == "/mnt/ab"          # not /mnt/a: components, not characters
    assert mount_of("/mnt/abc/file") == "/"               # neither /mnt/a nor /mnt/ab
    assert mount_of("/mnt/a/deeper/x/y") == "/mnt/a/deeper"
    assert mount_of("/mnt/a/deeperx") == "/mnt/a"
    assert mount_of("/etc/passwd") == "/"
    # two mounts on one point: the later one is on top
    assert filesystem_type("/mnt/stacked/x", mountinfo) == "fuse.rclone"


def test_undecodable_mount_point_matches_python_paths(tmp_path: Path) -> None:
    path = tmp_path / "mountinfo"
    path.write_bytes(b"27 1 254:0 / / rw - ext4 /dev/vda rw\n"
                     b"70 27 0:60 / /mnt/caf\xe9 rw - nfs server:/c rw\n")
    assert filesystem_type(os.fsdecode(b"/mnt/caf\xe9/inbox"), path) == "nfs"


def test_unreadable_table_means_unknown(tmp_path: Path) -> None:
    assert read_mounts(tmp_path / "nope") is None
    assert filesystem_type("/", tmp_path / "nope") is None
    assert describe("/", tmp_path / "nope").startswith("unknown filesystem")


def test_live_table_is_readable() -> None:
    assert filesystem_type("/") is not None


@pytest.mark.parametrize("fstype, remote", [
    ("nfs", True), ("nfs4", True), ("cifs", True), ("smb3", True), ("smbfs", True), ("9p", True),
    ("afs", True), ("ceph", True), ("glusterfs", True), ("lustre", True), ("ncpfs", True), ("davfs", True),
    ("fuse", True), ("fuse.sshfs", True), ("fuse.rclone", True), ("fuse.bindfs", True),
    ("fuse.gvfsd-fuse", True), ("fuse.s3fs", True), ("autofs", True), ("virtiofs", True),
    ("fuseblk", False), ("ext4", False), ("xfs", False), ("btrfs", False), ("zfs", False),
    ("tmpfs", False), ("overlay", False), ("", False), (None, False),
])
def test_is_remote(fstype: str | None, remote: bool) -> None:
    assert is_remote(fstype) is remote


def test_describe(mountinfo: Path) -> None:
    assert describe("/mnt/a/inbox", mountinfo) == \
        "nfs4 server:/export at /mnt/a (network: events from other machines never arrive)"
    assert describe("/mnt/a/deeper", mountinfo).startswith("fuse.sshfs me@host:/srv at /mnt/a/deeper (FUSE")
    assert "local" in describe("/media/My Disk/in", mountinfo)
    assert describe("/home", mountinfo) == "ext4 /dev/vda at / (local: filesystem events are reliable)"


# -- choosing a mode --------------------------------------------------------------------------------
@pytest.fixture
def tree(tmp_path: Path) -> tuple[Path, Path]:
    """(a folder on a pretend NFS share, a local folder) and a mount table saying so."""
    root = tmp_path.resolve()
    share = root / "share" / "inbox"
    local = root / "local" / "inbox"
    share.mkdir(parents=True)
    local.mkdir(parents=True)
    (tmp_path / "mountinfo").write_bytes(
        b"27 1 254:0 / / rw - ext4 /dev/vda rw\n"
        + f"80 27 0:70 / {root}/share rw - nfs4 nas:/video rw\n".encode()
    )
    return share, local


@pytest.mark.parametrize("configured, where, expected", [
    ("auto", "share", "polling"), ("auto", "local", "events"),
    ("events", "share", "events"), ("events", "local", "events"),
    ("polling", "share", "polling"), ("polling", "local", "polling"),
])
def test_choose_mode(tmp_path: Path, tree: tuple[Path, Path], configured: str, where: str, expected: str) -> None:
    inbox = tree[0] if where == "share" else tree[1]
    mode, reason = choose_mode(inbox, configured, mounts_file=tmp_path / "mountinfo")
    assert mode == expected
    if configured == "auto" and where == "share":
        assert "nfs4" in reason and f"{tmp_path.resolve()}/share" in reason
    if configured == "auto" and where == "local":
        assert "ext4" in reason
    if configured == "events" and where == "share":
        assert "nfs4" in reason and "rescan" in reason   # the person is told what it costs
    if configured != "auto":
        assert "configured" in reason


def test_auto_polls_when_the_inbox_is_missing(tmp_path: Path, tree: tuple[Path, Path]) -> None:
    # A share not mounted yet at start: the local folder under it says nothing about the share.
    mode, reason = choose_mode(tmp_path / "not-mounted" / "inbox", "auto", mounts_file=tmp_path / "mountinfo")
    assert mode == "polling" and "missing" in reason


def test_auto_without_a_mount_table_assumes_local(tmp_path: Path, tree: tuple[Path, Path]) -> None:
    assert choose_mode(tree[0], "auto", mounts_file=tmp_path / "nope")[0] == "events"


def test_choose_mode_rejects_unknown_modes(tree: tuple[Path, Path]) -> None:
    with pytest.raises(ValueError, match="auto, events, polling"):
        choose_mode(tree[1], "inotify")


def test_make_watcher_builds_the_chosen_one_and_logs_once(tmp_path: Path, tree: tuple[Path, Path]) -> None:
    table = tmp_path / "mountinfo"
    with capture_logs() as logs:
        polling = make_watcher(tree[0], lambda: None, "auto", 3.0, mounts_file=table)
        events = make_watcher(tree[1], lambda: None, "auto", 3.0, mounts_file=table)
    assert isinstance(polling, PollingWatcher) and polling.poll_seconds == 3.0
    assert isinstance(events, Watcher)
    modes = [entry for entry in logs if entry["event"] == "watch_mode"]
    assert [m["mode"] for m in modes] == ["polling", "events"]
    assert "nfs4" in modes[0]["reason"] and modes[0]["poll_seconds"] == 3.0


# -- the polling watcher ------------------------------------------------------------------------------
class Waker:
    """The wake callback: an Event the test waits on."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.count = 0

    def __call__(self) -> None:
        self.count += 1
        self.event.set()

    def wait(self, timeout: float = POLL + MARGIN) -> bool:
        woke = self.event.wait(timeout)
        self.event.clear()
        return woke


@pytest.fixture
def waker() -> Waker:
    return Waker()


@pytest.fixture
def inbox(tmp_path: Path) -> Path:
    path = tmp_path / "inbox"
    path.mkdir()
    return path


@pytest.fixture
def poller(inbox: Path, waker: Waker) -> Iterator[PollingWatcher]:
    watcher = PollingWatcher(inbox, waker, poll_seconds=POLL)
    try:
        yield watcher
    finally:
        watcher.stop()


def settle_polls(watcher: PollingWatcher, n: int = 2) -> None:
    """Wait until ``n`` more complete listings happened (so 'nothing woke' means something)."""
    target = watcher.scans + n
    wait_for(lambda: watcher.scans >= target, timeout=n * POLL + MARGIN, message=f"{n} more polls")


def test_new_changed_and_removed_files_wake(inbox: Path, waker: Waker, poller: PollingWatcher) -> None:
    (inbox / "old.mp4").write_bytes(b"1")
    assert poller.ensure() and poller.running
    assert not waker.event.is_set(), "the baseline listing reports nothing"

    (inbox / "clip.mp4").write_bytes(b"video")
    assert waker.wait(), "a new file was not noticed"
    assert poller.drain() == [str(inbox / "clip.mp4")]

    with open(inbox / "clip.mp4", "ab") as fh:
        fh.write(b"more")
    assert waker.wait(), "a size change was not noticed"
    assert poller.drain() == [str(inbox / "clip.mp4")]

    st = os.stat(inbox / "old.mp4")
    os.utime(inbox / "old.mp4", ns=(st.st_atime_ns, st.st_mtime_ns - 10**9))
    assert waker.wait(), "an mtime change was not noticed"
    assert poller.drain() == [str(inbox / "old.mp4")]

    (inbox / "clip.mp4").unlink()
    assert waker.wait(), "a removal was not noticed"
    assert poller.drain() == [str(inbox / "clip.mp4")]

    settle_polls(poller)
    assert not waker.event.is_set() and poller.drain() == [], "an unchanged inbox must not wake"


def test_subfolders_are_watched(inbox: Path, waker: Waker, poller: PollingWatcher) -> None:
    poller.ensure()
    (inbox / "preset" / "deep").mkdir(parents=True)
    (inbox / "preset" / "deep" / "a.txt").write_text("hi")
    assert waker.wait()
    assert poller.drain() == [str(inbox / "preset" / "deep" / "a.txt")]


def test_ignored_names_and_folders_never_wake(inbox: Path, waker: Waker, poller: PollingWatcher) -> None:
    poller.ensure()
    (inbox / ".hidden.mp4").write_bytes(b"x")
    (inbox / "clip.mp4.part").write_bytes(b"x")
    (inbox / "Thumbs.db").write_bytes(b"x")
    (inbox / ".sync").mkdir()
    (inbox / ".sync" / "a.mp4").write_bytes(b"x")
    (inbox / "@eaDir").mkdir()
    (inbox / "@eaDir" / "b.mp4").write_bytes(b"x")
    settle_polls(poller)
    assert not waker.event.is_set() and poller.drain() == []
    # ...while they keep changing
    (inbox / "clip.mp4.part").write_bytes(b"xx")
    (inbox / ".sync" / "a.mp4").write_bytes(b"xx")
    settle_polls(poller)
    assert not waker.event.is_set() and poller.drain() == []
    # the rename that completes a download is a new takeable file
    (inbox / "clip.mp4.part").rename(inbox / "clip.mp4")
    assert waker.wait()
    assert poller.drain() == [str(inbox / "clip.mp4")]


def test_symlinks_are_never_followed(tmp_path: Path, inbox: Path, waker: Waker, poller: PollingWatcher) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.mp4").write_bytes(b"x")
    poller.ensure()
    (inbox / "link.mp4").symlink_to(outside / "secret.mp4")
    (inbox / "linkdir").symlink_to(outside, target_is_directory=True)
    settle_polls(poller)
    assert not waker.event.is_set() and poller.drain() == []
    (outside / "secret.mp4").write_bytes(b"changed")        # the targets change: still nothing
    (outside / "new.mp4").write_bytes(b"x")
    settle_polls(poller)
    assert not waker.event.is_set() and poller.drain() == []


def test_removed_inbox_is_missing_not_emptied(tmp_path: Path, inbox: Path, waker: Waker,
                                              poller: PollingWatcher) -> None:
    for n in range(5):
        (inbox / f"clip{n}.mp4").write_bytes(b"x")
    poller.ensure()
    with capture_logs() as logs:
        inbox.rename(tmp_path / "away")                        # unmounted / deleted
        wait_for(lambda: not poller.inbox_present, timeout=POLL + MARGIN, message="inbox reported missing")
        assert not waker.event.is_set() and poller.drain() == [], "a missing inbox is not 'all removed'"
        assert poller.running, "the thread keeps going: it notices the return"

        (tmp_path / "away").rename(inbox)                      # back, unchanged
        assert waker.wait(), "the return of the inbox must wake the daemon"
        assert poller.drain() == [str(inbox)]                  # no per-file removals or additions
    assert [e["event"] for e in logs if e["event"].startswith("watch_inbox")] == \
        ["watch_inbox_missing", "watch_inbox_back"]

    # Gone again; back with one file more: that file is reported too.
    inbox.rename(tmp_path / "away")
    wait_for(lambda: not poller.inbox_present, timeout=POLL + MARGIN, message="inbox reported missing")
    (tmp_path / "away" / "new.mp4").write_bytes(b"x")
    (tmp_path / "away").rename(inbox)
    assert waker.wait()
    assert sorted(poller.drain()) == sorted([str(inbox), str(inbox / "new.mp4")])


def test_inbox_missing_at_start_then_created(inbox: Path, waker: Waker, poller: PollingWatcher) -> None:
    inbox.rmdir()
    assert poller.ensure() is False and poller.running
    inbox.mkdir()
    (inbox / "clip.mp4").write_bytes(b"x")
    assert waker.wait()
    assert str(inbox) in poller.drain()


def test_unlistable_subfolder_keeps_its_files(monkeypatch: pytest.MonkeyPatch, inbox: Path, waker: Waker,
                                             poller: PollingWatcher) -> None:
    (inbox / "sub").mkdir()
    (inbox / "sub" / "a.mp4").write_bytes(b"x")
    poller.ensure()
    real_scandir = os.scandir
    broken = str(inbox / "sub")

    def flaky_scandir(path: str) -> object:   # root bypasses chmod 000, so fail it here
        if os.fspath(path) == broken:
            raise PermissionError(13, "Permission denied", path)
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", flaky_scandir)
    settle_polls(poller)
    assert not waker.event.is_set() and poller.drain() == [], "unknown is not removed"
    monkeypatch.setattr(os, "scandir", real_scandir)
    (inbox / "sub" / "a.mp4").unlink()
    assert waker.wait()
    assert poller.drain() == [str(inbox / "sub" / "a.mp4")]


def test_stop_is_prompt_and_restart_works(inbox: Path, waker: Waker) -> None:
    watcher = PollingWatcher(inbox, waker, poll_seconds=3600)   # waits on an Event, not a sleep
    watcher.ensure()
    started = time.monotonic()
    watcher.stop()
    assert time.monotonic() - started < 1.0 and not watcher.running
    (inbox / "while-stopped.mp4").write_bytes(b"x")
    fast = PollingWatcher(inbox, waker, poll_seconds=POLL)
    try:
        fast.ensure()
        assert fast.running and not watcher.running
        # a restarted watcher reports what changed while it was stopped
        watcher.poll_seconds = POLL
        watcher.ensure()
        assert waker.wait()
        assert str(inbox / "while-stopped.mp4") in watcher.drain()
    finally:
        fast.stop()
        watcher.stop()


def test_a_failing_wake_does_not_end_polling(inbox: Path) -> None:
    calls = threading.Event()
    count = 0

    def wake() -> None:
        nonlocal count
        count += 1
        calls.set()
        raise RuntimeError("boom")

    watcher = PollingWatcher(inbox, wake, poll_seconds=POLL)
    try:
        watcher.ensure()
        (inbox / "a.mp4").write_bytes(b"x")
        assert calls.wait(POLL + MARGIN)
        calls.clear()
        (inbox / "b.mp4").write_bytes(b"x")
        assert calls.wait(POLL + MARGIN) and watcher.running
    finally:
        watcher.stop()


def test_poll_seconds_must_be_positive(inbox: Path) -> None:
    with pytest.raises(ValueError):
        PollingWatcher(inbox, lambda: None, poll_seconds=0)


# -- a real FUSE mount ----------------------------------------------------------------------------
def _unmount(mnt: Path) -> None:
    for argv in (["fusermount", "-u", str(mnt)], ["fusermount3", "-u", str(mnt)], ["umount", str(mnt)]):
        if shutil.which(argv[0]) is None:
            continue
        for _attempt in range(20):
            if subprocess.run(argv, capture_output=True, timeout=10).returncode == 0:
                return
            if not os.path.ismount(mnt):
                return
            threading.Event().wait(0.1)   # busy: a listing still in flight


@pytest.fixture
def bindfs_mount(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """``under/`` mounted at ``mnt/`` with bindfs; skips when FUSE is not available here."""
    if shutil.which("bindfs") is None:
        pytest.skip("bindfs is not installed (Debian/Ubuntu: apt-get install bindfs)")
    if not os.path.exists("/dev/fuse"):
        pytest.skip("/dev/fuse is missing (a container without FUSE)")
    under, mnt = tmp_path / "under", tmp_path / "mnt"
    under.mkdir()
    mnt.mkdir()
    # subtype=bindfs: libfuse 2 mounting as root otherwise records the type as plain "fuse"
    # (via fusermount, as a user, it is "fuse.bindfs" either way).
    try:
        proc = subprocess.run(["bindfs", "-o", "subtype=bindfs", str(under), str(mnt)],
                              capture_output=True, text=True, timeout=15)
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"bindfs could not run: {exc}")
    if proc.returncode != 0:
        pytest.skip(f"bindfs could not mount (no FUSE permission here?): {proc.stderr.strip()}")
    try:
        if not os.path.ismount(mnt):
            pytest.skip("bindfs exited 0 but nothing is mounted")
        yield under, mnt
    finally:
        _unmount(mnt)


def test_bindfs_share_is_polled_and_changes_behind_it_are_seen(bindfs_mount: tuple[Path, Path],
                                                               waker: Waker) -> None:
    under, mnt = bindfs_mount
    # (a) auto picks polling, from the real mount table
    assert filesystem_type(mnt) == "fuse.bindfs"
    mode, reason = choose_mode(mnt, "auto")
    assert mode == "polling" and "fuse.bindfs" in reason and str(mnt.resolve()) in reason
    text = describe(mnt)   # the source column is bindfs's choice (here: the folder it mirrors)
    assert text.startswith("fuse.bindfs ") and f" at {mnt.resolve()} (FUSE" in text

    poll_seconds = 1.0
    watcher = PollingWatcher(mnt, waker, poll_seconds=poll_seconds)
    try:
        watcher.ensure()
        # (b) a file written behind the mount (as another machine would): no event reaches
        # this side of the mount, the poll sees it
        (under / "clip.mp4").write_bytes(b"video")
        assert waker.wait(poll_seconds + 2.0), "the poll did not see a file written behind the FUSE mount"
        assert watcher.drain() == [str(mnt / "clip.mp4")]

        # (c) the share goes away: mnt/ is an empty local folder again, on another device.
        # That is a missing inbox, not "clip.mp4 was removed".
        _unmount(mnt)
        assert not os.path.ismount(mnt)
        wait_for(lambda: not watcher.inbox_present, timeout=poll_seconds + 2.0, message="unmount noticed")
        assert not waker.event.is_set() and watcher.drain() == []
    finally:
        watcher.stop()
