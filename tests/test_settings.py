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


# --- names we do not know, and a gateway that is not set ----------------------------------


def test_unknown_toml_key_names_it_and_the_nearest_known_one(tmp_path):
    (tmp_path / "sms-dispatch.toml").write_text('send_rat = 10\ngateway_url = "http://gw:1"\n')
    with pytest.raises(SettingsError) as err:
        load_settings()
    assert str(err.value) == "sms-dispatch.toml: unknown key 'send_rat'; did you mean 'send_rate'?"


def test_unknown_toml_key_without_a_near_one_is_still_an_error(tmp_path, monkeypatch):
    config = tmp_path / "elsewhere.toml"
    config.write_text("[smtp]\nhost = 'mail'\n")
    monkeypatch.setenv("SMS_CONFIG", str(config))
    with pytest.raises(SettingsError) as err:
        load_settings()
    assert str(err.value) == f"{config}: unknown key 'smtp'"


def test_broken_toml_is_one_line_naming_the_file(tmp_path):
    (tmp_path / "sms-dispatch.toml").write_text("send_rate = = 3\n")
    with pytest.raises(SettingsError, match=r"^sms-dispatch.toml: ") as err:
        load_settings()
    assert "\n" not in str(err.value)


def test_misspelt_environment_variable_is_an_error(monkeypatch):
    monkeypatch.setenv("SMS_SEND_RAT", "10")
    with pytest.raises(SettingsError) as err:
        load_settings()
    assert str(err.value) == "SMS_SEND_RAT: unknown setting; did you mean SMS_SEND_RATE?"


@pytest.mark.parametrize(
    "name", ["SMS_CONFIG_X", "SMS_TEST_REDIS_URL", "SMS_BENCH_RUNS", "SMS_CHAOS_SCALE", "SMS_USER"]
)
def test_variables_of_other_programs_and_of_tests_are_left_alone(monkeypatch, name):
    # Only names that look like a misspelt setting are refused; SMS_ is a common prefix.
    monkeypatch.setenv(name, "x")
    load_settings()


def test_unknown_override_is_an_error():
    with pytest.raises(SettingsError, match=r"^unknown setting 'gateway_uri' \(did you mean "):
        load_settings(gateway_uri="http://gw:1")


def test_there_is_no_default_gateway_url():
    s = load_settings()
    assert s.gateway_url is None
    with pytest.raises(SettingsError, match=r"^SMS_GATEWAY_URL is not set: "):
        s.require_gateway()


def test_a_gateway_key_is_required_too(monkeypatch):
    monkeypatch.setenv("SMS_GATEWAY_URL", "https://gw.example")
    with pytest.raises(SettingsError, match=r"^SMS_GATEWAY_KEY is not set: "):
        load_settings().require_gateway()
    monkeypatch.setenv("SMS_GATEWAY_KEY", "k")
    load_settings().require_gateway()


def test_settings_as_env_give_a_child_process_the_same_settings(monkeypatch, tmp_path):
    # Every field, not a hand-kept list: a child process (a worker, the CLI) started with
    # these variables reads settings equal to the parent's, secrets and lists included.
    parent = load_settings(
        data_dir=tmp_path / "data",
        gateway_url="http://127.0.0.1:9",
        gateway_key="k\u00e5-secret",
        poll_backoff=[0.3, 0.5, 1.0],
        reserved_high="25%",
        daily_cost_cap="12.50",
        submit_lease=3.0,
        webhook_interval=0.5,
    )
    env = parent.as_env()
    assert "SMS_DATABASE_URL" not in env  # unset stays unset
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert load_settings() == parent
