"""docker/compose.yaml, checked without a Docker engine: every service, volume, secret, file and variable it
references exists, Airflow's settings are real Airflow options, auth is on and no credential is committed."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

DOCKER = Path(__file__).resolve().parents[2] / "docker"
COMPOSE = DOCKER / "compose.yaml"
ENV_EXAMPLE = DOCKER / ".env.example"
SECRET_WORDS = re.compile(r"(PASSWORD|SECRET|FERNET|ACCESS_KEY)(?!\w*_FILE$)", re.IGNORECASE)  # a _FILE is a path
INTERPOLATION = re.compile(r"(?<!\$)\$\{(\w+)(?::?[-?][^}]*)?\}")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def env_example() -> dict[str, str]:
    pairs = [line.split("=", 1) for line in ENV_EXAMPLE.read_text().splitlines() if line and not line.startswith("#")]
    return {k: v for k, v in pairs}


def test_the_stack_has_every_component(compose: dict) -> None:
    commands = {name: " ".join(map(str, svc.get("command", []))) for name, svc in compose["services"].items()}
    for component in ("api-server", "scheduler", "dag-processor", "triggerer", "celery worker", "db migrate",
                      "mlflow server"):
        assert any(component in c for c in commands.values()), f"no service runs {component}"
    images = " ".join(str(svc.get("image", "")) for svc in compose["services"].values())
    for image in ("postgres:", "redis:", "minio/minio"):
        assert image in images


def test_every_reference_resolves(compose: dict) -> None:
    services, volumes, secrets = compose["services"], compose.get("volumes", {}), compose.get("secrets", {})
    for name, svc in services.items():
        for dependency in svc.get("depends_on", {}):
            assert dependency in services, f"{name} depends on unknown service {dependency}"
        for mount in svc.get("volumes", []):
            source = mount.split(":")[0]
            if source.startswith((".", "/")):
                assert (DOCKER / source).exists(), f"{name} mounts missing file {source}"
            else:
                assert source in volumes, f"{name} uses undeclared volume {source}"
        for secret in svc.get("secrets", []):
            assert secret in secrets, f"{name} uses undeclared secret {secret}"
    declared = {m.split(":")[0] for svc in services.values() for m in svc.get("volumes", [])}
    assert set(volumes) <= declared, f"declared but unused volumes: {set(volumes) - declared}"
    build = services["airflow-init"]["build"]
    dockerfile = (DOCKER / build["context"] / build["dockerfile"]).resolve()
    for line in dockerfile.read_text().splitlines():
        if line.startswith("COPY "):
            for source in line.split()[1:-1]:
                assert (dockerfile.parent.parent / source).exists(), f"Dockerfile copies missing {source}"


def test_env_example_defines_every_variable_and_holds_no_credential(env_example: dict[str, str]) -> None:
    used = set(INTERPOLATION.findall(COMPOSE.read_text()))
    assert used <= set(env_example), f"compose uses variables .env.example lacks: {sorted(used - set(env_example))}"
    assert set(env_example) <= used, f".env.example defines unused variables: {sorted(set(env_example) - used)}"
    filled = {k for k, v in env_example.items() if SECRET_WORDS.search(k) and v}
    assert not filled, f".env.example must not carry credentials: {sorted(filled)}"


def test_no_credential_is_written_in_the_compose_file(compose: dict) -> None:
    for name, svc in compose["services"].items():
        for key, value in (svc.get("environment") or {}).items():
            if SECRET_WORDS.search(key):
                assert re.fullmatch(r"\$\{\w+\}", str(value)), f"{name}.{key} must come from the environment"
            assert not re.search(r"://[^:/@]+:(?!\$\{)[^@]+@", str(value)), f"{name}.{key} embeds a password"


def test_airflow_settings_are_real_options_and_auth_is_on(compose: dict) -> None:
    from airflow.configuration import conf

    known = conf.configuration_description  # Airflow's and the installed providers' ([celery]) documented options
    env = compose["x-airflow-common"]["environment"]
    for key in env:
        if key.startswith("AIRFLOW__"):
            section, option = key.removeprefix("AIRFLOW__").lower().split("__", 1)
            assert option in known.get(section, {}).get("options", {}), f"{key} is not an Airflow option"
    assert env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS"] == "False"
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"


def test_dailymix_variables_are_read_by_the_code(compose: dict) -> None:
    source = "\n".join(p.read_text() for p in (DOCKER.parent / "pipeline").rglob("*.py"))
    env = compose["x-airflow-common"]["environment"]
    for key in env:
        if key.startswith("DAILYMIX_"):
            assert f'"{key}"' in source, f"{key} is set in compose but nothing in pipeline/ reads it"


def test_services_without_their_own_authentication_publish_on_the_loopback_only(compose: dict) -> None:
    """MLflow's server has no authentication and the MinIO console is an admin page: reachable from the host's
    loopback only (an authenticating proxy in front is the production posture: docs/operations.md)."""
    for name in ("mlflow", "minio"):
        for port in compose["services"][name].get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} on every interface"
