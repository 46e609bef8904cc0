"""The shared rate limiter on the real Redis: slots never exceed the rate in any second."""

from __future__ import annotations

import threading
import time
from bisect import bisect_left

from workers.throttle import RateLimiter, SlotFeeder, bucket_key


def max_in_any_window(times: list[float], width: float = 1.0) -> int:
    times = sorted(times)
    return max(
        (bisect_left(times, t + width) - i for i, t in enumerate(times)),
        default=0,
    )


def test_many_threads_in_two_feeders_never_exceed_the_rate(redis_client):
    rate = 40
    key = bucket_key("send", "http://gw", "k")
    # Two feeders stand for two worker processes sharing one account.
    feeders = [SlotFeeder(RateLimiter(redis_client, key, rate), 4) for _ in range(2)]
    slots: list[float] = []
    lock = threading.Lock()
    stop_at = time.monotonic() + 2.5

    def take(feeder: SlotFeeder) -> None:
        while time.monotonic() < stop_at:
            slot = feeder.next_slot()
            with lock:
                slots.append(slot)
            time.sleep(max(0.0, slot - time.monotonic()))

    threads = [threading.Thread(target=take, args=(f,)) for f in feeders for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert max_in_any_window(slots) <= rate
    # And the limiter does not starve senders: close to the rate over the run.
    steady = [s for s in slots if s < stop_at - 0.5]
    assert len(steady) >= rate * 1.5


def test_accounts_have_separate_buckets_and_the_key_is_not_in_redis(redis_client):
    a = bucket_key("send", "http://gw", "secret-one")
    b = bucket_key("send", "http://gw", "secret-two")
    assert a != b
    RateLimiter(redis_client, a, 10).reserve(5)
    assert all(b"secret" not in k for k in redis_client.keys("*"))


def test_a_booked_schedule_asks_callers_to_wait(redis_client):
    limiter = RateLimiter(redis_client, "sms:rate:test", 10, horizon=0.5)
    granted = [limiter.reserve(100) for _ in range(4)]
    assert sum(r.count for r in granted) <= 6  # half a second's worth at most
    assert granted[-1].count == 0 and granted[-1].delay > 0
