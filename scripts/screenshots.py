"""Screenshots of the dashboard's two main pages for the README (docs/*.png).

Runs the demo's pieces for real: the simulator, the embedded Redis, a worker, beat and the
API in a temporary data dir; sends two sample campaigns (one left paused halfway) and shoots
the campaigns page and the finished campaign's page in headless Chromium.

    .venv/bin/python scripts/screenshots.py
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dispatcher.demo import DEMO_ENV, DEMO_KEY, SIMULATOR_ARGS, free_port, write_sample_list  # noqa: E402
from tests import browser  # noqa: E402

OUT = ROOT / "docs"


def wait(condition, timeout: float, what: str):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.5)
    raise SystemExit(f"timed out waiting for {what}")


def main() -> int:
    from selenium.webdriver.common.by import By

    work = Path(tempfile.mkdtemp(prefix="sms-shots-"))
    sim_port, api_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMS_")}
    env.update(DEMO_ENV, SMS_DATA_DIR=str(work / "data"), SMS_SEND_RATE="40",
               SMS_GATEWAY_URL=f"http://127.0.0.1:{sim_port}")  # fmt: skip
    cli = [sys.executable, "-m", "dispatcher"]
    log = (work / "log.txt").open("wb")
    sim = subprocess.Popen([*cli, "simulator", "--port", str(sim_port), "--key", DEMO_KEY,
                            *SIMULATOR_ARGS], env=env, stdout=log, stderr=log)  # fmt: skip
    run = subprocess.Popen([*cli, "run", "--port", str(api_port)], env=env, stdout=log,
                           stderr=log, start_new_session=True)  # fmt: skip
    base = f"http://127.0.0.1:{api_port}"
    driver = None
    try:
        wait(lambda: _ok(f"{base}/readyz"), 60, "the API")
        made = [*cli, "token", "create", "screenshots"]
        token = subprocess.run(made, env=env, capture_output=True, text=True, check=True)
        token = token.stdout.strip()
        auth = {"Authorization": f"Bearer {token}"}
        lists = []
        for size, seed in ((300, 7), (800, 8)):
            path = work / f"list-{size}.csv"
            write_sample_list(path, size, seed=seed)
            lists.append(path)
        text = "Hej {name}! Your table at Bistro Nord is booked for Friday 19:00."
        form = {"sender": "BistroNord", "purpose": "service", "text": text}

        def send(path: Path, name: str) -> int:
            with path.open("rb") as fh:
                reply = requests.post(f"{base}/v1/campaigns", headers=auth, timeout=60,
                                      data={**form, "name": name}, files={"file": fh})  # fmt: skip
            reply.raise_for_status()
            return int(reply.json()["campaign"])

        first = send(lists[0], "Friday bookings")
        second = send(lists[1], "Weekend offer")

        def status(cid: int) -> dict:
            return requests.get(f"{base}/v1/campaigns/{cid}", headers=auth, timeout=10).json()

        wait(lambda: status(second)["final"] > 250, 120, "the second campaign to get going")
        requests.post(f"{base}/v1/campaigns/{second}/pause", headers=auth, timeout=10)
        wait(lambda: status(first)["state"] == "completed", 180, "the first campaign to finish")
        third = send(lists[1], "Reminders")
        wait(lambda: status(third)["final"] > 100, 60, "the third campaign to get going")

        driver = browser.chromium(work / "profile")
        driver.set_window_size(1280, 820)
        driver.get(f"{base}/signin")
        driver.find_element(By.ID, "token").send_keys(token)
        driver.find_element(By.ID, "signin").click()
        OUT.mkdir(exist_ok=True)
        time.sleep(1)
        driver.save_screenshot(str(OUT / "dashboard-campaigns.png"))
        driver.set_window_size(1280, 1100)
        driver.get(f"{base}/campaigns/{first}")
        time.sleep(1)
        driver.save_screenshot(str(OUT / "dashboard-campaign.png"))
        print(f"wrote {OUT / 'dashboard-campaigns.png'} and {OUT / 'dashboard-campaign.png'}")
        return 0
    finally:
        if driver is not None:
            driver.quit()
        run.send_signal(2)
        try:
            run.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(run.pid, 9)
        sim.terminate()
        sim.wait(10)
        log.close()
        shutil.rmtree(work, ignore_errors=True)


def _ok(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.RequestException:
        return False


if __name__ == "__main__":
    sys.exit(main())
