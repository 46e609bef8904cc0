"""Delivering the outbox: signed POSTs per the Standard Webhooks spec, retried with backoff.

Like GOV.UK Notify's service callbacks, what is retried is decided from the reply: network
errors, 5xx and 429 are retried with exponential backoff and jitter until `webhook_give_up`
after the event; any other 4xx is final. Unlike them, the event is an outbox row, the retry
time is a column (`next_attempt_at`) a beat tick reads, never a long countdown, and each lane
(one campaign's or one schedule's events) is delivered in order by one task at a time.
The request body and logs carry no key; logs never carry the body (numbers are in it).
"""

from __future__ import annotations

import logging
import random
import threading
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

import redis
import requests
import sqlalchemy as sa
from standardwebhooks import Webhook

from config import Settings
from workers import counters
from workers.ledger import OutboxState, outbox_table, utcnow

USER_AGENT = "sms-dispatch-webhooks/0.1"
LANE_KEY = "sms:webhook-lane:"
EVENTS_PER_TASK = 200  # then the lane goes back to the tick, so one busy lane shares the workers
log = logging.getLogger("sms.webhooks")


class Result(StrEnum):
    DELIVERED = "delivered"
    RETRY = "retry"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class Attempt:
    """What one POST came to; `error` is short and holds no payload."""

    result: Result
    error: str | None = None


# --- signing and sending --------------------------------------------------------------------


def sign_headers(secret: str, event_id: str, body: str, at: datetime) -> dict[str, str]:
    """The Standard Webhooks headers: id, timestamp and `v1,` HMAC-SHA256 of id.timestamp.body."""
    headers = {"webhook-id": event_id, "webhook-timestamp": str(int(at.timestamp()))}
    if secret:
        headers["webhook-signature"] = Webhook(secret).sign(event_id, at, body)
    return headers


_local = threading.local()


def _session() -> requests.Session:
    session = getattr(_local, "session", None)
    if session is None:
        session = _local.session = requests.Session()
        session.headers["User-Agent"] = USER_AGENT
        session.trust_env = True
    return session


def post(url: str, event_id: str, body: str, secret: str, timeout: float) -> Attempt:
    """POST one event; never raises for what the receiver or the network does."""
    headers = {"content-type": "application/json", **sign_headers(secret, event_id, body, utcnow())}
    try:
        reply = _session().post(
            url,
            data=body.encode("utf-8"),
            headers=headers,
            timeout=(min(5.0, timeout), timeout),
            allow_redirects=False,  # a redirect would resend the payload somewhere unchecked
        )
    except requests.exceptions.Timeout:
        return Attempt(Result.RETRY, f"no reply within {timeout:g}s")
    except requests.exceptions.RequestException as exc:
        return Attempt(Result.RETRY, f"network error: {type(exc).__name__}")
    status = reply.status_code
    reply.close()
    if 200 <= status <= 299:
        return Attempt(Result.DELIVERED)
    if status == 429 or status >= 500:
        return Attempt(Result.RETRY, f"HTTP {status}")
    return Attempt(Result.FAILED, f"HTTP {status} (not retried)")


def backoff(settings: Settings, attempts: int) -> float:
    """Exponential with jitter: base, 2x base, 4x base ... capped at `webhook_retry_max`."""
    ceiling = min(
        settings.webhook_retry_max, settings.webhook_retry_base * 2 ** max(0, attempts - 1)
    )
    return random.uniform(ceiling / 2, ceiling)


# --- the lanes --------------------------------------------------------------------------------


def due_lanes(engine: sa.Engine, *, limit: int = 500) -> list[str]:
    """Lanes whose first pending event is due (a lane waits behind its oldest event)."""
    now = utcnow()
    heads = (
        sa.select(outbox_table.c.lane, sa.func.min(outbox_table.c.id).label("head"))
        .where(outbox_table.c.state == OutboxState.PENDING)
        .group_by(outbox_table.c.lane)
        .subquery()
    )
    stmt = (
        sa.select(heads.c.lane)
        .join(outbox_table, outbox_table.c.id == heads.c.head)
        .where(
            sa.or_(outbox_table.c.next_attempt_at.is_(None), outbox_table.c.next_attempt_at <= now)
        )
        .order_by(heads.c.head)
        .limit(limit)
    )
    with engine.connect() as conn:
        return list(conn.execute(stmt).scalars())


