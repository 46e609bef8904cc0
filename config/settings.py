"""The one settings object: `SMS_*` environment variables over an optional TOML file."""

from __future__ import annotations

import os
import re
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
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")


class SettingsError(ValueError):
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


def _config_file() -> Path | None:
    explicit = os.environ.get(f"{ENV_PREFIX}CONFIG")
    if explicit:
        return Path(explicit)
    default = Path(DEFAULT_CONFIG_FILE)
    return default if default.is_file() else None


class Settings(BaseSettings):
    """Every knob of the service. Durations are seconds (parsed from `90s`, `15m`, `48h`)."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    # The gateway account.
    gateway_url: str = "http://127.0.0.1:8080"
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
    poll_rate: float = Field(20.0, gt=0)
    concurrency: int = Field(32, ge=1, le=512)
    max_attempts: int = Field(5, ge=1)
    retry_base: Duration = 5.0
    retry_max: Duration = 300.0
    submit_lease: Duration = 120.0
    notice_lease: Duration = 60.0
    notices_ahead: int = Field(8, ge=1, le=1000)
    unknown_recheck: Duration = 5.0

    # Tracking.
    validity: Duration = 48 * 3600.0
    report_grace: Duration = 600.0
    poll_backoff: Annotated[list[Duration], NoDecode] = [10, 30, 60, 120, 300, 900, 3600]
    poll_chunk: int = Field(100, ge=1, le=5000)

    # Scheduling.
    schedule_grace: Duration = 3600.0
    schedule_interval: Duration = 15.0

    # Beat ticks.
    dispatch_interval: Duration = 1.0
    poll_interval: Duration = 2.0
    sweep_interval: Duration = 60.0

    @field_validator("gateway_method", "gateway_response", mode="before")
    @classmethod
    def _case_insensitive(cls, value: Any, info: Any) -> Any:
        if not isinstance(value, str):
            return value
        return value.upper() if info.field_name == "gateway_method" else value.lower()

    @field_validator("gateway_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not re.match(r"^https?://[^/\s]+", value):
            raise ValueError(f"{value!r} is not an http(s) URL")
        return value.rstrip("/")

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


def load_settings(**overrides: Any) -> Settings:
    """Build settings, turning any validation problem into a one-line `SettingsError`."""
    path = _config_file()
    if path is not None and not path.is_file():
        raise SettingsError(f"{ENV_PREFIX}CONFIG: no such file {str(path)!r}")
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
