"""Prometheus metrics built at scrape time: the ledger (through its indexes) and Redis counters.

Nothing that can change is cached between scrapes: a number on `/metrics` is what the ledger
says now (a completed campaign's counts, which cannot change, are read once). Campaign
labels exist only for campaigns not finished, or finished within `metrics_recent`, so the
label set stays bounded however long the service runs; no label ever holds a phone number,
a ref or a message text.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from datetime import timedelta
from typing import Any

import redis
import sqlalchemy as sa
from prometheus_client import CollectorRegistry, make_wsgi_app, start_http_server
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from config import Settings
from workers import counters
from workers.cron import next_slot
from workers.ledger import (
    FINAL,
    CampaignState,
    campaign_table,
    message_table,
    outbox_table,
    schedule_table,
    utcnow,
)

log = logging.getLogger("sms.metrics")

FINAL_VALUES = frozenset(s.value for s in FINAL)

# Pause reasons as a bounded label: the reason text itself never becomes a label.
_PAUSE_CLASSES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("ip_not_allowed", re.compile(r"\b405\b|remote ip|\bip\b", re.I)),
    ("no_credit", re.compile(r"\b406\b|credit", re.I)),
    ("invalid_key", re.compile(r"\b407\b|\bkey\b", re.I)),
    ("operator", re.compile(r"operator|paused by", re.I)),
)


def pause_class(reason: str | None) -> str:
    """`no_credit`, `ip_not_allowed`, `invalid_key`, `operator` or `other`."""
    for name, pattern in _PAUSE_CLASSES:
        if reason and pattern.search(reason):
            return name
    return "other"


def _ts(value: Any) -> float:
    return value.timestamp() if value is not None else 0.0


class LedgerCollector(Collector):
    """Campaigns, messages, cost, schedules and the webhook outbox, read at each scrape."""

    def __init__(self, engine: sa.Engine, recent: float) -> None:
        self.engine = engine
        self.recent = recent
        self._settled: dict[int, tuple[dict[str, int], float]] = {}

    def collect(self) -> Iterator[Metric]:
        started = time.perf_counter()
        try:
            with self.engine.connect() as conn:
                yield from self._campaigns(conn)
                yield from self._schedules(conn)
                yield from self._outbox(conn)
            up = 1.0
        except sa.exc.SQLAlchemyError as exc:
            log.warning("metrics: cannot read the ledger: %s", str(exc).splitlines()[0])
            up = 0.0
        yield _gauge("sms_ledger_up", "1 when the ledger could be read for this scrape.", up)
        yield _gauge(
            "sms_ledger_scrape_seconds",
            "Time the ledger queries of this scrape took.",
            time.perf_counter() - started,
        )

    def _campaigns(self, conn: sa.Connection) -> Iterator[Metric]:
        by_state = {
            state: n
            for state, n in conn.execute(
                sa.select(campaign_table.c.state, sa.func.count()).group_by(campaign_table.c.state)
            )
        }
        yield _family(
            "sms_campaigns",
            "Campaigns by state.",
            ["state"],
            (([state.value], by_state.get(state.value, 0)) for state in CampaignState),
        )

        since = utcnow() - timedelta(seconds=self.recent)
        done = [CampaignState.COMPLETED.value, CampaignState.CANCELLED.value]
        rows = conn.execute(
            sa.select(
                campaign_table.c.id,
                campaign_table.c.state,
                campaign_table.c.reason,
                campaign_table.c.started_at,
                campaign_table.c.finished_at,
            ).where(
                sa.or_(campaign_table.c.state.not_in(done), campaign_table.c.finished_at >= since)
            )
        ).all()
        counts: dict[int, dict[str, int]] = defaultdict(dict)
        costs: dict[int, float] = {}
        # A completed campaign's messages are all final and never change again: its numbers
        # are read once, not at every scrape.
        settled = {r.id for r in rows if r.state == CampaignState.COMPLETED}
        self._settled = {cid: v for cid, v in self._settled.items() if cid in settled}
        for cid, (known, spent) in self._settled.items():
            counts[cid], costs[cid] = dict(known), spent
        ids = [r.id for r in rows if r.id not in self._settled]
        if ids:
            # Both are answered from indexes: (campaign_id, status, ...) and (campaign_id, cost).
            for cid, status, n in conn.execute(
                sa.select(message_table.c.campaign_id, message_table.c.status, sa.func.count())
                .where(message_table.c.campaign_id.in_(ids))
                .group_by(message_table.c.campaign_id, message_table.c.status)
            ):
                counts[cid][status] = n
            for cid, total in conn.execute(
                sa.select(message_table.c.campaign_id, sa.func.sum(message_table.c.cost))
                .where(message_table.c.campaign_id.in_(ids), message_table.c.cost.is_not(None))
                .group_by(message_table.c.campaign_id)
            ):
                costs[cid] = float(total or 0)
            for cid in settled.intersection(ids):
                self._settled[cid] = (dict(counts[cid]), costs.get(cid, 0.0))

        paused: dict[str, int] = {name: 0 for name, _ in _PAUSE_CLASSES}
        paused["other"] = 0
        for row in rows:
            if row.state == CampaignState.PAUSED:
                paused[pause_class(row.reason)] += 1

        def each(value: Callable[[Any], float]) -> Iterator[tuple[list[str], float]]:
            return (([str(r.id)], value(r)) for r in rows)

        yield from (
            _family(
                "sms_campaign_messages",
                "Messages of a recent campaign by status (ledger counts).",
                ["campaign", "status"],
                (([str(r.id), st], n) for r in rows for st, n in sorted(counts[r.id].items())),
            ),
            _family(
                "sms_campaign_final_messages",
                "Messages of a recent campaign that have a final status.",
                ["campaign"],
                each(lambda r: sum(n for st, n in counts[r.id].items() if st in FINAL_VALUES)),
            ),
            _family(
                "sms_campaign_total_messages",
                "Rows of a recent campaign's list (every one is a message).",
                ["campaign"],
                each(lambda r: sum(counts[r.id].values())),
            ),
            _family(
                "sms_campaign_cost",
                "Cost the gateway reported for a recent campaign.",
                ["campaign"],
                each(lambda r: costs.get(r.id, 0.0)),
            ),
            _family(
                "sms_campaign_state",
                "1 for a recent campaign's current state.",
                ["campaign", "state"],
                (([str(r.id), r.state], 1) for r in rows),
            ),
            _family(
                "sms_campaign_started_timestamp_seconds",
                "When a recent campaign started sending (0: not yet).",
                ["campaign"],
                each(lambda r: _ts(r.started_at)),
            ),
        )
        yield _family(
            "sms_campaigns_paused",
            "Paused campaigns by kind of reason.",
            ["reason"],
            (([name], n) for name, n in paused.items()),
        )

    def _schedules(self, conn: sa.Connection) -> Iterator[Metric]:
        now = utcnow()
        rows = conn.execute(
            sa.select(
                schedule_table.c.name,
                schedule_table.c.cron,
                schedule_table.c.tz,
                schedule_table.c.paused,
                schedule_table.c.last_slot,
                schedule_table.c.missed,
                schedule_table.c.last_error,
            )
        ).all()

        def upcoming(row: Any) -> float:
            if row.paused:
                return 0.0
            try:
                return next_slot(row.cron, row.tz, max(now, row.last_slot or now)).timestamp()
            except ValueError:
                return 0.0

        def each(value: Callable[[Any], float]) -> Iterator[tuple[list[str], float]]:
            return (([row.name], value(row)) for row in rows)

        yield from (
            _family(
                "sms_schedule_next_fire_timestamp_seconds",
                "When a schedule fires next (0 while paused).",
                ["schedule"],
                each(upcoming),
            ),
            _family(
                "sms_schedule_last_slot_timestamp_seconds",
                "The newest slot a schedule decided (fired, failed or missed).",
                ["schedule"],
                each(lambda row: _ts(row.last_slot)),
            ),
            _family(
                "sms_schedule_missed_slots",
                "Slots a schedule missed.",
                ["schedule"],
                each(lambda row: row.missed),
                kind=CounterMetricFamily,
            ),
            _family(
                "sms_schedule_problem",
                "1 when a schedule's last firing had a problem (see `schedule list`).",
                ["schedule"],
                each(lambda row: 1 if row.last_error else 0),
            ),
            _family(
                "sms_schedule_paused",
                "1 while a schedule is paused.",
                ["schedule"],
                each(lambda row: 1 if row.paused else 0),
            ),
        )

    def _outbox(self, conn: sa.Connection) -> Iterator[Metric]:
        by_state = {
            state: n
            for state, n in conn.execute(
                sa.select(outbox_table.c.state, sa.func.count())
                .where(outbox_table.c.state.in_(["pending", "failed"]))
                .group_by(outbox_table.c.state)
            )
        }
        yield _family(
            "sms_webhook_events",
            "Webhook events waiting or given up.",
            ["state"],
            (([name], by_state.get(name, 0)) for name in ("pending", "failed")),
        )
        oldest = conn.execute(
            sa.select(sa.func.min(outbox_table.c.created_at)).where(
                outbox_table.c.state == "pending"
            )
        ).scalar()
        age = 0.0
        if oldest is not None:
            if oldest.tzinfo is None:  # SQLite gives naive UTC for an aggregate
                oldest = oldest.replace(tzinfo=utcnow().tzinfo)
            age = max(0.0, (utcnow() - oldest).total_seconds())
        yield _gauge(
            "sms_webhook_oldest_pending_seconds",
            "Age of the oldest webhook event not yet delivered.",
            age,
        )


class RedisCollector(Collector):
    """What the workers counted (gateway outcomes, latencies, waits) and the gateway circuit."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client

    def collect(self) -> Iterator[Metric]:
        try:
            pipe = self.client.pipeline(transaction=False)
            for spec in counters.SPECS:
                pipe.hgetall(spec.key)
            stored = pipe.execute()
            circuit = _circuit_state(self.client)
            up = 1.0
        except redis.RedisError as exc:
            log.warning("metrics: cannot read Redis: %s", exc)
            stored, circuit, up = [], None, 0.0
        for spec, fields in zip(counters.SPECS, stored, strict=False):
            yield _from_redis(spec, _decoded(fields))
        if up:
            since = circuit.since if circuit is not None else 0.0
            yield _gauge(
                "sms_gateway_circuit_open",
                "1 while the gateway circuit is open (sending holds everywhere).",
                1.0 if circuit is not None else 0.0,
            )
            yield _gauge(
                "sms_gateway_circuit_open_since_timestamp_seconds",
                "When the open gateway circuit opened (0 while closed).",
                since,
            )
        yield _gauge("sms_redis_up", "1 when Redis could be read for this scrape.", up)


