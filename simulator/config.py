"""Settings of the simulated SMS gateway: behaviour, fault injection, and their validation."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

# Final DLR outcomes a message can be given at acceptance.
OUTCOMES = ("delivered", "failed", "undelivered", "expired", "rejected", "deleted", "stuck")

_PROBABILITIES = ("error_5xx", "busy", "late", "drop")
_DURATIONS = ("latency", "jitter", "late_delay", "pending", "sending")
# Fields that only matter when the server starts; changing them live would mean nothing.
STARTUP_ONLY = frozenset({"host", "port", "access_log"})


def parse_mix(value: str | Mapping[str, Any]) -> dict[str, float]:
    """Parse an outcome mix such as ``"delivered=0.9,failed=0.1"`` into normalised weights."""
    if isinstance(value, str):
        raw: dict[str, Any] = {}
        for item in value.split(","):
            item = item.strip()
            if not item:
                continue
            name, sep, weight = item.partition("=")
            if not sep:
                raise ValueError(f"mix item {item!r} is not outcome=weight")
            raw[name.strip()] = weight.strip()
    elif isinstance(value, Mapping):
        raw = dict(value)
    else:
        raise ValueError("mix must be a string or an object")
    weights: dict[str, float] = {}
    for name, weight in raw.items():
        if name not in OUTCOMES:
            raise ValueError(f"unknown outcome {name!r} in mix (known: {', '.join(OUTCOMES)})")
        try:
            number = float(weight)
        except (TypeError, ValueError):
            raise ValueError(f"weight of {name!r} is not a number: {weight!r}") from None
        if not number >= 0:
            raise ValueError(f"weight of {name!r} must be >= 0")
        if number:
            weights[name] = number
    total = sum(weights.values())
    if total <= 0:
        raise ValueError("mix needs at least one outcome with a positive weight")
    return {name: weight / total for name, weight in weights.items()}


def _decimal(name: str, value: Any) -> Decimal:
    if isinstance(value, bool):
        raise ValueError(f"{name} must be a number")
    try:
        # str() first so 0.1 becomes Decimal("0.1"), not its binary expansion.
        number = value if isinstance(value, Decimal) else Decimal(str(value))
    except (InvalidOperation, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if not number.is_finite() or number < 0:
        raise ValueError(f"{name} must be a finite number >= 0")
    return number


def _float(name: str, value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError(f"{name} must be a number")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if not 0 <= number < float("inf"):
        raise ValueError(f"{name} must be a finite number >= 0")
    return number


@dataclass
class SimulatorConfig:
    """Everything the simulator does; all but host/port/access_log can change while running."""

    host: str = "127.0.0.1"
    port: int = 8080
    key: str = "test-key"
    allow_ips: list[str] = field(default_factory=list)
    credit: Decimal | None = None
    price: Decimal = Decimal("0.05")
    latency: float = 0.0
    jitter: float = 0.0
    error_5xx: float = 0.0
    busy: float = 0.0
    late: float = 0.0
    late_delay: float = 30.0
    drop: float = 0.0
    max_rate: float | None = None
    pending: float = 1.0
    sending: float = 2.0
    mix: dict[str, float] = field(default_factory=lambda: {"delivered": 1.0})
    force: dict[str, str] = field(default_factory=dict)
    seed: int | None = None
    access_log: bool = False

    def __post_init__(self) -> None:
        self._normalise()

    def _normalise(self) -> None:
        """Coerce loosely typed values (JSON, CLI strings) and reject impossible ones."""
        if not isinstance(self.key, str) or not self.key:
            raise ValueError("key must be a non-empty string")
        if isinstance(self.allow_ips, str):
            self.allow_ips = [ip.strip() for ip in self.allow_ips.split(",") if ip.strip()]
        if not isinstance(self.allow_ips, list | tuple) or not all(
            isinstance(ip, str) for ip in self.allow_ips
        ):
            raise ValueError("allow_ips must be a list of IP address strings")
        self.allow_ips = list(self.allow_ips)
        self.credit = None if self.credit is None else _decimal("credit", self.credit)
        self.price = _decimal("price", self.price)
        for name in _DURATIONS:
            setattr(self, name, _float(name, getattr(self, name)))
        for name in _PROBABILITIES:
            value = _float(name, getattr(self, name))
            if value > 1:
                raise ValueError(f"{name} is a probability and must be within 0..1")
            setattr(self, name, value)
        if self.max_rate is not None:
            self.max_rate = _float("max_rate", self.max_rate)
            if self.max_rate <= 0:
                raise ValueError("max_rate must be > 0 (or null for no limit)")
        self.mix = parse_mix(self.mix)
        if not isinstance(self.force, Mapping):
            raise ValueError("force must be an object of mobile -> outcome")
        for mobile, outcome in self.force.items():
            if outcome not in OUTCOMES:
                raise ValueError(f"force[{mobile!r}]: unknown outcome {outcome!r}")
        self.force = {str(mobile): outcome for mobile, outcome in self.force.items()}
        if self.seed is not None and (
            isinstance(self.seed, bool) or not isinstance(self.seed, int)
        ):
            raise ValueError("seed must be an integer or null")
        if (
            isinstance(self.port, bool)
            or not isinstance(self.port, int)
            or not 0 <= self.port < 65536
        ):
            raise ValueError("port must be an integer within 0..65535")

    def update(self, fields: Mapping[str, Any]) -> None:
        """Apply live changes, all or nothing: a bad value leaves the config untouched."""
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(fields) - known)
        if unknown:
            raise ValueError(f"unknown config field(s): {', '.join(unknown)}")
        fixed = sorted(name for name in fields if name in STARTUP_ONLY)
        if fixed:
            raise ValueError(f"cannot change {', '.join(fixed)} while running")
        candidate = dataclasses.replace(self, **fields)  # runs the validation
        for name in fields:
            setattr(self, name, getattr(candidate, name))

    def to_json(self, *, with_key: bool = True) -> dict[str, Any]:
        """JSON-ready view: money as strings, the rest as plain JSON types.

        Over HTTP the key is always left out (`with_key=False`): it is the gateway's secret.
        """
        data = dataclasses.asdict(self)
        if not with_key:
            data["key"] = "***"
        data["credit"] = None if self.credit is None else str(self.credit)
        data["price"] = str(self.price)
        return data
