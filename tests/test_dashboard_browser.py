"""The dashboard in a real browser: headless Chromium driven by Selenium, against a running daemon
and the sandbox, over loopback only.

Needs Debian's ``chromium`` and ``chromium-driver`` (``apt-get install -y chromium chromium-driver``)
and ``selenium`` (the ``test`` extra); without any of them every test here is skipped, with the
reason. Waits are on conditions in the page (WebDriverWait), never sleeps.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from helpers import EXAMPLES, MEDIA, wait_for
from hotfolder.outcomes import BILLING_KEY, PAUSE_REASON_KEY
from test_dashboard import SCRIPT, SERVER_TOKEN, Daemon, make_env

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
try:
    from selenium import webdriver
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait
    HAVE_SELENIUM = True
except ImportError:
    HAVE_SELENIUM = False

MISSING = [what for what, ok in (("chromium", CHROMIUM), ("chromedriver", CHROMEDRIVER),
                                 ("the selenium package", HAVE_SELENIUM)) if not ok]
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(bool(MISSING), reason=f"browser tests need {', '.join(MISSING)}: apt-get install -y chromium "
                       "chromium-driver; pip install selenium (the test extra)"),
]
WAIT_S = 60


def new_browser(width: int = 1400, height: int = 1000) -> Any:
    """Headless Chromium through the system's chromedriver (no driver download, no network)."""
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--no-first-run",
                "--disable-extensions", "--disable-background-networking", "--disable-sync",
                "--disable-component-update", "--lang=en-US", f"--window-size={width},{height}"):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


@pytest.fixture
def browser() -> Iterator[Any]:
    driver = new_browser()
    try:
        yield driver
    finally:
        driver.quit()


def wait(driver: Any, condition: Any, message: str, timeout: float = WAIT_S) -> Any:
    """Wait for ``condition(driver)``; elements replaced by a render meanwhile are looked up again."""
    return WebDriverWait(driver, timeout, poll_frequency=0.1,
                         ignored_exceptions=(StaleElementReferenceException,)).until(condition, message)


def find(driver: Any, css: str) -> Any:
    found = driver.find_elements(By.CSS_SELECTOR, css)
    return found[0] if found else None


def finished_item(driver: Any, job_name: str, state: str) -> Any:
    """The finished list's item of a job in ``state`` (by the name's title), or None."""
    for li in driver.find_elements(By.CSS_SELECTOR, f"#finished li[data-state={state}]"):
        if li.find_element(By.CSS_SELECTOR, "a.name").get_attribute("title") == job_name:
            return li
    return None


def queue_row(driver: Any, job_name: str) -> Any:
    for row in driver.find_elements(By.CSS_SELECTOR, "#queue tbody tr"):
        if row.find_element(By.CSS_SELECTOR, "a.name").get_attribute("title") == job_name:
            return row
    return None


# -- the tests ---------------------------------------------------------------------------------
def test_jobs_move_to_done_with_live_progress_and_no_reload(tmp_path: Path, sandbox: Any, browser: Any) -> None:
    # Long enough that the page (polling every 10 s while idle, then every 2.5 s) sees it rise.
    sandbox.update(generate_seconds=15)
    env = make_env(tmp_path, sandbox)
    with Daemon(env) as dash:
        browser.get(dash.url + "/")
        assert browser.title == "hotfolder dashboard"
        wait(browser, lambda d: find(d, "#queue-empty").is_displayed(), "the empty queue")
        browser.execute_script("window.__sameDocument = true;")

        env.drop("promo/launch.mp4", EXAMPLES / "presenter.mp4")
        env.drop("promo/launch.txt", SCRIPT)
        row = wait(browser, lambda d: queue_row(d, "promo/launch.mp4"), "the job in the queue")
        assert "promo" in row.find_element(By.CSS_SELECTOR, ".where").text
        first = wait(browser, lambda d: (r := queue_row(d, "promo/launch.mp4")) is not None
                     and r.get_attribute("data-state") == "generating"
                     and int(r.find_element(By.CSS_SELECTOR, ".progress").get_attribute("data-progress")) > 0
                     and int(r.find_element(By.CSS_SELECTOR, ".progress").get_attribute("data-progress")),
                     "generating with progress")
        pct = queue_row(browser, "promo/launch.mp4").find_element(By.CSS_SELECTOR, ".pct").text
        assert pct.endswith("%") and int(pct[:-1]) >= first
        wait(browser, lambda d: (r := queue_row(d, "promo/launch.mp4")) is not None
             and int(r.find_element(By.CSS_SELECTOR, ".progress").get_attribute("data-progress")) > first,
             "the progress rising")

        item = wait(browser, lambda d: finished_item(d, "promo/launch.mp4", "done"), "done in the finished list")
        assert queue_row(browser, "promo/launch.mp4") is None
        thumb = item.find_element(By.CSS_SELECTOR, "img.thumb")
        wait(browser, lambda d: d.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0;",
                                                 thumb), "the cover thumbnail loaded")
        links = {a.text: a.get_attribute("href") for a in item.find_elements(By.CSS_SELECTOR, ".actions a")}
        assert set(links) == {"⬇ MP4", "Cover"}
        video = httpx.get(links["⬇ MP4"], timeout=10)
        assert video.content == (env.settings.folders.outbox / "promo" / "launch.mp4").read_bytes()
        assert browser.execute_script("return window.__sameDocument === true;"), "the page reloaded"
        assert "done" in find(browser, "#counts").text
        assert find(browser, "#live").text == "live"


