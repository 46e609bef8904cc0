"""The `sms-dispatch` command line: send lists, watch campaigns, run the workers, check a gateway.

Bad input of any kind is one line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click
import redis
import sqlalchemy as sa

from config import Settings, get_settings, reset_settings
from dispatcher import control
from dispatcher.control import notify_workers
from dispatcher.errors import USER_ERRORS, LoadFailed, OptionError, one_line
from workers.database import ensure_schema, private_dir, upgrade

if TYPE_CHECKING:  # the commands that read statuses import reports when they run
    from dispatcher.reports import CampaignStatus

EXIT_USAGE = 2
EXIT_FAILED = 1


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    click.echo(f"sms-dispatch: {message}", err=True)
    sys.exit(code)


class _Group(click.Group):
    """Turns expected failures into one line on stderr."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except OptionError as exc:
            fail(f"--{exc}")
        except USER_ERRORS as exc:  # one line on stderr, no traceback
            fail(_one_line(exc))
        except LoadFailed as exc:
            fail(str(exc), EXIT_FAILED)
        except sa.exc.OperationalError as exc:
            fail(f"cannot use the database: {_one_line(exc.orig or exc)}", EXIT_FAILED)
        except redis.RedisError as exc:
            fail(f"cannot reach Redis: {_one_line(exc)}", EXIT_FAILED)
        except KeyboardInterrupt:
            sys.exit(130)  # Ctrl-C on `status --watch` and the like: no traceback


_one_line = one_line


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
    try:
        from dispatcher.control import count_in_redis

        count_in_redis(get_settings())
    except Exception:  # settings errors are reported by the command that needs them
        pass


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


__all__ = ["main", "notify_workers"]

_F = TypeVar("_F", bound=Callable[..., Any])


def _options(*decorators: Callable[[_F], _F]) -> Callable[[_F], _F]:
    """Several click options as one decorator; `--help` lists them in the order given."""

    def apply(f: _F) -> _F:
        for decorator in reversed(decorators):
            f = decorator(f)
        return f

    return apply


def _priority_option(default: str, help_text: str) -> Callable[[_F], _F]:
    return click.option(
        "--priority",
        type=click.Choice(["high", "normal", "low"], case_sensitive=False),
        default=default,
        show_default=True,
        help=help_text,
    )


