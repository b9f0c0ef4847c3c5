"""Screenshots of the dashboard for the docs: ``python docs/make_screenshots.py [--out docs]``.

A real daemon runs against the local sandbox in a temporary folder, and real pairs go through
it, so the queue shows jobs as they really are: done (with the cover the sandbox returns), one
failed (the sandbox fails its task) with its Retry button, one generating with its progress,
one waiting for its script. Only the two weeks of history behind the stats chart are made up:
recorded through the ledger's own verbs with a clock set in the past (so "jobs per day" has
something to show). Headless Chromium (Debian's ``chromium`` + ``chromium-driver``, through
Selenium) takes the pictures over loopback; nothing leaves the machine.

Writes ``dashboard.png`` (the queue), ``dashboard-job.png`` (a done job's page) and
``dashboard-upload.png`` (a pair chosen in the upload form).
"""

from __future__ import annotations

import argparse
import random
import shutil
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from hotfolder import config  # noqa: E402
from hotfolder.daemon import Daemon  # noqa: E402
from hotfolder.ledger import Ledger  # noqa: E402
from hotfolder.sandbox import Sandbox, SandboxSettings  # noqa: E402
from hotfolder.states import State  # noqa: E402

EXAMPLES = REPO / "examples"
VOICE = "C-f2429d07554749839849497589199916"
SCRIPT = "Hello, and welcome to our spring collection. Here is what is new this season."


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.1)


def write_config(root: Path, base_url: str, port: int) -> Path:
    path = root / "hotfolder.toml"
    path.write_text(f'''[api]
base_url = "{base_url}"
app_id = "sandbox"
secret_key = "sandbox"
[folders]
inbox = "inbox"
outbox = "outbox"
archive = "archive"
failed = "failed"
[ledger]
path = "state/ledger.db"
[watch]
settle_seconds = 0.3
poll_interval = 0.3
rescan_seconds = 2
[limits]
creates_per_minute = 600
file_calls_per_minute = 6000
queries_per_second = 200
[lipsync]
audio_man_id = "{VOICE}"
[server]
listen = "127.0.0.1:{port}"
[presets.promo]
speed = 1.05
[presets.training]
volume = 90
''', encoding="utf-8")
    (root / "inbox").mkdir(exist_ok=True)
    return path


def make_history(ledger_path: Path, outbox: Path, days: int = 13) -> None:
    """Two weeks of ended jobs, recorded through the ledger's verbs with a clock in the past;
    their outputs are copies of the examples, so their links and thumbnails work."""
    rng = random.Random(7)
    cover = REPO / "hotfolder" / "assets" / "cover.jpg"
    now = time.time()
    folders = ["promo", "training", "social", "training"]
    codes = ["task_failed", "bad_input", "gave_up"]
    n = 0
    for day in range(days, 0, -1):
        for _ in range(rng.randint(2, 9)):
            n += 1
            folder = folders[n % len(folders)]
            stem = f"{['weekly-update', 'product-tour', 'faq', 'welcome', 'recap'][n % 5]}-{n:03d}"
            at = now - day * 86400 - rng.randint(0, 8 * 3600)
            clock = [at]
            ledger = Ledger(ledger_path, clock=lambda: clock[0])
            job = ledger.add_job(name=f"{folder}/{stem}.mp4", rel_dir=folder, stem=stem, state=State.QUEUED,
                                 files={"video": f"/srv/hotfolder/archive/{folder}/{stem}.mp4",
                                        "text": f"/srv/hotfolder/archive/{folder}/{stem}.txt"},
                                 inputs={}, params={"text": SCRIPT, "audio_man_id": VOICE})
            failed = rng.random() < 0.12
            for src, dst, fields in ((State.QUEUED, State.UPLOADING, {}), (State.UPLOADING, State.SUBMITTING, {}),
                                     (State.SUBMITTING, State.GENERATING, {"remote_id": f"demo{n:04d}" + "0" * 24})):
                clock[0] += rng.randint(5, 40)
                ledger.advance(job, src, dst, event="task_created" if dst == State.GENERATING else None, **fields)
            clock[0] += rng.randint(60, 400)
            if failed:
                ledger.advance(job, State.GENERATING, State.FAILED, error="the API could not make the video",
                               error_code=codes[n % len(codes)], moves_pending=0)
            else:
                (outbox / folder).mkdir(parents=True, exist_ok=True)
                shutil.copyfile(EXAMPLES / "presenter.mp4", outbox / folder / f"{stem}.mp4")
                shutil.copyfile(cover, outbox / folder / f"{stem}.jpg")
                ledger.advance(job, State.GENERATING, State.DOWNLOADING, event="task_succeeded",
                               duration_ms=rng.randint(20, 95) * 1000)
                clock[0] += rng.randint(3, 20)
                ledger.advance(job, State.DOWNLOADING, State.DONE, event="done", moves_pending=0,
                               outputs={"video": str(outbox / folder / f"{stem}.mp4"),
                                        "cover": str(outbox / folder / f"{stem}.jpg")})
            ledger.close()


