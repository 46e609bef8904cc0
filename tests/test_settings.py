"""Settings: environment over TOML over defaults, durations, one-line errors, a masked key."""

from __future__ import annotations

import pytest

from config import SettingsError, format_duration, load_settings, parse_duration


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    for name in list(__import__("os").environ):
        if name.startswith("SMS_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("15m", 900), ("48h", 172800), ("2d", 172800), ("250ms", 0.25), ("30", 30)],
)
def test_durations_are_read_in_their_units(text, seconds):
    assert parse_duration(text) == seconds


def test_durations_print_back_in_their_shortest_form():
    assert [format_duration(s) for s in (90, 900, 172800, 1.5)] == ["90s", "15m", "2d", "1.5s"]


def test_environment_variables_set_values(monkeypatch):
    monkeypatch.setenv("SMS_GATEWAY_TIMEOUT", "15m")
    monkeypatch.setenv("SMS_GATEWAY_METHOD", "get")
    monkeypatch.setenv("SMS_POLL_BACKOFF", "5s,1m")
    s = load_settings()
    assert (s.gateway_timeout, s.gateway_method, s.poll_backoff) == (900, "GET", [5, 60])


def test_bad_value_is_one_line_naming_the_variable(monkeypatch):
    monkeypatch.setenv("SMS_GATEWAY_TIMEOUT", "soon")
    with pytest.raises(SettingsError) as err:
        load_settings()
    assert str(err.value).startswith("SMS_GATEWAY_TIMEOUT: ")
    assert "\n" not in str(err.value)


def test_bad_method_names_the_variable(monkeypatch):
    monkeypatch.setenv("SMS_GATEWAY_METHOD", "PUT")
    with pytest.raises(SettingsError, match=r"^SMS_GATEWAY_METHOD: "):
        load_settings()


def test_toml_file_is_read_and_environment_wins(monkeypatch, tmp_path):
    (tmp_path / "sms-dispatch.toml").write_text(
        'gateway_url = "http://gw.example:9000/"\nvalidity = "24h"\nsend_rate = 10\n'
    )
    monkeypatch.setenv("SMS_SEND_RATE", "99")
    s = load_settings()
    assert (s.gateway_url, s.validity, s.send_rate) == ("http://gw.example:9000", 86400, 99)


def test_missing_config_file_is_an_error(monkeypatch, tmp_path):
    monkeypatch.setenv("SMS_CONFIG", str(tmp_path / "nope.toml"))
    with pytest.raises(SettingsError, match=r"^SMS_CONFIG: no such file"):
        load_settings()


def test_key_is_masked_in_repr_and_str(monkeypatch):
    monkeypatch.setenv("SMS_GATEWAY_KEY", "very-secret-key")
    s = load_settings()
    assert "very-secret-key" not in repr(s) and "very-secret-key" not in str(s)
    assert s.gateway_key.get_secret_value() == "very-secret-key"


def test_example_config_file_loads(monkeypatch):
    from pathlib import Path

    example = Path(__file__).resolve().parent.parent / "config" / "sms-dispatch.example.toml"
    monkeypatch.setenv("SMS_CONFIG", str(example))
    s = load_settings()
    assert s.poll_backoff[0] == 10 and s.validity == 48 * 3600
