"""The shared rate limiter on the real Redis: turns never exceed the rate on Redis's clock."""

from __future__ import annotations

import threading
import time

from workers.throttle import (
    DEFAULT_HORIZON,
    HEADROOM,
    RateLimiter,
    Reservation,
    SlotFeeder,
    bucket_key,
)


def test_many_threads_in_two_feeders_never_book_more_than_the_rate(redis_client):
    # Checked on Redis's clock, where the limiter keeps its schedule: turn times as this
    # process sees them are up to a round trip early, so counting them per second would fail
    # on a busy machine for no fault of the limiter (bench/limiter_rate.py measures those).
    rate = 40
    key = bucket_key("send", "http://gw", "k")
    lock = threading.Lock()
    granted: list[int] = []

    class CountingLimiter(RateLimiter):
        def reserve(self, count: int) -> Reservation:
            booking = super().reserve(count)
            with lock:
                granted.append(booking.count)
            return booking

    # Two feeders stand for two worker processes sharing one account.
    feeders = [SlotFeeder(CountingLimiter(redis_client, key, rate), 4) for _ in range(2)]
    stop_at = time.monotonic() + 1.5

    def take(feeder: SlotFeeder) -> None:
        while time.monotonic() < stop_at:
            turn = feeder.next_turn()
            assert turn is not None
            time.sleep(max(0.0, turn - time.monotonic()))

    threads = [threading.Thread(target=take, args=(f,)) for f in feeders for _ in range(4)]
    start = _redis_seconds(redis_client)
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    end = _redis_seconds(redis_client)
    # Every turn handed out lies in [start, end + horizon] on Redis's clock, one interval
    # (1 / (rate * HEADROOM)) from the next: no more fit, whatever the threads' timing.
    interval = 1 / (rate * HEADROOM)
    assert sum(granted) <= (end - start + DEFAULT_HORIZON) / interval + 1
    assert sum(granted) > 0


def _redis_seconds(client) -> float:
    seconds, micros = client.time()
    return seconds + micros / 1e6


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