def browser(width: int, height: int) -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not chromium or not driver:
        raise SystemExit("needs chromium and chromedriver: apt-get install -y chromium chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--hide-scrollbars",
                "--force-device-scale-factor=1", "--lang=en-US", f"--window-size={width},{height}"):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(driver), options=options)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs")
    parser.add_argument("--keep", action="store_true", help="keep the temporary installation (its path is printed)")
    args = parser.parse_args()
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    root = Path(tempfile.mkdtemp(prefix="hotfolder-shots-"))
    sandbox = Sandbox(root / "sandbox", settings=SandboxSettings(
        file_ready_delay=0.2, queue_seconds=0.2, generate_seconds=1.0, creates_per_minute=600,
        file_calls_per_minute=6000, queries_per_second=200))
    sandbox.start()
    settings = config.load(write_config(root, sandbox.base_url, free_port()), env={})
    inbox, outbox = settings.folders.inbox, settings.folders.outbox
    make_history(settings.ledger_path, outbox)
    stop = threading.Event()
    daemon = Daemon(settings, stop=stop)
    thread = threading.Thread(target=daemon.run, name="shots-daemon")
    thread.start()
    driver = None
    try:
        def drop(rel: str, video: str, driver_file: tuple[str, str | Path] | None) -> None:
            target = inbox / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            if driver_file is not None:
                name, source = driver_file
                if isinstance(source, Path):
                    shutil.copyfile(source, target.with_name(name))
                else:
                    target.with_name(name).write_text(source, encoding="utf-8")
            shutil.copyfile(EXAMPLES / video, target)

        def state(name: str) -> str | None:
            ledger = Ledger(settings.ledger_path)
            row = ledger.conn.execute("SELECT state, progress FROM jobs WHERE name = ? ORDER BY id DESC LIMIT 1",
                                      [name]).fetchone()
            ledger.close()
            return f"{row[0]}:{row[1]}" if row else None

        drop("promo/spring-launch.mp4", "presenter.mp4", ("spring-launch.txt", SCRIPT))
        drop("training/onboarding-welcome.mp4", "interview.mp4", ("onboarding-welcome.wav", EXAMPLES / "interview.wav"))
        drop("weekly-update.mp4", "presenter.mp4", ("weekly-update.txt", "This week in two minutes."))
        for name in ("promo/spring-launch.mp4", "training/onboarding-welcome.mp4", "weekly-update.mp4"):
            wait_for(lambda: (state(name) or "").startswith("done"), 60, f"{name} done")
        sandbox.update(fail_task_rate=1.0)
        drop("promo/flash-sale.mp4", "presenter.mp4", ("flash-sale.txt", "Only today: everything half price!"))
        wait_for(lambda: (state("promo/flash-sale.mp4") or "").startswith("failed"), 60, "the failure")
        sandbox.update(fail_task_rate=0.0, generate_seconds=90.0)
        # A script of its own: identical inputs would reuse an earlier result instead of generating.
        drop("training/safety-briefing.mp4", "presenter.mp4", ("safety-briefing.txt", "Safety first: three rules."))
        drop("interviews/anna-raw.mp4", "interview.mp4", None)   # no script yet: it waits
        wait_for(lambda: (s := state("training/safety-briefing.mp4")) and s.startswith("generating")
                 and int(s.split(":")[1]) >= 38, 120, "generating at about 40 %")

        url = daemon.listener.url if daemon.listener else None
        assert url, "the listener did not start"
        driver = browser(1440, 1060)
        wait = WebDriverWait(driver, 30)
        driver.get(url + "/")
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#queue tbody tr[data-state=generating]"))
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#stats .chart"))
        wait.until(lambda d: all(d.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", i)
                                 for i in d.find_elements(By.CSS_SELECTOR, "img.thumb")))
        args.out.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(args.out / "dashboard.png"))

        done = driver.find_element(By.CSS_SELECTOR, "#finished li[data-state=done] a.name")
        done.click()
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#events tbody tr"))
        wait.until(lambda d: d.execute_script("const v = document.querySelector('#player');"
                                              "return v && v.readyState >= 1;"))
        driver.execute_async_script("const done = arguments[0]; const i = new Image(); i.onload = () => done(true);"
                                    "i.src = document.querySelector('#player').poster;")
        driver.save_screenshot(str(args.out / "dashboard-job.png"))

        driver.get(url + "/")
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#queue tbody tr"))
        Select(driver.find_element(By.CSS_SELECTOR, "#preset")).select_by_value("training")
        driver.find_element(By.CSS_SELECTOR, "#pick").send_keys(
            f"{EXAMPLES / 'presenter.mp4'}\n{EXAMPLES / 'presenter.txt'}")
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#picked li")) == 2)
        driver.execute_script("document.activeElement && document.activeElement.blur();")
        driver.save_screenshot(str(args.out / "dashboard-upload.png"))
        for name in ("dashboard.png", "dashboard-job.png", "dashboard-upload.png"):
            print(f"wrote {args.out / name} ({(args.out / name).stat().st_size // 1024} KiB)")
    finally:
        if driver is not None:
            driver.quit()
        stop.set()
        daemon.wake()
        thread.join(timeout=15)
        sandbox.stop()
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
