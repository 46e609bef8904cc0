"""Counters and histograms the workers bump where things happen, kept in Redis for the scrape.

Redis rather than prometheus-client's multiprocess mode: workers on several machines add to
the same numbers, and `/metrics` on any machine reads them. Bumps are buffered in memory and
written every FLUSH_EVERY seconds in one pipeline, so the hot path never waits on Redis; a
worker killed outright loses at most that much, which a counter can afford. A pool child
that SIGTERM ends (a service manager stops the whole group) writes its buffer first.
"""

from __future__ import annotations

import atexit
import bisect
import json
import logging
import os
import signal
import threading
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import redis

log = logging.getLogger("sms.counters")

PREFIX = "sms:metrics:"
FLUSH_EVERY = 0.5


@dataclass(frozen=True)
class Spec:
    """One metric kept in Redis: its name, help, kind, label names and (histograms) buckets."""

    name: str
    help: str
    kind: str  # "counter" or "histogram"
    labels: tuple[str, ...] = ()
    buckets: tuple[float, ...] = ()

    @property
    def key(self) -> str:
        return PREFIX + self.name


LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
SLOW_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400, 172800)
POLL_BUCKETS = (0, 1, 2, 3, 4, 5, 6, 8, 10, 15, 20, 30, 50)

GATEWAY_RESPONSES = Spec(
    "sms_gateway_responses_total",
    "Gateway requests by endpoint, outcome kind and gateway code ('' when none came).",
    "counter",
    ("endpoint", "kind", "code"),
)
GATEWAY_LATENCY = Spec(
    "sms_gateway_request_seconds",
    "Time for one gateway request, by endpoint.",
    "histogram",
    ("endpoint",),
    LATENCY_BUCKETS,
)
RATE_WAIT = Spec(
    "sms_rate_limiter_wait_seconds",
    "Time a sender or poller waited for its rate-limit slot.",
    "histogram",
    ("limit",),
    LATENCY_BUCKETS,
)
POLLS_PER_MESSAGE = Spec(
    "sms_dlr_polls_per_message",
    "Delivery-report look-ups a message needed before it was final.",
    "histogram",
    (),
    POLL_BUCKETS,
)
SEND_TO_ACCEPTED = Spec(
    "sms_send_to_accepted_seconds",
    "From the campaign's start (send, or its start time) to the gateway accepting a message.",
    "histogram",
    (),
    SLOW_BUCKETS,
)
ACCEPTED_TO_FINAL = Spec(
    "sms_accepted_to_final_seconds",
    "From the gateway accepting a message to its final status (delivery-report latency).",
    "histogram",
    (),
    SLOW_BUCKETS,
)
FINALIZED = Spec(
    "sms_messages_finalized_total",
    "Messages that reached a final status, by status.",
    "counter",
    ("status",),
)
WEBHOOK_DELIVERIES = Spec(
    "sms_webhook_deliveries_total",
    "Webhook delivery attempts by result (delivered, retry, failed).",
    "counter",
    ("result",),
)
SPECS: tuple[Spec, ...] = (
    GATEWAY_RESPONSES,
    GATEWAY_LATENCY,
    RATE_WAIT,
    POLLS_PER_MESSAGE,
    SEND_TO_ACCEPTED,
    ACCEPTED_TO_FINAL,
    FINALIZED,
    WEBHOOK_DELIVERIES,
)


def _field(values: Sequence[str]) -> str:
    return json.dumps(list(values), separators=(",", ":"))


