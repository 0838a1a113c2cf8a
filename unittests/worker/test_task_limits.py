"""The three task settings take effect on a real worker and on published messages."""

import json
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import pytest
import redis
from django.urls import reverse

from unittests.conftest import ROOT


def settings_in_subprocess(**env: str) -> dict:
    """The limits as Django settings computes them from DD_ variables in a fresh process."""
    code = (
        "import json, django; django.setup(); from django.conf import settings as s; "
        "print(json.dumps([s.CELERY_TASK_TIME_LIMIT, s.CELERY_TASK_SOFT_TIME_LIMIT, "
        "s.CELERY_TASK_DEFAULT_EXPIRES, s.CELERY_BROKER_TIMEOUT]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={"DJANGO_SETTINGS_MODULE": "dojo.settings.settings", "PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return dict(zip(["hard", "soft", "expires", "timeout"], json.loads(out), strict=True))


def test_defaults_and_zero_means_off():
    assert settings_in_subprocess() == {"hard": 43200, "soft": None, "expires": 43200, "timeout": 2.0}
    assert settings_in_subprocess(
        DD_CELERY_TASK_TIME_LIMIT="0",
        DD_CELERY_TASK_SOFT_TIME_LIMIT="30",
        DD_CELERY_TASK_DEFAULT_EXPIRES="0",
        DD_CELERY_BROKER_TIMEOUT="0.5",
    ) == {"hard": None, "soft": 30, "expires": None, "timeout": 0.5}


@pytest.mark.django_db
def test_status_reports_limits_and_null_when_off(filesystem_only, api, settings):
    settings.CELERY_TASK_TIME_LIMIT = 600
    settings.CELERY_TASK_SOFT_TIME_LIMIT = None
    settings.CELERY_TASK_DEFAULT_EXPIRES = 3600
    body = api.get(reverse("celery_status")).json()
    assert (body["task_time_limit"], body["task_soft_time_limit"], body["task_default_expires"]) == (600, None, 3600)


@pytest.mark.django_db
def test_soft_time_limit_interrupts_a_running_task(redis_only):
    redis_only.start_worker("soft", DD_CELERY_TASK_SOFT_TIME_LIMIT="1", DD_CELERY_TASK_TIME_LIMIT="4")
    result = redis_only.client().send_task("dojo.tasks.sleep", args=(10,))
    value = result.get(timeout=15)
    assert value["soft_time_limit_exceeded"] is True
    assert 0.9 <= value["slept"] < 3


@pytest.mark.django_db
def test_hard_time_limit_kills_a_running_task(redis_only):
    from celery.exceptions import TimeLimitExceeded

    redis_only.start_worker("hard", DD_CELERY_TASK_SOFT_TIME_LIMIT="0", DD_CELERY_TASK_TIME_LIMIT="1")
    client = redis_only.client()
    started = time.monotonic()
    result = client.send_task("dojo.tasks.sleep", args=(10,))
    with pytest.raises(TimeLimitExceeded):
        result.get(timeout=15)
    assert time.monotonic() - started < 8
    assert result.state == "FAILURE"
    # The worker replaced the killed process and still works.
    assert client.send_task("dojo.tasks.add", args=(2, 3)).get(timeout=15) == 5


def raw_messages(broker) -> list[dict]:
    return [json.loads(raw) for raw in redis.Redis.from_url(broker.url).lrange("celery", 0, -1)]


def test_published_tasks_carry_the_default_expiry(redis_only, settings):
    settings.CELERY_TASK_DEFAULT_EXPIRES = 600
    client = redis_only.client()
    before = datetime.now(UTC)
    client.send_task("dojo.tasks.add", args=(1, 1))
    client.send_task("dojo.tasks.add", args=(1, 1), expires=30)
    client.send_task("dojo.tasks.add", args=(1, 1), expires=before + timedelta(days=2))

    expiries = sorted(datetime.fromisoformat(m["headers"]["expires"]) for m in raw_messages(redis_only))
    assert len(expiries) == 3
    assert before + timedelta(seconds=25) <= expiries[0] <= before + timedelta(seconds=35)  # explicit kept
    assert before + timedelta(seconds=595) <= expiries[1] <= before + timedelta(seconds=610)  # the default
    assert expiries[2] >= before + timedelta(days=2) - timedelta(seconds=1)  # explicit kept


def test_no_default_expiry_when_off(redis_only, settings):
    settings.CELERY_TASK_DEFAULT_EXPIRES = None
    redis_only.client().send_task("dojo.tasks.add", args=(1, 1))
    assert [m["headers"]["expires"] for m in raw_messages(redis_only)] == [None]


@pytest.mark.django_db
def test_a_worker_discards_a_task_past_its_default_expiry(redis_only, settings):
    settings.CELERY_TASK_DEFAULT_EXPIRES = 1
    client = redis_only.client()
    result = client.send_task("dojo.tasks.add", args=(2, 2))
    time.sleep(1.5)
    redis_only.start_worker("late")
    deadline = time.monotonic() + 15
    while result.state == "PENDING" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert result.state == "REVOKED"
