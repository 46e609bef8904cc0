"""Benchmark: how close the shared rate limiter keeps senders to the rate, and its busiest second.

Two feeders (two worker processes sharing one account) with four sender threads each take
turns from the local Redis for --seconds; prints, as medians of --runs runs, the share of the
set rate that was handed out and the busiest one-second window of turn times. The window is
measured on this machine's clock, which sees each turn up to one Redis round trip early, so on
a busy machine it may show one turn over the rate that Redis's own schedule never gave
(tests/test_throttle.py checks the schedule itself).

    .venv/bin/python bench/limiter_rate.py --rate 40 --seconds 3 --runs 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from bisect import bisect_left
from pathlib import Path

import redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from workers.throttle import RateLimiter, SlotFeeder

REDIS_URL = os.environ.get("SMS_BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")


def busiest_second(times: list[float]) -> int:
    times = sorted(times)
    return max((bisect_left(times, t + 1.0) - i for i, t in enumerate(times)), default=0)


def one_run(client: redis.Redis, rate: float, seconds: float) -> tuple[float, int]:
    """(share of the rate handed out in the steady part, busiest one-second window)."""
    key = f"sms:rate:bench:{time.monotonic_ns()}"
    feeders = [SlotFeeder(RateLimiter(client, key, rate), 4) for _ in range(2)]
    turns: list[float] = []
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds

    def take(feeder: SlotFeeder) -> None:
        while time.monotonic() < stop_at:
            turn = feeder.next_turn()
            assert turn is not None  # no stop event given
            with lock:
                turns.append(turn)
            time.sleep(max(0.0, turn - time.monotonic()))

    threads = [threading.Thread(target=take, args=(f,)) for f in feeders for _ in range(4)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # The last half second is left out: threads stop asking then, the limiter is not slower.
    steady = [t for t in turns if t < stop_at - 0.5]
    share = len(steady) / (rate * (stop_at - 0.5 - started))
    client.delete(key)
    return share, busiest_second(turns)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=40)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    client = redis.Redis.from_url(REDIS_URL)
    results = [one_run(client, args.rate, args.seconds) for _ in range(args.runs)]
    shares = [share for share, _ in results]
    windows = [window for _, window in results]
    print(
        f"rate {args.rate:g}/s, {args.runs} runs of {args.seconds:g} s: "
        f"median share of the rate {statistics.median(shares):.1%} "
        f"(min {min(shares):.1%}), busiest second median {statistics.median(windows):g} "
        f"(max {max(windows)})"
    )


if __name__ == "__main__":
    main()
