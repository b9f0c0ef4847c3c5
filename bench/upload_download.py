"""Upload/download throughput and peak memory of the API client, next to curl.

    python bench/upload_download.py [--size-mib 1024] [--keep]

Three processes, so each number belongs to one program:

- the sandbox (``--serve``, a tiny runner) in its own process;
- the client (``--client``) in a child that runs only ChanjingClient: create_upload_url +
  put_file of the test file, then (after the sandbox turns it into a finished task) a download of
  the result's ``video_url``. Its peak RSS is ``ru_maxrss`` from ``wait4``, cross-checked with
  the child's own ``VmHWM``;
- curl doing the same PUT (``curl -T`` with the slot's Content-Type) and GET (``curl -o``) against
  the same sandbox. curl's peak is sampled from ``/proc/PID/status`` (``VmHWM``): Linux carries
  ``ru_maxrss`` across fork+exec, so a child smaller than its parent reports the parent's peak.
  The parent stays small (no big buffers, no httpx) so the client's ``ru_maxrss`` is its own.

Targets: client peak RSS < 100 MiB, throughput within 2x of curl.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import statistics
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

MIB = 2**20
FAST = dict(file_ready_delay=0.1, queue_seconds=0.1, generate_seconds=0.1, creates_per_minute=0,
            file_calls_per_minute=0, queries_per_second=0, upload_url_ttl=3600, result_url_ttl=3600)
VOICE = "C-f2429d07554749839849497589199916"


# -- the sandbox runner (its own process) ---------------------------------------------------------------
def serve(data_dir: Path) -> None:
    """Run a sandbox until stdin closes or SIGTERM; print its base URL on the first line."""
    from hotfolder.sandbox import Sandbox, SandboxSettings

    signal.signal(signal.SIGTERM, lambda *_: sys.stdin.close())
    with Sandbox(data_dir, settings=SandboxSettings(**FAST)) as sb:  # type: ignore[arg-type]
        print(sb.base_url, flush=True)
        with contextlib.suppress(ValueError, OSError):  # stdin closed by SIGTERM
            sys.stdin.read()


# -- the client child (only the client runs here) --------------------------------------------------------
def client_child(base_url: str, source: Path, out: Path) -> None:
    """Upload ``source``, make a task of it, download the result; print timings as JSON."""
    import resource

    from hotfolder import log
    from hotfolder.chanjing import ChanjingClient, Limits, LipSyncRequest

    log.configure("warning", json_lines=True, stream=sys.stderr)  # stdout carries the result

    def rss_mib() -> float:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    def hwm_mib() -> float:
        return vm_hwm_mib(os.getpid()) or 0.0

    client = ChanjingClient(base_url, "sandbox", "sandbox", limits=Limits(0, 0, 0), timeout=60)
    client.list_voices(size=1)  # token + connection: not part of the transfer timings
    baseline = rss_mib()
    slot = client.create_upload_url("lip_sync_video", "bench.mp4")
    started = time.perf_counter()
    client.put_file(slot, source)
    put_s = time.perf_counter() - started
    client.wait_file_ready(slot.file_id, timeout=120)
    task_id = client.create_lip_sync(LipSyncRequest(video_file_id=slot.file_id, text="bench", audio_man_id=VOICE))
    deadline = time.monotonic() + 120
    while (task := client.task_detail(task_id)).status != 20:
        if time.monotonic() > deadline:
            raise SystemExit(f"task {task_id} did not finish: {task}")
        time.sleep(0.1)
    assert task.video_url
    started = time.perf_counter()
    size = client.download(task.video_url, out, expected_size=source.stat().st_size)
    get_s = time.perf_counter() - started
    curl_slot = client.create_upload_url("lip_sync_video", "curl.mp4")  # for the parent's curl PUT
    client.close()
    print(json.dumps({"put_s": put_s, "get_s": get_s, "bytes": size, "baseline_rss_mib": baseline,
                      "video_url": task.video_url, "self_rss_mib": rss_mib(), "hwm_mib": hwm_mib(),
                      "curl_sign_url": curl_slot.sign_url, "curl_mime_type": curl_slot.mime_type}))


# -- the parent ----------------------------------------------------------------------------------------
def vm_hwm_mib(pid: int) -> float | None:
    """The peak resident size of process ``pid`` (Linux ``VmHWM``), or None once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def measured(cmd: list[str]) -> tuple[float, float, float, str]:
    """Run ``cmd``; return (wall seconds, ru_maxrss MiB, sampled VmHWM MiB, stdout)."""
    with tempfile.TemporaryFile() as out:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out)
        hwm = 0.0
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            hwm = max(hwm, vm_hwm_mib(proc.pid) or 0.0)
            time.sleep(0.01)
        wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        text = out.read().decode()
    if proc.returncode != 0:
        raise SystemExit(f"{cmd[0]} failed ({proc.returncode}): {text[-2000:]}")
    return wall, usage.ru_maxrss / 1024, hwm, text