# The options `send` and `schedule add` share word for word, declared once for both.
_window_option = click.option(
    "--window", help="Send only between these local times, e.g. 09:00-20:00."
)
_validity_option = click.option("--validity", help="How long to wait for a final report, e.g. 24h.")
_consent_column_option = click.option(
    "--consent-column", help="Marketing: the column that says yes (or a date)."
)
_row_time_options = _options(
    click.option("--send-at-column", help="Time each message from this column (an appointment)."),
    click.option("--before", help="With --send-at-column: send this long before it, e.g. 24h, 1d."),
    click.option("--after", help="With --send-at-column: send this long after it, e.g. 2h."),
    click.option(
        "--date-order",
        type=click.Choice(["dmy", "mdy"], case_sensitive=False),
        help="Dates like 03/04/2026: day first (dmy) or month first (mdy).",
    ),
)
_gsm_safe_option = click.option(
    "--gsm-safe", is_flag=True, help="Replace typographic quotes, dashes, ... by GSM-7."
)


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
@_window_option
@click.option("--days", help="Send only on these days (recipient's local), e.g. MON-FRI.")
@_validity_option
@click.option(
    "--purpose",
    help="Required: marketing (needs --consent-column) or service (reminders, receipts).",
)
@_consent_column_option
@click.option("--dry-run", is_flag=True, help="Check and count; write nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object.")
@click.option("--encoding", help="Text encoding of the list (default: detected), e.g. cp1252.")
@click.option("--sheet", help="Sheet of a workbook list (.xlsx, .ods; default: the first).")
@click.option(
    "--allow-landlines",
    is_flag=True,
    help="Send to numbers that are not mobiles too (text-to-landline gateways).",
)
@click.option("--webhook", help="Post this campaign's events here (default: SMS_WEBHOOK_URL).")
@_priority_option("normal", "Lane: due high messages go before normal ones, normal before low.")
@click.option("--max-cost", help="Stop (pause) the campaign before it costs more, e.g. 250.00.")
@_row_time_options
@click.option("--dedupe-column", help="Send once per value of this column (a booking id).")
@_gsm_safe_option
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
    purpose: str | None,
    consent_column: str | None,
    dry_run: bool,
    as_json: bool,
    encoding: str | None = None,
    sheet: str | None = None,
    allow_landlines: bool = False,
    webhook: str | None = None,
    priority: str = "normal",
    max_cost: str | None = None,
    send_at_column: str | None = None,
    before: str | None = None,
    after: str | None = None,
    date_order: str | None = None,
    dedupe_column: str | None = None,
    gsm_safe: bool = False,
) -> None:
    """Load a recipient list as a campaign and start sending it."""
    s = settings()
    request = control.load_request(
        s,
        path=list_file,
        sender=sender,
        template=_read_text(text, text_file),
        name=name,
        region=region,
        column=column,
        at=at,
        tz=tz,
        window=window,
        days=days,
        validity=validity,
        purpose=purpose,
        consent_column=consent_column,
        priority=priority,
        max_cost=max_cost,
        send_at_column=send_at_column,
        before=before,
        after=after,
        date_order=date_order,
        dedupe_column=dedupe_column,
        gsm_safe=gsm_safe,
    )
    request.encoding, request.sheet, request.landlines = encoding, sheet, allow_landlines
    request.webhook_url = _webhook_url(webhook)
    if not dry_run:
        s.require_gateway()  # before a campaign is loaded that nothing could send
    eng = _existing_ledger(s) if dry_run else engine()
    try:
        started = control.start_campaign(s, eng, request, dry_run=dry_run)
    except KeyboardInterrupt:
        fail(f"interrupted; {control.REMOVED}", 130)
    summary, note = started.summary, started.note
    if as_json:
        emit(summary.as_dict())
    else:
        _print_summary(summary.as_dict(), request.send_after)
    for line in _text_warnings(summary.as_dict()):
        click.echo(line, err=as_json)
    if note:
        click.echo(note, err=as_json)
    if dry_run and not summary.counts.get("queued"):
        fail(f"{list_file}: no row can be sent", EXIT_FAILED)


def _webhook_url(url: str | None) -> str | None:
    from workers.webhooks import check_url

    try:
        return check_url(url) if url else None
    except ValueError as exc:
        fail(f"--webhook: {exc}")


def _existing_ledger(s: Settings) -> sa.Engine | None:
    """The ledger for a dry run to read opt-outs from, if there is one; never creates it."""
    url = s.sqlalchemy_url
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if not path or not Path(path).exists():
            return None  # no ledger yet, so no opt-outs yet
    return engine()


def _print_summary(data: dict[str, Any], send_after: Any) -> None:
    head = "dry run" if data["campaign"] is None else f"campaign {data['campaign']}"
    click.echo(f"{head}: {data['state']}, {data['total']} rows")
    if data.get("source"):
        click.echo(f"  {data['source']}")
    for status, n in data["counts"].items():
        click.echo(f"  {status:<12} {n}")
    click.echo(f"  segments     {data['segments']}  (estimated cost {data['estimated_cost']})")
    if data.get("priority") and data["priority"] != "normal":
        click.echo(f"  priority     {data['priority']}")
    if send_after is not None:
        click.echo(f"  starts at    {send_after.isoformat()} (UTC)")
    if data["campaign"] is None:
        if data.get("sample") is not None:
            click.echo(f"  first text   {data['sample']!r}")
        problems = data.get("problems") or []
        if problems:
            click.echo(f"  the first {len(problems)} rows that will not be sent:")
        for row in problems:
            click.echo(
                f"    line {row['line']}: {row['mobile_as_given']!r} {row['status']}"
                f" ({row['error']})"
            )


