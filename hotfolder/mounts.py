"""The mount table: which filesystem holds a path, and whether its change events can be trusted.

inotify (and so watchdog) reports only changes made through this machine's kernel. On NFS,
SMB/CIFS, 9p, cluster filesystems and FUSE mounts (sshfs, rclone, s3fs, bindfs, …) a file
written by another machine, or behind the FUSE daemon's back, produces no event at all; the
watcher uses :func:`is_remote` to switch to polling there.

Linux only: the table is read from ``/proc/self/mountinfo`` (preferred: it is per mount
namespace and always carries the fs type and source) or ``/proc/mounts``. Both escape space,
tab, newline and backslash in paths as ``\\ooo`` octal; they are decoded at the byte level and
then turned into ``str`` with :func:`os.fsdecode`, so a mount point matches the ``str`` Python
gives for the same path even when it is not valid UTF-8.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

MOUNTINFO = "/proc/self/mountinfo"
PROC_MOUNTS = "/proc/mounts"

# Network and shared filesystems: other machines change them without this kernel knowing.
# (``fuse.*`` is matched by prefix in :func:`is_remote`.)
REMOTE_FS = frozenset({
    "nfs", "nfs4", "cifs", "smb", "smb2", "smb3", "smbfs", "9p", "afs", "ceph", "glusterfs",
    "lustre", "ncpfs", "davfs", "coda",
    # Cluster filesystems on a shared block device: other nodes write the same disk.
    "ocfs2", "gfs2", "gpfs", "beegfs", "orangefs", "pvfs2",
    # Host/guest shares: the host changes them behind the guest's back.
    "virtiofs", "vboxsf", "vmhgfs", "prl_fs",
    # An automount trigger not mounted yet: what appears there is almost always a network share.
    "autofs",
    # FUSE without a subtype: the daemon could be anything, including a network client.
    "fuse",
})
# Deliberately NOT remote: "fuseblk". It is FUSE on a local block device (ntfs-3g, exfat-fuse):
# the disk is attached to this machine only, every write goes through this kernel's VFS, so
# inotify sees all of them, like on ext4. Polling there would only cost CPU and latency.

_ESCAPE = re.compile(rb"\\([0-7]{3})")


@dataclass(frozen=True)
class Mount:
    """One line of the mount table."""

    mount_point: str
    fstype: str
    source: str


def unescape(field: bytes) -> str:
    """Decode the kernel's ``\\ooo`` octal escapes (``\\040`` is a space) into a path string."""
    return os.fsdecode(_ESCAPE.sub(lambda m: bytes([int(m.group(1), 8)]), field))


def parse_mountinfo(data: bytes) -> list[Mount]:
    """Parse ``/proc/self/mountinfo`` text (in table order).

    A line is ``id parent major:minor root mount_point options [optional…] - fstype source
    super_options``; the optional fields vary in number, so the ``-`` separator is searched for.
    """
    mounts = []
    for line in data.splitlines():
        fields = line.split()
        try:
            sep = fields.index(b"-", 6)
        except ValueError:
            continue   # malformed: skip the line rather than misread it
        if len(fields) < sep + 3:
            continue
        mounts.append(Mount(unescape(fields[4]), unescape(fields[sep + 1]), unescape(fields[sep + 2])))
    return mounts


def parse_proc_mounts(data: bytes) -> list[Mount]:
    """Parse ``/proc/mounts`` (fstab format: ``source mount_point fstype options 0 0``)."""
    mounts = []
    for line in data.splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        mounts.append(Mount(unescape(fields[1]), unescape(fields[2]), unescape(fields[0])))
    return mounts


def _looks_like_mountinfo(data: bytes) -> bool:
    for line in data.splitlines():
        fields = line.split()
        if fields:
            return len(fields) >= 10 and fields[0].isdigit() and b"-" in fields[6:]
    return False


def read_mounts(mounts_file: str | os.PathLike[str] | None = None) -> list[Mount] | None:
    """The mount table, or None if it cannot be read (not Linux, /proc not mounted).

    ``mounts_file`` (for tests) may be in either format; it is recognised by its content.
    Without it, ``/proc/self/mountinfo`` is read, else ``/proc/mounts``.
    """
    candidates = [mounts_file] if mounts_file is not None else [MOUNTINFO, PROC_MOUNTS]
    for candidate in candidates:
        try:
            data = Path(candidate).read_bytes()
        except OSError:
            continue
        return parse_mountinfo(data) if _looks_like_mountinfo(data) else parse_proc_mounts(data)
    return None