def _circuit_state(client: redis.Redis) -> Any:
    try:
        from workers import circuit
    except ImportError:  # a deployment without the breaker: never open
        return None
    return circuit.state(client)


def _decoded(fields: dict[Any, Any]) -> dict[str, float]:
    out = {}
    for key, value in fields.items():
        name = key.decode() if isinstance(key, bytes) else key
        out[name] = float(value)
    return out


def _from_redis(spec: counters.Spec, fields: dict[str, float]) -> Metric:
    name = spec.name.removesuffix("_total")
    if spec.kind == "counter":
        return _family(
            name,
            spec.help,
            spec.labels,
            ((json.loads(key), value) for key, value in sorted(fields.items())),
            kind=CounterMetricFamily,
        )
    hist = HistogramMetricFamily(spec.name, spec.help, labels=list(spec.labels))
    series: dict[str, dict[str, float]] = defaultdict(dict)
    for key, value in fields.items():
        labels, _, part = key.rpartition("|")
        series[labels][part] = value
    edges = [*spec.buckets, float("inf")]
    for labels, parts in sorted(series.items()):
        running = 0.0
        buckets = []
        for index, edge in enumerate(edges):
            running += parts.get(str(index), 0.0)
            buckets.append((_le(edge), running))
        hist.add_metric(json.loads(labels), buckets, parts.get("sum", 0.0))
    return hist