def _text_warnings(data: dict[str, Any]) -> list[str]:
    """What --gsm-safe did, and which characters make texts UCS-2 at what cost."""
    from dispatcher.texts import GSM_SAFE

    lines = []
    if data.get("gsm_safe_replaced"):
        lines.append(f"--gsm-safe replaced {data['gsm_safe_replaced']} character(s) in the text")
    chars = data.get("ucs2_characters") or []
    if chars and data.get("ucs2_texts"):
        shown = ", ".join(f"{c!r} (U+{ord(c):04X})" for c in chars[:10])
        extra = data.get("ucs2_extra_cost", "0")
        lines.append(
            f"warning: {shown} make {data['ucs2_texts']} text(s) UCS-2 (70 characters a part,"
            f" not 160): {extra} more than as GSM-7"
        )
        fixable = [c for c in chars if c in GSM_SAFE]
        if fixable:
            lines.append(
                f"  --gsm-safe replaces {', '.join(repr(c) for c in fixable)} in the text"
                " with GSM-7 characters"
            )
    return lines


# --- watching -------------------------------------------------------------------------------


def _status_lines(data: CampaignStatus) -> list[str]:
    from workers.ledger import CampaignState, Priority, Status

    lines = [
        f"campaign {data.campaign} {data.name!r}: {data.state}"
        + (f" ({data.reason})" if data.reason else ""),
        f"  {data.final}/{data.total} final, cost {data.cost}"
        + (f" of at most {data.max_cost}" if data.max_cost else "")
        + (", done" if data.done else ""),
    ]
    if data.priority and data.priority != Priority.NORMAL:
        lines.append(f"  priority {data.priority}")
    lines += [f"  {status:<12} {n}" for status, n in data.counts.items()]
    if data.state == CampaignState.SCHEDULED and data.send_after:
        lines.append(f"  starts at {data.send_after} (UTC)")
    if data.waiting_for_window:
        opens = f"; the next window opens {data.window_opens} (UTC)"
        lines.append(
            f"  {data.waiting_for_window} waiting for their send window"
            + (opens if data.window_opens else "")
        )
    if data.partial_zones:
        lines.append(
            f"  {data.partial_zones} go in the window of only some of their zones"
            " (their zones' windows never overlap; see the report's error column)"
        )
    if data.state == CampaignState.CANCELLED and data.counts.get(Status.CANCELLED):
        lines.append(f"  {data.counts['cancelled']} messages will not be sent (cancelled)")
    if data.personal_data_removed_at:
        removed = data.personal_data_removed_at[:10]
        lines.append(f"  personal data (numbers, texts) removed on {removed}; totals kept")
    return lines


@main.command()
@click.argument("campaign", type=int, required=False)
@click.option("--json", "as_json", is_flag=True)
@click.option("--watch", is_flag=True, help="Refresh every second until done (Ctrl-C stops).")
def status(campaign: int | None, as_json: bool, watch: bool) -> None:
    """Per-status counts, cost, state and pause reason (all campaigns without an id)."""
    from dispatcher.control import service_health
    from dispatcher.reports import all_statuses, campaign_status
    from workers.ledger import CampaignState

    eng = engine()

    def snapshot() -> CampaignStatus | list[CampaignStatus]:
        return campaign_status(eng, campaign) if campaign is not None else all_statuses(eng)

    if watch and not as_json:
        from dispatcher.progress import watch_campaigns

        watch_campaigns(snapshot)
        return
    while True:
        data = snapshot()
        items = data if isinstance(data, list) else [data]
        health = service_health(settings())
        if as_json:
            shown = [{**item.as_dict(), "service": health.as_dict()} for item in items]
            emit(shown if isinstance(data, list) else shown[0])
        else:
            for item in items:
                click.echo("\n".join(_status_lines(item)))
                if item.state in (CampaignState.RUNNING, CampaignState.PAUSED) and not item.done:
                    click.echo("\n".join(f"  {line}" for line in health.lines()))
        finished = all(item.done for item in items)
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
        emit([d.as_dict() for d in data])
        return
    if not data:
        click.echo("no campaigns yet")
    for d in data:
        click.echo(
            f"{d.campaign:>6}  {d.state:<10} {d.final:>8}/{d.total:<8} cost {d.cost:<10} {d.name}"
        )


