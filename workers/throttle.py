"""One rate limit per gateway account, shared by every worker on every machine, in Redis.

Virtual scheduling (GCRA without burst): one Lua script hands out send slots spaced exactly
1/rate apart on Redis's clock, so no one-second window ever holds more than the rate.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from dataclasses import dataclass
from enum import Enum

import redis

from workers import counters

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

# Slots are spaced at exactly the rate: the send guard below checks the gateway's one-second
# window right before each request, so the slots need no margin of their own.
HEADROOM = 1.0
# A thread that wakes late for its slot (a busy machine, the GIL) still uses it, up to this
# long after: giving late slots up lost an eighth of the rate on a loaded machine, and a burst
# of late senders cannot crowd a second past the rate, since the send guard holds them back.
MAX_LATE = 0.25
# Seconds of slots that may be booked ahead: short, so slots booked by a batch that then
# steps aside for a higher lane hold that lane up only briefly.
DEFAULT_HORIZON = 0.25


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
        self.kind = key.split(":")[2] if key.count(":") >= 3 else "send"  # a metric label
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

    def next_turn(self, stop: threading.Event | None = None) -> float | None:
        """A monotonic time at which one request may go (this thread's turn under the rate);
        None if `stop` was set. Not a cron slot (workers/cron.py): a place in the rate."""
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
        """Sleep until this thread's slot; False if `stop` was set meanwhile."""
        started = time.monotonic()
        try:
            return self._wait(stop)
        finally:  # metrics (issue 12): how long senders and pollers wait for the limit
            counters.rate_wait(self.limiter.kind, time.monotonic() - started)

    def _wait(self, stop: threading.Event | None = None) -> bool:
        """Sleep until this thread's slot; False if `stop` was set meanwhile.

        A thread that wakes up too late for its slot (a busy machine) takes another one.
        """
        while True:
            slot = self.next_turn(stop)
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


# KEYS[1] = the account's window of recent sends (a sorted set of Redis times, µs);
# KEYS[2] = the message's in-flight marker, set in the same step as admission;
# KEYS[3..4] = the high and normal lanes' own windows; KEYS[5..6] = their "starved" flags
# (senders refused room); KEYS[7..8] = this lane's window and starved flag.
# ARGV = rate, window (µs), marker ttl (s), a unique member, lane rank (0 high, 1 normal,
# 2 low), sends per window kept for the high lane while it uses them.
# Returns 0 when the send may go now, -1 when a higher lane needs the rate (yield), else µs
# until the window has room.
_LANE_RULES = """
local rank = tonumber(ARGV[5])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local window = tonumber(ARGV[2])
local reserved = tonumber(ARGV[6])
for i = 1, 4 do
  if i ~= 2 then redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now - window) end
end
local limit = tonumber(ARGV[1])
if rank >= 1 then
  -- The high lane bursts (uses more than its reserve) or is refused room: step aside.
  local high = redis.call('ZCARD', KEYS[3])
  if redis.call('EXISTS', KEYS[5]) == 1 or (reserved > 0 and high >= reserved) then
    return -1
  end
  -- A trickle of high sends keeps its reserve free.
  if high > 0 then limit = limit - reserved end
end
if rank >= 2 then
  if redis.call('EXISTS', KEYS[6]) == 1 or redis.call('ZCARD', KEYS[4]) > 0 then return -1 end
end
"""

# The same keys and arguments: 1 when the lane must step aside now, else 0.
_BLOCKED = _LANE_RULES + "return 0"

_ADMIT = (
    _LANE_RULES
    + """
if redis.call('ZCARD', KEYS[1]) >= limit then
  if rank <= 1 then redis.call('SET', KEYS[8], 1, 'PX', 1000) end
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  if oldest[2] == nil then return 1000 end
  return math.max(1, tonumber(oldest[2]) + window - now)
end
local ttl = math.ceil(window / 1000) + 1000
redis.call('ZADD', KEYS[1], now, ARGV[4])
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('ZADD', KEYS[7], now, ARGV[4])
redis.call('PEXPIRE', KEYS[7], ttl)
redis.call('SET', KEYS[2], 1, 'EX', tonumber(ARGV[3]))
return 0
"""
)

LANES = ("high", "normal", "low")


def _lane_key(flag: str, lane: str) -> str:
    return f"sms:lane:{flag}:{lane}"


class Admission(Enum):
    SEND = "send"
    STOPPED = "stopped"
    YIELD = "yield"  # a higher lane needs the rate: end the batch, its messages wait


class SendGuard:
    """The last word before a request leaves: no more than `rate` sends in any one second.

    Slots from the limiter pace the senders; this check is made at the moment of sending, on
    Redis's clock, so a sender that woke up late on a starved machine cannot add a burst on
    top of the paced flow. Admission also leaves the message's in-flight marker, in one round
    trip, and shares the rate between lanes: while the high lane has senders, the others keep
    `reserved_high` of the rate free for it, and a lane whose senders are refused room makes
    the lanes below it yield.
    """

    def __init__(
        self, client: redis.Redis, key: str, rate: float, reserved_high: float = 0.0
    ) -> None:
        self.key = key + ":window"
        self.limit = max(1, int(rate))
        self.reserved = int(self.limit * reserved_high)
        self._script = client.register_script(_ADMIT)
        self._blocked = client.register_script(_BLOCKED)
        self._count = 0
        self._lock = threading.Lock()

    def admit(
        self, marker_key: str, marker_ttl: float, stop: threading.Event, lane: str = "normal"
    ) -> Admission:
        """Wait for room in the window, then book it (and the marker)."""
        lane = lane if lane in LANES else "normal"
        with self._lock:
            self._count += 1
            member = f"{os.getpid()}:{threading.get_ident()}:{self._count}"
        keys, args = self._lane_call(lane, marker_key, marker_ttl, member)
        while not stop.is_set():
            wait_us = int(self._script(keys=keys, args=args))
            if wait_us == 0:
                return Admission.SEND
            if wait_us < 0:
                return Admission.YIELD
            stop.wait(wait_us / 1e6)
        return Admission.STOPPED

    def blocked(self, lane: str) -> bool:
        """True when a lane above `lane` needs the whole rate: its batches step aside.

        Lower-lane batches must not even book slots then: slots are handed out in turn, and
        every one a stepping-aside batch books is lost to the lane above.
        """
        if lane not in LANES or lane == "high":
            return False
        keys, args = self._lane_call(lane, "sms:lane:unused", 1, "")
        return int(self._blocked(keys=keys, args=args)) < 0

    def _lane_call(
        self, lane: str, marker_key: str, marker_ttl: float, member: str
    ) -> tuple[list[str], list[int | str]]:
        keys = [
            self.key,
            marker_key,
            f"{self.key}:high",
            f"{self.key}:normal",
            _lane_key("starved", "high"),
            _lane_key("starved", "normal"),
            f"{self.key}:{lane}",
            _lane_key("starved", lane),
        ]
        args: list[int | str] = [self.limit, 1_000_000, max(1, int(marker_ttl)), member]
        args += [LANES.index(lane), self.reserved]
        return keys, args
