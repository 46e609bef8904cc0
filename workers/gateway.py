"""The SMS gateway's HTTP client: `send_sms.php` and `dlr.php`, every documented reply typed.

Failures are classes (transient, permanent, outcome unknown, account) so callers decide from
the class, never from a message string. The API key never reaches an exception, log or repr.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from functools import partial
from typing import Any
from urllib.parse import urljoin, urlsplit

import requests
import urllib3
import urllib3.connection
import urllib3.exceptions
from requests.adapters import HTTPAdapter

from config import Settings
from workers import counters

SEND_PATH = "/api/sms/send_sms.php"
REPORT_PATH = "/api/sms/dlr.php"
RAW_LIMIT = 200  # how much of an unparseable body is kept in an error
USER_AGENT = "sms-dispatch/0.1"

log = logging.getLogger("sms.gateway")
# The key is a secret; numbers and texts are personal data. All of them travel in the query
# string in GET mode.
_PRIVATE_IN_TEXT = re.compile(r"(?i)\b(key|mobile|full_number|msgtext)=[^&\s\"']*")


def redact(text: str) -> str:
    """Mask the key, numbers and texts wherever they appear in a URL or a log line."""
    return _PRIVATE_IN_TEXT.sub(r"\1=***", text)


class _RedactFilter(logging.Filter):
    # urllib3 logs the request line (query string included) at DEBUG; GET mode puts the key
    # there, so every record of that logger is scrubbed before any handler sees it.
    def filter(self, record: logging.LogRecord) -> bool:
        if record.args:
            record.msg = redact(record.getMessage())
            record.args = None
        else:
            record.msg = redact(str(record.msg))
        return True


logging.getLogger("urllib3.connectionpool").addFilter(_RedactFilter())


class Outcome(StrEnum):
    """What a send attempt means for the message (the design's outcome table)."""

    ACCEPTED = "accepted"
    REJECTED = "rejected"
    RETRY = "retry"
    UNKNOWN = "unknown"
    ACCOUNT = "account"


# --- errors ---------------------------------------------------------------------------------


class GatewayError(Exception):
    """Base of every gateway failure; `outcome` says what to do about it."""

    outcome: Outcome = Outcome.RETRY
    # True when the failure says the gateway itself is in trouble (unreachable, 5xx, replies
    # that make no sense): no attempt of the message is spent, and a run of these opens the
    # gateway circuit. False for answers about the message itself.
    gateway_trouble: bool = False
    # True for "refused or busy": a few retries, then the message is `rejected`, not `failed`.
    busy: bool = False

    def __init__(self, message: str, *, code: int | None = None, raw: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.raw = raw


class TransientError(GatewayError):
    """The gateway did not take the message this time; sending again later is safe."""

    outcome = Outcome.RETRY


class ConnectError(TransientError):
    """No connection could be made, so nothing was sent."""

    gateway_trouble = True


class RedirectError(ConnectError):
    """The gateway answered with a redirect (3xx); it is never followed, so nothing was sent.

    Following it would hand the key, number and text to whatever host the reply names. A
    redirect is a wrong or moved `SMS_GATEWAY_URL`, not a fault of the message: like a refused
    connection it is gateway trouble, so no attempt is spent on it.
    """


class ServerError(TransientError):
    """HTTP 503, or any 5xx to a look-up: the request was not taken, asking again is safe."""

    gateway_trouble = True


class BusyError(TransientError):
    """`Message not accepted` (or numeric 400): refused or busy; a few retries, then rejected."""

    busy = True


class BadReplyError(TransientError):
    """A reply we could not parse; the raw body is kept, cut short."""

    gateway_trouble = True


class PermanentError(GatewayError):
    """The gateway refused this request for good."""

    outcome = Outcome.REJECTED


class MissingParameterError(PermanentError):
    """`Missing ... Parameter`: a bug on our side, never retried."""


class OutcomeUnknownError(GatewayError):
    """The request may have reached the gateway but no answer came; look the ref up first."""

    outcome = Outcome.UNKNOWN


class ReadTimeoutError(OutcomeUnknownError):
    """No reply within the read timeout."""


class ConnectionDroppedError(OutcomeUnknownError):
    """The connection closed after the request was written."""


class UnreadableReplyError(OutcomeUnknownError):
    """HTTP 200 with a body that is none of the documented replies (a PHP error page, say).

    The script ran and may have queued the message before it failed: looked up, never resent
    blind. Like a 5xx it also says the gateway is in trouble.
    """

    gateway_trouble = True


class ServerFailedMidwayError(OutcomeUnknownError):
    """HTTP 5xx other than 503 to a send: the message may have been taken before it failed.

    A proxy in front of the gateway answers 504 when the script took longer than it waits,
    and 502 when the script's connection broke; the script itself answers 500 when it dies
    part way. In each the script may already have queued the message, so it is looked up
    before any resend. Only 503 says the request was turned away unread. Like every 5xx this
    is gateway trouble; the circuit opens after a run of them, so few messages ever pay the
    look-up.
    """

    gateway_trouble = True


class AccountError(GatewayError):
    """A refusal that concerns the account, not the message: stop and pause."""

    outcome = Outcome.ACCOUNT


class IPNotAllowedError(AccountError):
    """405: this machine's address is not on the account's allow-list."""


class NoCreditError(AccountError):
    """406: the account has run out of credit."""


class InvalidKeyError(AccountError):
    """407: the API key is wrong."""


_ACCOUNT_ERRORS: dict[int, tuple[type[AccountError], str]] = {
    405: (IPNotAllowedError, "remote IP not allowed (405)"),
    406: (NoCreditError, "not enough credit (406)"),
    407: (InvalidKeyError, "invalid API key (407)"),
}


# --- results --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SendResult:
    """One send attempt: the outcome class, the gateway's code and error text, our ref."""

    outcome: Outcome
    ref: str
    code: int | None = None
    error: str | None = None
    kind: type[GatewayError] | None = None

    @property
    def accepted(self) -> bool:
        return self.outcome is Outcome.ACCEPTED

    def as_dict(self) -> dict[str, Any]:
        return {
            "outcome": str(self.outcome),
            "code": self.code,
            "error": self.error,
            "ref": self.ref,
        }


class ReportState(StrEnum):
    """Where the gateway says a message is."""

    PENDING = "pending"  # still in the gateway's queue
    SENDING = "sending"  # processed, no delivery report yet
    DELIVERED = "delivered"
    FAILED = "failed"  # a failure word in dlr_status
    OTHER = "other"  # a dlr_status word we do not know: kept raw, polled again
    DELETED = "deleted"  # dlr_exist false: the report is gone for good
    NOT_FOUND = "notfound"  # status false: wrong number/ref, or not registered yet


FAILURE_WORDS = frozenset(
    {
        "failed",
        "failure",
        "undelivered",
        "undeliverable",
        "undeliv",
        "rejected",
        "rejectd",
        "expired",
        "error",
        "blocked",
        "blacklisted",
        "deleted",
        "canceled",
        "cancelled",
        "invalid",
        "barred",
    }
)


@dataclass(frozen=True, slots=True)
class Report:
    """One delivery report, as the gateway gave it."""

    state: ReportState
    queue_status: str | None = None
    dlr_status: str | None = None
    dlr_error: str | None = None
    cost: Decimal | None = None
    raw: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def final(self) -> bool:
        return self.state in (ReportState.DELIVERED, ReportState.FAILED, ReportState.DELETED)


# --- parsing --------------------------------------------------------------------------------


def _clean(body: bytes | str) -> str:
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    return text.strip().lstrip("\ufeff").strip()


def _cut(text: str) -> str:
    return text if len(text) <= RAW_LIMIT else text[:RAW_LIMIT] + "…"


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes", "ok")
    return bool(value)


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


def _error_for_code(code: int, text: str | None) -> GatewayError | None:
    """The error a numeric code stands for, or None when the code means accepted."""
    if code == 200 or code == 0:
        return None
    if code in _ACCOUNT_ERRORS:
        cls, message = _ACCOUNT_ERRORS[code]
        return cls(text or message, code=code)
    if code == 400:
        # Numeric mode cannot tell "missing parameter" from "unable to accept"; we always send
        # every parameter, so a 400 there is treated as the gateway being busy.
        return BusyError(text or "rejected or busy (400)", code=400)
    if 500 <= code <= 599:
        return ServerError(f"gateway error (HTTP {code})", code=code)
    return BadReplyError(f"unexpected code {code}", code=code)


def _error_for_text(text: str) -> GatewayError:
    lowered = text.lower()
    if "missing" in lowered and "parameter" in lowered:
        return MissingParameterError(text, code=400)
    if "not accepted" in lowered:
        return BusyError(text, code=400)
    if "credit" in lowered:
        return NoCreditError(text, code=406)
    if "ip" in lowered.split() or "remote" in lowered:
        return IPNotAllowedError(text, code=405)
    if "key" in lowered:
        return InvalidKeyError(text, code=407)
    return BadReplyError(f"unrecognised error {_cut(text)!r}", code=None, raw=_cut(text))


def parse_send_reply(http_status: int, body: bytes | str) -> GatewayError | None:
    """None when the reply means accepted, else the error it stands for."""
    text = _clean(body)
    if http_status == 503:
        return ServerError(f"gateway error (HTTP {http_status})", code=http_status, raw=_cut(text))
    if 500 <= http_status <= 599:
        return ServerFailedMidwayError(
            f"gateway error (HTTP {http_status}); the message may have been taken",
            code=http_status,
            raw=_cut(text),
        )
    code = _as_int(text)
    if code is not None:
        return _error_for_code(code, None)
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if isinstance(data, dict):
        error = data.get("error")
        status = data.get("status")
        error_code = _as_int(error)
        if _truthy(status) and (error in (None, "", False) or error_code == 0):
            return None
        if error_code is not None:
            return _error_for_code(error_code, None)
        if isinstance(error, str) and error.strip():
            return _error_for_text(error.strip())
    if http_status in _ACCOUNT_ERRORS or http_status == 400:
        return _error_for_code(http_status, None)
    if http_status == 200:
        return UnreadableReplyError(f"unreadable reply: {_cut(text)!r}", code=200, raw=_cut(text))
    return BadReplyError(f"unparseable reply (HTTP {http_status}): {_cut(text)!r}", raw=_cut(text))


def _cost(value: Any) -> Decimal | None:
    if value in (None, ""):
        return None
    try:
        return Decimal(str(value).strip())
    except InvalidOperation:
        return None


def parse_report(http_status: int, body: bytes | str) -> Report:
    """A delivery report; raises a GatewayError for replies that are not reports."""
    text = _clean(body)
    if 500 <= http_status <= 599:
        raise ServerError(f"gateway error (HTTP {http_status})", code=http_status, raw=_cut(text))
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        code = _as_int(text)
        error = _error_for_code(code, None) if code is not None else None
        raise error or BadReplyError(f"unparseable report: {_cut(text)!r}", raw=_cut(text))
    queue_status = str(data.get("queue_status") or "").strip().lower() or None
    dlr_status = str(data.get("dlr_status") or "").strip().lower() or None
    dlr_error = str(data.get("dlr_error") or "").strip() or None
    known = {"status", "queue_status", "queue_error", "dlr_status", "dlr_error", "sms_cost"}
    report = partial(
        Report,
        queue_status=queue_status,
        dlr_status=dlr_status,
        dlr_error=dlr_error,
        cost=_cost(data.get("sms_cost")),
        raw=_cut(text),
        extra={k: v for k, v in data.items() if k not in known},
    )
    if not _truthy(data.get("status")):
        if queue_status == "notfound":
            return report(ReportState.NOT_FOUND)
        error = data.get("error")
        if isinstance(error, str) and error.strip():
            raise _error_for_text(error.strip())
        raise BadReplyError(f"unparseable report: {_cut(text)!r}", raw=_cut(text))
    if "dlr_exist" in data and not _truthy(data.get("dlr_exist")):
        return report(ReportState.DELETED)
    if queue_status == "pending":
        return report(ReportState.PENDING)
    if dlr_status in (None, "sending", "sent", "submitted", "enroute", "accepted", "buffered"):
        return report(ReportState.SENDING)
    if dlr_status in ("delivered", "delivrd"):
        return report(ReportState.DELIVERED)
    if dlr_status in FAILURE_WORDS:
        return report(ReportState.FAILED)
    if dlr_status == "notfound":
        return report(ReportState.DELETED)
    return report(ReportState.OTHER)


# --- the client -----------------------------------------------------------------------------


class Withheld(Exception):
    """The caller's guard said no at the last moment: nothing was written to the wire."""


_guard = threading.local()


def _ask_guard() -> None:
    check = getattr(_guard, "check", None)
    if check is not None and not check():
        raise Withheld("withheld: the claim lapsed before the request left")


class _GuardedConnection(urllib3.connection.HTTPConnection):
    """Asks the calling thread's guard right before each write to the socket.

    A sender checks its claim before each request, but a process stopped (SIGSTOP, a frozen
    VM) between that check and the write wakes up and sends a message someone else may have
    taken over. Everything requests and urllib3 do before the write (pool look-up, building
    the request, opening the connection) happens under the GIL with other sender threads, so
    it can take milliseconds; asking here leaves only a few bytecodes between the last "yes"
    and the kernel. The request line and headers go in one write and the form body in the
    next: a guard that says no between them leaves the gateway half a request, which it
    never acts on, and the connection is closed.
    """

    def send(self, data: Any) -> None:
        _write_when_held(self, data, super().send)


class _GuardedHTTPSConnection(urllib3.connection.HTTPSConnection):
    def send(self, data: Any) -> None:
        _write_when_held(self, data, super().send)


def _write_when_held(
    conn: urllib3.connection.HTTPConnection, data: Any, write: Callable[[Any], None]
) -> None:
    if conn.sock is None:
        conn.connect()  # may take a while: the guard is asked after it, not before
    _ask_guard()
    write(data)


class _GuardedPool(urllib3.HTTPConnectionPool):
    ConnectionCls = _GuardedConnection


class _GuardedHTTPSPool(urllib3.HTTPSConnectionPool):
    ConnectionCls = _GuardedHTTPSConnection


class _GuardedAdapter(HTTPAdapter):
    """Withholds a request whose claim lapsed: once before any work, once before each write."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _GuardedPool, "https": _GuardedHTTPSPool}

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> Any:
        _ask_guard()  # cheap, and spares opening a connection for nothing
        return super().send(request, *args, **kwargs)


class GatewayClient:
    """Talks to one gateway account over one keep-alive connection pool (thread-safe)."""

    def __init__(
        self,
        base_url: str,
        key: str,
        *,
        method: str = "POST",
        response: str = "json",
        timeout: float = 10.0,
        connect_timeout: float = 3.0,
        pool_size: int = 32,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._key = key
        self.method = method.upper()
        self.response = response
        self.timeout = (connect_timeout, timeout)
        self._session = requests.Session()
        # No retries below us: a retried POST could send an SMS twice.
        adapter = _GuardedAdapter(pool_connections=1, pool_maxsize=pool_size, max_retries=0)
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)
        self._session.headers["User-Agent"] = USER_AGENT
        # requests reads the proxy variables from the whole environment on every request,
        # which cost as much as the request itself; read them once, here.
        self._session.proxies = requests.utils.get_environ_proxies(self.base_url)
        self._session.trust_env = False
        # The hook runs before requests even builds the redirected request (which fails on a
        # Location that is not UTF-8), so a 3xx becomes our error and nothing else happens.
        self._session.hooks["response"].append(_refuse_redirect)

    @classmethod
    def from_settings(cls, settings: Settings, *, pool_size: int | None = None) -> GatewayClient:
        settings.require_gateway()  # no address or key: a one-line SettingsError, not a crash
        return cls(
            settings.gateway_url or "",
            settings.gateway_key.get_secret_value(),
            method=settings.gateway_method,
            response=settings.gateway_response,
            timeout=settings.gateway_timeout,
            connect_timeout=settings.gateway_connect_timeout,
            pool_size=pool_size or settings.concurrency,
        )

    def __repr__(self) -> str:
        return f"GatewayClient({self.base_url!r}, key='***', method={self.method!r})"

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> GatewayClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _request(self, path: str, params: dict[str, str]) -> requests.Response:
        url = self.base_url + path
        payload = {"key": self._key, **params}
        try:
            # Never follow a redirect: requests would re-send the key (and, for 307/308, the
            # number and text) to the host the reply names.
            if self.method == "GET":
                reply = self._session.get(
                    url, params=payload, timeout=self.timeout, allow_redirects=False
                )
            else:
                reply = self._session.post(
                    url, data=payload, timeout=self.timeout, allow_redirects=False
                )
        # Each branch builds its own message: requests' own text holds the URL, and in GET
        # mode the URL holds the key. `from None` keeps it out of tracebacks too.
        except requests.exceptions.ConnectTimeout:
            raise ConnectError(f"connect timeout to {self.base_url}") from None
        except requests.exceptions.ReadTimeout:
            raise ReadTimeoutError(f"no reply within {self.timeout[1]:g}s") from None
        except requests.exceptions.ConnectionError as exc:
            if _never_connected(exc):
                raise ConnectError(f"cannot connect to {self.base_url}") from None
            raise ConnectionDroppedError("connection dropped before a reply came") from None
        except requests.exceptions.RequestException as exc:
            raise ConnectionDroppedError(f"request failed: {type(exc).__name__}") from None
        return reply

    def send(
        self,
        mobile: str,
        sender: str,
        text: str,
        ref: str,
        *,
        guard: Callable[[], bool] | None = None,
    ) -> SendResult:
        """Submit one message; every failure comes back as an outcome, never raised.

        `guard` is asked at the last moment before the request is written; when it says no,
        `Withheld` is raised and nothing reached the gateway.
        """
        params = {"mobile": mobile, "sender": sender, "msgtext": text, "ref": ref}
        if self.response == "json":
            params["response"] = "json"
        started = time.perf_counter()
        _guard.check = guard
        try:
            reply = self._request(SEND_PATH, params)
            error = parse_send_reply(reply.status_code, reply.content)
        except GatewayError as exc:
            error = exc
        finally:
            _guard.check = None
        counters.gateway_request(  # metrics: outcome kind, code and latency (issue 12)
            "send_sms.php",
            counters.kind_of(error),
            200 if error is None else error.code,
            time.perf_counter() - started,
        )
        if error is None:
            return SendResult(Outcome.ACCEPTED, ref, code=200)
        if isinstance(error, MissingParameterError):
            log.error("gateway says we sent a bad request for ref %s: %s", ref, error.message)
        return SendResult(
            error.outcome, ref, code=error.code, error=error.message, kind=type(error)
        )

    def report(self, mobile: str, ref: str) -> Report:
        """The delivery report of one message; raises GatewayError when none could be had."""
        started = time.perf_counter()
        try:
            reply = self._request(REPORT_PATH, {"full_number": mobile, "ref": ref})
            report = parse_report(reply.status_code, reply.content)
        except GatewayError as exc:  # metrics (issue 12): counted, then raised as before
            counters.gateway_request(
                "dlr.php", counters.kind_of(exc), exc.code, time.perf_counter() - started
            )
            raise
        counters.gateway_request(
            "dlr.php", report.state.value, reply.status_code, time.perf_counter() - started
        )
        return report


def _refuse_redirect(reply: requests.Response, *args: Any, **kwargs: Any) -> requests.Response:
    if 300 <= reply.status_code <= 399:
        target = _redirect_host(reply.url, reply.headers.get("Location"))
        reply.close()
        raise RedirectError(
            f"the gateway redirects to {target} (HTTP {reply.status_code}); not followed: "
            "set SMS_GATEWAY_URL to the gateway's real address",
            code=reply.status_code,
        )
    return reply


def _redirect_host(url: str, location: str | None) -> str:
    """Scheme, host and port of a redirect's target; never its path or query (may hold the key)."""
    if not location:
        return "nowhere (no Location header)"
    parts = urlsplit(urljoin(url, location.strip()))
    if not parts.netloc:
        return "an unusable address"
    host = parts.hostname or "?"
    host = f"[{host}]" if ":" in host else host
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:  # a port that is not a number
        port = ""
    return f"{parts.scheme}://{host}{port}"


def _never_connected(exc: requests.exceptions.ConnectionError) -> bool:
    """True when the connection was refused or never opened, so the request was not sent."""
    reason: Any = exc.args[0] if exc.args else None
    if isinstance(reason, urllib3.exceptions.MaxRetryError):
        reason = reason.reason
    return isinstance(
        reason, urllib3.exceptions.NewConnectionError | urllib3.exceptions.ConnectTimeoutError
    )
