"""The simulated SMS gateway: aiohttp app speaking the gateway's HTTP API, with fault injection.

Also runs it in a background thread for tests (SimulatorThread) or in the foreground (run).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import hmac
import json
import logging
import random
import re
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, TypeVar

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from simulator.config import OUTCOMES, SimulatorConfig
from simulator.segments import encoding_of, segment_count

SEND_PATH = "/api/sms/send_sms.php"
DLR_PATH = "/api/sms/dlr.php"

log = logging.getLogger("simulator")
access_log = logging.getLogger("simulator.access")

T = TypeVar("T")

# A PHP gateway answers every documented outcome with HTTP 200 and text/html, JSON included.
_HEADERS = {"Content-Type": "text/html; charset=UTF-8"}
_JSON_HEADERS = {"Content-Type": "application/json"}
_CENT = Decimal("0.01")
_MOBILE = re.compile(r"[0-9]{7,15}")
# The key is a secret; numbers and texts are personal data. GET requests carry all of them in
# the query string, so the access log masks each.
_PRIVATE_IN_QUERY = re.compile(r"(?i)(?<=[?&])(key|mobile|full_number|msgtext)=[^&]*")
# The control API (/_sim/*) takes the gateway's own key, in this header or as ?key=.
CONTROL_KEY_HEADER = "X-Sim-Key"
_MAX_DUPLICATE_REFS = 100
_MAX_TIMES_KEPT = 20  # per message, so resending one ref in a loop does not grow without bound
_MAX_SECONDS_KEPT = 3600  # per_second history, so a long soak does not grow without bound
_MAX_POLLED_REFS = 1_000_000  # refs whose look-ups are counted; later ones count in polls only
_REPLY_NAMES = ("200", "400", "405", "406", "407", "503", "late", "drop")

_FAILURE_TEXT = {
    "failed": "Absent subscriber",
    "undelivered": "Unknown subscriber",
    "expired": "Validity period expired",
    "rejected": "Rejected by operator",
}

_SERVICE_UNAVAILABLE = (
    b"<html>\r\n<head><title>503 Service Temporarily Unavailable</title></head>\r\n"
    b"<body>\r\n<center><h1>503 Service Temporarily Unavailable</h1></center>\r\n"
    b"<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
)


def _compact(obj: dict[str, Any]) -> bytes:
    # The document shows compact JSON ({"status":true,"error":0}); match it byte for byte.
    return json.dumps(obj, separators=(",", ":")).encode()


def _err(text: str) -> bytes:
    return _compact({"status": False, "error": text})


# Pre-encoded replies: (code, numeric body, JSON body) by outcome.
_ACCEPTED = ("200", b"200", _compact({"status": True, "error": 0}))
_INVALID_KEY = ("407", b"407", _err("Invalid API Key"))
_IP_NOT_ALLOWED = ("405", b"405", _err("Remote IP not allowed"))
_NO_CREDIT = ("406", b"406", _err("Not Enough Credit"))
_NOT_ACCEPTED = ("400", b"400", _err("Message not accepted"))
_MISSING = {
    name: ("400", b"400", _err(f"Missing {name.capitalize()} Parameter"))
    for name in ("mobile", "sender", "msgtext", "ref")
}
_DLR_NOT_FOUND = _compact({"status": False, "queue_status": "notfound"})
_DLR_PENDING = _compact({"status": True, "queue_status": "pending", "queue_error": 0})
_DLR_DELETED = _compact(
    {
        "status": True,
        "queue_status": "processed",
        "queue_error": 0,
        "dlr_exist": False,
        "dlr_status": "notfound",
    }
)


def _dlr_processed(status: str, error: str, cost: str) -> bytes:
    return _compact(
        {
            "status": True,
            "queue_status": "processed",
            "queue_error": 0,
            "dlr_status": status,
            "dlr_error": error,
            "sms_cost": cost,
        }
    )


def _same_key(given: str, key: str) -> bool:
    """Constant-time key check that takes a header's bytes as UTF-8 or as Latin-1.

    HTTP header values are Latin-1 by tradition: a client may send a key with a non-ASCII
    letter either way, and the server must neither crash on it nor refuse it.
    """
    raw = given.encode("utf-8", "surrogateescape")
    accepted = [key.encode("utf-8")]
    with contextlib.suppress(UnicodeEncodeError):
        accepted.append(key.encode("latin-1"))
    return any(hmac.compare_digest(raw, candidate) for candidate in accepted)


def mask_key(text: str) -> str:
    """Hide the API key, numbers and texts in a logged URL or query string."""
    return _PRIVATE_IN_QUERY.sub(lambda match: f"{match.group(1).lower()}=***", text)


class MaskedAccessLogger(AbstractAccessLogger):
    """Access log line without the key, numbers or texts (GETs carry them in the query)."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.info(
            '%s "%s %s" %s %.1fms',
            request.remote,
            request.method,
            mask_key(request.raw_path),
            response.status,
            time * 1000,
        )


