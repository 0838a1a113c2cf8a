"""docker-compose.yml is valid for docker-compose 1.29 and has the production shape.

Runs the real `docker-compose config` (no Docker engine needed) with only the variables
set here, so a developer's shell or .env file cannot change the outcome.
In CI (CI=true) a missing docker-compose fails the run instead of skipping.
"""

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml  # PyYAML: a dependency of drf-spectacular, so always installed

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
IN_CI = os.environ.get("CI", "").lower() == "true"

REQUIRED = {"DD_SECRET_KEY": "test-secret-key", "DD_DATABASE_PASSWORD": "test-db-password"}
SERVICES = {"postgres", "redis", "initializer", "web", "celeryworker", "celerybeat", "monitor"}
APP_SERVICES = ("initializer", "web", "celeryworker", "celerybeat", "monitor")
LONG_RUNNING = ("web", "celeryworker", "celerybeat", "monitor")


@pytest.fixture(scope="module")
def docker_compose() -> str:
    path = shutil.which("docker-compose")
    if path is None:
        message = "docker-compose is not installed"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return path


def run_config(docker_compose: str, tmp_path: Path, *args: str, **variables: str) -> subprocess.CompletedProcess:
    """`docker-compose -f docker-compose.yml config ARGS` with exactly `variables` as DD_ settings."""
    env_file = tmp_path / "empty.env"  # instead of any .env next to docker-compose.yml
    env_file.write_text("")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DD_", "COMPOSE_", "DOCKER_"))}
    env.update(variables)
    return subprocess.run(
        [docker_compose, "--env-file", str(env_file), "-f", str(COMPOSE_FILE), "config", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def command(service: dict) -> list[str]:
    cmd = service["command"]
    return shlex.split(cmd) if isinstance(cmd, str) else list(cmd)


@pytest.fixture(scope="module")
def config(docker_compose, tmp_path_factory) -> dict:
    result = run_config(docker_compose, tmp_path_factory.mktemp("compose"), **REQUIRED)
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def test_config_quiet_succeeds(docker_compose, tmp_path):
    result = run_config(docker_compose, tmp_path, "-q", **REQUIRED)
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""


def test_services(config):
    assert set(config["services"]) == SERVICES
    assert config["services"]["postgres"]["image"].startswith("postgres:16")
    assert config["services"]["redis"]["image"].startswith("redis:7")
    for name in ("postgres", "redis"):
        assert config["services"][name]["healthcheck"]["test"], name


def test_app_services_are_configured_by_dd_variables(config):
    for name in APP_SERVICES:
        env = config["services"][name]["environment"]
        assert env["DD_SECRET_KEY"] == REQUIRED["DD_SECRET_KEY"], name
        assert env["DD_CELERY_BROKER_URL"] == "redis://redis:6379/0", name
        assert env["DD_CELERY_RESULT_BACKEND"] == "django-db", name
        assert env["DD_DATABASE_URL"].startswith("postgres://"), name
        assert f":{REQUIRED['DD_DATABASE_PASSWORD']}@postgres:5432/" in env["DD_DATABASE_URL"], name
        assert str(env["DD_CELERY_TASK_TIME_LIMIT"]) == "43200", name
    postgres_env = config["services"]["postgres"]["environment"]
    assert postgres_env["POSTGRES_PASSWORD"] == REQUIRED["DD_DATABASE_PASSWORD"]


def test_defaults_can_be_overridden(docker_compose, tmp_path):
    result = run_config(docker_compose, tmp_path, **REQUIRED, DD_CELERY_TASK_TIME_LIMIT="600")
    assert result.returncode == 0, result.stderr
    config = yaml.safe_load(result.stdout)
    assert str(config["services"]["celeryworker"]["environment"]["DD_CELERY_TASK_TIME_LIMIT"]) == "600"


def test_commands(config):
    services = config["services"]
    assert command(services["initializer"])[:3] == ["python", "manage.py", "migrate"]
    assert "--noinput" in command(services["initializer"])
    # The documented production command; gunicorn.conf.py (read from /app) holds the rest.
    assert command(services["web"]) == ["gunicorn", "dojo.wsgi:application"]
    assert services["web"]["environment"]["DD_WEB_BIND"] == "0.0.0.0:8080"
    assert command(services["celeryworker"])[:4] == ["celery", "-A", "dojo", "worker"]
    assert command(services["celerybeat"])[:4] == ["celery", "-A", "dojo", "beat"]
    assert command(services["monitor"]) == ["python", "manage.py", "celery_monitor"]
    assert services["monitor"]["image"] == services["web"]["image"]


def test_web_command_is_the_images_cmd(config):
    """One documented command: the web service runs exactly the Dockerfile's CMD."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    cmd_lines = [line for line in dockerfile.splitlines() if line.startswith("CMD ")]
    assert len(cmd_lines) == 1
    assert json.loads(cmd_lines[0].removeprefix("CMD ")) == command(config["services"]["web"])
    assert "DD_WEB_BIND=0.0.0.0:8080" in dockerfile  # the image listens outside the container


def test_app_services_share_the_redis_cache(config):
    """Every web process (and the CLI) uses one Django cache, so the status single flight spans processes."""
    for name in APP_SERVICES:
        assert config["services"][name]["environment"]["DD_CACHE_URL"] == "redis://redis:6379/1", name


def test_web_serves_several_requests_at_once(config):
    """gunicorn.conf.py, on the web service's environment, gives 2 gthread processes x 4 threads on
    0.0.0.0:8080 with the access log on stdout (before it, compose ran one sync worker: one request at
    a time). Checked with gunicorn's own --print-config, so gunicorn really reads the file from ROOT."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("DD_", "GUNICORN_"))}
    environment.update({k: str(v) for k, v in config["services"]["web"]["environment"].items() if v is not None})
    result = subprocess.run(
        [sys.executable, "-m", "gunicorn", *command(config["services"]["web"])[1:], "--print-config"],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    printed = dict(line.split(" = ", 1) for line in result.stdout.splitlines() if " = " in line)
    printed = {k.strip(): v.strip() for k, v in printed.items()}
    assert printed["worker_class"] == "gthread"
    assert (printed["workers"], printed["threads"]) == ("2", "4")
    assert printed["bind"] == "['0.0.0.0:8080']"
    assert printed["accesslog"] == "-"
    assert int(printed["timeout"]) > 10  # above the longest bounded request (a 10 s break down)
    assert int(printed["graceful_timeout"]) < int(config["services"]["web"]["stop_grace_period"].rstrip("s"))


def test_web_workers_and_threads_can_be_overridden(docker_compose, tmp_path):
    result = run_config(docker_compose, tmp_path, **REQUIRED, DD_WEB_WORKERS="3", DD_WEB_THREADS="8")
    assert result.returncode == 0, result.stderr
    web_env = yaml.safe_load(result.stdout)["services"]["web"]["environment"]
    assert (str(web_env["DD_WEB_WORKERS"]), str(web_env["DD_WEB_THREADS"])) == ("3", "8")


def test_start_order(config):
    services = config["services"]
    assert services["initializer"]["restart"] == "no"
    assert services["initializer"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in LONG_RUNNING:
        depends_on = services[name]["depends_on"]
        assert depends_on["initializer"]["condition"] == "service_completed_successfully", name
        assert depends_on["redis"]["condition"] == "service_healthy", name


def test_volumes(config):
    assert "postgres-data" in config["volumes"]
    postgres_volumes = config["services"]["postgres"]["volumes"]
    assert any(v.startswith("postgres-data:/var/lib/postgresql/data") for v in postgres_volumes)
    # CELERY_BEAT_SCHEDULE_FILENAME is var/celerybeat-schedule under the image's /app.
    assert any(v.split(":")[1] == "/app/var" for v in config["services"]["celerybeat"]["volumes"])


@pytest.mark.parametrize("missing", sorted(REQUIRED))
def test_required_variable_missing_fails(docker_compose, tmp_path, missing):
    variables = {k: v for k, v in REQUIRED.items() if k != missing}
    for args in ((), ("-q",)):
        result = run_config(docker_compose, tmp_path, *args, **variables)
        assert result.returncode != 0, result.stdout
        # The `${VAR:?set VAR}` message of docker-compose.yml names the variable.
        assert f"set {missing}" in result.stderr


def test_the_compose_configuration_passes_djangos_deploy_checks(config):
    """`manage.py check --deploy` is clean for the web service's environment (issue 11, item 7):
    HTTPS-only cookies, the proxy's TLS header, the HTTPS redirect and HSTS are on. Before the
    DD_SECURE_ settings existed, this reported security.W004, W008, W012 and W016."""
    # Only the compose service's variables: nothing of this test process (DJANGO_ALLOW_ASYNC_UNSAFE, say).
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("DD_", "DJANGO_"))}
    environment.update({k: str(v) for k, v in config["services"]["web"]["environment"].items() if v is not None})
    environment["DD_SECRET_KEY"] = "a-long-random-key-" + "k3Y9q" * 10  # W009 wants 50 characters
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout
