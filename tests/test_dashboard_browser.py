"""The dashboard in a real headless Chromium against real processes: the API server, a
worker and beat on PostgreSQL and Redis, sending through the simulator."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import requests

from tests import browser
from tests.conftest import REDIS_URL
from tests.processes import Proc, base_env, celery_group, cli, cli_json, free_port, wait_for

pytestmark = [
    pytest.mark.e2e,
    # CI installs them (.ci/run), so there a missing browser fails instead of skipping.
    pytest.mark.skipif(
        not browser.available() and not os.environ.get("CI"),
        reason="needs chromium and chromium-driver (apt-get install chromium chromium-driver)",
    ),
]


def write_list(path: Path, count: int) -> Path:
    with path.open("w", encoding="utf-8") as fh:
        fh.write("name,mobile\n")
        for i in range(count):
            fh.write(f"P{i},+4670{3000000 + i:07d}\n")
        fh.write("Zoë,+46703999999\n")  # one UCS-2 letter
        fh.write("Bad,12345\n")  # invalid
        fh.write("Again,+46703000000\n")  # duplicate of the first row
    return path


@pytest.fixture
def stack(pg_url, sim, redis_client, make_settings, tmp_path):
    """PostgreSQL, the test Redis, a worker, beat and `sms-dispatch serve` on a free port."""
    from tests.conftest import _clean

    _clean(pg_url)
    settings = make_settings(
        database_url=pg_url, broker_url=REDIS_URL, gateway_url=sim.url, send_rate=40,
        batch_size=50, submit_lease=3.0, sweep_interval=2.0,
    )  # fmt: skip
    env = settings.as_env()
    port = free_port()
    api = Proc(
        [sys.executable, "-m", "dispatcher", "serve", "--port", str(port)],
        base_env(env),
        tmp_path / "api.log",
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _up(url), timeout=60, what="the API server")
        with celery_group(env, tmp_path / "logs"):
            yield env, url, api
    finally:
        api.stop()


def _up(url: str) -> bool:
    try:
        return requests.get(f"{url}/healthz", timeout=2).status_code == 200
    except requests.RequestException:
        return False


def test_sign_in_preview_send_watch_pause_resume_and_download(stack, tmp_path):
    from selenium.webdriver.common.by import By

    env, url, api = stack
    token = cli("token", "create", "marketing", env=env).stdout.strip()
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    driver = browser.chromium(tmp_path / "profile", downloads)
    try:
        driver.get(f"{url}/campaigns")
        assert driver.current_url.endswith("/signin")
        driver.find_element(By.ID, "token").send_keys(token)
        driver.find_element(By.ID, "signin").click()
        # The click posts the form; the redirect that follows may take a moment to land.
        wait_for(lambda: driver.current_url.endswith("/campaigns"), timeout=30, what="the sign-in")

        # A small list: preview numbers, then send, and watch the bar reach 100%.
        first = write_list(tmp_path / "first.csv", 20)
        driver.get(f"{url}/new")
        driver.find_element(By.ID, "file").send_keys(str(first))
        driver.find_element(By.ID, "sender").send_keys("Shop")
        driver.find_element(By.ID, "text").send_keys("Hi {name}, your order is ready")
        driver.find_element(By.ID, "preview-button").click()
        total = wait_for(lambda: _text(driver, "preview-total"), timeout=30, what="the preview")
        assert total == "23"
        counts = {
            row.get_attribute("data-status"): row.find_elements(By.TAG_NAME, "td")[1].text
            for row in driver.find_elements(By.CSS_SELECTOR, "#preview-result tr[data-status]")
        }
        assert counts == {"queued": "21", "invalid": "1", "duplicate": "1"}
        assert _text(driver, "preview-segments") == "21"
        assert _text(driver, "preview-cost") == "1.05"
        assert "ë" in _text(driver, "preview-ucs2")
        assert _text(driver, "preview-sample") == "Hi P0, your order is ready"
        assert (
            "12345" in driver.find_element(By.CSS_SELECTOR, "#preview-result table.problems").text
        )
        driver.find_element(By.ID, "send").click()
        wait_for(lambda: "/campaigns/" in driver.current_url, timeout=30, what="the campaign page")
        first_id = int(driver.current_url.rsplit("/", 1)[1])
        driver.get(f"{url}/campaigns")
        bar = f'tr[data-campaign="{first_id}"] .bar'
        # No reload from here on: the rows update themselves every 2 s.
        wait_for(
            lambda: _attr(driver, bar, "data-percent") == "100",
            timeout=120,
            what="the first campaign's bar to reach 100%",
        )
        assert _attr(driver, bar, "data-final") == "23"
        status = cli_json("status", str(first_id), env=env)
        assert status["done"] and status["final"] == 23

        # A bigger list, paused and resumed from its page.
        second = write_list(tmp_path / "second.csv", 600)
        driver.get(f"{url}/new")
        driver.find_element(By.ID, "file").send_keys(str(second))
        driver.find_element(By.ID, "sender").send_keys("Shop")
        driver.find_element(By.ID, "text").send_keys("Hello {name}")
        driver.find_element(By.ID, "preview-button").click()
        wait_for(lambda: _text(driver, "preview-total") == "603", timeout=30, what="preview 2")
        driver.find_element(By.ID, "send").click()
        wait_for(lambda: "/campaigns/" in driver.current_url, timeout=30, what="campaign page 2")
        second_id = int(driver.current_url.rsplit("/", 1)[1])
        assert second_id != first_id
        _click(driver, "pause")
        wait_for(lambda: _attr(driver, "[data-state]", "data-state") == "paused", 30, what="paused")
        assert cli_json("status", str(second_id), env=env)["state"] == "paused"
        wait_for(
            lambda: "paused by operator" in (_text(driver, "live") or ""), 30, what="the reason"
        )
        _click(driver, "resume")
        wait_for(
            lambda: _attr(driver, "[data-state]", "data-state") == "running", 30, what="resumed"
        )
        wait_for(
            lambda: _attr(driver, ".bar", "data-percent") == "100",
            timeout=180,
            what="the second campaign's bar to reach 100%",
        )

        # The report as the browser downloads it is the file the CLI writes.
        _click(driver, "report")
        saved = downloads / f"campaign-{second_id}.csv"
        wait_for(saved.exists, timeout=30, what="the download")
        cli("report", str(second_id), "--out", str(tmp_path / "cli.csv"), env=env)
        assert saved.read_bytes() == (tmp_path / "cli.csv").read_bytes()
    finally:
        driver.quit()
    # Nothing the browser sent (the token, numbers, texts) is in the API's log.
    log = api.output()
    for secret in (token, "4670300", "your order is ready", "Zoë"):
        assert secret not in log


def _click(driver, element_id: str) -> None:
    """Click what the page shows now: the campaign page redraws its controls every 2 s, so an
    element found a moment ago may be gone (a click on it raises and is not delivered)."""
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException

    def clicked() -> bool:
        try:
            driver.find_element("id", element_id).click()
        except (NoSuchElementException, StaleElementReferenceException):
            return False
        return True

    wait_for(clicked, timeout=30, interval=0.1, what=f"#{element_id} to take a click")


def _text(driver, element_id: str) -> str | None:
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException

    try:
        return driver.find_element("id", element_id).text
    except (NoSuchElementException, StaleElementReferenceException):
        return None


def _attr(driver, selector: str, name: str) -> str | None:
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException

    try:
        return driver.find_element("css selector", selector).get_attribute(name)
    except (NoSuchElementException, StaleElementReferenceException):
        return None