def test_a_failed_job_shows_its_error_and_is_retried_from_the_page(tmp_path: Path, sandbox: Any,
                                                                  browser: Any) -> None:
    sandbox.update(fail_task_rate=1.0)
    env = make_env(tmp_path, sandbox)
    with Daemon(env) as dash:
        env.drop("clip.mp4", MEDIA / "portrait.mp4")
        env.drop("clip.txt", SCRIPT)
        wait_for(lambda: (j := dash.job("clip.mp4")) is not None and j["state"] == "failed", timeout=WAIT_S,
                 message="failed")
        browser.get(dash.url + "/")
        item = wait(browser, lambda d: finished_item(d, "clip.mp4", "failed"), "the failed job")
        error = item.find_element(By.CSS_SELECTOR, ".error")
        assert error.find_element(By.CSS_SELECTOR, ".hint").text
        assert error.find_element(By.CSS_SELECTOR, ".code").text

        # Its own page: the error, the hint, the history.
        item.find_element(By.CSS_SELECTOR, "a.name").click()
        wait(browser, lambda d: find(d, "#events tbody tr"), "the history")
        assert find(browser, "#job-state").text.lower() == "failed"
        assert find(browser, "#job-error .hint").text
        kinds = [td.text for td in browser.find_elements(By.CSS_SELECTOR, "#events tbody td:nth-child(2)")]
        assert "task_created" in kinds
        browser.back()

        sandbox.update(fail_task_rate=0.0)
        wait_for(lambda: (env.settings.folders.failed / "clip.error.json").exists(), timeout=10,
                 message="the inputs moved (a retry waits for that)")
        item = wait(browser, lambda d: finished_item(d, "clip.mp4", "failed"), "the failed job again")
        item.find_element(By.CSS_SELECTOR, "button.retry").click()
        wait(browser, lambda d: finished_item(d, "clip.mp4", "done"), "done after the retry")
        assert finished_item(browser, "clip.mp4", "failed") is None


