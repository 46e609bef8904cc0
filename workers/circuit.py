"""The gateway circuit: an account-level "gateway unreachable" state, shared in Redis.

A run of answers that say the gateway itself is in trouble (cannot connect, 5xx, timeouts,
replies that make no sense) opens the circuit: sending holds on every machine and no attempt
is spent. One probe at a time (a harmless `dlr.php` look-up), at a backoff of up to a minute,
closes it again, and sending resumes by itself.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import redis

from workers.gateway import GatewayClient, GatewayError, Outcome, SendResult

log = logging.getLogger("sms.circuit")

OPEN_KEY = "sms:circuit:open"
FAILS_KEY = "sms:circuit:fails"
PROBE_KEY = "sms:circuit:probe"
FAIL_WINDOW = 60  # seconds a run of failures may take to count as one run
PROBE_MAX = 60.0
PROBE_REF = "circuitprobe"
PROBE_NUMBER = "0"


@dataclass(frozen=True, slots=True)
class CircuitState:
    """An open circuit: since when, why, and how long until the next probe may run."""

    since: float
    reason: str
    delay: float

    def describe(self) -> str:
        at = datetime.fromtimestamp(self.since, UTC).strftime("%H:%M:%S UTC")
        return f"waiting for the gateway since {at} ({self.reason})"


def _decode(value: bytes | str | None) -> CircuitState | None:
    if value is None:
        return None
    try:
        data = json.loads(value)
        return CircuitState(float(data["since"]), str(data["reason"]), float(data["delay"]))
    except (ValueError, KeyError, TypeError):
        return CircuitState(time.time(), "gateway unreachable", 1.0)


def state(client: redis.Redis) -> CircuitState | None:
    """The open circuit, or None when sending may go on."""
    return _decode(client.get(OPEN_KEY))


class Breaker:
    """One process's view of the circuit: records outcomes, opens it after a run of trouble."""

    def __init__(self, client: redis.Redis, threshold: int) -> None:
        self.client = client
        self.threshold = threshold
        self._lock = threading.Lock()
        self._failing = False  # this process saw trouble since its last success

    def record(self, result: SendResult) -> None:
        """Count one send's answer towards (or against) a run of gateway trouble."""
        trouble = result.outcome is Outcome.UNKNOWN or (
            result.kind is not None and result.kind.gateway_trouble
        )
        self.note(trouble, result.error)

    def record_lookup(self, error: GatewayError | None) -> None:
        """Count one report look-up: a campaign with nothing left to send notices an outage too."""
        trouble = error is not None and (error.gateway_trouble or error.outcome is Outcome.UNKNOWN)
        self.note(trouble, error.message if error is not None else None)

    def note(self, trouble: bool, reason: str | None) -> None:
        if not trouble:
            if self._failing:
                with self._lock:
                    self._failing = False
                self.client.delete(FAILS_KEY)
            return
        with self._lock:
            self._failing = True
        pipe = self.client.pipeline(transaction=False)
        pipe.incr(FAILS_KEY)
        pipe.expire(FAILS_KEY, FAIL_WINDOW)
        count, _ = pipe.execute()
        if int(count) >= self.threshold:
            open_circuit(self.client, reason or "gateway trouble")


def open_circuit(client: redis.Redis, reason: str) -> bool:
    """Open the circuit (once); True if this call opened it."""
    value = json.dumps({"since": time.time(), "reason": reason, "delay": 1.0})
    opened = bool(client.set(OPEN_KEY, value, nx=True))
    if opened:
        client.set(PROBE_KEY, 1, px=1000)  # first probe after a second
        log.warning("gateway circuit open: %s; sending holds until a probe gets through", reason)
    return opened


def close_circuit(client: redis.Redis) -> None:
    current = state(client)
    pipe = client.pipeline(transaction=False)
    pipe.delete(OPEN_KEY)
    pipe.delete(FAILS_KEY)
    pipe.delete(PROBE_KEY)
    pipe.execute()
    if current is not None:
        down = time.time() - current.since
        log.warning("gateway circuit closed after %.0fs: sending resumes", down)


def probe(client: redis.Redis, gateway: GatewayClient) -> str | None:
    """If the circuit is open and a probe is due, run one; returns what happened, or None.

    Any well-formed reply means the gateway is reachable again (even "not found").
    """
    current = state(client)
    if current is None:
        return None
    delay = min(PROBE_MAX, current.delay * 2)
    # One prober at a time on all machines; the lock also spaces the probes out.
    if not client.set(PROBE_KEY, 1, nx=True, px=int(current.delay * 1000)):
        return None
    try:
        gateway.report(PROBE_NUMBER, PROBE_REF)
    except GatewayError as exc:
        if exc.outcome is Outcome.ACCOUNT or not (
            exc.gateway_trouble or exc.outcome is Outcome.UNKNOWN
        ):
            close_circuit(client)
            return "closed"
        value = json.dumps({"since": current.since, "reason": exc.message, "delay": delay})
        client.set(OPEN_KEY, value, xx=True)
        client.set(PROBE_KEY, 1, px=int(delay * 1000))
        return "still down"
    close_circuit(client)
    return "closed"