def is_under(path: str, mount_point: str) -> bool:
    """Whether absolute ``path`` is ``mount_point`` or inside it, comparing whole components
    (``/mnt/a`` holds ``/mnt/a/x`` but not ``/mnt/ab``)."""
    if path == mount_point:
        return True
    base = mount_point.rstrip("/")   # "/" becomes "", so every absolute path is under it
    return path.startswith(base + "/")


def find_mount(path: str | os.PathLike[str], mounts_file: str | os.PathLike[str] | None = None,
               *, mounts: list[Mount] | None = None) -> Mount | None:
    """The mount holding ``path`` (symlinks resolved): the longest mount point containing it.

    When several mounts share that mount point the last one in the table wins: it was mounted
    on top and is the one a lookup reaches. None if the table is unreadable or has no match.
    """
    table = mounts if mounts is not None else read_mounts(mounts_file)
    if not table:
        return None
    target = os.path.realpath(path)   # also works for a path that does not exist (yet)
    best: Mount | None = None
    for mount in table:
        if is_under(target, mount.mount_point) and (
                best is None or len(mount.mount_point) >= len(best.mount_point)):
            best = mount
    return best


def filesystem_type(path: Path | str, mounts_file: str | os.PathLike[str] | None = None) -> str | None:
    """The filesystem type of the mount holding ``path`` (Linux), or None if unknown.

    Same contract as the former ``hotfolder.ledger.filesystem_type``; ``mounts_file`` may be in
    /proc/mounts or mountinfo format, and by default the live table is read.
    """
    mount = find_mount(path, mounts_file)
    return mount.fstype if mount is not None else None


def is_remote(fstype: str | None) -> bool:
    """Whether changes on ``fstype`` can happen without this kernel seeing them, so that
    inotify cannot be trusted to report them (network, cluster, host-share and FUSE mounts)."""
    if not fstype:
        return False
    fstype = fstype.lower()
    return fstype in REMOTE_FS or fstype.startswith("fuse.")


def describe(path: str | os.PathLike[str], mounts_file: str | os.PathLike[str] | None = None) -> str:
    """One line for a person (``hotfolder doctor``), e.g.
    ``nfs4 server:/export at /mnt/share (network: events from other machines never arrive)``."""
    mount = find_mount(path, mounts_file)
    if mount is None:
        return "unknown filesystem (no readable mount table: not Linux, or /proc is not mounted)"
    head = f"{mount.fstype} {mount.source} at {mount.mount_point}"
    fstype = mount.fstype.lower()
    if fstype.startswith("fuse.") or fstype == "fuse":
        return f"{head} (FUSE: changes made behind the mount, e.g. by other machines, send no events)"
    if fstype == "autofs":
        return f"{head} (automount point, not mounted yet: usually a network share)"
    if is_remote(fstype):
        return f"{head} (network: events from other machines never arrive)"
    if fstype == "fuseblk":
        return f"{head} (FUSE on a local disk, e.g. NTFS: every change goes through this machine, events are reliable)"
    return f"{head} (local: filesystem events are reliable)"


# -- folders on shares that may go away ---------------------------------------------------------
# The device each output folder was on when the daemon started. A share that is unmounted leaves
# an empty directory (its mount point) or nothing: either way the device differs, and writing
# there would fill the local disk under the mount point while the share's copy never appears.
_FOLDER_DEVICES: dict[str, int] = {}


def remember_folder(path: Path) -> None:
    """Note the device ``path`` is on now (the daemon calls this at start for its output folders)."""
    try:
        _FOLDER_DEVICES[str(path)] = os.stat(path).st_dev
    except OSError:
        pass


def folder_available(path: Path) -> bool:
    """Whether ``path`` is still the folder it was at start: present and on the same device. A
    folder never remembered (no daemon running here) only needs to exist or be creatable."""
    expected = _FOLDER_DEVICES.get(str(path))
    if expected is None:
        return True
    try:
        return os.stat(path).st_dev == expected
    except OSError:
        return False