def skip_unaddressed(engine: sa.Engine) -> int:
    """With no SMS_WEBHOOK_URL, events of campaigns without their own URL go nowhere."""
    with engine.begin() as conn:
        result = conn.execute(
            sa.update(outbox_table)
            .where(outbox_table.c.state == OutboxState.PENDING, outbox_table.c.url.is_(None))
            .values(state=OutboxState.SKIPPED, last_error="no webhook URL configured")
        )
    return int(result.rowcount or 0)


def prune(engine: sa.Engine, older_than: float) -> int:
    """Forget settled events older than the retention (pending ones are kept)."""
    cutoff = utcnow() - timedelta(seconds=older_than)
    with engine.begin() as conn:
        result = conn.execute(
            sa.delete(outbox_table).where(
                outbox_table.c.created_at < cutoff, outbox_table.c.state != OutboxState.PENDING
            )
        )
    return int(result.rowcount or 0)


def lock_lane(client: redis.Redis, lane: str, lease: float) -> str | None:
    """Take a lane for one delivery task; returns the token, or None if it is taken."""
    token = uuid.uuid4().hex
    if client.set(LANE_KEY + lane, token, nx=True, ex=max(1, int(lease))):
        return token
    return None


def _still_ours(client: redis.Redis, lane: str, token: str, lease: float) -> bool:
    value = client.get(LANE_KEY + lane)
    if value is None or (value.decode() if isinstance(value, bytes) else value) != token:
        return False
    client.expire(LANE_KEY + lane, max(1, int(lease)))
    return True


def release_lane(client: redis.Redis, lane: str, token: str) -> None:
    value = client.get(LANE_KEY + lane)
    if value is not None and (value.decode() if isinstance(value, bytes) else value) == token:
        client.delete(LANE_KEY + lane)


def lane_lease(settings: Settings) -> float:
    return settings.webhook_timeout * 2 + 30


def deliver_lane(
    engine: sa.Engine, client: redis.Redis, settings: Settings, lane: str, token: str
) -> dict[str, int]:
    """Deliver a lane's due events in id order; stop at the first that must wait for a retry."""
    done = {r.value: 0 for r in Result}
    secret = settings.webhook_secret.get_secret_value()
    lease = lane_lease(settings)
    try:
        for _ in range(EVENTS_PER_TASK):
            if not _still_ours(client, lane, token, lease):
                break
            with engine.connect() as conn:
                head = conn.execute(
                    sa.select(outbox_table)
                    .where(outbox_table.c.lane == lane, outbox_table.c.state == OutboxState.PENDING)
                    .order_by(outbox_table.c.id)
                ).first()
            now = utcnow()
            if head is None or (head.next_attempt_at is not None and head.next_attempt_at > now):
                break
            url = head.url or settings.webhook_url
            if not url:
                _settle(engine, head, state=OutboxState.SKIPPED, error="no webhook URL configured")
                continue
            attempt = post(url, head.event_id, head.payload, secret, settings.webhook_timeout)
            counters.bump(counters.WEBHOOK_DELIVERIES, attempt.result.value)
            done[attempt.result.value] += 1
            if attempt.result is Result.DELIVERED:
                _settle(engine, head, state=OutboxState.DELIVERED, delivered_at=utcnow())
                continue
            if attempt.result is Result.FAILED:
                log.warning(
                    "webhook %s to %s refused: %s", head.event_id, _host(url), attempt.error
                )
                _settle(engine, head, state=OutboxState.FAILED, error=attempt.error)
                continue
            delay = backoff(settings, head.attempts + 1)
            later = utcnow() + timedelta(seconds=delay)
            if (later - head.created_at).total_seconds() > settings.webhook_give_up:
                log.warning(
                    "webhook %s to %s given up: %s", head.event_id, _host(url), attempt.error
                )
                _settle(engine, head, state=OutboxState.FAILED, error=f"gave up: {attempt.error}")
                continue
            _settle(
                engine, head, state=OutboxState.PENDING, error=attempt.error, next_attempt_at=later
            )
            break  # the rest of the lane waits, so the receiver sees it in order
    finally:
        release_lane(client, lane, token)
    return done


