"""compose.yaml and .env.example against the code: real CLI entries, real settings."""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest
import yaml

from taskflow.__main__ import parser
from taskflow.config import CLIENT, Settings

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = {f"TASKFLOW_{f.name.upper()}" for f in fields(Settings) if f.name != "extra"} | CLIENT


def compose() -> dict[str, Any]:
    document = yaml.safe_load((ROOT / "compose.yaml").read_text())
    assert isinstance(document, dict)
    return document


def taskflow_services() -> dict[str, dict[str, Any]]:
    return {
        name: spec
        for name, spec in compose()["services"].items()
        if spec.get("image", "").startswith("taskflow") or "build" in spec
    }


def test_the_stack_has_every_service() -> None:
    services = compose()["services"]
    assert {
        "postgres",
        "rabbitmq",
        "redis",
        "minio",
        "minio-bucket",
        "migrate",
        "api",
        "worker",
        "dashboard",
    } <= set(services)
    assert services["api"]["deploy"]["replicas"] == 2
    assert services["worker"]["deploy"]["replicas"] == 3
    for name in ("postgres", "rabbitmq", "redis", "minio", "api"):
        assert "healthcheck" in services[name], name


@pytest.mark.parametrize("service", sorted(taskflow_services()))
def test_each_taskflow_command_is_a_real_cli_entry(service: str) -> None:
    command = taskflow_services()[service]["command"]
    args = parser().parse_args(command)  # the image's ENTRYPOINT is `taskflow`
    assert args.command in {"up", "api", "worker", "migrate", "dashboard"}


@pytest.mark.parametrize("service", sorted(taskflow_services()))
def test_each_variable_a_service_sets_is_a_setting(service: str) -> None:
    env = taskflow_services()[service]["environment"]
    variables = {k for k in env if k.startswith("TASKFLOW_")}
    assert variables, service
    assert variables <= SETTINGS, variables - SETTINGS


def test_taskflow_services_wait_for_healthy_dependencies_and_migrations() -> None:
    services = taskflow_services()
    for name in ("api", "worker"):
        deps = services[name]["depends_on"]
        assert deps["postgres"]["condition"] == "service_healthy"
        assert deps["rabbitmq"]["condition"] == "service_healthy"
        assert deps["migrate"]["condition"] == "service_completed_successfully"


def test_no_secret_is_baked_into_compose_or_the_image() -> None:
    text = (ROOT / "compose.yaml").read_text()
    for password in re.findall(r"^\s*\w*PASS\w*:\s*(\S+)", text, flags=re.MULTILINE):
        assert password.startswith("${"), password
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "PASSWORD" not in dockerfile and "COPY . " not in dockerfile
    assert ".env" in (ROOT / ".dockerignore").read_text()


def test_env_example_documents_every_setting_and_nothing_else() -> None:
    documented = {
        line.split("=", 1)[0]
        for line in (ROOT / ".env.example").read_text().splitlines()
        if line.startswith("TASKFLOW_")
    }
    assert documented == SETTINGS


def test_env_example_values_parse() -> None:
    values = {
        key: value
        for line in (ROOT / ".env.example").read_text().splitlines()
        if line.startswith("TASKFLOW_") and "=" in line
        for key, value in [line.split("=", 1)]
    }
    settings = Settings.from_env(values)
    assert settings == Settings()  # the example shows the defaults


def test_compose_serves_the_api_with_keys() -> None:
    assert taskflow_services()["api"]["environment"]["TASKFLOW_AUTH"] == "required"
