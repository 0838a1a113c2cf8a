"""The production web tier serves more than one request at a time.

Real processes: the documented production command, `gunicorn dojo.wsgi:application` run from
the project root (so gunicorn reads gunicorn.conf.py, with its documented defaults: 2 gthread
processes x 4 threads), on the migrated test database (SQLite file), a private redis-server as
the broker and the session's redis-server as the shared Django cache (DD_CACHE_URL), DEBUG off.

The fault is real: the broker's redis-server is SIGSTOPped, so a refreshing status read waits
its whole DD_CELERY_BROKER_TIMEOUT on a connection that never answers.

Checked to fail on the old command (one sync worker, gunicorn's defaults: run with
`--config /dev/null`): the liveness probe then waited behind the refreshing read (about the
broker bound, 2 s) and the bad DD_WEB_WORKERS went unnoticed (gunicorn started).
"""

import http.client
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from rest_framework.authtoken.models import Token

from unittests.conftest import ROOT, RedisServer, free_port, make_user, require, stop_process, wait_for

BROKER_TIMEOUT = 2.0  # DD_CELERY_BROKER_TIMEOUT: what the refreshing read waits on the stopped broker
FAST = 0.2  # seconds: a probe or a cached read answers within this while that read waits
COMMAND = [sys.executable, "-m", "gunicorn", "dojo.wsgi:application"]  # the Dockerfile's CMD
STATUS = "/api/v2/celery/status/"
LIVE = "/api/v2/celery/health/live/"


@pytest.fixture
def broker_redis(tmp_path) -> Iterator[RedisServer]:
    """A private redis-server for the broker alone: the test SIGSTOPs it; always resumed and stopped."""
    binary = require("redis-server")
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )
    server = RedisServer(port, proc)
    try:
        wait_for(lambda: _connects(port), 10, "the broker's redis-server")
        yield server
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGCONT)
        stop_process(proc)


