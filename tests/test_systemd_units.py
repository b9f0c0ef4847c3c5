"""The shipped systemd units: what the contract asks of them, `verify`, and the security score.

`systemd-analyze verify` checks that ExecStart's binary exists and is executable, and the units
point at /opt/hotfolder/venv/bin/hotfolder, which exists only on an installed host. So the verify
tests copy the units into a temp folder, rewrite ONLY the ExecStart= binary path to an executable
stub at the same layout under that folder (tmp/opt/hotfolder/venv/bin/hotfolder), and verify the
copies: every other line is checked exactly as shipped, against the host's real unit tree
(sysinit.target, network-online.target, /bin/kill for ExecReload=). `--root=` was rejected: it
moves the whole unit search path into the temp root, so the standard targets and /bin/kill would
have to be faked as well and the check would prove less.

`systemd-analyze security --offline=yes` reads the unit files without a running systemd; it is
run on unmodified copies. Both need systemd 250+ (`--offline`, `--threshold`). On Debian/Ubuntu
systemd-analyze comes with the `systemd` package.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
UNITS = REPO / "systemd"
SHIPPED = ("hotfolder.service", "hotfolder@.service")
VENV_BIN = "/opt/hotfolder/venv/bin/hotfolder"
MAX_EXPOSURE = 2.0
MIN_SYSTEMD = 250        # security --offline and --threshold appeared in systemd 250

ANALYZE = shutil.which("systemd-analyze")


def _systemd_version() -> int | None:
    if ANALYZE is None:
        return None
    try:
        out = subprocess.run([ANALYZE, "--version"], capture_output=True, text=True, timeout=30, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.match(r"systemd (\d+)", out)
    return int(match.group(1)) if match else None


VERSION = _systemd_version()
needs_analyze = pytest.mark.skipif(
    ANALYZE is None or VERSION is None or VERSION < MIN_SYSTEMD,
    reason=("systemd-analyze not found (Debian/Ubuntu: apt-get install systemd)" if ANALYZE is None else
            f"systemd-analyze {VERSION} is older than {MIN_SYSTEMD}: no `security --offline`/`--threshold`"),
)


def analyze(*args: str) -> subprocess.CompletedProcess[str]:
    """Run systemd-analyze offline-friendly: no pager, no colours, output as plain text."""
    env = {**os.environ, "SYSTEMD_PAGER": "cat", "SYSTEMD_COLORS": "0", "SYSTEMD_LOG_COLOR": "0",
           "LC_ALL": "C.UTF-8"}
    assert ANALYZE is not None
    return subprocess.run([ANALYZE, "--no-pager", *args], capture_output=True, text=True, env=env,
                          timeout=120, check=False)


def parse_unit(text: str) -> list[tuple[str, str, str]]:
    """(section, key, value) for every assignment, in order (our units use no continuations)."""
    out, section = [], ""
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        out.append((section, key.strip(), value.strip()))
    return out


def directives(name: str) -> dict[str, list[str]]:
    result: dict[str, list[str]] = {}
    for section, key, value in parse_unit((UNITS / name).read_text()):
        result.setdefault(f"{section}.{key}", []).append(value)
    return result


def copy_for_verify(tmp_path: Path, text_filter: bool = True) -> Path:
    """The units copied under tmp_path/units, ExecStart= pointing at a stub under tmp_path."""
    stub = tmp_path / VENV_BIN.lstrip("/")
    stub.parent.mkdir(parents=True)
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(stub.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    units = tmp_path / "units"
    units.mkdir()
    for name in SHIPPED:
        lines = (UNITS / name).read_text().splitlines(keepends=True)
        rewritten = [line.replace(VENV_BIN, str(stub)) if line.startswith("ExecStart=") and text_filter else line
                     for line in lines]
        assert sum(a != b for a, b in zip(lines, rewritten)) == (1 if text_filter else 0), \
            f"{name}: expected exactly one ExecStart= line naming {VENV_BIN}"
        (units / name).write_text("".join(rewritten))
    return units


def problems_about_us(result: subprocess.CompletedProcess[str]) -> list[str]:
    """Lines of verify's output about our units (it may also grumble about the host's own)."""
    return [line for line in (result.stdout + result.stderr).splitlines() if "hotfolder" in line]


# -- what the contract and the brief ask, checked without systemd ---------------------------------

@pytest.mark.parametrize("name", SHIPPED)
def test_unit_has_the_required_directives(name: str) -> None:
    d = directives(name)
    inst = "%i" if "@" in name else None
    expect = {
        "Service.Type": ["notify"],
        "Service.NotifyAccess": ["main"],
        "Service.WatchdogSec": ["60"],
        "Service.ExecReload": ["/bin/kill -HUP $MAINPID"],
        "Service.Restart": ["on-failure"],
        "Service.RestartPreventExitStatus": ["2"],
        "Service.TimeoutStopSec": ["15"],
        "Service.User": ["hotfolder"],
        "Service.ExecStart": [f"{VENV_BIN} run --config /etc/hotfolder/{inst or 'hotfolder'}.toml --log-json"],
        "Service.LoadCredential": [f"secret_key:/etc/hotfolder/{inst + '.' if inst else ''}secret_key"],
        "Service.StateDirectory": [f"hotfolder/{inst}" if inst else "hotfolder"],
        "Service.ReadWritePaths": [f"/srv/hotfolder/{inst}" if inst else "/srv/hotfolder"],
        "Unit.RequiresMountsFor": [f"/srv/hotfolder/{inst}" if inst else "/srv/hotfolder"],
        "Install.WantedBy": ["multi-user.target"],
    }
    for key, value in expect.items():
        assert d.get(key) == value, f"{name}: {key}"
    # The future HTTP listener must stay reachable from loopback/LAN.
    assert "Service.PrivateNetwork" not in d and "Service.IPAddressDeny" not in d


def test_template_has_the_same_hardening() -> None:
    """The template differs only by the instance name in paths: no drift between the two."""
    def normalised(name: str) -> list[tuple[str, str, str]]:
        text = (UNITS / name).read_text()
        text = text.replace("/etc/hotfolder/%i.toml", "/etc/hotfolder/hotfolder.toml")
        text = text.replace("/etc/hotfolder/%i.secret_key", "/etc/hotfolder/secret_key")
        text = text.replace("hotfolder/%i", "hotfolder")
        return [entry for entry in parse_unit(text) if entry[1] != "Description"]

    assert normalised("hotfolder@.service") == normalised("hotfolder.service")


ALLOWING = ("User", "StateDirectory", "UMask", "ReadWritePaths", "RestrictAddressFamilies",
            "ProtectProc", "SystemCallFilter", "MemoryDenyWriteExecute", "LoadCredential", "WatchdogSec",
            "RequiresMountsFor")


@pytest.mark.parametrize("name", SHIPPED)
def test_every_allowing_directive_is_explained(name: str) -> None:
    """A directive that grants something has a comment right above it (or above its group)."""
    lines = (UNITS / name).read_text().splitlines()
    for i, line in enumerate(lines):
        key = line.partition("=")[0]
        if key not in ALLOWING:
            continue
        j = i - 1
        while j >= 0 and lines[j] and not lines[j].startswith("#"):   # same block of directives
            j -= 1
        assert j >= 0 and lines[j].startswith("#"), f"{name}:{i + 1}: {key}= has no comment saying why"


# -- systemd-analyze ------------------------------------------------------------------------------

@needs_analyze
@pytest.mark.parametrize("unit", ["hotfolder.service", "hotfolder@.service", "hotfolder@demo.service"])
def test_verify(tmp_path: Path, unit: str) -> None:
    units = copy_for_verify(tmp_path)
    result = analyze("verify", "--man=no", "--generators=no", str(units / unit))
    assert result.returncode == 0 and not problems_about_us(result), result.stdout + result.stderr


@needs_analyze
def test_verify_would_catch_a_mistake(tmp_path: Path) -> None:
    """Guard for the guard: a misspelt key and a missing binary are reported in this setup."""
    units = copy_for_verify(tmp_path)
    unit = units / "hotfolder.service"
    unit.write_text(unit.read_text().replace("NotifyAccess=main", "NotifyAcess=main"))
    assert any("NotifyAcess" in line for line in problems_about_us(analyze("verify", "--man=no", str(unit))))
    shipped = copy_for_verify(tmp_path / "asis", text_filter=False) / "hotfolder.service"
    result = analyze("verify", "--man=no", str(shipped))
    assert result.returncode != 0 and VENV_BIN in result.stdout + result.stderr


@needs_analyze
@pytest.mark.parametrize("unit", ["hotfolder.service", "hotfolder@.service", "hotfolder@demo.service"])
def test_security_exposure_is_ok(tmp_path: Path, unit: str) -> None:
    for name in SHIPPED:
        shutil.copy(UNITS / name, tmp_path / name)      # as shipped, not rewritten
    # --threshold is in tenths: exit non-zero when the exposure is over 2.0.
    result = analyze("security", "--offline=yes", f"--threshold={int(MAX_EXPOSURE * 10)}", str(tmp_path / unit))
    output = result.stdout + result.stderr
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", output)
    assert match, output
    exposure = float(match.group(1))
    assert exposure <= MAX_EXPOSURE and result.returncode == 0, f"{unit}: exposure {exposure}\n{output}"