def make_file(path: Path, size: int) -> None:
    """``size`` bytes of incompressible data (1 MiB random blocks; small, to keep our RSS low)."""
    rng = random.Random(0)
    with open(path, "wb") as fh:
        left = size
        while left > 0:
            step = min(left, MIB)
            fh.write(rng.randbytes(step))
            left -= step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mib", type=int, default=1024, help="size of the test file (default 1024)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument("--rounds", type=int, default=3,
                        help="client and curl measured alternately this many times; medians reported (default 3): "
                             "one round is at the mercy of disk writeback")
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--client", nargs=3, metavar=("BASE_URL", "SOURCE", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        return serve(args.serve)
    if args.client:
        return client_child(args.client[0], Path(args.client[1]), Path(args.client[2]))
    if not shutil.which("curl"):
        raise SystemExit("curl is needed for the comparison")

    work = Path(tempfile.mkdtemp(prefix="hotfolder-bench-"))
    sandbox = None
    try:
        source = work / "source.mp4"
        size = args.size_mib * MIB
        make_file(source, size)
        os.sync()  # no writeback of the test file competing with the first measurement
        sandbox = subprocess.Popen([sys.executable, __file__, "--serve", str(work / "sandbox")],
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert sandbox.stdout is not None
        base_url = sandbox.stdout.readline().strip()
        if not base_url.startswith("http"):
            raise SystemExit("the sandbox did not start")

        samples: dict[str, list[float]] = {"put": [], "get": [], "curl_put": [], "curl_get": []}
        client_rss = curl_put_rss = curl_get_rss = 0.0
        for _round in range(args.rounds):
            wall, rss, _, text = measured([sys.executable, __file__, "--client", base_url, str(source),
                                           str(work / "client-download.mp4")])
            result: dict[str, Any] = json.loads(text.strip().splitlines()[-1])
            client_rss = max(client_rss, rss)
            assert (work / "client-download.mp4").stat().st_size == size
            (work / "client-download.mp4").unlink()
            os.sync()  # nor of the client's blobs with curl's
            _, put_rss, _, curl_put = measured(
                ["curl", "-sS", "-f", "-T", str(source), "-H", f"Content-Type: {result['curl_mime_type']}",
                 "-o", os.devnull, "-w", "%{time_total}", result["curl_sign_url"]])
            _, get_rss, _, curl_get = measured(
                ["curl", "-sS", "-f", "-o", str(work / "curl-download.mp4"), "-w", "%{time_total}",
                 result["video_url"]])
            assert (work / "curl-download.mp4").stat().st_size == size
            (work / "curl-download.mp4").unlink()
            os.sync()
            curl_put_rss, curl_get_rss = max(curl_put_rss, put_rss), max(curl_get_rss, get_rss)
            for key, seconds in (("put", result["put_s"]), ("get", result["get_s"]),
                                 ("curl_put", float(curl_put)), ("curl_get", float(curl_get))):
                samples[key].append(size / MIB / seconds)

        median = statistics.median
        rows = [
            ("upload (PUT)", median(samples["put"]), median(samples["curl_put"])),
            ("download (GET)", median(samples["get"]), median(samples["curl_get"])),
        ]
        print(f"\n{args.size_mib} MiB over loopback to the sandbox (separate process), "
              f"median of {args.rounds} rounds\n")
        print(f"{'':16} {'client MiB/s':>13} {'curl MiB/s':>11} {'client/curl':>12}")
        for name, mine, theirs in rows:
            print(f"{name:16} {mine:13.0f} {theirs:11.0f} {mine / theirs:12.2f}")
        print(f"\npeak RSS: client process {client_rss:.1f} MiB (ru_maxrss; its own VmHWM "
              f"{result['hwm_mib']:.1f} MiB; {result['baseline_rss_mib']:.1f} MiB after imports and a first "
              f"call, before any transfer)")
        print(f"          curl PUT {curl_put_rss:.1f} MiB, curl GET {curl_get_rss:.1f} MiB (sampled VmHWM)")
        print("samples MiB/s: " + "; ".join(f"{k} {', '.join(f'{v:.0f}' for v in vals)}"
                                             for k, vals in samples.items()))
        print(f"client child wall time {wall:.1f} s (includes interpreter start, file readiness, the task)")
        ok_rss = client_rss < 100
        ok_speed = all(mine * 2 >= theirs for _, mine, theirs in rows)
        print(f"targets: RSS < 100 MiB {'OK' if ok_rss else 'MISSED'}; within 2x of curl "
              f"{'OK' if ok_speed else 'MISSED'}")
    finally:
        if sandbox is not None:
            assert sandbox.stdin is not None
            sandbox.stdin.close()
            sandbox.wait(timeout=30)
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