def _connects(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class WebTier:
    port: int
    token: str
    log: Path

    def get(self, path: str, *, token: bool = False, timeout: float = 30) -> tuple[int, bytes, float]:
        """GET on a new connection; (status, body, seconds)."""
        headers = {"Authorization": f"Token {self.token}"} if token else {}
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        started = time.monotonic()
        try:
            conn.request("GET", path, headers=headers)
            response = conn.getresponse()
            body = response.read()
            return response.status, body, time.monotonic() - started
        finally:
            conn.close()


def web_environment(**variables: str) -> dict[str, str]:
    """This process's environment without any DD_, DJANGO_ or GUNICORN_ setting, plus `variables`."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("DD_", "DJANGO_", "GUNICORN_"))}
    environment.update(variables)
    return environment


@pytest.fixture
def web_tier(shared_database, broker_redis, redis_server, tmp_path) -> Iterator[WebTier]:
    """The production command on a free port; stopped at the end, whatever happens."""
    import redis

    cache_url = redis_server.url(11)
    redis.Redis.from_url(cache_url).flushdb()
    token = Token.objects.create(user=make_user("web-admin", superuser=True)).key
    port = free_port()
    environment = web_environment(
        DD_PORT=str(port),
        DD_SECRET_KEY="web-tier-test-" + "k3Y9q" * 10,
        DD_DEBUG="False",
        DD_DATABASE_URL=shared_database,
        DD_CELERY_BROKER_URL=broker_redis.url(0),
        DD_CELERY_BROKER_TIMEOUT=str(BROKER_TIMEOUT),
        DD_CELERY_STATUS_CACHE_SECONDS="120",  # the warm document stays cached for the whole test
        DD_CACHE_URL=cache_url,
        DD_STATIC_ROOT=str(tmp_path / "static"),  # empty: nothing collected
        HOME=str(tmp_path),  # gunicorn's control socket (~/.gunicorn) is this server's own
    )
    tier, proc = start_gunicorn(environment, port, token, tmp_path / "gunicorn.log")
    try:
        yield tier
    finally:
        stop_process(proc)


def start_gunicorn(environment: dict[str, str], port: int, token: str, log: Path) -> tuple[WebTier, subprocess.Popen]:
    """The production command with `environment`, once it answers the liveness probe; the caller
    stops the process."""
    with open(log, "w") as log_file:
        proc = subprocess.Popen(
            COMMAND, cwd=ROOT, env=environment, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True
        )
    tier = WebTier(port, token, log)

    def answers() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"gunicorn exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            return tier.get(LIVE, timeout=2)[0] == 200
        except OSError:
            return False

    try:
        wait_for(answers, 60, "gunicorn to answer")
    except BaseException:
        stop_process(proc)
        raise
    return tier, proc


def test_a_read_waiting_on_a_silent_broker_holds_neither_the_probe_nor_a_cached_read(web_tier, broker_redis):
    """While `?refresh=1` waits on the stopped broker, /health/live/ and a plain (cached) status
    GET answer 200 within 0.2 s, on new connections (before: one sync worker, the probe waited
    the read's whole broker bound)."""
    status, body, _ = web_tier.get(STATUS, token=True)
    assert status == 200, body  # warms the shared cache while the broker still answers

    refresh: dict = {}

    def refresh_read() -> None:
        try:
            refresh["status"], refresh["body"], _ = web_tier.get(STATUS + "?refresh=1", token=True)
        except OSError as exc:  # recorded, asserted below
            refresh["error"] = exc
        refresh["ended"] = time.monotonic()

    os.kill(broker_redis.proc.pid, signal.SIGSTOP)
    try:
        reader = threading.Thread(target=refresh_read, daemon=True)
        reader.start()
        time.sleep(0.5)  # the refreshing read is in a worker thread, waiting on the broker
        probes = [web_tier.get(LIVE, timeout=10) for _ in range(3)]
        cached = [web_tier.get(STATUS, token=True, timeout=10) for _ in range(3)]
        probes_ended = time.monotonic()
        reader.join(timeout=6 * BROKER_TIMEOUT + 10)
    finally:
        os.kill(broker_redis.proc.pid, signal.SIGCONT)

    assert not reader.is_alive(), "the refreshing read did not answer"
    assert "error" not in refresh, refresh
    assert refresh["status"] in (200, 503), refresh  # a bounded answer, never a 500

    assert [status for status, _, _ in probes] == [200, 200, 200]
    assert max(seconds for _, _, seconds in probes) < FAST, [round(s, 3) for _, _, s in probes]
    assert [status for status, _, _ in cached] == [200, 200, 200], cached
    assert max(seconds for _, _, seconds in cached) < FAST, [round(s, 3) for _, _, s in cached]
    # The probes ran while the refresh still waited on the broker: otherwise they prove nothing.
    assert refresh["ended"] > probes_ended, "the refresh answered before the probes ran"


def test_the_admin_s_static_files_are_served_without_collectstatic(web_tier):
    """whitenoise serves the admin's CSS and JS from the apps under gunicorn with DEBUG off and an
    empty DD_STATIC_ROOT. A guard, not a fix: it passes on the old command too; it holds the
    promise scripts/run.sh now relies on (gunicorn instead of `runserver --insecure`, no
    collectstatic step)."""
    status, page, _ = web_tier.get("/admin/login/")
    assert status == 200
    for path in ("/static/admin/css/base.css", "/static/admin/js/theme.js"):
        assert path.encode() in page
        status, body, _ = web_tier.get(path)
        assert status == 200, path
        assert body


@pytest.mark.parametrize(
    ("variable", "value"),
    [("DD_WEB_WORKERS", "0"), ("DD_WEB_THREADS", "four"), ("DD_WEB_TIMEOUT", "-1"), ("DD_PORT", "99999")],
)
def test_a_bad_value_stops_gunicorn_with_a_message_naming_it(variable, value):
    """Before the config file, gunicorn ignored DD_WEB_* and started (exit 0 of --check-config)."""
    environment = web_environment(DD_SECRET_KEY="web-tier-test-key", **{variable: value})
    result = subprocess.run(
        [*COMMAND, "--check-config"],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert variable in result.stderr and value in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
