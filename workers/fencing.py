"""Fencing: a sender never sends a message whose claim it may have lost.

A batch run holds its messages by a claim token in the ledger and by a deadline on this
process's monotonic clock. Only a lease renewal that the ledger confirmed moves the deadline,
and the deadline ends well before the ledger lease does, so a process that was stopped
(SIGSTOP, a frozen VM) wakes up past it and sends nothing more.

Right before each request the sender also leaves an in-flight marker in Redis. A look-up of
a message whose claim lapsed can then tell "the request may have left" (wait for the gateway
to register it) from "it never left" (queue it again at once, attempt refunded). Each token
carries the Redis epoch it was made in: if Redis lost its data since, markers are gone and
every lapsed claim counts as "may have left".

The marker only bridges the time until the ledger knows: once a sender records "outcome
unknown", or a look-up has seen the marker, the row's claim takes its "left" form (`~!token`)
and the answer no longer depends on a Redis key that can expire (a gateway outage or a dead
beat can keep look-ups away for longer than any TTL).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterable

import redis

EPOCH_KEY = "sms:epoch"
LEFT = "~!"  # prefix of a claim whose request may have reached the gateway, for good
# A safety net only: markers are dropped when the outcome is recorded or first looked at, and
# must outlive any delay before that look (outages, a dead beat), or a sent message would
# count as never sent and go twice.
MARKER_TTL = 7 * 24 * 3600
# The share of the ledger lease a sender may use after its last confirmed renewal; the rest
# absorbs clock differences between machines and the time a renewal takes.
DEADLINE_SHARE = 0.75


def inflight_key(message_id: int) -> str:
    return f"sms:inflight:{message_id}"


def redis_epoch(client: redis.Redis) -> str:
    """This Redis's data epoch: a random word made once, gone when Redis loses its data."""
    value = client.get(EPOCH_KEY)
    if value is None:
        client.set(EPOCH_KEY, secrets.token_hex(4), nx=True)
        value = client.get(EPOCH_KEY)
    return value.decode() if isinstance(value, bytes) else str(value)


def new_token(epoch: str) -> str:
    return f"{epoch}.{secrets.token_hex(8)}"


def token_epoch(token: str | None) -> str | None:
    if not token:
        return None
    return token.lstrip("~!").split(".", 1)[0]


def left_claim(token: str) -> str:
    """The claim's form once its request is known to have maybe reached the gateway."""
    return LEFT + token.lstrip("~!")


def known_to_have_left(claim: str | None) -> bool:
    return bool(claim) and str(claim).startswith(LEFT)


class BatchClaim:
    """One batch run's hold on the messages it claimed."""

    def __init__(self, token: str, lease: float) -> None:
        self.token = token
        self.lease = lease
        self.deadline = time.monotonic() + lease * DEADLINE_SHARE

    @classmethod
    def start(cls, client: redis.Redis, lease: float) -> BatchClaim:
        return cls(new_token(redis_epoch(client)), lease)

    def confirmed(self, asked_at: float) -> None:
        """The ledger renewed the lease; `asked_at` is when the renewal was asked for."""
        self.deadline = max(self.deadline, asked_at + self.lease * DEADLINE_SHARE)

    def held(self) -> bool:
        return time.monotonic() < self.deadline


def clear_in_flight(client: redis.Redis, message_ids: Iterable[int]) -> None:
    """The outcome of these messages is recorded (or they were not sent): drop the markers."""
    keys = [inflight_key(i) for i in message_ids]
    for start in range(0, len(keys), 1000):
        client.delete(*keys[start : start + 1000])


def may_have_left(client: redis.Redis, message_id: int, claim: str | None) -> bool:
    """Could the request of this lapsed claim have reached the gateway?

    True unless the ledger does not say so, the marker is missing and Redis still has the data
    of the claim's epoch.
    """
    if known_to_have_left(claim):
        return True
    epoch = token_epoch(claim)
    if epoch is None:
        return True
    pipe = client.pipeline(transaction=False)
    pipe.exists(inflight_key(message_id))
    pipe.get(EPOCH_KEY)
    marked, current = pipe.execute()
    current = current.decode() if isinstance(current, bytes) else current
    return bool(marked) or current != epoch
