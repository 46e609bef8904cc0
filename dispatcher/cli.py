"""The `sms-dispatch` command line: send lists, watch campaigns, run the workers, check a gateway.

Bad input of any kind is one line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import click
import redis
import sqlalchemy as sa

from config import Settings, SettingsError, get_settings, parse_duration, reset_settings
from dispatcher.campaigns import LoadRequest, load_campaign
from dispatcher.embedded import EmbeddedRedisError, broker_alive
from dispatcher.recipients import RecipientListError
from dispatcher.schedules import ScheduleError
from dispatcher.texts import TextError
from workers.database import SchemaError, ensure_schema, upgrade
from workers.timing import TimingError, parse_at, zone
from workers.transitions import CampaignNotFound, CampaignStateError

EXIT_USAGE = 2
EXIT_FAILED = 1

USER_ERRORS: tuple[type[BaseException], ...] = (
    SettingsError,
    RecipientListError,
    TextError,
    TimingError,
    ScheduleError,
    CampaignNotFound,
    CampaignStateError,
    SchemaError,
    EmbeddedRedisError,
    FileNotFoundError,
    IsADirectoryError,
    PermissionError,
)


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    click.echo(f"sms-dispatch: {message}", err=True)
    sys.exit(code)


class _Group(click.Group):
    """Turns expected failures into one line on stderr."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except USER_ERRORS as exc:
            fail(_one_line(exc))
        except sa.exc.OperationalError as exc:
            fail(f"cannot use the database: {_one_line(exc.orig or exc)}", EXIT_FAILED)
        except redis.RedisError as exc:
            fail(f"cannot reach Redis: {_one_line(exc)}", EXIT_FAILED)
        except KeyboardInterrupt:
            sys.exit(130)  # Ctrl-C on `status --watch` and the like: no traceback


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def settings() -> Settings:
    return get_settings()


def engine() -> sa.Engine:
    return ensure_schema(settings())


def emit(obj: Any) -> None:
    click.echo(json.dumps(obj, ensure_ascii=False, default=str))


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="sms-dispatch")
def main() -> None:
    """Bulk SMS dispatch: recipient lists in, every message accounted for."""
    reset_settings()


# --- sending --------------------------------------------------------------------------------


def _read_text(text: str | None, text_file: Path | None) -> str:
    if (text is None) == (text_file is None):
        fail("give the message as --text or --text-file (one of them)")
    if text_file is not None:
        try:
            return text_file.read_text(encoding="utf-8-sig").rstrip("\n")
        except UnicodeDecodeError:
            fail(f"{text_file}: not UTF-8 text")
    return text or ""


def _validity(value: str | None) -> float | None:
    if not value:
        return None
    seconds = parse_duration(value)
    if seconds <= 0:
        raise ValueError("must be longer than zero")
    return seconds


def notify_workers(s: Settings, eng: sa.Engine, campaign_id: int) -> str:
    """Issue the first notices of a running campaign; says what happens next."""
    if not broker_alive(s):
        if s.embedded:
            return "sending starts when `sms-dispatch run` (or the workers) start"
        return "the broker is not reachable; sending starts when it and the workers are up"
    from workers import notices, transitions
    from workers.celery_app import app

    client = redis.Redis.from_url(s.redis_url)
    try:
        batches = transitions.due_batches(eng, campaign_id, limit=s.notices_ahead)
        notices.issue_batches(app, client, campaign_id, batches, s.notice_lease)
    finally:
        client.close()
    return "sending has started"