@main.command()
@click.argument("campaign", type=int)
@click.option(
    "--out", type=click.Path(path_type=Path), help="Write to this file (default: stdout)."
)
@click.option("--force", is_flag=True, help="Replace the --out file if it exists.")
def report(campaign: int, out: Path | None, force: bool = False) -> None:
    """CSV of every input row of a campaign, with its status."""
    from dispatcher.reports import campaign_status, write_report

    eng = engine()
    removed = campaign_status(eng, campaign).personal_data_removed_at
    if removed:
        click.echo(
            f"campaign {campaign}: personal data (numbers, texts) was removed on {removed[:10]}"
            " under the retention rule; statuses, costs and times are kept",
            err=True,
        )
    if out is None:
        write_report(eng, campaign, sys.stdout)
        return
    if out.exists() and not force:
        fail(f"{out} exists; --force replaces it")
    tmp = out.with_name(out.name + ".part")
    try:
        # utf-8-sig: the BOM tells Excel the file is UTF-8 (names with ÅÄÖ come out right).
        with tmp.open("w", encoding="utf-8-sig", newline="") as fh:
            count = write_report(eng, campaign, fh)
        tmp.replace(out)  # a report is whole or absent, never half written
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    click.echo(f"wrote {count} rows to {out}", err=True)


# --- campaign control -----------------------------------------------------------------------


@main.command()
@click.argument("campaign", type=int)
def pause(campaign: int) -> None:
    """Stop sending a campaign; `resume` picks up where it stopped."""
    control.pause_campaign(settings(), engine(), campaign)
    click.echo(f"campaign {campaign} paused")


@main.command()
@click.argument("campaign", type=int)
@click.option("--max-cost", help="Raise the campaign's cost cap first, e.g. 400.")
def resume(campaign: int, max_cost: str | None) -> None:
    """Resume a paused campaign."""
    cap = control.parse_max_cost(max_cost)
    state, note = control.resume_campaign(settings(), engine(), campaign, max_cost=cap)
    click.echo(f"campaign {campaign} {state}; {note}")


@main.command()
@click.argument("campaign", type=int)
def cancel(campaign: int) -> None:
    """Cancel a campaign: messages not yet handed to the gateway become cancelled."""
    from dispatcher.reports import campaign_status

    eng = engine()
    control.cancel_campaign(settings(), eng, campaign)
    # The number status shows: messages a batch hands back unsent later are counted there too.
    count = campaign_status(eng, campaign).counts.get("cancelled", 0)
    click.echo(f"campaign {campaign} cancelled; {count} messages will not be sent")


# --- opt-outs -------------------------------------------------------------------------------


@main.group()
def suppress() -> None:
    """The opt-out list: numbers that are never sent to."""


def _normalised(numbers: list[str], region: str | None) -> list[str]:
    return control.normalised_numbers(settings(), numbers, region)


@suppress.command("add")
@click.argument("numbers", nargs=-1, required=True)
@click.option("--region", help="Region for national numbers.")
@click.option("--reason", help="Why (kept with the opt-out).")
def suppress_add(numbers: tuple[str, ...], region: str | None, reason: str | None) -> None:
    """Add numbers to the opt-out list (their waiting messages are stopped too)."""
    from dispatcher.suppression import OptOut, add_opt_outs

    entries = [OptOut(m, None, reason) for m in _normalised(list(numbers), region)]
    done = add_opt_outs(engine(), entries, "cli")
    click.echo(f"{done.added} added to the opt-out list" + _stopped(done.stopped))


def _stopped(count: int) -> str:
    return f"; {count} waiting message(s) will not be sent" if count else ""


@suppress.command("import")
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--region", help="Region for national numbers.")
@click.option("--column", help="The column that holds the numbers.")
def suppress_import(file: Path, region: str | None, column: str | None) -> None:
    """Add every valid number of a list file to the opt-out list."""
    done = control.import_opt_outs(settings(), engine(), file, region=region, column=column)
    click.echo(
        f"{done.added} added, {done.already} already there, {done.invalid} invalid skipped"
        + _stopped(done.stopped)
    )


