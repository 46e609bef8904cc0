"""Settings for sms-dispatch: one typed object from `SMS_*` variables and a TOML file."""

from config.settings import (
    Duration,
    Settings,
    SettingsError,
    UserError,
    format_duration,
    get_settings,
    load_settings,
    parse_duration,
    reset_settings,
)

__all__ = [
    "Duration",
    "Settings",
    "SettingsError",
    "UserError",
    "format_duration",
    "get_settings",
    "load_settings",
    "parse_duration",
    "reset_settings",
]