class Recorder:
    """Buffers bumps and writes them to Redis from a background thread."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self._lock = threading.Lock()
        self._pending: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()

    def _start(self) -> None:
        # Started on first use, in the process that uses it: threads do not survive a fork.
        if self._thread is None or self._pid != os.getpid():
            self._pid = os.getpid()
            self._pending = defaultdict(lambda: defaultdict(float))
            self._thread = threading.Thread(target=self._run, name="sms-counters", daemon=True)
            self._thread.start()

    def add(self, spec: Spec, labels: Sequence[str], amount: float = 1.0) -> None:
        with self._lock:
            self._start()
            self._pending[spec.key][_field(labels)] += amount

    def observe(self, spec: Spec, labels: Sequence[str], value: float) -> None:
        base = _field(labels)
        index = bisect.bisect_left(spec.buckets, value)  # the first bucket with le >= value
        with self._lock:
            self._start()
            fields = self._pending[spec.key]
            fields[f"{base}|{index}"] += 1
            fields[f"{base}|sum"] += value
            fields[f"{base}|count"] += 1

    def flush(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, defaultdict(lambda: defaultdict(float))
        if not pending:
            return
        try:
            pipe = self.client.pipeline(transaction=False)
            for key, fields in pending.items():
                for name, amount in fields.items():
                    pipe.hincrbyfloat(key, name, amount)
            pipe.execute()
        except redis.RedisError as exc:  # metrics never stop the work they count
            log.warning("could not write metrics to Redis: %s", exc)

    def _run(self) -> None:
        while not self._stop.wait(FLUSH_EVERY):
            self.flush()

    def close(self) -> None:
        self._stop.set()
        self.flush()


_recorder: Recorder | None = None


def bind(client: redis.Redis) -> None:
    """Send this process's bumps to `client` (a worker's runtime calls this once)."""
    global _recorder
    if _recorder is not None and _recorder.client is client:
        return
    if _recorder is not None:
        _recorder.close()
    _recorder = Recorder(client)


def unbind() -> None:
    global _recorder
    if _recorder is not None:
        _recorder.close()
    _recorder = None


def flush() -> None:
    if _recorder is not None:
        _recorder.flush()


TERM_FLUSH_WAIT = 2.0


def flush_before_sigterm() -> None:
    """In a Celery pool child: write the buffer when SIGTERM comes, then die of it as before.

    Celery leaves SIGTERM at its default in pool children, and a service manager that stops
    the worker signals the whole group, so a child would vanish with up to FLUSH_EVERY of
    bumps; the last messages of a campaign would then be missing from the counters. The write
    runs in a thread that the handler waits for at most TERM_FLUSH_WAIT: the interrupted main
    thread may hold the recorder's or the Redis pool's lock, and a stop must never hang.
    """

    def on_term(signum: int, _frame: object) -> None:
        writer = threading.Thread(target=flush, name="sms-counters-last", daemon=True)
        writer.start()
        writer.join(TERM_FLUSH_WAIT)
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)

    signal.signal(signal.SIGTERM, on_term)


atexit.register(flush)


# --- the bumps the rest of the workers call (no-ops until `bind`) ---------------------------


def bump(spec: Spec, *labels: str, amount: float = 1.0) -> None:
    """Add to a counter."""
    if _recorder is not None:
        _recorder.add(spec, labels, amount)


def observe(spec: Spec, value: float, *labels: str) -> None:
    """Add one observation to a histogram."""
    if _recorder is not None:
        _recorder.observe(spec, labels, max(0.0, value))


def gateway_request(endpoint: str, kind: str, code: int | None, seconds: float) -> None:
    """One request to the gateway: what came of it and how long it took."""
    bump(GATEWAY_RESPONSES, endpoint, kind, "" if code is None else str(code))
    observe(GATEWAY_LATENCY, seconds, endpoint)


def rate_wait(limit: str, seconds: float) -> None:
    observe(RATE_WAIT, seconds, limit)


def kind_of(error: BaseException | None) -> str:
    """A bounded label for an outcome: `accepted`, or the error class (`NoCreditError` ->
    `no_credit`)."""
    if error is None:
        return "accepted"
    name = type(error).__name__.removesuffix("Error") or "gateway"
    return "".join("_" + c.lower() if c.isupper() else c for c in name).lstrip("_")