@suppress.command("import-replies")
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--region", help="Region for national numbers.")
@click.option("--column", help="The column that holds the numbers.")
@click.option("--text-column", help="The column that holds the reply texts.")
@click.option("--json", "as_json", is_flag=True)
def suppress_import_replies(
    file: Path, region: str | None, column: str | None, text_column: str | None, as_json: bool
) -> None:
    """Opt out the numbers whose reply is a stop word (a CSV of number, text, received time)."""
    from dispatcher.suppression import add_opt_outs, read_replies

    s = settings()
    read = read_replies(
        file,
        region=(region or s.region).upper(),
        tz=s.tz,
        column=column,
        text_column=text_column,
    )
    done = add_opt_outs(engine(), read.opt_outs, "reply")
    if as_json:
        emit(
            {
                "recognised": read.recognised,
                **done.as_dict(),
                "invalid": read.invalid,
                "not_understood": [{"line": n, "text": t} for n, t in read.not_understood],
            }
        )
        return
    click.echo(
        f"{read.recognised} stop replies recognised: {done.added} opted out,"
        f" {done.already} already opted out, {read.invalid} invalid numbers"
        + _stopped(done.stopped)
    )
    if read.not_understood:
        click.echo(f"{len(read.not_understood)} replies not understood (nothing done):")
        for line, text in read.not_understood:
            click.echo(f"  line {line}: {text.strip()!r}")


@suppress.command("remove")
@click.argument("numbers", nargs=-1, required=True)
@click.option("--region", help="Region for national numbers.")
def suppress_remove(numbers: tuple[str, ...], region: str | None) -> None:
    """Remove numbers from the opt-out list."""
    from dispatcher.suppression import remove_numbers

    removed = remove_numbers(engine(), _normalised(list(numbers), region))
    click.echo(f"{removed} removed from the opt-out list")


@suppress.command("list")
@click.option("--json", "as_json", is_flag=True, help="Each opt-out with when, source, reason.")
def suppress_list(as_json: bool) -> None:
    """Print the opt-out list, one number a line (erased numbers are only counted)."""
    from dispatcher.suppression import list_opt_outs

    entries = list_opt_outs(engine())
    if as_json:
        emit(entries)
        return
    erased = 0
    for entry in entries:
        if entry["erased"]:
            erased += 1
        else:
            click.echo(entry["mobile"])
    if erased:
        click.echo(f"{erased} erased number(s), kept opted out by keyed hash", err=True)


@main.command()
@click.argument("number")
@click.option("--region", help="Region for a national number.")
@click.option("--json", "as_json", is_flag=True)
def forget(number: str, region: str | None, as_json: bool) -> None:
    """Erase a person's number from every message and list we hold; keep it opted out."""
    from dispatcher.erasure import forget as erase

    done = erase(settings(), engine(), _normalised([number], region)[0])
    if as_json:
        emit(done.as_dict())
        return
    click.echo("forgot the number:")
    for line in done.lines():
        click.echo(f"  {line}")


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
@_window_option
@click.option("--days", help="Send only on these days, e.g. MON-FRI.")
@_validity_option
@click.option(
    "--purpose", default="service", show_default=True, help="marketing needs --consent-column."
)
@_consent_column_option
@_priority_option("high", "Lane of its campaigns (reminders go before marketing).")
@_row_time_options
@click.option(
    "--dedupe-column", help="Remind once per value of this column across firings (booking id)."
)
@click.option("--max-cost", help="Cost cap of each campaign it makes, e.g. 50.00.")
@_gsm_safe_option
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
    purpose: str,
    consent_column: str | None,
    as_json: bool,
    priority: str = "high",
    send_at_column: str | None = None,
    before: str | None = None,
    after: str | None = None,
    date_order: str | None = None,
    dedupe_column: str | None = None,
    max_cost: str | None = None,
    gsm_safe: bool = False,
) -> None:
    """Add a recurring schedule; each firing reads the list as it is then."""
    from dispatcher.schedules import add_schedule, schedule_options
    from workers.ledger import Priority

    template = _read_text(text, text_file)
    validity_s = control.parse_validity(validity)
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
        purpose=purpose,
        consent_column=consent_column,
        priority=control.parse_priority(priority, Priority.HIGH),
        options=schedule_options(
            send_at_column=send_at_column,
            before=before,
            after=after,
            date_order=date_order,
            dedupe_column=dedupe_column,
            max_cost=control.parse_max_cost(max_cost),
            gsm_safe=gsm_safe,
        ),
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
    try:
        started = control.run_schedule(settings(), engine(), name)
    except control.FireFailed as exc:
        fail(str(exc), EXIT_FAILED)
    summary = started.summary
    click.echo(
        f"campaign {summary.campaign} {summary.state}, {summary.total} rows; {started.note or ''}"
    )


