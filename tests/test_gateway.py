"""The gateway client against the simulator over real HTTP: every documented reply, every fault."""

from __future__ import annotations

import logging
import socket
import time
from decimal import Decimal

import pytest

import simulator.server
from tests.conftest import TEST_KEY
from workers.gateway import (
    BadReplyError,
    BusyError,
    ConnectError,
    ConnectionDroppedError,
    GatewayClient,
    InvalidKeyError,
    IPNotAllowedError,
    MissingParameterError,
    NoCreditError,
    Outcome,
    ReadTimeoutError,
    ReportState,
    ServerError,
    ServerFailedMidwayError,
    UnreadableReplyError,
    Withheld,
    parse_report,
    parse_send_reply,
)

MODES = [(m, r) for m in ("POST", "GET") for r in ("json", "numeric")]
MOBILE = "447483938220"


def client_for(sim, *, method="POST", response="json", key=TEST_KEY, timeout=2.0):
    return GatewayClient(sim.url, key, method=method, response=response, timeout=timeout)


@pytest.mark.parametrize(("method", "response"), MODES)
def test_accepted_message_is_accepted_in_every_mode(sim, method, response):
    with client_for(sim, method=method, response=response) as client:
        result = client.send(MOBILE, "InfoSMS", "Hello How Are You", "h01txyo25k")
    assert result.outcome is Outcome.ACCEPTED
    assert result.code == 200
    assert sim.stats()["accepted"] == 1


@pytest.mark.parametrize(("method", "response"), MODES)
def test_wrong_key_is_an_account_problem(sim, method, response):
    with client_for(sim, method=method, response=response, key="wrong") as client:
        result = client.send(MOBILE, "InfoSMS", "Hi", "r1")
    assert result.outcome is Outcome.ACCOUNT
    assert result.code == 407
    assert result.kind is InvalidKeyError
    assert sim.stats()["accepted"] == 0


@pytest.mark.parametrize(("method", "response"), MODES)
def test_ip_not_allowed_is_an_account_problem(sim, method, response):
    sim.configure(allow_ips=["10.20.30.40"])
    with client_for(sim, method=method, response=response) as client:
        result = client.send(MOBILE, "InfoSMS", "Hi", "r2")
    assert (result.outcome, result.code, result.kind) == (Outcome.ACCOUNT, 405, IPNotAllowedError)


@pytest.mark.parametrize(("method", "response"), MODES)
def test_no_credit_is_an_account_problem(sim, method, response):
    sim.configure(credit="0.01")
    with client_for(sim, method=method, response=response) as client:
        result = client.send(MOBILE, "InfoSMS", "Hi", "r3")
    assert (result.outcome, result.code, result.kind) == (Outcome.ACCOUNT, 406, NoCreditError)


