"""Spending caps: a campaign's `max_cost` and the account's daily and monthly caps.

A batch books its estimated cost (parts x `SMS_UNIT_COST`) before any request leaves, in one
Lua step over every cap that applies, so two workers can never both pass a cap. The counters
live in Redis in units of 0.00001 and are rebuilt from the ledger whenever Redis lost them.
What a batch did not spend (not sent, refused) is given back when its outcomes are known.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import redis
import sqlalchemy as sa

from config import Settings
from workers import ledger_reads
from workers.ledger import utcnow

UNIT = Decimal("0.00001")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# KEYS = one counter per cap; ARGV = amount, then each cap's limit, then each key's ttl (s).
# Returns 0 (booked), i > 0 (cap i would be passed), or -i (counter i is missing: rebuild).
_BOOK = """
local n = #KEYS
local amount = tonumber(ARGV[1])
local values = {}
for i = 1, n do
  local v = redis.call('GET', KEYS[i])
  if not v then return -i end
  values[i] = tonumber(v)
end
for i = 1, n do
  if values[i] + amount > tonumber(ARGV[1 + i]) then return i end
end
for i = 1, n do
  redis.call('INCRBY', KEYS[i], amount)
  redis.call('EXPIRE', KEYS[i], tonumber(ARGV[1 + n + i]))
end
return 0
"""


def units(amount: Decimal) -> int:
    return int((amount / UNIT).to_integral_value())


@dataclass(frozen=True, slots=True)
class Cap:
    """One limit that applies to a batch, and where its running total is kept."""

    key: str
    limit: Decimal
    what: str  # "cost cap", "daily cost cap", ...
    since: datetime
    campaign: int | None
    ttl: int

    @property
    def reason(self) -> str:
        return f"{self.what} reached ({self.limit:.2f})"


def caps_for(settings: Settings, campaign: Any, now: datetime | None = None) -> list[Cap]:
    """The caps a batch of `campaign` must stay within, right now."""
    now = now or utcnow()
    caps: list[Cap] = []
    if campaign.max_cost is not None:
        key = f"sms:spent:campaign:{campaign.id}"
        caps.append(Cap(key, Decimal(campaign.max_cost), "cost cap", EPOCH, campaign.id, 7 * 86400))
    if settings.daily_cost_cap is not None:
        day = now.replace(hour=0, minute=0, second=0, microsecond=0)
        key = f"sms:spent:day:{day:%Y-%m-%d}"
        caps.append(Cap(key, settings.daily_cost_cap, "daily cost cap", day, None, 2 * 86400))
    if settings.monthly_cost_cap is not None:
        month = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        key = f"sms:spent:month:{month:%Y-%m}"
        limit = settings.monthly_cost_cap
        caps.append(Cap(key, limit, "monthly cost cap", month, None, 32 * 86400))
    return caps


def _rebuild(
    client: redis.Redis, engine: sa.Engine, settings: Settings, cap: Cap, claim: str | None
) -> None:
    # Rows other batches claim but have not booked yet are counted too: a rebuild errs on
    # the side of pausing a little early, never of passing a cap.
    spent = ledger_reads.spent_since(engine, cap.since, cap.campaign, settings.unit_cost, claim)
    client.set(cap.key, units(Decimal(str(spent))), nx=True, ex=cap.ttl)


def prepare(client: redis.Redis, engine: sa.Engine, settings: Settings, caps: list[Cap]) -> None:
    """Rebuild missing counters before a batch claims anything, so it is not counted twice."""
    for cap in caps:
        if not client.exists(cap.key):
            _rebuild(client, engine, settings, cap, None)


def book(
    client: redis.Redis,
    engine: sa.Engine,
    settings: Settings,
    caps: list[Cap],
    amount: Decimal,
    claim: str | None = None,
) -> str | None:
    """Book `amount` against every cap; the reason of the first cap it would pass, or None."""
    if not caps:
        return None
    script = client.register_script(_BOOK)
    args = [units(amount), *(units(c.limit) for c in caps), *(c.ttl for c in caps)]
    for _ in range(len(caps) + 2):
        result = int(script(keys=[c.key for c in caps], args=args))
        if result == 0:
            return None
        if result > 0:
            return caps[result - 1].reason
        _rebuild(client, engine, settings, caps[-result - 1], claim)
    raise RuntimeError("cost counters could not be rebuilt")  # Redis keeps losing them


def give_back(client: redis.Redis, caps: list[Cap], amount: Decimal) -> None:
    """Return what a batch booked but did not spend."""
    if not caps or amount <= 0:
        return
    pipe = client.pipeline(transaction=False)
    for cap in caps:
        pipe.decrby(cap.key, units(amount))
    pipe.execute()
