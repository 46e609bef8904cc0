"""A webhook receiver of the tests' own: a real HTTP server that checks every signature with the
`standardwebhooks` package and misbehaves on request (refuses, hangs, goes down)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks import Webhook, WebhookVerificationError

SECRET = "whsec_" + "c21zLWRpc3BhdGNoLXRlc3Qtc2VjcmV0LWtleS0zMmI="  # 32 bytes, base64


class Receiver:
    """Accepted events by webhook-id, plus counts of what it refused and why."""

    def __init__(self, secret: str = SECRET) -> None:
        self.verifier = Webhook(secret)
        self.lock = threading.Lock()
        self.events: dict[str, dict[str, Any]] = {}  # webhook-id -> payload (repeats dropped)
        self.order: list[str] = []  # webhook-ids in the order they first arrived
        self.deliveries = 0  # 2xx answers, repeats included
        self.bad_signatures = 0
        self.refuse_first = 0  # answer this many requests with 503
        self.refused = 0
        self.hang_every = 0  # every n-th request sleeps past the sender's timeout
        self.hang_for = 0.0
        self.gate = threading.Event()  # cleared: every request waits at the door until set
        self.gate.set()
        self.requests = 0
        self.status_for: dict[str, int] = {}  # event type -> status to answer
        self.server: ThreadingHTTPServer | None = None
        self.port = 0

    # --- the server ---------------------------------------------------------------------

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                status = receiver.handle(body, dict(self.headers.items()))
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

        return Handler

    def start(self, port: int = 0) -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", port), self._handler())
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    @contextmanager
    def down(self) -> Iterator[None]:
        """Nothing listens on the port meanwhile (connections are refused)."""
        port = self.port
        self.stop()
        try:
            yield
        finally:
            self.start(port)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/sms"

    # --- behaviour ------------------------------------------------------------------------

    def handle(self, body: bytes, headers: dict[str, str]) -> int:
        self.gate.wait(60)
        with self.lock:
            self.requests += 1
            n = self.requests
            if self.refused < self.refuse_first:
                self.refused += 1
                return 503
        if self.hang_every and n % self.hang_every == 0:
            time.sleep(self.hang_for)
        try:
            payload = self.verifier.verify(body, headers)
        except WebhookVerificationError:
            with self.lock:
                self.bad_signatures += 1
            return 401
        forced = self.status_for.get(payload["type"])
        if forced:
            return forced
        event_id = {k.lower(): v for k, v in headers.items()}["webhook-id"]
        with self.lock:
            self.deliveries += 1
            if event_id not in self.events:
                self.events[event_id] = payload
                self.order.append(event_id)
        return 204

    # --- what arrived ---------------------------------------------------------------------

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        with self.lock:
            return [self.events[i] for i in self.order if self.events[i]["type"] == kind]

    def final_messages(self) -> list[dict[str, Any]]:
        return [m for e in self.of_type("message.final") for m in e["data"]["messages"]]

    def dump(self) -> str:
        with self.lock:
            return json.dumps([self.events[i] for i in self.order])


@contextmanager
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    r.start()
    try:
        yield r
    finally:
        r.stop()
