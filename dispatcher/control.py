"""Campaign control for every face of the service (CLI, HTTP API, dashboard).

Starting a load, pausing, resuming and cancelling each change the ledger and then the Redis
halt flags or notices, in that order; the CLI and the API call these and nothing below them,
so they can never disagree about a rule.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path

import redis
import sqlalchemy as sa

from config import Settings, parse_duration
from dispatcher.campaigns import LoadRequest, LoadSummary, load_campaign
from dispatcher.consent import check_purpose
from dispatcher.embedded import broker_alive, stop_stale_redis
from dispatcher.errors import LoadFailed, OptionError, one_line
from dispatcher.liveness import workers_alive
from dispatcher.sendtimes import check_date_order, parse_offset
from dispatcher.time_options import parse_at
from workers import campaign_moves, counters, ledger_reads, notices
from workers.feeding import feed_campaign
from workers.health import Health
from workers.health import service_health as health_of
from workers.ledger import CampaignState, Priority, campaign_table
from workers.wallclock import zone

PAUSED_BY_OPERATOR = "paused by operator"
REMOVED = "the partly loaded campaign was removed and nothing will be sent"


def parse_validity(value: str | None) -> float | None:
    """`24h` and the like as seconds; None when not given."""
    if not value:
        return None
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        raise OptionError("validity", str(exc)) from None
    if seconds <= 0:
        raise OptionError("validity", "must be longer than zero")
    return seconds


def load_request(
    settings: Settings,
    *,
    path: Path,
    sender: str,
    template: str,
    name: str | None = None,
    region: str | None = None,
    column: str | None = None,
    at: str | None = None,
    tz: str | None = None,
    window: str | None = None,
    days: str | None = None,
    validity: str | None = None,
    purpose: str | None = None,
    consent_column: str | None = None,
    priority: str | None = None,
    max_cost: str | None = None,
    send_at_column: str | None = None,
    before: str | None = None,
    after: str | None = None,
    date_order: str | None = None,
    dedupe_column: str | None = None,
    gsm_safe: bool | str = False,
) -> LoadRequest:
    """The options of `send` (as typed) checked and turned into a LoadRequest.

    There is no default purpose here: a campaign says whether it is marketing or service.
    """
    if tz:
        zone(tz)
    purpose = check_purpose(purpose, consent_column)
    if send_at_column:
        parse_offset(before, after)  # a bad --before is one line before the list is read
    return LoadRequest(
        path=path,
        sender=sender,
        template=template,
        name=name or None,
        region=region.upper() if region else None,
        column=column or None,
        send_after=parse_at(at, tz or settings.tz) if at else None,
        window=window or None,
        days=days or None,
        tz=tz or None,
        validity=parse_validity(validity),
        purpose=purpose,
        consent_column=consent_column or None,
        priority=parse_priority(priority),
        max_cost=parse_max_cost(max_cost),
        send_at_column=send_at_column or None,
        before=before or None,
        after=after or None,
        date_order=check_date_order(date_order),
        dedupe_column=dedupe_column or None,
        gsm_safe=gsm_safe if isinstance(gsm_safe, bool) else gsm_safe.strip().lower() in TRUE,
    )


TRUE = frozenset({"1", "true", "yes", "on"})


def parse_priority(value: str | None, default: Priority = Priority.NORMAL) -> Priority:
    """`--priority high|normal|low` (any case); `default` when not given."""
    if value is None or not str(value).strip():
        return default
    try:
        return Priority(str(value).strip().lower())
    except ValueError:
        raise OptionError("priority", f"{value!r}: use high, normal or low") from None


def parse_max_cost(value: str | Decimal | None) -> Decimal | None:
    """`--max-cost 250.00`: an amount in the gateway's currency, above zero; None if not given."""
    if value is None or not str(value).strip():
        return None
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation:
        raise OptionError("max-cost", f"{value!r} is not an amount (write 250.00)") from None
    if not amount.is_finite() or amount <= 0:
        raise OptionError("max-cost", f"{value!r}: must be an amount above zero")
    if amount.as_tuple().exponent < -5 or amount >= 10**7:  # type: ignore[operator]
        raise OptionError("max-cost", f"{value!r}: at most 9999999.99999")
    return amount