# --- the database ---------------------------------------------------------------------------


@main.group()
def db() -> None:
    """The ledger's schema."""


@db.command("upgrade")
def db_upgrade() -> None:
    """Apply pending migrations."""
    s = settings()
    if s.sqlalchemy_url.startswith("sqlite"):
        private_dir(s.data_dir)
    upgrade(s.sqlalchemy_url)
    click.echo("the ledger schema is up to date")


# --- running --------------------------------------------------------------------------------


@main.command()
@click.option("--concurrency", default=2, show_default=True, help="Worker processes.")
@click.option("--no-api", is_flag=True, help="Leave out the HTTP API and dashboard.")
@click.option("--host", help="Address of the API and dashboard (default: setting api_host).")
@click.option("--port", type=int, help="Port of the API and dashboard (default: api_port).")
def run(concurrency: int, no_api: bool, host: str | None, port: int | None) -> None:
    """Run the embedded Redis, a worker, beat and the API until Ctrl-C or SIGTERM."""
    from dispatcher.api.server import url
    from dispatcher.supervisor import supervise

    s = settings()
    s.require_gateway()
    engine()  # a data dir or ledger we cannot use: one line, before anything starts
    where = "embedded Redis" if s.embedded else "the broker at SMS_BROKER_URL"
    api = None if no_api else (host or s.api_host, s.api_port if port is None else port)
    parts = "worker and beat" if api is None else "worker, beat and the API"
    click.echo(f"sms-dispatch: {parts} on {where}; Ctrl-C stops everything", err=True)
    if api is not None:
        _port_free(*api)
        click.echo(f"sms-dispatch: dashboard and API on {url(*api)}", err=True)
    sys.exit(supervise(s, concurrency=concurrency, api=api))


def _port_free(host: str, port: int) -> None:
    """One clear line now, rather than an API child that dies and stops the whole group."""
    import socket

    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        try:
            sock.bind((host, port))
        except OSError as exc:
            fail(f"cannot serve the API on {host}:{port} ({exc.strerror}); use --port or --no-api")


@main.command()
@click.option("--host", help="Address to listen on (default: setting api_host, 127.0.0.1).")
@click.option("--port", type=int, help="Port to listen on (default: setting api_port, 8000).")
def serve(host: str | None, port: int | None) -> None:
    """Serve the HTTP API (/v1, /docs) and the dashboard."""
    from dispatcher.api.server import serve as serve_api

    s = settings()
    sys.exit(serve_api(s, host or s.api_host, s.api_port if port is None else port))


# --- API tokens -----------------------------------------------------------------------------


@main.group()
def token() -> None:
    """Tokens for the HTTP API and the dashboard."""


@token.command("create")
@click.argument("name")
@click.option("--read-only", is_flag=True, help="May read, but not send, pause or change.")
def token_create(name: str, read_only: bool) -> None:
    """Make a token and print it (once: only its hash is kept)."""
    from dispatcher.tokens import create_token

    click.echo(create_token(engine(), name, read_only=read_only))
    click.echo(
        f"token {name!r} created{' (read-only)' if read_only else ''}; it is shown only now",
        err=True,
    )


@token.command("list")
@click.option("--json", "as_json", is_flag=True)
def token_list(as_json: bool) -> None:
    """Every token's name and access (never the token itself)."""
    from dispatcher.tokens import list_tokens

    data = list_tokens(engine())
    if as_json:
        emit(data)
        return
    if not data:
        click.echo("no tokens; make one with: sms-dispatch token create NAME")
    for d in data:
        access = "read-only" if d["read_only"] else "read-write"
        click.echo(f"{d['name']:<24} {access:<10} created {d['created_at']}")