@pytest.mark.parametrize("method", ["POST", "GET"])
def test_missing_parameter_is_rejected_for_good_in_json_mode(sim, method, caplog):
    with client_for(sim, method=method) as client:
        result = client.send(MOBILE, "InfoSMS", "", "r4")
    assert result.outcome is Outcome.REJECTED
    assert result.kind is MissingParameterError
    assert "Missing" in (result.error or "")
    assert any("bad request" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("method", ["POST", "GET"])
def test_numeric_400_is_treated_as_busy(sim, method):
    # Numeric mode cannot tell a missing parameter from a busy gateway; we never omit one.
    with client_for(sim, method=method, response="numeric") as client:
        result = client.send(MOBILE, "InfoSMS", "", "r5")
    assert (result.outcome, result.code, result.kind) == (Outcome.RETRY, 400, BusyError)


@pytest.mark.parametrize(("method", "response"), MODES)
def test_message_not_accepted_is_retried(sim, method, response):
    sim.configure(busy=1.0)
    with client_for(sim, method=method, response=response) as client:
        result = client.send(MOBILE, "InfoSMS", "Hi", "r6")
    assert (result.outcome, result.kind) == (Outcome.RETRY, BusyError)


@pytest.mark.parametrize(("method", "response"), MODES)
def test_server_error_is_retried(sim, method, response):
    sim.configure(error_5xx=1.0)
    with client_for(sim, method=method, response=response) as client:
        result = client.send(MOBILE, "InfoSMS", "Hi", "r7")
    assert (result.outcome, result.code, result.kind) == (Outcome.RETRY, 503, ServerError)


@pytest.mark.parametrize("method", ["POST", "GET"])
def test_late_answer_is_unknown_but_the_gateway_has_it(sim, method):
    sim.configure(late=1.0, late_delay=3.0)
    with client_for(sim, method=method, timeout=0.5) as client:
        result = client.send(MOBILE, "InfoSMS", "Hi", "late1")
        assert (result.outcome, result.kind) == (Outcome.UNKNOWN, ReadTimeoutError)
        sim.configure(late=0.0)
        report = client.report(MOBILE, "late1")
    assert report.state is not ReportState.NOT_FOUND
    assert sim.stats()["accepted"] == 1


@pytest.mark.parametrize("method", ["POST", "GET"])
def test_dropped_connection_is_unknown_but_the_gateway_has_it(sim, method):
    sim.configure(drop=1.0)
    with client_for(sim, method=method) as client:
        result = client.send(MOBILE, "InfoSMS", "Hi", "drop1")
    assert (result.outcome, result.kind) == (Outcome.UNKNOWN, ConnectionDroppedError)
    assert sim.stats()["accepted"] == 1


def test_refused_connection_is_retried_since_nothing_was_sent():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with GatewayClient(f"http://127.0.0.1:{port}", TEST_KEY) as client:
        result = client.send(MOBILE, "InfoSMS", "Hi", "r8")
    assert (result.outcome, result.kind) == (Outcome.RETRY, ConnectError)


def test_rate_cap_replies_message_not_accepted(sim):
    sim.configure(max_rate=5)
    with client_for(sim) as client:
        results = [client.send(MOBILE, "InfoSMS", "Hi", f"cap{i}") for i in range(20)]
    busy = [r for r in results if r.kind is BusyError]
    assert busy, "a gateway over its rate refuses some messages"
    assert sim.stats()["max_per_second"] <= 5


class _StoppedClock:
    """The simulator's clock, moved by the test alone: a report is read at an exact age,
    however long the machine takes to answer."""

    def __init__(self) -> None:
        self.mono, self.wall = time.monotonic(), time.time()

    def monotonic(self) -> float:
        return self.mono

    def time(self) -> float:
        return self.wall

    def advance(self, seconds: float) -> None:
        self.mono += seconds
        self.wall += seconds


def test_report_walks_pending_sending_delivered_with_cost(sim, monkeypatch):
    clock = _StoppedClock()
    monkeypatch.setattr(simulator.server, "time", clock)
    sim.configure(pending=0.3, sending=0.3)
    with client_for(sim) as client:
        assert client.send(MOBILE, "InfoSMS", "x" * 161, "life1").accepted
        first = client.report(MOBILE, "life1")
        clock.advance(0.4)
        second = client.report(MOBILE, "life1")
        clock.advance(0.4)
        third = client.report(MOBILE, "life1")
    assert (first.state, first.queue_status) == (ReportState.PENDING, "pending")
    assert (second.state, second.dlr_status) == (ReportState.SENDING, "sending")
    assert (third.state, third.dlr_status) == (ReportState.DELIVERED, "delivered")
    assert third.cost == Decimal("0.10")  # 161 GSM characters are two parts
    assert third.final


@pytest.mark.parametrize("word", ["failed", "undelivered", "expired", "rejected"])
def test_failure_words_are_final_failures(sim, word):
    sim.configure(pending=0, sending=0, force={MOBILE: word})
    with client_for(sim) as client:
        assert client.send(MOBILE, "InfoSMS", "Hi", f"w-{word}").accepted
        time.sleep(0.05)
        report = client.report(MOBILE, f"w-{word}")
    assert (report.state, report.dlr_status) == (ReportState.FAILED, word)
    assert report.final


def test_deleted_report_is_final_and_unknown(sim):
    sim.configure(pending=0, sending=0, force={MOBILE: "deleted"})
    with client_for(sim) as client:
        assert client.send(MOBILE, "InfoSMS", "Hi", "del1").accepted
        time.sleep(0.05)
        report = client.report(MOBILE, "del1")
    assert report.state is ReportState.DELETED
    assert report.final


def test_unknown_ref_is_not_found(sim):
    with client_for(sim) as client:
        report = client.report(MOBILE, "never-sent")
    assert report.state is ReportState.NOT_FOUND
    assert not report.final


def test_report_with_wrong_key_raises_account_error(sim):
    with client_for(sim, key="wrong") as client, pytest.raises(InvalidKeyError):
        client.report(MOBILE, "x")


# --- tolerant parsing of what PHP servers really send ----------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        b'{"status":true,"error":0}',
        b'{"status":true,"error":0}\n',
        b'\xef\xbb\xbf{"status":true,"error":0}\r\n',
        b'{"status":"true","error":"0"}',
        b'{"status":true,"error":0,"balance":"12.50","id":991}',
        b"200",
        b"200\n",
        b" \xef\xbb\xbf200 ",
    ],
)
def test_accepted_replies_parse_whatever_the_dressing(body):
    assert parse_send_reply(200, body) is None


