"""Tests of migrator.config: every variable validated once, one clear line per problem."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import pytest

from migrator.config import Settings, load_settings, read_environment
from migrator.exceptions import ConfigError

TOKEN = "seg-SECRET-token-3f9a"
SECRET_KEY = "vf-SECRET-key-81bc"

REQUIRED = {
    "SEGMENT_ACCESS_TOKEN": TOKEN,
    "SEGMENT_SPACE_ID": "spa_123",
    "VOUCHERIFY_APPLICATION_ID": "app-id-1",
    "VOUCHERIFY_SECRET_KEY": SECRET_KEY,
}


def env(**extra: str) -> dict[str, str]:
    return {**REQUIRED, **extra}


def config_error(values: dict[str, str]) -> str:
    with pytest.raises(ConfigError) as info:
        load_settings(values)
    message = str(info.value)
    assert "\n" not in message, "a ConfigError is one line"
    return message


# -- required variables ------------------------------------------------------------------


@pytest.mark.parametrize("name", list(REQUIRED), ids=list(REQUIRED))
@pytest.mark.parametrize("value", [None, "", "   "], ids=["absent", "empty", "blank"])
def test_missing_required_variable_is_named(name: str, value: str | None) -> None:
    values = env()
    if value is None:
        del values[name]
    else:
        values[name] = value
    message = config_error(values)
    assert message.startswith(f"{name} is not set: expected ")
    for other in REQUIRED.keys() - {name}:
        assert other not in message


def test_required_values_are_stripped() -> None:
    settings = load_settings({k: f"  {v}\t" for k, v in REQUIRED.items()})
    assert settings.segment_space_id == "spa_123"
    assert settings.secrets == (TOKEN, SECRET_KEY)


# -- numbers -----------------------------------------------------------------------------

BAD_NUMBERS = [
    ("SEGMENT_REQUEST_LIMIT", "0", "out of range"),
    ("SEGMENT_REQUEST_LIMIT", "101", "out of range"),
    ("SEGMENT_REQUEST_LIMIT", "-5", "out of range"),
    ("SEGMENT_REQUEST_LIMIT", "ten", "not valid"),
    ("SEGMENT_REQUEST_LIMIT", "1.5", "not valid"),
    ("SEGMENT_TRAITS_LIMIT", "0", "out of range"),
    ("SEGMENT_TRAITS_LIMIT", "201", "out of range"),
    ("SEGMENT_TRAITS_LIMIT", "1e2", "not valid"),
    ("MAX_ATTEMPTS", "0", "out of range"),
    ("MAX_ATTEMPTS", "101", "out of range"),
    ("MAX_ATTEMPTS", "three", "not valid"),
    ("SEGMENT_RATE_LIMIT", "0", "out of range"),
    ("SEGMENT_RATE_LIMIT", "0.05", "out of range"),
    ("SEGMENT_RATE_LIMIT", "-1", "out of range"),
    ("SEGMENT_RATE_LIMIT", "100001", "out of range"),
    ("SEGMENT_RATE_LIMIT", "nan", "out of range"),
    ("SEGMENT_RATE_LIMIT", "inf", "out of range"),
    ("SEGMENT_RATE_LIMIT", "fast", "not valid"),
    ("VOUCHERIFY_RATE_LIMIT", "0.5", "out of range"),
    ("VOUCHERIFY_RATE_LIMIT", "1000001", "out of range"),
    ("VOUCHERIFY_RATE_LIMIT", "100/min", "not valid"),
    ("REQUEST_TIMEOUT", "0", "out of range"),
    ("REQUEST_TIMEOUT", "3601", "out of range"),
    ("REQUEST_TIMEOUT", "-inf", "out of range"),
    ("REQUEST_TIMEOUT", "30s", "not valid"),
]


@pytest.mark.parametrize(
    ("name", "value", "problem"), BAD_NUMBERS, ids=[f"{n}={v}" for n, v, _ in BAD_NUMBERS]
)
def test_bad_number_is_refused(name: str, value: str, problem: str) -> None:
    message = config_error(env(**{name: value}))
    assert message.startswith(f"{name}=")
    assert problem in message
    assert "expected a" in message and " from " in message


GOOD_NUMBERS = [
    ("SEGMENT_REQUEST_LIMIT", "1", "segment_request_limit", 1),
    ("SEGMENT_REQUEST_LIMIT", " 100 ", "segment_request_limit", 100),
    ("SEGMENT_TRAITS_LIMIT", "1", "segment_traits_limit", 1),
    ("SEGMENT_TRAITS_LIMIT", "200", "segment_traits_limit", 200),
    ("MAX_ATTEMPTS", "1", "max_attempts", 1),
    ("MAX_ATTEMPTS", "100", "max_attempts", 100),
    ("SEGMENT_RATE_LIMIT", "0.1", "segment_rate_limit", 0.1),
    ("SEGMENT_RATE_LIMIT", "2.5", "segment_rate_limit", 2.5),
    ("SEGMENT_RATE_LIMIT", "100000", "segment_rate_limit", 100_000.0),
    ("VOUCHERIFY_RATE_LIMIT", "1", "voucherify_rate_limit", 1.0),
    ("VOUCHERIFY_RATE_LIMIT", "2000", "voucherify_rate_limit", 2000.0),
    ("REQUEST_TIMEOUT", "0.1", "request_timeout", 0.1),
    ("REQUEST_TIMEOUT", "3600", "request_timeout", 3600.0),
]


@pytest.mark.parametrize(
    ("name", "value", "attribute", "expected"),
    GOOD_NUMBERS,
    ids=[f"{n}={v.strip()}" for n, v, _, _ in GOOD_NUMBERS],
)
def test_number_in_range_is_accepted(
    name: str, value: str, attribute: str, expected: float
) -> None:
    result = getattr(load_settings(env(**{name: value})), attribute)
    assert result == expected
    assert type(result) is type(expected)


@pytest.mark.parametrize("blank", [None, "", "  "], ids=["absent", "empty", "blank"])
def test_defaults(blank: str | None) -> None:
    optional = [
        "SEGMENT_REQUEST_LIMIT",
        "SEGMENT_TRAITS_LIMIT",
        "MAX_ATTEMPTS",
        "SEGMENT_RATE_LIMIT",
        "VOUCHERIFY_RATE_LIMIT",
        "REQUEST_TIMEOUT",
        "SEGMENT_API_URL",
        "VOUCHERIFY_API_URL",
        "IDENTIFIER_SAVED_AS_SOURCE_ID",
    ]
    values = env() if blank is None else env(**dict.fromkeys(optional, blank))
    settings = load_settings(values)
    assert settings.segment_request_limit == 100
    assert settings.segment_traits_limit == 200
    assert settings.max_attempts == 8
    assert settings.segment_rate_limit == 100.0
    assert settings.voucherify_rate_limit == 100.0
    assert settings.request_timeout == 30.0
    assert settings.segment_api_url == "https://profiles.segment.com"
    assert settings.voucherify_api_url == "https://api.voucherify.io"
    assert settings.identifier == "user_id"


# -- URLs --------------------------------------------------------------------------------

URL_VARIABLES = ["SEGMENT_API_URL", "VOUCHERIFY_API_URL"]
URL_ATTRIBUTE = {"SEGMENT_API_URL": "segment_api_url", "VOUCHERIFY_API_URL": "voucherify_api_url"}

MALFORMED_URLS = [
    "profiles.segment.com",
    "://host",
    "https://",
    "https:///path",
    "ftp://files.example.com",
    "mailto:someone@example.com",
    "https://host:port",
    "https://host:99999",
    "https://[::1",
    "https://exa mple.com",
]


@pytest.mark.parametrize("name", URL_VARIABLES)
@pytest.mark.parametrize("url", MALFORMED_URLS, ids=MALFORMED_URLS)
def test_malformed_url_is_refused(name: str, url: str) -> None:
    message = config_error(env(**{name: url}))
    assert message.startswith(f"{name}={url!r} is not a valid URL")


PLAIN_HTTP_REFUSED = [
    "http://api.voucherify.io",
    "http://profiles.segment.com:80",
    "http://10.0.0.5:8080",
    "http://192.168.1.1",
    "http://localhost.evil.example",
    "http://[2001:db8::1]:9",
]


@pytest.mark.parametrize("name", URL_VARIABLES)
@pytest.mark.parametrize("url", PLAIN_HTTP_REFUSED, ids=PLAIN_HTTP_REFUSED)
def test_plain_http_to_remote_host_is_refused(name: str, url: str) -> None:
    message = config_error(env(**{name: url}))
    assert message.startswith(f"{name}={url!r} uses plain http: expected https://")


ACCEPTED_URLS = [
    ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
    ("http://localhost", "http://localhost"),
    ("http://LOCALHOST:9000/", "http://LOCALHOST:9000"),
    ("http://[::1]:9", "http://[::1]:9"),
    ("http://127.0.0.2:1234", "http://127.0.0.2:1234"),
    ("https://api.voucherify.io", "https://api.voucherify.io"),
    ("https://us1.api.voucherify.io/", "https://us1.api.voucherify.io"),
    ("https://profiles.euw1.segment.com///", "https://profiles.euw1.segment.com"),
    ("https://proxy.example.com:8443/base/", "https://proxy.example.com:8443/base"),
    ("  https://api.voucherify.io  ", "https://api.voucherify.io"),
]


@pytest.mark.parametrize("name", URL_VARIABLES)
@pytest.mark.parametrize(("url", "expected"), ACCEPTED_URLS, ids=[u for u, _ in ACCEPTED_URLS])
def test_url_accepted_and_trailing_slash_stripped(name: str, url: str, expected: str) -> None:
    assert getattr(load_settings(env(**{name: url})), URL_ATTRIBUTE[name]) == expected


# -- identifier --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, "user_id"), ("", "user_id"), ("email", "email"), (" anonymous_id ", "anonymous_id")],
    ids=["absent", "empty", "email", "stripped"],
)
def test_identifier(value: str | None, expected: str) -> None:
    values = env() if value is None else env(IDENTIFIER_SAVED_AS_SOURCE_ID=value)
    assert load_settings(values).identifier == expected


@pytest.mark.parametrize("value", ["user id", "user_id,email", "user_id:42", "a/b"])
def test_identifier_that_cannot_be_an_external_id_type_is_refused(value: str) -> None:
    message = config_error(env(IDENTIFIER_SAVED_AS_SOURCE_ID=value))
    assert message.startswith(f"IDENTIFIER_SAVED_AS_SOURCE_ID={value!r} is not valid")


# -- secrets -----------------------------------------------------------------------------


def test_repr_and_str_never_show_secrets() -> None:
    settings = load_settings(env())
    for text in (repr(settings), str(settings), f"{settings!r}", f"{settings}"):
        assert "spa_123" in text
        assert TOKEN not in text
        assert SECRET_KEY not in text


def test_secrets_are_exactly_the_credentials() -> None:
    settings = load_settings(env())
    assert settings.secrets == (TOKEN, SECRET_KEY)
    hidden = {f.name for f in fields(Settings) if not f.repr}
    # The warehouse URL may carry a password: it is hidden whole, its password is a secret.
    assert hidden == {"segment_access_token", "voucherify_secret_key", "profiles_sync_url"}


@pytest.mark.parametrize("name", ["SEGMENT_REQUEST_LIMIT", "REQUEST_TIMEOUT", "SEGMENT_API_URL"])
def test_config_errors_never_show_secrets(name: str) -> None:
    message = config_error(env(**{name: "nonsense value"}))
    assert TOKEN not in message and SECRET_KEY not in message


# -- read_environment --------------------------------------------------------------------


@pytest.fixture
def clean_environ(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in [*REQUIRED, "SEGMENT_REQUEST_LIMIT", "MIGRATOR_TEST_ONLY_IN_FILE"]:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def write_env(path: Path, values: dict[str, str]) -> Path:
    path.write_text("".join(f"{k}={v}\n" for k, v in values.items()), encoding="utf-8")
    return path


def test_real_environment_wins_over_env_file(
    tmp_path: Path, clean_environ: pytest.MonkeyPatch
) -> None:
    env_file = write_env(
        tmp_path / "custom.env",
        {**REQUIRED, "SEGMENT_SPACE_ID": "spa_from_file", "MIGRATOR_TEST_ONLY_IN_FILE": "yes"},
    )
    clean_environ.setenv("SEGMENT_SPACE_ID", "spa_from_environment")
    values = read_environment(env_file)
    assert values["SEGMENT_SPACE_ID"] == "spa_from_environment"
    assert values["MIGRATOR_TEST_ONLY_IN_FILE"] == "yes"
    assert values["SEGMENT_ACCESS_TOKEN"] == TOKEN
    assert load_settings(values).segment_space_id == "spa_from_environment"


def test_default_env_file_is_read_from_working_directory(
    tmp_path: Path, clean_environ: pytest.MonkeyPatch
) -> None:
    write_env(tmp_path / ".env", {"MIGRATOR_TEST_ONLY_IN_FILE": "from-cwd"})
    clean_environ.chdir(tmp_path)
    assert read_environment()["MIGRATOR_TEST_ONLY_IN_FILE"] == "from-cwd"


def test_no_env_file_in_working_directory_is_fine(
    tmp_path: Path, clean_environ: pytest.MonkeyPatch
) -> None:
    clean_environ.chdir(tmp_path)
    clean_environ.setenv("SEGMENT_REQUEST_LIMIT", "42")
    values = read_environment()
    assert values["SEGMENT_REQUEST_LIMIT"] == "42"
    assert "MIGRATOR_TEST_ONLY_IN_FILE" not in values


@pytest.mark.parametrize("kind", ["missing", "directory"])
def test_env_file_that_is_not_a_file_is_a_config_error(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "nope.env" if kind == "missing" else tmp_path
    with pytest.raises(ConfigError) as info:
        read_environment(path)
    assert str(info.value).startswith(f"--env-file {path} does not exist")


# -- issue 14.11: every problem at once; an empty variable hides nothing ----------------------


def test_every_problem_is_reported_at_once_one_line_each() -> None:
    values = {"SEGMENT_SPACE_ID": "spa_1", "MAX_ATTEMPTS": "0", "SEGMENT_API_URL": "ftp://x"}
    with pytest.raises(ConfigError) as info:
        load_settings(values)
    problems = info.value.problems
    assert [p.split(" ")[0].split("=")[0] for p in problems] == [
        "SEGMENT_ACCESS_TOKEN",
        "VOUCHERIFY_APPLICATION_ID",
        "VOUCHERIFY_SECRET_KEY",
        "SEGMENT_API_URL",
        "MAX_ATTEMPTS",
    ]
    assert str(info.value).splitlines() == list(problems)


def test_an_empty_variable_in_the_environment_does_not_hide_the_env_file(
    tmp_path: Path, clean_environ: pytest.MonkeyPatch
) -> None:
    env_file = write_env(tmp_path / "custom.env", REQUIRED)
    clean_environ.setenv("VOUCHERIFY_SECRET_KEY", "")
    clean_environ.setenv("SEGMENT_SPACE_ID", "  ")
    values = read_environment(env_file)
    assert values["VOUCHERIFY_SECRET_KEY"] == SECRET_KEY
    assert load_settings(values).segment_space_id == "spa_123"


@pytest.mark.parametrize("name", URL_VARIABLES)
@pytest.mark.parametrize(
    "url",
    ["https://user:pa55@profiles.segment.com", "https://pa55@host", "https://u:pa55@[::1"],
)
def test_credentials_in_a_url_are_refused_and_never_echoed(name: str, url: str) -> None:
    message = config_error(env(**{name: url}))
    assert message.startswith(f"{name} holds credentials")
    assert "pa55" not in message