@dataclass
class Started:
    """A load's summary, and what happens next (None for a dry run or a scheduled start)."""

    summary: LoadSummary
    note: str | None


def start_campaign(
    settings: Settings, engine: sa.Engine | None, request: LoadRequest, *, dry_run: bool = False
) -> Started:
    """Load the list (or only check it) and issue the first notices of a running campaign."""
    try:
        # A dry run reads the opt-out list too (its counts are the real send's); it writes nothing.
        summary = load_campaign(settings, engine, request, dry_run=dry_run)
    except sa.exc.SQLAlchemyError as exc:
        raise LoadFailed(
            f"loading failed ({one_line(getattr(exc, 'orig', None) or exc)}); {REMOVED}"
        ) from None
    note = None
    if (
        engine is not None
        and summary.campaign is not None
        and summary.state == CampaignState.RUNNING
    ):
        note = notify_workers(settings, engine, summary.campaign)
    return Started(summary, note)


def notify_workers(settings: Settings, engine: sa.Engine, campaign_id: int) -> str:
    """Issue the first notices of a running campaign; says what happens next."""
    stale = stop_stale_redis(settings, running_ok=True)  # a Redis whose `run` was killed
    if stale:
        return f"{stale}; sending starts when `sms-dispatch run` starts"
    if not broker_alive(settings):
        if settings.embedded:
            return "sending starts when `sms-dispatch run` (or the workers) start"
        return "the broker is not reachable; sending starts when it and the workers are up"
    from workers.celery_app import app

    client = redis.Redis.from_url(settings.redis_url)
    try:
        feed_campaign(app, client, engine, settings, campaign_id)
    finally:
        client.close()
    if not workers_alive():
        if settings.embedded:
            return "no worker is running: start `sms-dispatch run`"
        return "no worker is running: start the workers (celery -A workers worker)"
    return "sending has started"


def count_in_redis(settings: Settings) -> None:
    """Send this process's metric bumps (finals at load, cancel, opt-outs) to the broker's Redis.

    Workers do this in their runtime; the CLI and the API make messages final too, and those
    must be counted alike. Quietly nothing when Redis is not running.
    """
    try:
        if broker_alive(settings):
            counters.bind(redis.Redis.from_url(settings.redis_url, socket_timeout=2))
    except (redis.RedisError, OSError):
        pass


def service_health(settings: Settings) -> Health:
    """What holds every campaign back right now (gateway circuit, silent beat, no Redis)."""
    if not broker_alive(settings):
        return Health(broker="Redis is not running: nothing is sent until the workers start")
    client = redis.Redis.from_url(settings.redis_url, socket_timeout=2)
    try:
        return health_of(client)
    finally:
        client.close()


def _with_redis(settings: Settings, action: Callable[[redis.Redis], None]) -> None:
    # No broker, no sender to tell: the ledger's state alone stops the next batch.
    if broker_alive(settings):
        client = redis.Redis.from_url(settings.redis_url)
        try:
            action(client)
        finally:
            client.close()


def pause_campaign(settings: Settings, engine: sa.Engine, campaign_id: int) -> None:
    """Stop sending a running or scheduled campaign; `resume_campaign` picks up from there."""
    ledger_reads.get_campaign(engine, campaign_id)
    if not campaign_moves.pause_running(engine, PAUSED_BY_OPERATOR, campaign_id):
        state = ledger_reads.get_campaign(engine, campaign_id).state
        raise campaign_moves.CampaignStateError(
            f"campaign {campaign_id} is {state}; only running or scheduled pause"
        )
    _with_redis(settings, lambda r: notices.halt_campaigns(r, [campaign_id], PAUSED_BY_OPERATOR))


