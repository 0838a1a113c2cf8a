"""The status read when the cache or the database does not answer: a Redis cache, and a
PostgreSQL, on a TCP server that accepts connections and never sends a byte (the `silent_port`
fixture: a real socket, the one fault injected here). The broker is a real private Redis.

Each test fails on the code before the fault bounds: there the Redis cache had no socket
timeout and PostgreSQL no connect_timeout, so every one of these reads hung (checked).
"""

import json
import subprocess
import sys
import time

import pytest
from django.urls import reverse

from unittests.conftest import ROOT, LiveBroker

BOUND = 1.0  # DD_CELERY_BROKER_TIMEOUT and DD_CACHE_TIMEOUT of these tests
MARGIN = 1.5  # a loaded two-core machine


def silent_redis_cache(port: int) -> dict:
    """CACHES as dojo/settings/settings.dist.py builds it for DD_CACHE_URL=redis://... (see
    test_settings_bound_the_cache_and_postgresql)."""
    return {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": f"redis://127.0.0.1:{port}/0",
            "OPTIONS": {"socket_connect_timeout": BOUND, "socket_timeout": BOUND},
        }
    }


@pytest.mark.django_db
def test_a_silent_cache_gives_the_fresh_status_uncached(redis_only, silent_port, settings, client):
    from dojo.ops.fleet.status_cache import get_status

    settings.CELERY_BROKER_TIMEOUT = BOUND
    settings.CELERY_STATUS_CACHE_SECONDS = 30
    settings.CACHES = silent_redis_cache(silent_port)

    for refresh in (False, True):
        started = time.monotonic()
        status = get_status(refresh=refresh)
        elapsed = time.monotonic() - started
        assert status.broker_status is True and status.queue_length == 0, status.error
        assert time.time() - status.read_at < BOUND + MARGIN  # read now, not an old document
        assert elapsed < BOUND + BOUND + MARGIN, elapsed  # one cache timeout, then the broker

    started = time.monotonic()
    ready = client.get(reverse("celery_health_ready"))
    assert ready.status_code == 503 and ready.json()["reasons"] == ["0 worker(s) alive, 1 required"]
    assert ready.json()["broker_status"] is True
    assert time.monotonic() - started < BOUND + BOUND + MARGIN
    started = time.monotonic()
    assert client.get(reverse("celery_health_live")).status_code == 200
    assert time.monotonic() - started < 0.5  # liveness does not touch the cache


def run_cli(broker: LiveBroker, database: str, **env: str) -> tuple[subprocess.CompletedProcess, float]:
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "manage.py", "celery_status", "--json", "--refresh"],
        cwd=ROOT,
        env=broker.env(DD_DATABASE_URL=database, DD_CELERY_BROKER_TIMEOUT=str(BOUND), **env),
        capture_output=True,
        text=True,
        timeout=60,
    )
    return result, time.monotonic() - started


def test_settings_bound_the_cache_and_postgresql(redis_only, silent_port, shared_database):
    """The settings file puts the bounds in place: the CLI answers (not ready: no worker) with
    the broker's part of the document, through a silent Redis cache, then with its database
    on a silent PostgreSQL URL. The first run measures the CLI's own start-up."""
    baseline, startup = run_cli(redis_only, shared_database)
    assert baseline.returncode == 1 and json.loads(baseline.stdout)["history_available"] is True, baseline.stderr

    silent_cache, elapsed = run_cli(
        redis_only, shared_database, DD_CACHE_URL=f"redis://127.0.0.1:{silent_port}/0", DD_CACHE_TIMEOUT=str(BOUND)
    )
    document = json.loads(silent_cache.stdout)
    assert silent_cache.returncode == 1, silent_cache.stderr
    assert document["broker_status"] is True and document["history_available"] is True
    assert "The cache failed; the status is read uncached: TimeoutError" in silent_cache.stderr
    assert elapsed < startup + BOUND + MARGIN, (elapsed, startup)

    silent_database, elapsed = run_cli(
        redis_only,
        f"postgres://dojo:db-pw-1f9e@127.0.0.1:{silent_port}/dojo",
        DD_DATABASE_CONNECT_TIMEOUT="2",  # libpq's least
    )
    document = json.loads(silent_database.stdout)
    assert silent_database.returncode == 1, silent_database.stderr
    assert document["broker_status"] is True and document["queue_length"] == 0
    assert document["history_available"] is False and document["seen_workers_recorded"] is False
    assert "timeout" in document["database_error"].lower()
    assert "db-pw-1f9e" not in silent_database.stdout + silent_database.stderr
    assert [alert["code"] for alert in document["alerts"]] == ["database_unavailable", "no_workers"]
    assert elapsed < startup + 2 + BOUND + MARGIN, (elapsed, startup)