def _settle(
    engine: sa.Engine,
    head: Any,
    *,
    state: OutboxState,
    error: str | None = None,
    delivered_at: datetime | None = None,
    next_attempt_at: datetime | None = None,
) -> None:
    # Guarded by the attempt count read before sending: a duplicate task changes nothing.
    with engine.begin() as conn:
        conn.execute(
            sa.update(outbox_table)
            .where(
                outbox_table.c.id == head.id,
                outbox_table.c.state == OutboxState.PENDING,
                outbox_table.c.attempts == head.attempts,
            )
            .values(
                state=state,
                attempts=outbox_table.c.attempts + 1,
                last_error=error,
                delivered_at=delivered_at,
                next_attempt_at=next_attempt_at,
            )
        )


def _host(url: str) -> str:
    """Scheme and host only: a receiver's path or query may hold its own token."""
    parts = requests.utils.urlparse(url)
    return f"{parts.scheme}://{parts.netloc.rsplit('@', 1)[-1]}"


# --- status and replay (the CLI and the API call these) ---------------------------------------


def status(engine: sa.Engine, settings: Settings) -> list[dict[str, Any]]:
    """Per receiver URL: events pending, failing (pending with a failed attempt), delivered,
    failed for good, the oldest pending and the last error."""
    default = settings.webhook_url
    url = sa.func.coalesce(outbox_table.c.url, default or "")
    failing = sa.and_(outbox_table.c.state == OutboxState.PENDING, outbox_table.c.attempts > 0)
    stmt = sa.select(
        url.label("url"),
        sa.func.count().filter(outbox_table.c.state == OutboxState.PENDING).label("pending"),
        sa.func.count().filter(failing).label("failing"),
        sa.func.count().filter(outbox_table.c.state == OutboxState.DELIVERED).label("delivered"),
        sa.func.count().filter(outbox_table.c.state == OutboxState.FAILED).label("failed"),
        sa.func.count().filter(outbox_table.c.state == OutboxState.SKIPPED).label("skipped"),
        sa.func.min(outbox_table.c.created_at)
        .filter(outbox_table.c.state == OutboxState.PENDING)
        .label("oldest_pending"),
        sa.func.min(outbox_table.c.next_attempt_at)
        .filter(outbox_table.c.state == OutboxState.PENDING)
        .label("next_attempt"),
    ).group_by(url)
    out = []
    with engine.connect() as conn:
        for row in conn.execute(stmt):
            last = conn.execute(
                sa.select(outbox_table.c.last_error, outbox_table.c.created_at)
                .where(url == row.url, outbox_table.c.last_error.is_not(None))
                .order_by(outbox_table.c.id.desc())
                .limit(1)
            ).first()
            out.append(
                {
                    "url": _host(row.url) + (requests.utils.urlparse(row.url).path or "")
                    if row.url
                    else None,
                    "pending": row.pending,
                    "failing": row.failing,
                    "delivered": row.delivered,
                    "failed": row.failed,
                    "skipped": row.skipped,
                    "oldest_pending": _text_time(row.oldest_pending),
                    "next_attempt": _text_time(row.next_attempt),
                    "last_error": last.last_error if last else None,
                }
            )
    return out


def _text_time(value: Any) -> str | None:
    if value is None:
        return None
    return value.isoformat() if isinstance(value, datetime) else str(value)


def replay(
    engine: sa.Engine, *, campaign_id: int | None = None, since: datetime | None = None
) -> int:
    """Deliver settled events again, with their own ids (receivers that kept them drop them).

    Their give-up clock starts again now.
    """
    if campaign_id is None and since is None:
        raise ValueError("replay needs a campaign or a time")
    stmt = sa.update(outbox_table).where(outbox_table.c.state != OutboxState.PENDING)
    if campaign_id is not None:
        stmt = stmt.where(outbox_table.c.campaign_id == campaign_id)
    if since is not None:
        stmt = stmt.where(outbox_table.c.created_at >= since)
    now = utcnow()
    with engine.begin() as conn:
        result = conn.execute(
            stmt.values(
                state=OutboxState.PENDING,
                attempts=0,
                last_error=None,
                next_attempt_at=now,
                delivered_at=None,
                created_at=now,
            )
        )
    return int(result.rowcount or 0)


def check_url(url: str) -> str:
    """An http(s) URL with a host, or ValueError in one line."""
    parts = requests.utils.urlparse(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{url!r} is not an http(s) URL")
    return url.strip()