def _le(edge: float) -> str:
    return "+Inf" if edge == float("inf") else repr(float(edge))


def _family(
    name: str,
    help_text: str,
    labels: Iterable[str],
    samples: Iterable[tuple[list[str], float]],
    *,
    kind: type[GaugeMetricFamily] | type[CounterMetricFamily] = GaugeMetricFamily,
) -> Metric:
    """A labelled family with one sample per (label values, value), in the order given."""
    family = kind(name, help_text, labels=list(labels))
    for values, value in samples:
        family.add_metric(values, value)
    return family


def _gauge(name: str, help_text: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, help_text, value=value)


def build_registry(engine: sa.Engine, client: redis.Redis, settings: Settings) -> CollectorRegistry:
    """A registry holding only our collectors (no process or platform metrics)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(LedgerCollector(engine, settings.metrics_recent))
    registry.register(RedisCollector(client))
    return registry


def registry_from_settings(settings: Settings) -> CollectorRegistry:
    from workers.database import ensure_schema

    client = redis.Redis.from_url(settings.redis_url, socket_timeout=2, socket_connect_timeout=2)
    return build_registry(ensure_schema(settings), client, settings)


def wsgi_app(settings: Settings) -> Callable[..., Iterable[bytes]]:
    """A WSGI app serving the Prometheus text format (mount it at /metrics)."""
    return make_wsgi_app(registry_from_settings(settings))


def asgi_app(settings: Settings) -> Any:
    """An ASGI app serving the Prometheus text format (the API mounts it at /metrics)."""
    from prometheus_client import make_asgi_app

    return make_asgi_app(registry_from_settings(settings))


def serve(settings: Settings, port: int, addr: str = "0.0.0.0") -> Any:
    """Serve /metrics on `port` from a background thread; returns the server."""
    server, _thread = start_http_server(port, addr=addr, registry=registry_from_settings(settings))
    return server