@main.command()
@click.argument("list_file", metavar="LIST", type=click.Path(path_type=Path))
@click.option("--sender", required=True, help="Originator: up to 11 letters/digits or 15 digits.")
@click.option("--text", help="The message; {column} placeholders are filled from the list.")
@click.option("--text-file", type=click.Path(path_type=Path), help="Read the message from a file.")
@click.option("--name", help="Campaign name (default: the list's file name).")
@click.option("--region", help="Region for national numbers, e.g. SE, GB (default: setting).")
@click.option("--column", help="The column that holds the numbers.")
@click.option("--at", "at", help="Start at this time (ISO 8601), not now.")
@click.option("--tz", help="Time zone for --at without an offset (default: setting).")
@click.option("--window", help="Send only between these local times, e.g. 09:00-20:00.")
@click.option("--days", help="Send only on these days (recipient's local), e.g. MON-FRI.")
@click.option("--validity", help="How long to wait for a final report, e.g. 24h.")
@click.option("--dry-run", is_flag=True, help="Check and count; write nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object.")
def send(
    list_file: Path,
    sender: str,
    text: str | None,
    text_file: Path | None,
    name: str | None,
    region: str | None,
    column: str | None,
    at: str | None,
    tz: str | None,
    window: str | None,
    days: str | None,
    validity: str | None,
    dry_run: bool,
    as_json: bool,
) -> None:
    """Load a recipient list as a campaign and start sending it."""
    s = settings()
    template = _read_text(text, text_file)
    if tz:
        zone(tz)
    send_after = parse_at(at, tz or s.tz) if at else None
    try:
        validity_s = _validity(validity)
    except ValueError as exc:
        fail(f"--validity: {exc}")
    request = LoadRequest(
        path=list_file,
        sender=sender,
        template=template,
        name=name,
        region=region.upper() if region else None,
        column=column,
        send_after=send_after,
        window=window,
        days=days,
        tz=tz,
        validity=validity_s,
    )
    eng = None if dry_run else engine()
    removed = "the partly loaded campaign was removed and nothing will be sent"
    try:
        summary = load_campaign(s, eng, request, dry_run=dry_run)
    except KeyboardInterrupt:
        fail(f"interrupted; {removed}", 130)
    except sa.exc.SQLAlchemyError as exc:
        fail(
            f"loading failed ({_one_line(getattr(exc, 'orig', None) or exc)}); {removed}",
            EXIT_FAILED,
        )
    note = None
    if eng is not None and summary.campaign is not None and summary.state == "running":
        note = notify_workers(s, eng, summary.campaign)
    if as_json:
        emit(summary.as_dict())
    else:
        _print_summary(summary.as_dict(), send_after)
    if note:
        click.echo(note, err=as_json)


def _print_summary(data: dict[str, Any], send_after: Any) -> None:
    head = "dry run" if data["campaign"] is None else f"campaign {data['campaign']}"
    click.echo(f"{head}: {data['state']}, {data['total']} rows")
    for status, n in data["counts"].items():
        click.echo(f"  {status:<12} {n}")
    click.echo(f"  segments     {data['segments']}  (estimated cost {data['estimated_cost']})")
    if send_after is not None:
        click.echo(f"  starts at    {send_after.isoformat()} (UTC)")


# --- watching -------------------------------------------------------------------------------


def _status_lines(data: dict[str, Any]) -> list[str]:
    lines = [
        f"campaign {data['campaign']} {data['name']!r}: {data['state']}"
        + (f" ({data['reason']})" if data["reason"] else ""),
        f"  {data['final']}/{data['total']} final, cost {data['cost']}"
        + (", done" if data["done"] else ""),
    ]
    lines += [f"  {status:<12} {n}" for status, n in data["counts"].items()]
    if data.get("waiting_for_window"):
        lines.append(f"  {data['waiting_for_window']} waiting for their send window")
    return lines


@main.command()
@click.argument("campaign", type=int, required=False)
@click.option("--json", "as_json", is_flag=True)
@click.option("--watch", is_flag=True, help="Refresh every second until done (Ctrl-C stops).")
def status(campaign: int | None, as_json: bool, watch: bool) -> None:
    """Per-status counts, cost, state and pause reason (all campaigns without an id)."""
    from dispatcher.reports import all_statuses, campaign_status

    eng = engine()

    def snapshot() -> Any:
        return campaign_status(eng, campaign) if campaign is not None else all_statuses(eng)

    if watch and not as_json:
        from dispatcher.progress import watch_campaigns

        watch_campaigns(snapshot)
        return
    while True:
        data = snapshot()
        if as_json:
            emit(data)
        else:
            for item in data if isinstance(data, list) else [data]:
                click.echo("\n".join(_status_lines(item)))
        finished = all(d["done"] for d in (data if isinstance(data, list) else [data]))
        if not watch or finished:
            return
        time.sleep(1)


@main.command()
@click.option("--json", "as_json", is_flag=True)
def campaigns(as_json: bool) -> None:
    """All campaigns, newest first."""
    from dispatcher.reports import all_statuses

    data = all_statuses(engine())
    if as_json:
        emit(data)
        return
    if not data:
        click.echo("no campaigns yet")
    for d in data:
        click.echo(
            f"{d['campaign']:>6}  {d['state']:<10} {d['final']:>8}/{d['total']:<8} "
            f"cost {d['cost']:<10} {d['name']}"
        )


