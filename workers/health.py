"""What holds sending back for every campaign at once, for `status` and the dashboard."""

from __future__ import annotations

from dataclasses import dataclass

import redis

from workers import circuit
from workers.outages import REDIS_ERRORS
from workers.ticks import beat_silence


@dataclass(frozen=True, slots=True)
class Health:
    """Account-wide conditions: an open gateway circuit, a silent beat, an unreachable Redis."""

    gateway: str | None = None
    beat: str | None = None
    broker: str | None = None

    def lines(self) -> list[str]:
        return [line for line in (self.gateway, self.beat, self.broker) if line]

    def as_dict(self) -> dict[str, str | None]:
        return {"gateway": self.gateway, "beat": self.beat, "broker": self.broker}


def service_health(client: redis.Redis) -> Health:
    """Read the shared state in Redis; never raises for an unreachable Redis."""
    try:
        open_circuit = circuit.state(client)
        silent = beat_silence(client)
    except REDIS_ERRORS:
        return Health(broker="Redis is unreachable: workers cannot send or poll")
    return Health(
        gateway=open_circuit.describe() if open_circuit else None,
        beat=(
            f"no beat tick for {silent:.0f}s: reports are not polled (is beat running?)"
            if silent is not None
            else None
        ),
    )