@token.command("revoke")
@click.argument("name")
def token_revoke(name: str) -> None:
    """Remove a token; requests and dashboard sessions using it stop at once."""
    from dispatcher.tokens import revoke_token

    revoke_token(engine(), name)
    click.echo(f"token {name!r} revoked")


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
@click.option("--force", is_flag=True, help="Send even to a number on the opt-out list.")
@click.option("--allow-landlines", is_flag=True, help="Send to a number that is not a mobile.")
def gateway_send(
    mobile: str,
    text: str,
    sender: str,
    ref: str | None,
    as_json: bool,
    force: bool = False,
    allow_landlines: bool = False,
) -> None:
    """Send one SMS and print the gateway's answer."""
    from dispatcher.campaigns import new_refs
    from dispatcher.numbers import normalise
    from dispatcher.suppression import load_suppressed
    from dispatcher.texts import check_sender, check_text

    s = settings()
    number, error = normalise(mobile, s.region.upper(), landlines=allow_landlines)
    if number is None:
        fail(f"{mobile!r}: {error}")
    check_text(text, s.max_parts)  # an empty or overlong text never reaches the gateway
    ledger = _existing_ledger(s)
    if not force and ledger is not None and number in load_suppressed(ledger, s):
        fail(f"{mobile!r} is on the opt-out list; --force sends to it anyway")
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
    from workers.lifecycle import status_for

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


# --- observation: metrics and webhooks (issue 12) -------------------------------------------


@main.command()
@click.option("--port", type=int, help="Port to serve /metrics on (default: SMS_METRICS_PORT).")
@click.option("--bind", "addr", default="0.0.0.0", show_default=True, help="Address to bind.")
def metrics(port: int | None, addr: str) -> None:
    """Serve Prometheus metrics (ledger counts, gateway counters) until Ctrl-C."""
    from workers.metrics import serve

    s = settings()
    engine()  # the schema check, as one line, before anything listens
    port = port or s.metrics_port
    try:
        server = serve(s, port, addr)
    except OSError as exc:
        fail(f"cannot listen on {addr}:{port}: {exc.strerror or exc}", EXIT_FAILED)
    click.echo(f"sms-dispatch: metrics on http://{addr}:{port}/metrics; Ctrl-C stops", err=True)
    try:
        while True:
            time.sleep(3600)
    finally:
        server.shutdown()


@main.group()
def webhooks() -> None:
    """Webhook deliveries: what is waiting, what failed, and sending events again."""


@webhooks.command("status")
@click.option("--json", "as_json", is_flag=True)
def webhooks_status(as_json: bool) -> None:
    """Per receiver: events pending, failing, delivered, failed, and the last error."""
    from workers.webhooks import status as webhook_status

    data = webhook_status(engine(), settings())
    if as_json:
        emit(data)
        return
    if not data:
        click.echo("no webhook events yet")
    for d in data:
        click.echo(
            f"{d['url'] or '(no URL configured)'}: {d['pending']} pending "
            f"({d['failing']} failing), {d['delivered']} delivered, {d['failed']} failed, "
            f"{d['skipped']} skipped"
        )
        if d["pending"]:
            click.echo(f"  oldest pending {d['oldest_pending']}, next attempt {d['next_attempt']}")
        if d["last_error"]:
            click.echo(f"  last error: {d['last_error']}")


@webhooks.command("replay")
@click.option("--campaign", type=int, help="Every event of this campaign.")
@click.option("--since", help="Every event since this time (ISO 8601; see --tz).")
@click.option("--tz", help="Time zone for --since without an offset (default: setting).")
def webhooks_replay(campaign: int | None, since: str | None, tz: str | None) -> None:
    """Deliver events again (same webhook-id, so receivers can drop the ones they have)."""
    from datetime import UTC, datetime

    from workers.wallclock import zone
    from workers.webhooks import replay

    if (campaign is None) == (since is None):
        fail("give --campaign ID or --since TIME (one of them)")
    s = settings()
    eng = engine()
    if campaign is not None:
        from workers import ledger_reads

        ledger_reads.get_campaign(eng, campaign)
    when = None
    if since:
        try:
            when = datetime.fromisoformat(since.strip())
        except ValueError:
            fail(f"--since {since!r} is not an ISO 8601 time (2026-12-01T09:00)")
        if when.tzinfo is None:
            when = when.replace(tzinfo=zone(tz or s.tz))
        when = when.astimezone(UTC)
    count = replay(eng, campaign_id=campaign, since=when)
    click.echo(f"{count} events will be delivered again")