@main.command()
@click.argument("campaign", type=int)
@click.option(
    "--out", type=click.Path(path_type=Path), help="Write to this file (default: stdout)."
)
def report(campaign: int, out: Path | None) -> None:
    """CSV of every input row of a campaign, with its status."""
    from dispatcher.reports import write_report

    eng = engine()
    if out is None:
        write_report(eng, campaign, sys.stdout)
        return
    tmp = out.with_name(out.name + ".part")
    with tmp.open("w", encoding="utf-8", newline="") as fh:
        count = write_report(eng, campaign, fh)
    tmp.replace(out)  # a report is whole or absent, never half written
    click.echo(f"wrote {count} rows to {out}", err=True)


# --- campaign control -----------------------------------------------------------------------


def _with_redis(action: Callable[[redis.Redis], None]) -> None:
    s = settings()
    if broker_alive(s):
        client = redis.Redis.from_url(s.redis_url)
        try:
            action(client)
        finally:
            client.close()


@main.command()
@click.argument("campaign", type=int)
def pause(campaign: int) -> None:
    """Stop sending a campaign; `resume` picks up where it stopped."""
    from workers import notices, transitions

    eng = engine()
    transitions.get_campaign(eng, campaign)
    if not transitions.pause_running(eng, "paused by operator", campaign):
        state = transitions.get_campaign(eng, campaign).state
        raise CampaignStateError(f"campaign {campaign} is {state}; only running or scheduled pause")
    _with_redis(lambda r: notices.halt_campaigns(r, [campaign], "paused by operator"))
    click.echo(f"campaign {campaign} paused")


@main.command()
@click.argument("campaign", type=int)
def resume(campaign: int) -> None:
    """Resume a paused campaign."""
    from workers import notices, transitions

    s, eng = settings(), engine()
    state = transitions.resume(eng, campaign)
    _with_redis(lambda r: notices.unhalt_campaign(r, campaign))
    note = notify_workers(s, eng, campaign) if state == "running" else "waiting for its start"
    click.echo(f"campaign {campaign} {state}; {note}")


@main.command()
@click.argument("campaign", type=int)
def cancel(campaign: int) -> None:
    """Cancel a campaign: messages not yet handed to the gateway become cancelled."""
    from workers import notices, transitions

    eng = engine()
    count = transitions.cancel(eng, campaign)
    _with_redis(lambda r: notices.halt_campaigns(r, [campaign], "cancelled"))
    click.echo(f"campaign {campaign} cancelled; {count} messages will not be sent")


# --- opt-outs -------------------------------------------------------------------------------


@main.group()
def suppress() -> None:
    """The opt-out list: numbers that are never sent to."""


def _normalised(numbers: list[str], region: str | None) -> list[str]:
    from dispatcher.recipients import normalise

    out = []
    for raw in numbers:
        mobile, error = normalise(raw, (region or settings().region).upper())
        if mobile is None:
            fail(f"{raw!r}: {error}")
        out.append(mobile)
    return out


@suppress.command("add")
@click.argument("numbers", nargs=-1, required=True)
@click.option("--region", help="Region for national numbers.")
def suppress_add(numbers: tuple[str, ...], region: str | None) -> None:
    """Add numbers to the opt-out list."""
    from dispatcher.suppression import add_numbers

    added = add_numbers(engine(), _normalised(list(numbers), region))
    click.echo(f"{added} added to the opt-out list")


@suppress.command("import")
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--region", help="Region for national numbers.")
@click.option("--column", help="The column that holds the numbers.")
def suppress_import(file: Path, region: str | None, column: str | None) -> None:
    """Add every valid number of a list file to the opt-out list."""
    from dispatcher.recipients import RecipientList
    from dispatcher.suppression import add_numbers

    recipients = RecipientList.open(
        file, column=column, region=(region or settings().region).upper()
    )
    valid, invalid = [], 0
    for row in recipients.rows():
        if row.mobile:
            valid.append(row.mobile)
        else:
            invalid += 1
    added = add_numbers(engine(), valid)
    click.echo(f"{added} added, {len(valid) - added} already there, {invalid} invalid skipped")


