"""Live progress of campaigns in the terminal (rich)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from rich.console import Group
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table

if TYPE_CHECKING:
    from dispatcher.reports import CampaignStatus

Shown = TypeVar("Shown", bound="CampaignStatus | list[CampaignStatus]")  # one or a listing

STATUS_STYLE = {
    "delivered": "green",
    "undelivered": "red",
    "rejected": "red",
    "failed": "red",
    "expired": "yellow",
    "unknown": "yellow",
    "invalid": "dim",
    "duplicate": "dim",
    "suppressed": "dim",
    "cancelled": "dim",
}


def render(items: list[CampaignStatus]) -> Group:
    parts: list[Any] = []
    for data in items:
        table = Table(
            title=f"campaign {data.campaign} · {data.name} · {data.state}"
            + (f" ({data.reason})" if data.reason else ""),
            show_header=True,
            title_justify="left",
            min_width=60,
        )
        table.add_column("status")
        table.add_column("messages", justify="right")
        for status, n in data.counts.items():
            table.add_row(f"[{STATUS_STYLE.get(status, 'cyan')}]{status}[/]", str(n))
        table.add_row("[bold]final[/]", f"[bold]{data.final}/{data.total}[/]")
        table.add_row("cost", data.cost)
        parts += [table, ProgressBar(total=max(1, data.total), completed=data.final)]
    return Group(*parts)


def watch_campaigns(
    snapshot: Callable[[], Shown], *, interval: float = 1.0, stop: Callable[[], bool] | None = None
) -> Shown:
    """Redraw until every campaign shown is done (or `stop()`); returns the last snapshot."""
    data = snapshot()
    with Live(render(_listed(data)), refresh_per_second=4) as live:
        while True:
            items = _listed(data)
            live.update(render(items))
            if (items and all(d.done for d in items)) or (stop and stop()):
                return data
            time.sleep(interval)
            data = snapshot()


def _listed(data: CampaignStatus | list[CampaignStatus]) -> list[CampaignStatus]:
    return data if isinstance(data, list) else [data]