def test_a_pair_uploaded_by_the_form_lands_in_the_preset_and_is_made(tmp_path: Path, sandbox: Any,
                                                                   browser: Any) -> None:
    env = make_env(tmp_path, sandbox)
    with Daemon(env) as dash:
        browser.get(dash.url + "/")
        Select(find(browser, "#preset")).select_by_value("promo")
        pick = find(browser, "#pick")
        pick.send_keys(f"{EXAMPLES / 'interview.mp4'}\n{EXAMPLES / 'interview.wav'}")
        wait(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#picked li")) == 2, "both files listed")
        assert not find(browser, "#script").is_enabled()   # an audio drives it: no typed script
        find(browser, "#upload-btn").click()
        message = wait(browser, lambda d: (m := find(d, "#upload-msg")) and "Added" in m.text and m.text,
                       "the upload confirmed")
        assert "promo/interview.mp4" in message and "promo/interview.wav" in message
        wait(browser, lambda d: finished_item(d, "promo/interview.mp4", "done"), "the uploaded pair done")
        assert (env.settings.folders.archive / "promo" / "interview.wav").read_bytes() == \
            (EXAMPLES / "interview.wav").read_bytes()

        # A video with a typed script, to the default folder.
        Select(find(browser, "#preset")).select_by_value("")
        find(browser, "#pick").send_keys(str(EXAMPLES / "presenter.mp4"))
        wait(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#picked li")) == 1, "the video listed")
        find(browser, "#script").send_keys("Typed in the browser.")
        find(browser, "#upload-btn").click()
        wait(browser, lambda d: "Added presenter.mp4 with presenter.txt" in find(d, "#upload-msg").text,
             "the typed script uploaded")
        wait(browser, lambda d: finished_item(d, "presenter.mp4", "done"), "the typed pair done")
        sent = [(t["request"].get("tts_config") or {}).get("text") for t in sandbox.tasks()]
        assert ["Typed in the browser."] in sent

        # Refused before anything is sent: a format the API does not take.
        bad = tmp_path / "clip.mkv"
        bad.write_bytes(b"\x1a\x45\xdf\xa3")
        find(browser, "#pick").send_keys(str(bad))
        wait(browser, lambda d: "not a video" in find(d, "#upload-msg").text, "the refusal")


def test_a_network_listener_asks_for_the_token(tmp_path: Path, sandbox: Any, browser: Any) -> None:
    """listen = 0.0.0.0:PORT with a token; the browser goes to 127.0.0.1:PORT (nothing leaves the
    machine), but the listener decides by its listen address: a login is needed."""
    env = make_env(tmp_path, sandbox, host="0.0.0.0")
    with Daemon(env) as dash:
        env.drop("lonely.mp4", MEDIA / "portrait.mp4")   # no script: it waits, and can be cancelled
        browser.get(dash.url + "/")
        token = wait(browser, lambda d: find(d, "#token"), "the login form")
        assert browser.title.startswith("Log in")
        token.send_keys("certainly-not-the-token")
        find(browser, "#login-btn").click()
        wait(browser, lambda d: (e := find(d, "#login-error")) and "not the token" in e.text, "refused")

        find(browser, "#token").send_keys(SERVER_TOKEN)
        find(browser, "#login-btn").click()
        wait(browser, lambda d: find(d, "#queue-card"), "the dashboard")
        assert browser.title == "hotfolder dashboard"
        assert "hotfolder_session" not in browser.execute_script("return document.cookie;")   # HttpOnly
        assert SERVER_TOKEN not in browser.page_source

        # An action with the session: two clicks cancel the waiting job.
        row = wait(browser, lambda d: queue_row(d, "lonely.mp4"), "the waiting job")
        assert row.get_attribute("data-state") == "waiting"
        button = row.find_element(By.CSS_SELECTOR, "button.cancel")
        button.click()
        wait(browser, lambda d: queue_row(d, "lonely.mp4").find_element(By.CSS_SELECTOR, "button.cancel").text == "Sure?",
             "the confirmation")
        queue_row(browser, "lonely.mp4").find_element(By.CSS_SELECTOR, "button.cancel").click()
        wait(browser, lambda d: finished_item(d, "lonely.mp4", "cancelled"), "cancelled")

        find(browser, ".logout button").click()
        wait(browser, lambda d: find(d, "#token"), "the login form again")


def test_the_pause_banner_says_why_and_when_and_resumes(tmp_path: Path, sandbox: Any, browser: Any) -> None:
    env = make_env(tmp_path, sandbox)
    with Daemon(env) as dash:
        ledger = env.ledger()
        ledger.set_value(BILLING_KEY, str(time.time() + 300))
        ledger.set_value(PAUSE_REASON_KEY, "余额不足，请充值")
        browser.get(dash.url + "/")
        banner = wait(browser, lambda d: find(d, "#pause-banner"), "the pause banner")
        assert "余额不足，请充值" in banner.text and "Next try at" in banner.text
        wait(browser, lambda d: "in 4m" in find(d, "#pause-banner").text or "in 5m" in find(d, "#pause-banner").text,
             "when it retries")
        find(browser, "#resume").click()
        wait(browser, lambda d: find(d, "#pause-banner") is None, "the banner gone")
        assert dash.queue()["pause"] is None