@suppress.command("remove")
@click.argument("numbers", nargs=-1, required=True)
@click.option("--region", help="Region for national numbers.")
def suppress_remove(numbers: tuple[str, ...], region: str | None) -> None:
    """Remove numbers from the opt-out list."""
    from dispatcher.suppression import remove_numbers

    removed = remove_numbers(engine(), _normalised(list(numbers), region))
    click.echo(f"{removed} removed from the opt-out list")


@suppress.command("list")
def suppress_list() -> None:
    """Print the opt-out list, one number a line."""
    from dispatcher.suppression import list_numbers

    for mobile in list_numbers(engine()):
        click.echo(mobile)


# --- recurring schedules -------------------------------------------------------------------


@main.group()
def schedule() -> None:
    """Recurring sends: a list and a text fired on a cron schedule in a time zone."""


@schedule.command("add")
@click.argument("name")
@click.option("--cron", required=True, help='Cron expression, e.g. "0 9 * * MON-FRI".')
@click.option("--tz", required=True, help="Time zone of the cron times, e.g. Europe/Stockholm.")
@click.option("--list", "list_file", required=True, type=click.Path(path_type=Path))
@click.option("--sender", required=True)
@click.option("--text")
@click.option("--text-file", type=click.Path(path_type=Path))
@click.option("--region", help="Region for national numbers.")
@click.option("--window", help="Send only between these local times, e.g. 09:00-20:00.")
@click.option("--days", help="Send only on these days, e.g. MON-FRI.")
@click.option("--validity", help="How long to wait for a final report, e.g. 24h.")
@click.option("--json", "as_json", is_flag=True)
def schedule_add(
    name: str,
    cron: str,
    tz: str,
    list_file: Path,
    sender: str,
    text: str | None,
    text_file: Path | None,
    region: str | None,
    window: str | None,
    days: str | None,
    validity: str | None,
    as_json: bool,
) -> None:
    """Add a recurring schedule; each firing reads the list as it is then."""
    from dispatcher.schedules import add_schedule

    template = _read_text(text, text_file)
    try:
        validity_s = _validity(validity)
    except ValueError as exc:
        fail(f"--validity: {exc}")
    data = add_schedule(
        engine(),
        settings(),
        name=name,
        cron=cron,
        tz=tz,
        list_path=list_file,
        sender=sender,
        template=template,
        region=region.upper() if region else None,
        window=window,
        days=days,
        validity=validity_s,
    )
    if as_json:
        emit(data)
    else:
        click.echo(f"schedule {name!r} added; next firing {data['next']}")


@schedule.command("list")
@click.option("--json", "as_json", is_flag=True)
def schedule_list(as_json: bool) -> None:
    """Every schedule with its next firing time and last problem."""
    from dispatcher.schedules import list_schedules

    data = list_schedules(engine())
    if as_json:
        emit(data)
        return
    if not data:
        click.echo("no schedules")
    for d in data:
        state = "paused" if d["paused"] else f"next {d['next']}"
        click.echo(f"{d['name']:<20} {d['cron']!r} {d['tz']}  {state}  missed {d['missed']}")
        if d["last_error"]:
            click.echo(f"{'':<20} last problem: {d['last_error']}")


@schedule.command("pause")
@click.argument("name")
def schedule_pause(name: str) -> None:
    """Stop firing a schedule."""
    from dispatcher.schedules import set_paused

    set_paused(engine(), name, True)
    click.echo(f"schedule {name!r} paused")


@schedule.command("resume")
@click.argument("name")
def schedule_resume(name: str) -> None:
    """Fire a paused schedule again from its next slot (slots passed meanwhile are skipped)."""
    from dispatcher.schedules import set_paused

    set_paused(engine(), name, False)
    click.echo(f"schedule {name!r} resumed")


@schedule.command("remove")
@click.argument("name")
def schedule_remove(name: str) -> None:
    """Remove a schedule (its campaigns stay)."""
    from dispatcher.schedules import remove_schedule

    remove_schedule(engine(), name)
    click.echo(f"schedule {name!r} removed")