@pytest.mark.parametrize(
    ("body", "kind", "code"),
    [
        (b'{"status":false,"error":"Message not accepted"}', BusyError, 400),
        (b'{"status":false,"error":"Missing Mobile Parameter"}\n', MissingParameterError, 400),
        (b"405", IPNotAllowedError, 405),
        (b"406\n", NoCreditError, 406),
        (b"407", InvalidKeyError, 407),
        (b"400", BusyError, 400),
        (b'{"status":false,"error":406}', NoCreditError, 406),
        (b'{"status":false,"error":"Inavlid API Key"}', InvalidKeyError, 407),
    ],
)
def test_error_replies_map_to_their_class(body, kind, code):
    error = parse_send_reply(200, body)
    assert isinstance(error, kind)
    assert error.code == code


def test_garbage_at_200_is_looked_up_before_any_resend_with_the_raw_body_cut_short():
    # send_sms.php ran and failed somewhere: it may have queued the message first.
    body = b"<html><body>" + b"Fatal error in send_sms.php " * 50 + b"</body></html>"
    error = parse_send_reply(200, body)
    assert isinstance(error, UnreadableReplyError)
    assert error.outcome is Outcome.UNKNOWN and error.gateway_trouble
    assert error.raw is not None and error.raw.startswith("<html><body>Fatal error")
    assert len(error.raw) <= 201


@pytest.mark.parametrize("status", [500, 502, 504, 507])
def test_a_5xx_other_than_503_is_looked_up_before_any_resend(status):
    # A proxy's 504 or 502, or the script dying part way (500): the message may be queued.
    error = parse_send_reply(status, b"<html><center>nginx</center></html>")
    assert isinstance(error, ServerFailedMidwayError)
    assert error.outcome is Outcome.UNKNOWN and error.gateway_trouble and error.code == status


def test_503_is_turned_away_unread_and_a_5xx_to_a_look_up_is_only_trouble():
    error = parse_send_reply(503, b"<html>503 Service Temporarily Unavailable</html>")
    assert isinstance(error, ServerError) and error.outcome is Outcome.RETRY
    # A look-up changes nothing at the gateway: asking again after any 5xx is safe.
    for status in (500, 502, 503, 504):
        with pytest.raises(ServerError):
            parse_report(status, b"<html>error</html>")


def test_garbage_from_another_status_is_retried():
    error = parse_send_reply(404, b"<html>Not Found</html>")
    assert isinstance(error, BadReplyError)
    assert error.outcome is Outcome.RETRY


def test_report_parsing_keeps_unknown_words_raw():
    report = parse_report(
        200, b'{"status":true,"queue_status":"processed","queue_error":0,"dlr_status":"Buffered2"}'
    )
    assert report.state is ReportState.OTHER
    assert report.dlr_status == "buffered2"
    assert not report.final


# --- the key stays secret ------------------------------------------------------------------


