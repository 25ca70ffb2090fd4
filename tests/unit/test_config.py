"""Settings.from_env: defaults, one TASKFLOW_ variable per field, parsing, validation, masking.

Every test passes a dict to ``from_env``; none reads or writes ``os.environ``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from taskflow.config import Secret, Settings, mask, parse_rate
from taskflow.errors import ConfigError

DB_URL = "postgresql://u:s3cret@h:5432/db"


def test_defaults() -> None:
    settings = Settings.from_env({})
    assert settings == Settings()
    assert settings.home == Path(".taskflow")
    assert settings.database_url is None
    assert settings.amqp_url is None
    assert settings.redis_url is None
    assert settings.s3_url is None
    assert (settings.host, settings.port) == ("127.0.0.1", 8000)
    assert settings.concurrency == 128
    assert settings.prefetch is None
    assert settings.queues == ("default",)
    assert settings.tasks == ()
    assert settings.lease_seconds == 15.0
    assert settings.shutdown_grace_seconds == 30.0
    assert settings.promote_interval_seconds == 1.0
    assert settings.reaper_interval_seconds == 5.0
    assert settings.retention_completed == 7 * 86400.0
    assert settings.retention_failed == 30 * 86400.0
    assert settings.idempotency_ttl == 86400.0
    assert settings.max_batch == 1000
    assert settings.max_body_bytes == 1_048_576
    assert settings.log_level == "info"
    assert settings.log_json is False


# (field, raw value, parsed value); the variable is TASKFLOW_<FIELD>.
EVERY_FIELD: list[tuple[str, str, Any]] = [
    ("home", "/var/lib/taskflow", Path("/var/lib/taskflow")),
    ("database_url", DB_URL, DB_URL),
    ("amqp_url", "amqp://guest:guest@rabbit:5672/", "amqp://guest:guest@rabbit:5672/"),
    ("amqp_prefix", "prod", "prod"),
    ("amqp_quorum", "true", True),
    ("redis_url", "redis://cache:6379/0", "redis://cache:6379/0"),
    ("s3_url", "s3://key:secret@minio:9000/logs", "s3://key:secret@minio:9000/logs"),
    ("host", "0.0.0.0", "0.0.0.0"),
    ("port", "9090", 9090),
    ("concurrency", "32", 32),
    ("prefetch", "100", 100),
    ("queues", "images,mail", ("images", "mail")),
    ("tasks", "myapp.tasks,other.tasks", ("myapp.tasks", "other.tasks")),
    ("demo", "true", True),
    ("lease_seconds", "45", 45.0),
    ("shutdown_grace_seconds", "2m", 120.0),
    ("promote_interval_seconds", "0.5", 0.5),
    ("reaper_interval_seconds", "10s", 10.0),
    ("retention_completed", "2d", 172_800.0),
    ("retention_failed", "90d", 90 * 86_400.0),
    ("idempotency_ttl", "12h", 43_200.0),
    ("max_batch", "50", 50),
    ("max_body_bytes", "2048", 2048),
    ("max_log_bytes", "0", 0),
    ("metrics_port", "9100", 9100),
    ("auth", "Required", "required"),
    ("trusted_proxies", "10.0.0.1, 172.16.0.0/12", ("10.0.0.1", "172.16.0.0/12")),
    ("rate_limit_submit", "10/minute", "10/minute"),
    ("rate_limit_read", "", ""),
    ("rate_limit_admin", " 5/10s ", "5/10s"),
    ("max_backlog", "1000", 1000),
    ("cache_ttl", "5s", 5.0),
    ("stream_buffer", "64", 64),
    ("dashboard_port", "5007", 5007),
    ("stream_keepalive", "2s", 2.0),
    ("log_level", "debug", "debug"),
    ("log_json", "true", True),
]


def test_every_field_has_a_case() -> None:
    names = {f.name for f in dataclasses.fields(Settings)} - {"extra"}
    assert {name for name, _, _ in EVERY_FIELD} == names


@pytest.mark.parametrize(("name", "raw", "expected"), EVERY_FIELD, ids=[c[0] for c in EVERY_FIELD])
def test_every_field_is_read_from_its_variable(name: str, raw: str, expected: Any) -> None:
    settings = Settings.from_env({f"TASKFLOW_{name.upper()}": raw})
    value = getattr(settings, name)
    assert value == expected
    assert value != getattr(Settings(), name)
    if name.endswith("_url"):
        assert isinstance(value, Secret)


@pytest.mark.parametrize(
    ("raw", "seconds"),
    [
        ("30", 30.0),
        ("30s", 30.0),
        ("15m", 900.0),
        ("2h", 7200.0),
        ("7d", 604_800.0),
        (" 1.5H ", 5400.0),
    ],
)
def test_durations(raw: str, seconds: float) -> None:
    assert Settings.from_env({"TASKFLOW_LEASE_SECONDS": raw}).lease_seconds == seconds


@pytest.mark.parametrize(
    ("raw", "queues"),
    [
        ("default", ("default",)),
        ("a,b,c", ("a", "b", "c")),
        (" high , low ", ("high", "low")),
        ("a,,b,", ("a", "b")),
    ],
)
def test_csv_queues(raw: str, queues: tuple[str, ...]) -> None:
    assert Settings.from_env({"TASKFLOW_QUEUES": raw}).queues == queues


@pytest.mark.parametrize(
    ("raw", "value"),
    [(v, True) for v in ("1", "true", "TRUE", "yes", "on", " On ")]
    + [(v, False) for v in ("0", "false", "False", "no", "off", "")],
)
def test_booleans(raw: str, value: bool) -> None:
    assert Settings.from_env({"TASKFLOW_LOG_JSON": raw}).log_json is value


def test_empty_url_means_unset() -> None:
    assert Settings.from_env({"TASKFLOW_DATABASE_URL": ""}).database_url is None


@pytest.mark.parametrize(
    ("var", "raw"),
    [
        ("TASKFLOW_PORT", "eighty"),
        ("TASKFLOW_CONCURRENCY", "4.5"),
        ("TASKFLOW_MAX_BATCH", ""),
        ("TASKFLOW_LEASE_SECONDS", "15 minutes"),
        ("TASKFLOW_IDEMPOTENCY_TTL", "d"),
        ("TASKFLOW_RETENTION_FAILED", "3w"),
        ("TASKFLOW_LOG_JSON", "maybe"),
    ],
)
def test_unparsable_value_names_the_variable(var: str, raw: str) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env({var: raw})
    assert info.value.code == "config_error"
    assert info.value.details["variable"] == var
    assert var in info.value.message


@pytest.mark.parametrize(
    "var", ["TASKFLOW_FOO", "TASKFLOW_CONCURENCY", "TASKFLOW_EXTRA", "TASKFLOW_TESTING"]
)
def test_unknown_variable_is_rejected(var: str) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env({var: "1", "TASKFLOW_PORT": "9000"})
    assert info.value.details["variables"] == [var]
    assert var in info.value.message


def test_unknown_variables_are_all_listed() -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env({"TASKFLOW_ZED": "1", "TASKFLOW_ABC": "2"})
    assert info.value.details["variables"] == ["TASKFLOW_ABC", "TASKFLOW_ZED"]


def test_other_parts_prefixes_and_foreign_variables_are_allowed() -> None:
    env = {
        "TASKFLOW_TEST_DATABASE": "tf_test",
        "TASKFLOW_BENCH_JOBS": "10000",
        "PATH": "/usr/bin",
        "taskflow_lowercase": "ignored",
        "TASKFLOW_PORT": "9000",
    }
    assert Settings.from_env(env).port == 9000


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"TASKFLOW_CONCURRENCY": "0"}, "TASKFLOW_CONCURRENCY"),
        ({"TASKFLOW_PORT": "65536"}, "TASKFLOW_PORT"),
        ({"TASKFLOW_QUEUES": " , "}, "TASKFLOW_QUEUES"),
        ({"TASKFLOW_LEASE_SECONDS": "0"}, "TASKFLOW_LEASE_SECONDS"),
        ({"TASKFLOW_SHUTDOWN_GRACE_SECONDS": "-1"}, "grace"),
        ({"TASKFLOW_STREAM_BUFFER": "0"}, "TASKFLOW_STREAM_BUFFER"),
        ({"TASKFLOW_STREAM_KEEPALIVE": "0"}, "TASKFLOW_STREAM_KEEPALIVE"),
        ({"TASKFLOW_STREAM_KEEPALIVE": "2h"}, "TASKFLOW_STREAM_KEEPALIVE"),
    ],
)
def test_from_env_validates(env: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError, match=variable):
        Settings.from_env(env)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"concurrency": 0},
        {"port": 70000},
        {"queues": ()},
        {"lease_seconds": -1.0},
        {"shutdown_grace_seconds": -0.5},
    ],
    ids=lambda kw: ",".join(kw),
)
def test_validate_rejects(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        Settings(**kwargs).validate()


def test_validate_accepts_boundaries() -> None:
    Settings(concurrency=1, port=65535, queues=("q",), shutdown_grace_seconds=0.0).validate()
    Settings(port=1).validate()


def test_repr_masks_the_database_password() -> None:
    settings = Settings.from_env({"TASKFLOW_DATABASE_URL": DB_URL})
    text = repr(settings)
    assert "s3cret" not in text
    assert "u:***@h:5432" in text
    assert str(settings.database_url) == DB_URL  # the value itself is intact


def test_repr_masks_every_url() -> None:
    env = {
        "TASKFLOW_DATABASE_URL": DB_URL,
        "TASKFLOW_AMQP_URL": "amqp://rabbit:pw-amqp@mq:5672/vhost",
        "TASKFLOW_REDIS_URL": "redis://:pw-redis@cache:6379/0",
        "TASKFLOW_S3_URL": "s3://AKIA:pw-s3@minio:9000/logs",
    }
    text = repr(Settings.from_env(env))
    for password in ("s3cret", "pw-amqp", "pw-redis", "pw-s3"):
        assert password not in text
    assert "rabbit:***@mq:5672" in text
    assert ":***@cache:6379" in text


@pytest.mark.parametrize(
    ("value", "masked"),
    [
        (DB_URL, "postgresql://u:***@h:5432/db"),
        ("postgresql://u:s3cret@h/db", "postgresql://u:***@h/db"),
        ("postgresql://u@h:5432/db", "postgresql://u@h:5432/db"),
        ("redis://cache:6379/0", "redis://cache:6379/0"),
        ("s3cret-token", "***"),
        ("", ""),
    ],
)
def test_mask(value: str, masked: str) -> None:
    assert mask(value) == masked
    assert repr(Secret(value)) == repr(masked)


@pytest.mark.parametrize(
    "url",
    ["postgresql://u:s3cret@h:99999/db", "postgresql://u:s3cret@h:pgport/db"],
    ids=["port-out-of-range", "port-not-a-number"],
)
def test_repr_of_a_malformed_url_still_masks(url: str) -> None:
    # from_env accepts any URL; printing the settings must neither fail nor leak.
    settings = Settings.from_env({"TASKFLOW_DATABASE_URL": url})
    text = repr(settings)
    assert "s3cret" not in text


def test_invalid_value_message_masks_the_secret() -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env({"TASKFLOW_DATABASE_URL": DB_URL, "TASKFLOW_PORT": "x"})
    assert "s3cret" not in str(info.value)


def test_settings_are_frozen() -> None:
    settings = Settings()
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.port = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("100/minute", (100, 60.0)),
        ("20/second", (20, 1.0)),
        ("5/10s", (5, 10.0)),
        ("1000 per hour", (1000, 3600.0)),
        ("3/2 days", (3, 172800.0)),
        ("", None),
    ],
)
def test_rates_parse(text: str, expected: tuple[int, float] | None) -> None:
    assert parse_rate(text) == expected


@pytest.mark.parametrize(
    ("variable", "raw"),
    [
        ("TASKFLOW_RATE_LIMIT_SUBMIT", "100"),
        ("TASKFLOW_RATE_LIMIT_READ", "0/minute"),
        ("TASKFLOW_RATE_LIMIT_ADMIN", "ten/minute"),
        ("TASKFLOW_RATE_LIMIT_ADMIN", "10/fortnight"),
        ("TASKFLOW_AUTH", "maybe"),
        ("TASKFLOW_TRUSTED_PROXIES", "10.0.0.300"),
        ("TASKFLOW_MAX_BACKLOG", "0"),
    ],
)
def test_bad_operator_settings_are_refused_by_name(variable: str, raw: str) -> None:
    with pytest.raises(ConfigError, match=variable):
        Settings.from_env({variable: raw})
