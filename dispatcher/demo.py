"""`sms-dispatch demo`: the whole service on one machine, against the simulator.

It starts the simulator (with some faults on), the embedded Redis, a worker and beat, loads a
generated sample list, and shows progress until every message is final.
"""

from __future__ import annotations

import csv
import os
import random
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests
from rich.console import Console

from config import get_settings, reset_settings

DEMO_KEY = "demo-key"
DEMO_TIMEOUT = 300.0
FIRST_NAMES = ["Astrid", "Björn", "Elsa", "Nils", "Saga", "Oskar", "Maja", "Liam", "Alva", "Hugo"]
DEMO_TEXT = (
    "Hej {name}! Your table at Bistro Nord is booked for Friday 19:00. Reply STOP to opt out."
)

# Short timings so a demo finishes in a minute or two; faults so it shows retries and
# unknown outcomes being settled by a report look-up.
DEMO_ENV = {
    "SMS_GATEWAY_KEY": DEMO_KEY,
    "SMS_GATEWAY_TIMEOUT": "2s",
    "SMS_SEND_RATE": "100",
    "SMS_POLL_RATE": "200",
    "SMS_RETRY_BASE": "1s",
    "SMS_RETRY_MAX": "5s",
    "SMS_UNKNOWN_RECHECK": "2s",
    "SMS_REPORT_GRACE": "15s",
    "SMS_POLL_BACKOFF": "1s,2s,3s,5s",
    "SMS_VALIDITY": "25s",
    "SMS_BATCH_SIZE": "50",
    "SMS_SWEEP_INTERVAL": "5s",
}
SIMULATOR_ARGS = [
    "--seed", "7",
    "--pending", "1", "--sending", "2", "--latency", "0.05", "--jitter", "0.1",
    "--busy", "0.03", "--error-5xx", "0.03", "--late", "0.01", "--late-delay", "4",
    "--drop", "0.01",
    "--mix", "delivered=0.86,undelivered=0.04,failed=0.03,expired=0.02,deleted=0.02,"
    "rejected=0.01,stuck=0.02",
]  # fmt: skip


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_sample_list(path: Path, size: int, seed: int = 7) -> list[str]:
    """A list in the shapes people really send: national, +46, 0046, typos and repeats.

    Returns two numbers to put on the opt-out list.
    """
    rng = random.Random(seed)
    rows = []
    for i in range(size):
        subscriber = f"{rng.randrange(10_000_000):07d}"
        prefix = rng.choice(["70", "72", "73", "76", "79"])
        shape = i % 4
        if shape == 0:
            number = f"0{prefix}-{subscriber[:3]} {subscriber[3:5]} {subscriber[5:]}"
        elif shape == 1:
            number = f"+46 {prefix} {subscriber}"
        elif shape == 2:
            number = f"0046{prefix}{subscriber}"
        else:
            number = f"0{prefix}{subscriber}"
        rows.append({"name": rng.choice(FIRST_NAMES), "mobile": number})
    rows[5]["mobile"] = "12345"  # too short
    rows[9]["mobile"] = "call me"  # not a number
    rows[11]["mobile"] = rows[1]["mobile"].replace(" ", "")  # the same person twice
    rows[17]["name"] = ""  # the template needs a name
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["name", "mobile"], delimiter=";")
        writer.writeheader()
        writer.writerows(rows)
    return [rows[20]["mobile"], rows[21]["mobile"]]


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _wait_http(url: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            requests.get(url, timeout=0.5)
            return
        except requests.RequestException:
            time.sleep(0.1)
    raise RuntimeError(f"the simulator did not answer at {url}")


def run_demo(*, size: int = 300, keep: bool = False) -> int:
    """Run the demo; returns the exit status."""
    from dispatcher.campaigns import LoadRequest, load_campaign
    from dispatcher.control import notify_workers
    from dispatcher.embedded import broker_alive
    from dispatcher.numbers import normalise
    from dispatcher.progress import watch_campaigns
    from dispatcher.reports import CampaignStatus, campaign_status
    from dispatcher.supervisor import running_group
    from dispatcher.suppression import add_numbers
    from dispatcher.tokens import create_token
    from workers import campaign_moves
    from workers.database import ensure_schema, private_dir

    console = Console(stderr=True)
    base = get_settings().data_dir.resolve() / "demo"
    shutil.rmtree(base, ignore_errors=True)
    private_dir(base.parent)  # numbers and texts live here: the owner's alone
    private_dir(base)
    port = free_port()
    env = dict(DEMO_ENV, SMS_DATA_DIR=str(base), SMS_GATEWAY_URL=f"http://127.0.0.1:{port}")
    os.environ.update(env)
    for name in ("SMS_BROKER_URL", "SMS_DATABASE_URL", "SMS_CONFIG"):
        os.environ.pop(name, None)
    reset_settings()
    settings = get_settings()

    log = (base / "demo.log").open("a")
    sim = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "simulator",
            "--port",
            str(port),
            "--key",
            DEMO_KEY,
            *SIMULATOR_ARGS,
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    try:
        _wait_http(f"http://127.0.0.1:{port}/_sim/stats")
        console.print(f"simulator on 127.0.0.1:{port}; logs in {base / 'demo.log'}")
        api_port = settings.api_port if _port_free(settings.api_port) else free_port()
        with running_group(settings, log=log, api=("127.0.0.1", api_port)) as group:
            deadline = time.monotonic() + 20
            while not broker_alive(settings) and time.monotonic() < deadline:
                time.sleep(0.1)
            eng = ensure_schema(settings)
            token = create_token(eng, "demo")
            console.print(
                f"dashboard: http://127.0.0.1:{api_port}/campaigns  (sign in with {token})"
            )
            sample = base / "sample-list.csv"
            opted_out = write_sample_list(sample, size)
            add_numbers(eng, [m for m in (normalise(n, "SE")[0] for n in opted_out) if m])
            summary = load_campaign(
                settings,
                eng,
                LoadRequest(path=sample, sender="BistroNord", template=DEMO_TEXT, name="demo"),
            )
            cid = summary.campaign
            assert cid is not None
            counts = ", ".join(f"{n} {status}" for status, n in summary.as_dict()["counts"].items())
            console.print(f"campaign {cid}: {summary.total} rows loaded ({counts})")
            notify_workers(settings, eng, cid)
            started = time.monotonic()

            def snapshot() -> CampaignStatus:
                # Completing here (beat does it too) lets the last frame say "completed".
                campaign_moves.complete_finished(eng)
                return campaign_status(eng, cid)

            final = watch_campaigns(
                snapshot,
                stop=lambda: group.dead() is not None or time.monotonic() - started > DEMO_TIMEOUT,
            )
            stats = requests.get(f"http://127.0.0.1:{port}/_sim/stats", timeout=5).json()
            died = group.dead()
            if died:
                console.print(f"the demo stopped early: {died} (see {base / 'demo.log'})")
        elapsed = time.monotonic() - started
        console.print(
            f"\n{final.final}/{final.total} final in {elapsed:.1f}s, cost {final.cost}; "
            f"the gateway accepted {stats['unique']} messages, sent twice: {stats['duplicates']}"
        )
        if keep:
            console.print(f"full report: SMS_DATA_DIR={base} sms-dispatch report {cid}")
        else:
            console.print("(run `sms-dispatch demo --keep` to keep its ledger for `report`)")
        return 0 if final.done else 1
    finally:
        sim.terminate()
        sim.wait(10)
        log.close()
        if not keep:
            shutil.rmtree(base, ignore_errors=True)