def test_key_never_leaks_in_get_mode(sim, caplog):
    caplog.set_level(logging.DEBUG)
    texts: list[str] = []
    with client_for(sim, method="GET", timeout=0.3) as client:
        texts.append(repr(client))
        sim.configure(late=1.0, late_delay=2.0)
        texts.append(str(client.send(MOBILE, "InfoSMS", "Hi", "k1").error))
        sim.configure(late=0.0, drop=1.0)
        texts.append(str(client.send(MOBILE, "InfoSMS", "Hi", "k2").error))
        sim.configure(drop=0.0, error_5xx=1.0)
        texts.append(str(client.send(MOBILE, "InfoSMS", "Hi", "k3").error))
        sim.configure(error_5xx=0.0)
        assert client.send(MOBILE, "InfoSMS", "Hi", "k4").accepted
    with GatewayClient("http://127.0.0.1:1", TEST_KEY, method="GET") as dead:
        texts.append(str(dead.send(MOBILE, "InfoSMS", "Hi", "k5").error))
    texts += [record.getMessage() for record in caplog.records]
    assert any("send_sms.php" in t for t in texts), "urllib3 logged the request line"
    for text in texts:
        assert TEST_KEY not in text
        assert "test-key" not in text
        assert MOBILE not in text  # numbers are personal data: kept out of logs too


class _Turns:
    """A claim guard that says yes a given number of times, then no (a lapse mid-request)."""

    def __init__(self, yes: int) -> None:
        self.yes = yes
        self.asked = 0

    def __call__(self) -> bool:
        self.asked += 1
        return self.asked <= self.yes


class _Listener:
    """A bare TCP server that records every byte a client writes and never answers."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.received = b""
        self.sock.settimeout(5)

    def drain(self) -> bytes:
        conn, _ = self.sock.accept()
        conn.settimeout(0.5)
        with conn:
            try:
                while chunk := conn.recv(65536):
                    self.received += chunk
            except TimeoutError:
                pass
        return self.received


@pytest.mark.parametrize("method", ["POST", "GET"])
def test_a_claim_that_lapses_after_the_first_check_is_withheld_at_the_socket(sim, method):
    # The sender said yes before requests built the request, then the process stopped and its
    # claim lapsed. The write itself must ask again: the gateway gets nothing.
    with client_for(sim, method=method) as client:
        guard = _Turns(yes=1)
        with pytest.raises(Withheld):
            client.send(MOBILE, "InfoSMS", "Hi", "late1", guard=guard)
        assert guard.asked == 2  # once before any work, once right before the write
        assert sim.stats()["attempts"] == 0
        # The same client still sends once the guard holds again: no half-used connection.
        assert client.send(MOBILE, "InfoSMS", "Hi", "late2", guard=lambda: True).outcome is (
            Outcome.ACCEPTED
        )
    assert sim.stats()["accepted"] == 1


def test_no_byte_reaches_the_wire_when_the_guard_says_no_at_the_write():
    listener = _Listener()
    with GatewayClient(listener.url, TEST_KEY, timeout=1.0) as client:
        with pytest.raises(Withheld):
            client.send(MOBILE, "InfoSMS", "Hi", "late3", guard=_Turns(yes=1))
        assert listener.drain() == b""


def test_a_lapse_between_headers_and_body_leaves_the_gateway_half_a_request(sim):
    # POST writes the request line and headers, then the form: a "no" between them must keep
    # the number and text off the wire, and the gateway must not act on what it got.
    listener = _Listener()
    with GatewayClient(listener.url, TEST_KEY, timeout=1.0) as client:
        with pytest.raises(Withheld):
            client.send(MOBILE, "InfoSMS", "Hi", "late4", guard=_Turns(yes=2))
        seen = listener.drain()
    assert seen.startswith(b"POST ") and b"send_sms.php" in seen.split(b"\r\n")[0]
    assert MOBILE.encode() not in seen and b"late4" not in seen
    with client_for(sim) as client, pytest.raises(Withheld):
        client.send(MOBILE, "InfoSMS", "Hi", "late5", guard=_Turns(yes=2))
    time.sleep(0.3)
    assert sim.stats()["accepted"] == 0
