"""The one settings object: `SMS_*` environment variables over an optional TOML file."""

from __future__ import annotations

import difflib
import os
import re
import tomllib
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

ENV_PREFIX = "SMS_"
DEFAULT_CONFIG_FILE = "sms-dispatch.toml"
# SMS_* variables that are not settings: the config file's path, and what tests and benchmarks
# read for themselves.
_NOT_SETTINGS = ("SMS_CONFIG",)
_NOT_SETTINGS_PREFIXES = ("SMS_TEST_", "SMS_BENCH_", "SMS_CHAOS_")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")


class UserError(Exception):
    """A failure the user can act on from its message alone.

    The CLI prints it as one line (no traceback) and the API as a problem's `detail`; every
    such error derives from this one class, so a new one cannot be left out of either.
    """


class SettingsError(UserError, ValueError):
    """A setting has a value we cannot use; the message is one line naming it."""


def parse_duration(value: Any) -> float:
    """`90s`, `15m`, `48h`, `2d`, `250ms` or a bare number of seconds, as seconds."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return float(value)
    match = _DURATION.match(str(value))
    if not match:
        raise ValueError(f"{value!r} is not a duration (write 90s, 15m, 48h or seconds)")
    number, unit = match.groups()
    return float(number) * _UNITS[unit or "s"]


def format_duration(seconds: float) -> str:
    """The shortest exact spelling of a duration, for messages and `--json` output."""
    for unit in ("d", "h", "m", "s"):
        size = _UNITS[unit]
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


Duration = Annotated[float, BeforeValidator(parse_duration)]


def parse_share(value: Any) -> float:
    """`20%` or `0.2` as a fraction between 0 and 0.9."""
    text = str(value).strip()
    try:
        share = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise ValueError(f"{value!r} is not a share (write 20% or 0.2)") from None
    if not 0 <= share <= 0.9:
        raise ValueError(f"{value!r} must be between 0% and 90%")
    return share


def _config_file() -> Path | None:
    explicit = os.environ.get(f"{ENV_PREFIX}CONFIG")
    if explicit:
        return Path(explicit)
    default = Path(DEFAULT_CONFIG_FILE)
    return default if default.is_file() else None


class Settings(BaseSettings):
    """Every knob of the service. Durations are seconds (parsed from `90s`, `15m`, `48h`)."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    # The gateway account. No default address: sending to a guessed one would fail every
    # message (or reach the wrong gateway); `require_gateway` says what is missing.
    gateway_url: str | None = None
    gateway_key: SecretStr = SecretStr("")
    gateway_method: Literal["POST", "GET"] = "POST"
    gateway_response: Literal["json", "numeric"] = "json"
    gateway_timeout: Duration = 10.0
    gateway_connect_timeout: Duration = 3.0

    # Where things live. No broker URL means the embedded Redis under data_dir.
    data_dir: Path = Path(".sms-dispatch")
    database_url: str | None = None
    broker_url: str | None = None

    # Producer.
    region: str = "SE"
    tz: str = "UTC"
    max_parts: int = Field(6, ge=1, le=255)
    unit_cost: Decimal = Decimal("0.05")
    batch_size: int = Field(1000, ge=1, le=10_000)
    # A campaign still `loading` after this long lost its producer (killed mid-list).
    loading_timeout: Duration = 6 * 3600.0

    # Sending.
    send_rate: float = Field(50.0, gt=0)
    # Every message costs at least one look-up, so look-ups must keep pace with sends or
    # reports fall further behind for the whole campaign: twice the send rate by default.
    poll_rate: float = Field(100.0, gt=0)
    concurrency: int = Field(32, ge=1, le=512)
    max_attempts: int = Field(5, ge=1)
    retry_base: Duration = 5.0
    retry_max: Duration = 300.0
    # How long a batch's claim on its messages lasts without a renewal (renewed every quarter
    # of it): a worker that dies loses its claims this long after, a paused one stops sending.
    submit_lease: Duration = 10.0
    # A batch notice blocks a second notice for the same batch this long at most; report
    # look-ups handed out are leased as long (a killed worker's are issued again after it).
    notice_lease: Duration = 30.0
    # This many gateway-trouble answers in a row (any worker) open the gateway circuit.
    circuit_threshold: int = Field(10, ge=1)
    # Lanes: the share of the account rate kept free for the high lane while it has work
    # (it takes the whole rate when the others are idle), written `20%` or `0.2`.
    reserved_high: Annotated[float, BeforeValidator(parse_share)] = 0.2
    # Account spending caps per UTC day and month, in the gateway's currency (None: none).
    daily_cost_cap: Decimal | None = None
    monthly_cost_cap: Decimal | None = None
    notices_ahead: int = Field(8, ge=1, le=1000)
    unknown_recheck: Duration = 5.0

    # Tracking.
    validity: Duration = 48 * 3600.0
    # How long "not found" is not believed for a request that may have left (a gateway may
    # register a message a little after accepting it). Three request timeouts: a request the
    # gateway got has been handled by then, and a worker killed mid-request costs its
    # in-flight messages this long, not minutes.
    report_grace: Duration = 30.0
    poll_backoff: Annotated[list[Duration], NoDecode] = [10, 30, 60, 120, 300, 900, 3600]
    # Look-ups per task: small, so a look-up task ends in well under a second.
    poll_chunk: int = Field(10, ge=1, le=5000)

    # Scheduling.
    schedule_grace: Duration = 3600.0
    schedule_interval: Duration = 15.0

    # Compliance: how long numbers and texts of finished messages are kept, when the nightly
    # retention sweep runs (UTC), how many rows it blanks per transaction, and the secret
    # erased numbers are hashed with (empty: a key file in data_dir for a SQLite ledger).
    retention: Duration = Field(90 * 86400.0, gt=0)
    retention_at: str = Field("03:15", pattern=r"^([01]\d|2[0-3]):[0-5]\d$")
    retention_chunk: int = Field(2000, ge=100, le=100_000)
    retention_duty: float = Field(0.25, gt=0, le=1)  # share of time the sweep works; rests after
    erasure_secret: SecretStr = SecretStr("")

    # The HTTP API and dashboard (`sms-dispatch serve`, and `run` unless --no-api).
    api_host: str = "127.0.0.1"
    api_port: int = Field(8000, ge=0, le=65535)
    # Signs the dashboard's session cookie; empty: a random key kept in data_dir/api-secret.
    api_secret: SecretStr = SecretStr("")
    api_max_upload: int = Field(512 * 1024 * 1024, ge=1024)  # bytes of one list upload
    api_page_size: int = Field(50, ge=1, le=1000)

    # Beat ticks.
    dispatch_interval: Duration = 1.0
    poll_interval: Duration = 2.0
    sweep_interval: Duration = 60.0

    # Observation (metrics and webhooks).
    metrics_port: int = Field(9108, ge=1, le=65535)
    # Campaigns keep their own metric labels while unfinished and this long after finishing.
    metrics_recent: Duration = 24 * 3600.0
    webhook_url: str | None = None
    webhook_secret: SecretStr = SecretStr("")  # `whsec_` + base64, per Standard Webhooks
    webhook_timeout: Duration = 10.0
    webhook_retry_base: Duration = 5.0
    webhook_retry_max: Duration = 3600.0
    webhook_give_up: Duration = 24 * 3600.0  # retried this long after the event, then failed
    webhook_interval: Duration = 2.0  # the beat tick that hands out due deliveries
    webhook_retention: Duration = 7 * 86400.0  # delivered events kept this long for replays

    @field_validator("gateway_method", "gateway_response", mode="before")
    @classmethod
    def _case_insensitive(cls, value: Any, info: Any) -> Any:
        if not isinstance(value, str):
            return value
        return value.upper() if info.field_name == "gateway_method" else value.lower()

    @field_validator("gateway_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        if not re.match(r"^https?://[^/\s]+", value):
            raise ValueError(f"{value!r} is not an http(s) URL")
        return value.rstrip("/")

    @field_validator("webhook_url")
    @classmethod
    def _webhook_url(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        if not re.match(r"^https?://[^/\s]+", value):
            raise ValueError(f"{value!r} is not an http(s) URL")
        return value

    @field_validator("webhook_secret")
    @classmethod
    def _webhook_secret(cls, value: SecretStr) -> SecretStr:
        import base64
        import binascii

        raw = value.get_secret_value()
        if raw:
            try:
                key = base64.b64decode(raw.removeprefix("whsec_"), validate=True)
            except (binascii.Error, ValueError):
                key = b""
            if len(key) < 16:
                raise ValueError("must be whsec_ followed by base64 of 16 to 64 random bytes")
        return value

    @field_validator("poll_backoff", mode="before")
    @classmethod
    def _comma_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part for part in value.split(",") if part.strip()]
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        path = _config_file()
        if path is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        return tuple(sources)

    @property
    def sqlalchemy_url(self) -> str:
        """The ledger's URL: the configured one, else a SQLite file under the data dir."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'ledger.db').resolve()}"

    @property
    def redis_socket(self) -> Path:
        """The unix socket of the embedded Redis."""
        return (self.data_dir / "redis.sock").resolve()

    @property
    def celery_broker_url(self) -> str:
        """The broker Celery uses: the configured one, else the embedded Redis socket."""
        return self.broker_url or f"redis+socket://{self.redis_socket}"

    @property
    def redis_url(self) -> str:
        """The Redis that holds rate limits and notice leases (the broker's Redis)."""
        if not self.broker_url:
            return f"unix://{self.redis_socket}"
        if not self.broker_url.startswith(("redis://", "rediss://", "redis+socket://")):
            raise SettingsError(f"{ENV_PREFIX}BROKER_URL: only a Redis broker is supported")
        return self.broker_url.replace("redis+socket://", "unix://", 1)

    @property
    def embedded(self) -> bool:
        """True when the project runs its own Redis (no `SMS_BROKER_URL`)."""
        return not self.broker_url

    def as_env(self) -> dict[str, str]:
        """These settings as `SMS_*` variables, for a child process that should read exactly
        them: every field that has a value, written back in a form its validator reads.

        Built from the fields themselves, so a setting added later cannot be left out.
        Optional fields that are None (no broker URL, no cost cap) are left out: unset is None.
        """
        env: dict[str, str] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, SecretStr):
                text = value.get_secret_value()
            elif isinstance(value, list):
                text = ",".join(str(item) for item in value)
            else:
                text = str(value)
            env[f"{ENV_PREFIX}{name.upper()}"] = text
        return env

    def require_gateway(self) -> None:
        """Raise a one-line SettingsError unless the gateway's address and key are set."""
        if not self.gateway_url:
            raise SettingsError(
                f"{ENV_PREFIX}GATEWAY_URL is not set: give the gateway's address, e.g. "
                f"{ENV_PREFIX}GATEWAY_URL=https://gateway.example (or gateway_url in the TOML file)"
            )
        if not self.gateway_key.get_secret_value():
            raise SettingsError(
                f"{ENV_PREFIX}GATEWAY_KEY is not set: give the account's API key "
                f"(or gateway_key in the TOML file)"
            )


def _nearest(name: str, known: list[str], cutoff: float = 0.6) -> str | None:
    found = difflib.get_close_matches(name, known, n=1, cutoff=cutoff)
    return found[0] if found else None


def _check_names(path: Path | None, overrides: dict[str, Any]) -> None:
    """Refuse settings we do not know: a misspelt key would otherwise be silently ignored."""
    known = list(Settings.model_fields)
    for key in overrides:
        if key not in known:
            near = _nearest(key, known)
            hint = f" (did you mean {near!r}?)" if near else ""
            raise SettingsError(f"unknown setting {key!r}{hint}")
    if path is not None:
        try:
            with path.open("rb") as fh:
                data = tomllib.load(fh)
        except tomllib.TOMLDecodeError as exc:
            raise SettingsError(f"{path}: {str(exc).splitlines()[0]}") from None
        except OSError as exc:
            raise SettingsError(f"{path}: {exc.strerror or exc}") from None
        for key in data:
            if key not in known:
                near = _nearest(key, known)
                hint = f"; did you mean {near!r}?" if near else ""
                raise SettingsError(f"{path}: unknown key {key!r}{hint}")
    # Other programs may use SMS_* names of their own, so an unknown variable is refused only
    # when it looks like a misspelt setting (SMS_SEND_RAT for SMS_SEND_RATE).
    for name in os.environ:
        upper = name.upper()
        if not upper.startswith(ENV_PREFIX) or upper in _NOT_SETTINGS:
            continue
        if upper.startswith(_NOT_SETTINGS_PREFIXES):
            continue
        key = upper.removeprefix(ENV_PREFIX).lower()
        if key in known:
            continue
        near = _nearest(key, known, cutoff=0.8)
        if near:
            raise SettingsError(
                f"{name}: unknown setting; did you mean {ENV_PREFIX}{near.upper()}?"
            )


def load_settings(**overrides: Any) -> Settings:
    """Build settings, turning any validation problem into a one-line `SettingsError`."""
    path = _config_file()
    if path is not None and not path.is_file():
        raise SettingsError(f"{ENV_PREFIX}CONFIG: no such file {str(path)!r}")
    _check_names(path, overrides)
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        first = exc.errors()[0]
        name = ENV_PREFIX + "_".join(str(p) for p in first["loc"][:1]).upper()
        message = str(first["msg"]).removeprefix("Value error, ")
        raise SettingsError(f"{name}: {message}") from None
    except (OSError, ValueError) as exc:
        # pydantic-settings reports a variable it could not decode by field name.
        field = re.search(r'field "(\w+)"', str(exc))
        where = ENV_PREFIX + field.group(1).upper() if field else str(path)
        raise SettingsError(f"{where}: {str(exc).splitlines()[0]}") from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return load_settings()


def reset_settings() -> None:
    """Forget the cached settings (tests and the CLI change the environment)."""
    get_settings.cache_clear()
