"""One rate limit per gateway account, shared by every worker on every machine, in Redis.

Virtual scheduling (GCRA without burst): one Lua script hands out send slots spaced exactly
1/rate apart on Redis's clock, so no one-second window ever holds more than the rate.
"""

from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import dataclass

import redis

# KEYS[1] = the bucket; ARGV = interval (µs), count, horizon (µs).
# Returns {delay_us, granted}: the first granted slot starts delay_us from now; granted may
# be 0 when the schedule is already booked past the horizon (then delay_us says how long to
# wait before asking again).
_RESERVE = """
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000000 + tonumber(now_parts[2])
local interval = tonumber(ARGV[1])
local count = tonumber(ARGV[2])
local horizon = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local ahead = tat - now
if ahead >= horizon then
  return {ahead - horizon + 1, 0}
end
local room = math.floor((horizon - ahead) / interval)
if room < 1 then room = 1 end
if count > room then count = room end
local new_tat = tat + count * interval
local ttl_ms = math.ceil((new_tat - now) / 1000) + 1000
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', ttl_ms)
return {ahead, count}
"""

# Slots are spaced a little wider than 1/rate so that scheduling jitter in the senders (a
# thread that wakes a few ms late) cannot push one window over the limit.
HEADROOM = 0.99
# A send may go at most this long after its slot, so with HEADROOM no second can hold more
# than the rate: 0.99 * (1 + 0.008) < 1.
MAX_LATE = 0.008
DEFAULT_HORIZON = 1.0  # seconds of slots one reservation may book ahead


def bucket_key(kind: str, gateway_url: str, key: str) -> str:
    """The Redis key for one account's bucket; the API key only enters as a hash."""
    digest = hashlib.sha256(f"{gateway_url}\0{key}".encode()).hexdigest()[:16]
    return f"sms:rate:{kind}:{digest}"


@dataclass(frozen=True, slots=True)
class Reservation:
    """`count` slots, the first `delay` seconds from now, then one every `interval`."""

    delay: float
    count: int
    interval: float

    def slot(self, index: int) -> float:
        """Seconds from the reservation's making until slot `index` may be used."""
        return self.delay + index * self.interval


class RateLimiter:
    """Hands out send slots at `rate` per second across all processes sharing `key`."""

    def __init__(
        self,
        client: redis.Redis,
        key: str,
        rate: float,
        *,
        horizon: float = DEFAULT_HORIZON,
        headroom: float = HEADROOM,
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.key = key
        self.rate = rate
        self.interval = 1.0 / (rate * headroom)
        self.horizon = max(horizon, self.interval)
        self._script = client.register_script(_RESERVE)

    def reserve(self, count: int) -> Reservation:
        """Book up to `count` slots (maybe fewer; maybe none, with a delay to wait)."""
        delay_us, granted = self._script(
            keys=[self.key],
            args=[int(self.interval * 1e6), max(1, count), int(self.horizon * 1e6)],
        )
        return Reservation(int(delay_us) / 1e6, int(granted), self.interval)


class SlotFeeder:
    """Gives each sender thread its next slot time, booking slots from Redis in small blocks.

    Many threads share one feeder so a block of slots costs one Redis round trip.
    """

    def __init__(self, limiter: RateLimiter, block: int) -> None:
        self.limiter = limiter
        # Book no more slots than this process's senders can use at once (`block`, its
        # thread count), and at most a tenth of a second's worth: slots a process books but
        # cannot use in time are lost to every other process too.
        self.block = max(1, min(block, int(limiter.rate / 10)))
        self._lock = threading.Lock()
        self._slots: list[float] = []

    def next_slot(self, stop: threading.Event | None = None) -> float | None:
        """A monotonic time at which one request may go; None if `stop` was set."""
        with self._lock:
            stale = time.monotonic() - MAX_LATE
            # Slots whose moment has passed are given up, not used late: a burst of late
            # senders would otherwise crowd one second with more than the rate.
            while self._slots and self._slots[-1] < stale:
                self._slots.pop()
            while not self._slots:
                if stop is not None and stop.is_set():
                    return None
                asked = time.monotonic()
                booking = self.limiter.reserve(self.block)
                if booking.count == 0:
                    time.sleep(min(booking.delay, 0.5))
                    continue
                self._slots = [asked + booking.slot(i) for i in range(booking.count)][::-1]
            return self._slots.pop()

    def wait(self, stop: threading.Event | None = None) -> bool:
        """Sleep until this thread's slot; False if `stop` was set meanwhile.

        A thread that wakes up too late for its slot (a busy machine) takes another one.
        """
        while True:
            slot = self.next_slot(stop)
            if slot is None:
                return False
            pause = slot - time.monotonic()
            if pause > 0:
                if stop is not None:
                    if stop.wait(pause):
                        return False
                else:
                    time.sleep(pause)
            if time.monotonic() - slot <= MAX_LATE:
                return not (stop is not None and stop.is_set())