def resume_campaign(
    settings: Settings, engine: sa.Engine, campaign_id: int, max_cost: Decimal | None = None
) -> tuple[str, str]:
    """Resume a paused campaign; returns its new state and what happens next.

    `max_cost` (`resume --max-cost 400`) sets a new cost cap first; it must be above what the
    campaign has cost so far, or it would stop again at once.
    """
    if max_cost is not None:
        set_max_cost(engine, campaign_id, max_cost)
    state = campaign_moves.resume(engine, campaign_id)
    _with_redis(settings, lambda r: notices.unhalt_campaign(r, campaign_id))
    if state == CampaignState.RUNNING:
        return str(state), notify_workers(settings, engine, campaign_id)
    return str(state), "waiting for its start"


def set_max_cost(engine: sa.Engine, campaign_id: int, max_cost: Decimal) -> None:
    """A paused campaign's new cost cap (the workers read it from the ledger at each claim)."""
    campaign = ledger_reads.get_campaign(engine, campaign_id)
    if campaign.state != CampaignState.PAUSED:
        raise campaign_moves.CampaignStateError(
            f"campaign {campaign_id} is {campaign.state}, not paused"
        )
    spent = ledger_reads.campaign_cost(engine, campaign_id)
    if max_cost <= spent:
        raise OptionError(
            "max-cost", f"{max_cost} is not above what campaign {campaign_id} has cost ({spent})"
        )
    with engine.begin() as conn:
        conn.execute(
            sa.update(campaign_table)
            .where(campaign_table.c.id == campaign_id)
            .values(max_cost=max_cost)
        )


def cancel_campaign(settings: Settings, engine: sa.Engine, campaign_id: int) -> int:
    """Cancel a campaign; returns how many messages will not be sent."""
    count = campaign_moves.cancel(engine, campaign_id)
    _with_redis(settings, lambda r: notices.halt_campaigns(r, [campaign_id], "cancelled"))
    return count


# --- opt-outs and schedules -----------------------------------------------------------------


def normalised_numbers(settings: Settings, numbers: list[str], region: str | None) -> list[str]:
    """Numbers as the ledger keeps them; the first that is not a number stops it all."""
    from dispatcher.numbers import normalise
    from dispatcher.recipients import RecipientListError

    out = []
    for raw in numbers:
        # Opt-outs and look-ups take any number: a landline may opt out too.
        mobile, error = normalise(raw, (region or settings.region).upper(), landlines=True)
        if mobile is None:
            raise RecipientListError(f"{raw!r}: {error}")
        out.append(mobile)
    return out


@dataclass
class Imported:
    """What importing a list into the opt-out list did."""

    added: int
    already: int
    invalid: int
    stopped: int = 0  # waiting messages of running campaigns now suppressed

    def as_dict(self) -> dict[str, int]:
        return {
            "added": self.added,
            "already": self.already,
            "invalid": self.invalid,
            "stopped": self.stopped,
        }


def import_opt_outs(
    settings: Settings, engine: sa.Engine, path: Path, *, region: str | None, column: str | None
) -> Imported:
    """Add every valid number of an export to the opt-out list; invalid rows are counted.

    A column of numbers, or a CSV with a number column and maybe date and reason columns;
    each opt-out records `import:<file name>` as where it came from.
    """
    from dispatcher.suppression import add_opt_outs, read_export

    read = read_export(
        path, region=(region or settings.region).upper(), tz=settings.tz, column=column
    )
    done = add_opt_outs(engine, read.opt_outs, f"import:{Path(path).name}")
    return Imported(done.added, len(read.opt_outs) - done.added, read.invalid, done.stopped)


class FireFailed(RuntimeError):
    """A schedule fired by hand made no campaign; the message says why."""


def run_schedule(settings: Settings, engine: sa.Engine, name: str) -> Started:
    """Fire a schedule once now, and start its campaign's sending."""
    from dispatcher.schedules import fire_now

    fired = fire_now(settings, engine, name)
    if fired.error or fired.summary is None or fired.summary.campaign is None:
        raise FireFailed(f"schedule {name!r} did not fire: {fired.error or fired.note}")
    summary = fired.summary
    note = None
    if summary.state == CampaignState.RUNNING and summary.campaign is not None:
        note = notify_workers(settings, engine, summary.campaign)
    return Started(summary, note)