@dataclass(slots=True)
class Message:
    """One accepted (mobile, ref); a duplicate send adds an acceptance time, not a message."""

    mobile: str
    ref: str
    sender: str
    text: str
    segments: int
    cost: Decimal
    outcome: str
    accepted_at: list[float]  # wall-clock times, the first _MAX_TIMES_KEPT only
    accepted_mono: float
    times_accepted: int = 1

    def to_json(self, status: str) -> dict[str, Any]:
        return {
            "mobile": self.mobile,
            "ref": self.ref,
            "sender": self.sender,
            "text": self.text,
            "encoding": encoding_of(self.text),
            "segments": self.segments,
            "cost": str(self.cost),
            "outcome": self.outcome,
            "accepted": list(self.accepted_at),
            "times_accepted": self.times_accepted,
            "dlr_status": status,
        }


class SimulatorState:
    """Messages, counters and request handlers of one simulator instance (one event loop)."""

    def __init__(self, config: SimulatorConfig) -> None:
        self.config = config
        self.reset()

    # ----- state -----------------------------------------------------------------------------

    def _seed(self) -> None:
        seed = self.config.seed
        # Separate streams: turning a fault on must not change which outcomes messages get.
        self.outcome_rng = random.Random(seed)
        self.fault_rng = random.Random(None if seed is None else f"faults-{seed}")

    def reset(self) -> None:
        """Forget every message and counter; reseed so a seeded run repeats from the start.

        The config stays as it is, credit included.
        """
        self._seed()
        self.messages: dict[tuple[str, str], Message] = {}
        self.by_ref: dict[str, list[str]] = {}
        self.attempts = 0
        self.accepted = 0
        self.duplicates = 0
        self.duplicate_refs: list[str] = []
        self.per_second: dict[int, int] = {}
        self.max_per_second = 0
        # Every send_sms.php request per second, whatever the answer: the rate a client used.
        self.requests_per_second: dict[int, int] = {}
        self.polls = 0
        self.polls_by_ref: dict[str, int] = {}
        self.max_polls_per_ref = 0
        self.dlr_5xx = 0
        self.cost = Decimal("0.00")
        self.outcomes = dict.fromkeys(OUTCOMES, 0)
        self.replies = dict.fromkeys(_REPLY_NAMES, 0)

    def configure(self, fields: dict[str, Any]) -> dict[str, Any]:
        """Apply live config changes (validated, all or nothing) and return the new config."""
        self.config.update(fields)
        if "seed" in fields:
            self._seed()
        return self.config.to_json()

    def stats(self) -> dict[str, Any]:
        credit = self.config.credit
        return {
            "accepted": self.accepted,
            "unique": len(self.messages),
            "attempts": self.attempts,
            "duplicates": self.duplicates,
            "duplicate_refs": list(self.duplicate_refs),
            "per_second": {str(sec): n for sec, n in self.per_second.items()},
            "max_per_second": self.max_per_second,
            "requests_per_second": {str(sec): n for sec, n in self.requests_per_second.items()},
            "polls": self.polls,
            # A client that floods dlr.php for a few refs shows here, not in the total.
            "polled_refs": len(self.polls_by_ref),
            "max_polls_per_ref": self.max_polls_per_ref,
            "dlr_5xx": self.dlr_5xx,
            "credit": None if credit is None else str(credit),
            "cost": str(self.cost),
            "outcomes": dict(self.outcomes),
            "replies": dict(self.replies),
        }

    def messages_for(self, ref: str) -> list[dict[str, Any]]:
        now = time.monotonic()
        return [
            msg.to_json(self._dlr_status(msg, now))
            for mobile in self.by_ref.get(ref, ())
            if (msg := self.messages.get((mobile, ref))) is not None
        ]

    def _dlr_status(self, msg: Message, now: float) -> str:
        elapsed = now - msg.accepted_mono
        cfg = self.config
        if elapsed < cfg.pending:
            return "pending"
        if elapsed < cfg.pending + cfg.sending or msg.outcome == "stuck":
            return "sending"
        return "notfound" if msg.outcome == "deleted" else msg.outcome

    def _pick_outcome(self, mobile: str) -> str:
        forced = self.config.force.get(mobile)
        if forced is not None:
            return forced
        x = self.outcome_rng.random()
        last = "delivered"
        for name, weight in self.config.mix.items():
            x -= weight
            if x < 0:
                return name
            last = name
        return last  # float rounding left x a hair above zero

    def _accept(
        self,
        mobile: str,
        ref: str,
        sender: str,
        text: str,
        segments: int,
        cost: Decimal,
        now: float,
        second: int,
    ) -> None:
        self.accepted += 1
        self.cost += cost
        if self.config.credit is not None:
            self.config.credit -= cost
        count = self.per_second.get(second, 0) + 1
        if count == 1 and len(self.per_second) >= _MAX_SECONDS_KEPT:
            del self.per_second[next(iter(self.per_second))]
        self.per_second[second] = count
        if count > self.max_per_second:
            self.max_per_second = count
        msg = self.messages.get((mobile, ref))
        if msg is not None:
            # Accepted again, as a real gateway would: a double send is the client's bug to find.
            self.duplicates += 1
            msg.times_accepted += 1
            if len(msg.accepted_at) < _MAX_TIMES_KEPT:
                msg.accepted_at.append(now)
            if ref not in self.duplicate_refs and len(self.duplicate_refs) < _MAX_DUPLICATE_REFS:
                self.duplicate_refs.append(ref)
            return
        outcome = self._pick_outcome(mobile)
        self.outcomes[outcome] += 1
        self.messages[(mobile, ref)] = Message(
            mobile, ref, sender, text, segments, cost, outcome, [now], time.monotonic()
        )
        self.by_ref.setdefault(ref, []).append(mobile)

    def _count_poll(self, ref: str) -> None:
        count = self.polls_by_ref.get(ref)
        if count is None and len(self.polls_by_ref) >= _MAX_POLLED_REFS:
            return
        count = (count or 0) + 1
        self.polls_by_ref[ref] = count
        if count > self.max_polls_per_ref:
            self.max_polls_per_ref = count

    # ----- HTTP --------------------------------------------------------------------------------

    async def _delay(self) -> None:
        cfg = self.config
        if cfg.latency or cfg.jitter:
            await asyncio.sleep(cfg.latency + self.fault_rng.uniform(0.0, cfg.jitter))

    def _reply(self, reply: tuple[str, bytes, bytes], as_json: bool) -> web.Response:
        self.replies[reply[0]] += 1
        return web.Response(body=reply[2] if as_json else reply[1], headers=_HEADERS)

    async def handle_send(self, request: web.Request) -> web.StreamResponse:
        self.attempts += 1
        second = int(time.time())
        if second not in self.requests_per_second and (
            len(self.requests_per_second) >= _MAX_SECONDS_KEPT
        ):
            del self.requests_per_second[next(iter(self.requests_per_second))]
        self.requests_per_second[second] = self.requests_per_second.get(second, 0) + 1
        params = await _params(request)
        as_json = params.get("response", "").strip().lower() == "json"
        await self._delay()
        cfg = self.config
        if cfg.error_5xx and self.fault_rng.random() < cfg.error_5xx:
            self.replies["503"] += 1
            return web.Response(status=503, body=_SERVICE_UNAVAILABLE, headers=_HEADERS)

        key = params.get("key", "")
        if not key or not hmac.compare_digest(key.encode(), cfg.key.encode()):
            return self._reply(_INVALID_KEY, as_json)
        if cfg.allow_ips and request.remote not in cfg.allow_ips:
            return self._reply(_IP_NOT_ALLOWED, as_json)
        values = []
        for name in ("mobile", "sender", "msgtext", "ref"):
            value = params.get(name, "").strip()
            if not value:
                return self._reply(_MISSING[name], as_json)
            values.append(value)
        mobile, sender, text, ref = values
        if not _MOBILE.fullmatch(mobile):
            return self._reply(_NOT_ACCEPTED, as_json)
        segments = segment_count(text)
        cost = (cfg.price * segments).quantize(_CENT, rounding=ROUND_HALF_UP)
        if cfg.credit is not None and cfg.credit < cost:
            return self._reply(_NO_CREDIT, as_json)
        if cfg.busy and self.fault_rng.random() < cfg.busy:
            return self._reply(_NOT_ACCEPTED, as_json)
        now = time.time()
        second = int(now)
        if cfg.max_rate is not None and self.per_second.get(second, 0) >= cfg.max_rate:
            return self._reply(_NOT_ACCEPTED, as_json)

        # No await since the checks above, so rate and credit checks and the accept are atomic.
        self._accept(mobile, ref, sender, text, segments, cost, now, second)
        if cfg.drop and self.fault_rng.random() < cfg.drop:
            self.replies["drop"] += 1
            if request.transport is not None:
                request.transport.close()
            # aiohttp fails to write this to the closed transport and moves on quietly; 444
            # (nginx's "no response") is only what an access log line shows.
            return web.Response(status=444)
        if cfg.late and self.fault_rng.random() < cfg.late:
            self.replies["late"] += 1
            await asyncio.sleep(cfg.late_delay)
            return web.Response(body=_ACCEPTED[2] if as_json else _ACCEPTED[1], headers=_HEADERS)
        return self._reply(_ACCEPTED, as_json)

    async def handle_dlr(self, request: web.Request) -> web.StreamResponse:
        self.polls += 1
        params = await _params(request)
        self._count_poll(params.get("ref", "").strip())
        await self._delay()
        cfg = self.config
        if cfg.error_5xx and self.fault_rng.random() < cfg.error_5xx:
            self.dlr_5xx += 1
            return web.Response(status=503, body=_SERVICE_UNAVAILABLE, headers=_HEADERS)
        key = params.get("key", "")
        if not key or not hmac.compare_digest(key.encode(), cfg.key.encode()):
            return web.Response(body=_INVALID_KEY[2], headers=_HEADERS)
        msg = self.messages.get(
            (params.get("full_number", "").strip(), params.get("ref", "").strip())
        )
        if msg is None:
            return web.Response(body=_DLR_NOT_FOUND, headers=_HEADERS)
        status = self._dlr_status(msg, time.monotonic())
        cost = str(msg.cost)
        if status == "pending":
            body = _DLR_PENDING
        elif status == "notfound":
            body = _DLR_DELETED
        else:
            body = _dlr_processed(status, _FAILURE_TEXT.get(status, ""), cost)
        return web.Response(body=body, headers=_HEADERS)

    # ----- control API -------------------------------------------------------------------------
    # /_sim/stats holds counts and refs only, so it stays open (benchmarks and tests poll it).
    # Everything else reads or changes what clients send (numbers, texts, the key, faults) and
    # needs the key, like the gateway API itself.

    def _refuse(self, request: web.Request) -> web.Response | None:
        given = request.headers.get(CONTROL_KEY_HEADER) or request.query.get("key", "")
        if given and _same_key(given, self.config.key):
            return None
        return web.json_response(
            {"error": f"the control API needs the key (header {CONTROL_KEY_HEADER} or ?key=)"},
            status=401,
        )

    async def handle_stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.stats())

    async def handle_get_config(self, request: web.Request) -> web.Response:
        if (refused := self._refuse(request)) is not None:
            return refused
        return web.json_response(self.config.to_json(with_key=False))

    async def handle_config(self, request: web.Request) -> web.Response:
        if (refused := self._refuse(request)) is not None:
            return refused
        try:
            fields = await request.json()
        except ValueError:
            return web.json_response({"error": "body must be a JSON object"}, status=400)
        if not isinstance(fields, dict):
            return web.json_response({"error": "body must be a JSON object"}, status=400)
        try:
            self.configure(fields)
        except (ValueError, TypeError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response(self.config.to_json(with_key=False))

    async def handle_reset(self, request: web.Request) -> web.Response:
        if (refused := self._refuse(request)) is not None:
            return refused
        self.reset()
        return web.json_response({"reset": True})

    async def handle_messages(self, request: web.Request) -> web.Response:
        if (refused := self._refuse(request)) is not None:
            return refused
        ref = request.match_info["ref"]
        return web.json_response({"ref": ref, "messages": self.messages_for(ref)})


async def _params(request: web.Request) -> dict[str, str]:
    """Query string, then a form body on top (PHP's $_REQUEST order: POST wins over GET)."""
    params = dict(request.query)
    if request.method == "POST" and request.body_exists:
        form = await request.post()
        params.update((name, value) for name, value in form.items() if isinstance(value, str))
    return params


STATE_KEY = web.AppKey("simulator_state", SimulatorState)


def make_app(config: SimulatorConfig) -> web.Application:
    """Build the gateway app; its live state is ``app[STATE_KEY]`` and shares ``config``."""
    state = SimulatorState(config)
    app = web.Application()
    app[STATE_KEY] = state
    app.router.add_get(SEND_PATH, state.handle_send)
    app.router.add_post(SEND_PATH, state.handle_send)
    app.router.add_get(DLR_PATH, state.handle_dlr)
    app.router.add_post(DLR_PATH, state.handle_dlr)
    app.router.add_get("/_sim/stats", state.handle_stats)
    app.router.add_get("/_sim/config", state.handle_get_config)
    app.router.add_post("/_sim/config", state.handle_config)
    app.router.add_post("/_sim/reset", state.handle_reset)
    app.router.add_get("/_sim/messages/{ref}", state.handle_messages)
    return app


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _runner(app: web.Application, config: SimulatorConfig) -> web.AppRunner:
    # access_log=None switches the per-request logging off entirely: the hot path stays lean.
    return web.AppRunner(
        app,
        access_log=access_log if config.access_log else None,
        access_log_class=MaskedAccessLogger,
        # A "late" reply sleeps for late_delay; shutting down must not wait for it.
        shutdown_timeout=0.5,
    )


class SimulatorThread:
    """Run the simulator on its own event loop in a background thread (a context manager).

    ``SimulatorThread()`` or port 0 picks a free port; ``.url`` is set once started.
    """

    def __init__(self, config: SimulatorConfig | None = None, **fields: Any) -> None:
        config = config if config is not None else SimulatorConfig(port=0)
        self.config = dataclasses.replace(config, **fields) if fields else config
        self.url = ""
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._state: SimulatorState | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def __enter__(self) -> SimulatorThread:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self, timeout: float = 10.0) -> SimulatorThread:
        self._thread = threading.Thread(target=self._main, name="sms-simulator", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError("simulator did not start in time")
        if self._error is not None:
            raise RuntimeError(f"simulator failed to start: {self._error}") from self._error
        return self

    def stop(self, timeout: float = 10.0) -> None:
        if self._loop is not None and self._stop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(timeout)

    def stats(self) -> dict[str, Any]:
        return self._call(lambda state: state.stats())

    def configure(self, **fields: Any) -> dict[str, Any]:
        return self._call(lambda state: state.configure(fields))

    def reset(self) -> None:
        self._call(lambda state: state.reset())

    def messages(self, ref: str) -> list[dict[str, Any]]:
        return self._call(lambda state: state.messages_for(ref))

    def _call(self, fn: Callable[[SimulatorState], T]) -> T:
        """Run ``fn`` on the simulator's loop, so it never races a request handler."""
        if self._loop is None or self._state is None:
            raise RuntimeError("simulator is not running")
        state = self._state
        result: concurrent.futures.Future[T] = concurrent.futures.Future()

        def call() -> None:
            try:
                result.set_result(fn(state))
            except BaseException as exc:
                result.set_exception(exc)

        self._loop.call_soon_threadsafe(call)
        return result.result(timeout=10)

    def _main(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._serve())
        except BaseException as exc:  # startup errors are re-raised by start()
            self._error = self._error or exc
        finally:
            # Handlers still sleeping (late replies, latency) are cancelled, not awaited.
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()
            self._loop = None
            self._ready.set()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        app = make_app(self.config)
        runner = _runner(app, self.config)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.config.host, self.config.port)
            await site.start()
            self.port = runner.addresses[0][1]
            self.url = _url(self.config.host, self.port)
            self._state = app[STATE_KEY]
            self._loop = asyncio.get_running_loop()
            self._ready.set()
            await self._stop.wait()
        finally:
            await runner.cleanup()


def run(config: SimulatorConfig) -> None:
    """Serve in the foreground until SIGINT or SIGTERM."""
    asyncio.run(_serve_forever(config))


async def _serve_forever(config: SimulatorConfig) -> None:
    app = make_app(config)
    runner = _runner(app, config)
    await runner.setup()
    try:
        site = web.TCPSite(runner, config.host, config.port, backlog=1024)
        await site.start()
        port = runner.addresses[0][1]
        print(f"simulator listening on {_url(config.host, port)}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await stop.wait()
    finally:
        await runner.cleanup()