@schedule.command("run")
@click.argument("name")
def schedule_run(name: str) -> None:
    """Fire a schedule once now."""
    from dispatcher.schedules import fire_now

    s, eng = settings(), engine()
    fired = fire_now(s, eng, name)
    if fired.error or fired.summary is None or fired.summary.campaign is None:
        fail(f"schedule {name!r} did not fire: {fired.error}", EXIT_FAILED)
    summary = fired.summary
    note = notify_workers(s, eng, summary.campaign) if summary.state == "running" else ""
    click.echo(f"campaign {summary.campaign} {summary.state}, {summary.total} rows; {note}")


# --- the database ---------------------------------------------------------------------------


@main.group()
def db() -> None:
    """The ledger's schema."""


@db.command("upgrade")
def db_upgrade() -> None:
    """Apply pending migrations."""
    s = settings()
    if s.sqlalchemy_url.startswith("sqlite"):
        s.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade(s.sqlalchemy_url)
    click.echo("the ledger schema is up to date")


# --- running --------------------------------------------------------------------------------


@main.command()
@click.option("--concurrency", default=2, show_default=True, help="Worker processes.")
def run(concurrency: int) -> None:
    """Run the embedded Redis, a worker and beat until Ctrl-C or SIGTERM."""
    from dispatcher.supervisor import supervise

    s = settings()
    where = "embedded Redis" if s.embedded else "the broker at SMS_BROKER_URL"
    click.echo(f"sms-dispatch: worker and beat on {where}; Ctrl-C stops everything", err=True)
    sys.exit(supervise(s, concurrency=concurrency))


@main.command()
@click.option("--size", default=300, show_default=True, help="Recipients in the sample list.")
@click.option("--keep", is_flag=True, help="Keep the demo's data folder afterwards.")
def demo(size: int, keep: bool) -> None:
    """Run everything with the simulator and send a sample campaign, showing progress."""
    from dispatcher.demo import run_demo

    sys.exit(run_demo(size=size, keep=keep))


@main.command(
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    add_help_option=False,
)
@click.pass_context
def simulator(ctx: click.Context) -> None:
    """Run the stand-in gateway (see `sms-dispatch simulator --help`)."""
    from simulator.__main__ import main as simulator_main

    sys.exit(simulator_main(list(ctx.args)))


# --- checking a gateway by hand -------------------------------------------------------------


@main.group()
def gateway() -> None:
    """One request to the gateway, for checking an account by hand."""


def _client() -> Any:
    from workers.gateway import GatewayClient

    return GatewayClient.from_settings(settings(), pool_size=1)


@gateway.command("send")
@click.argument("mobile")
@click.argument("text")
@click.option("--sender", required=True)
@click.option("--ref", help="Your ref (default: a new one).")
@click.option("--json", "as_json", is_flag=True)
def gateway_send(mobile: str, text: str, sender: str, ref: str | None, as_json: bool) -> None:
    """Send one SMS and print the gateway's answer."""
    from dispatcher.campaigns import new_refs
    from dispatcher.texts import check_sender

    number = _normalised([mobile], None)[0]
    ref = ref or new_refs(1)[0]
    with _client() as client:
        result = client.send(number, check_sender(sender), text, ref)
    if as_json:
        emit(result.as_dict())
    else:
        click.echo(f"{result.outcome}: ref {ref}" + (f" ({result.error})" if result.error else ""))
    if not result.accepted:
        fail(f"not accepted: {result.outcome}: {result.error}", EXIT_FAILED)


@gateway.command("report")
@click.argument("mobile")
@click.argument("ref")
@click.option("--json", "as_json", is_flag=True)
def gateway_report(mobile: str, ref: str, as_json: bool) -> None:
    """Look up one delivery report."""
    from workers.gateway import GatewayError
    from workers.ledger import Status
    from workers.tracking import status_for

    number = _normalised([mobile], None)[0]
    with _client() as client:
        try:
            rep = client.report(number, ref)
        except GatewayError as exc:
            fail(f"no report: {exc.message}", EXIT_FAILED)
    ours = status_for(rep) or Status.UNKNOWN
    data = {
        "status": str(ours),
        "queue_status": rep.queue_status,
        "dlr_status": rep.dlr_status,
        "dlr_error": rep.dlr_error,
        "cost": None if rep.cost is None else str(rep.cost),
    }
    if as_json:
        emit(data)
    else:
        click.echo(" ".join(f"{k}={v}" for k, v in data.items() if v is not None))
    if rep.state.value == "notfound":
        fail("the gateway has no such message (wrong number or ref)", EXIT_FAILED)
