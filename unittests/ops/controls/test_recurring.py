"""Recurring tasks: the rows, run now on a real Redis with a real worker, enable/disable of
django-celery-beat entries, static entries refused, per-action permissions, read-only mode,
an unreachable broker; each control leaves its audit row."""

import subprocess
import sys
import time

import pytest
import redis
from django.contrib.auth.models import Permission
from django.urls import reverse
from django_celery_beat.models import IntervalSchedule, PeriodicTask, PeriodicTasks
from rest_framework.test import APIClient

from dojo.models import CeleryAuditLog
from dojo.ops.read_models.recurring import recurring_tasks
from unittests.conftest import ROOT, free_port, make_user, stop_process, wait_for

RUN = reverse("celery_periodic_run")
ENABLED = reverse("celery_periodic_enabled")
STATIC_ENTRY = {"task": "dojo.tasks.add", "schedule": 300.0, "args": [20, 22], "options": {"queue": "reports"}}


@pytest.fixture
def beat_schedule(settings) -> dict:
    settings.CELERY_BEAT_SCHEDULE = {"static-add": STATIC_ENTRY}
    return settings.CELERY_BEAT_SCHEDULE


def database_entry(name: str = "db-add", args: str = "[2, 3]", enabled: bool = True) -> PeriodicTask:
    every_minute, _ = IntervalSchedule.objects.get_or_create(every=1, period=IntervalSchedule.MINUTES)
    return PeriodicTask.objects.create(
        name=name, task="dojo.tasks.add", interval=every_minute, args=args, enabled=enabled
    )


def client_for(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def audit_rows(action: str) -> list[tuple[str, str, str]]:
    return list(CeleryAuditLog.objects.filter(action=action).values_list("username", "target", "result"))


@pytest.mark.django_db
def test_rows_join_static_and_database_entries(beat_schedule):
    database_entry(enabled=False)
    rows = {row.key: row for row in recurring_tasks()}

    static, dynamic = rows["static-add"], rows["db-add"]
    assert (static.static, static.queue_name, static.schedule) == (True, "reports", "every 5 minutes")
    assert static.enabled is True
    assert (dynamic.static, dynamic.queue_name, dynamic.schedule) == (False, "celery", "every minute")
    assert dynamic.enabled is False and dynamic.next_run_at is None and dynamic.last_run_at is None


@pytest.mark.django_db(transaction=True)
def test_run_now_executes_the_entry_with_its_arguments_and_queue(redis_only, shared_database, beat_schedule, superuser):
    redis_only.start_worker("w1", queues="celery,reports", DD_DATABASE_URL=shared_database)
    database_entry()
    results = redis_only.client()
    api = client_for(superuser)

    static = api.post(RUN, {"key": "static-add"}, format="json")
    dynamic = api.post(RUN, {"key": "db-add", "backend": "default"}, format="json")

    assert static.status_code == dynamic.status_code == 200, (static.content, dynamic.content)
    assert static.json()["queue"] == "reports" and dynamic.json()["queue"] == "celery"
    assert results.AsyncResult(static.json()["task_id"]).get(timeout=60) == 42
    assert results.AsyncResult(dynamic.json()["task_id"]).get(timeout=60) == 5
    assert sorted(audit_rows("run_periodic_task")) == [("admin", "db-add", "ok"), ("admin", "static-add", "ok")]


@pytest.mark.django_db
def test_enable_and_disable_flip_the_entry_and_tell_beat(superuser):
    entry = database_entry()
    PeriodicTasks.update_changed()
    before = PeriodicTasks.last_change()
    api = client_for(superuser)

    off = api.post(ENABLED, {"key": "db-add", "enabled": False}, format="json")
    assert off.status_code == 200, off.content
    assert off.json()["enabled"] is False and off.json()["next_run_at"] is None
    entry.refresh_from_db()
    assert entry.enabled is False
    assert PeriodicTasks.last_change() > before

    on = api.post(ENABLED, {"key": "db-add", "enabled": True}, format="json")
    entry.refresh_from_db()
    assert on.json()["enabled"] is entry.enabled is True
    assert sorted(audit_rows("toggle_periodic_task")) == [
        ("admin", "db-add (disable)", "ok"),
        ("admin", "db-add (enable)", "ok"),
    ]


def test_a_real_beat_records_each_run_at_once_and_obeys_disable_and_enable(redis_only, shared_database, superuser):
    """`celery -A dojo beat` (DatabaseScheduler) runs an every-second entry onto its own queue; the
    queue's length on Redis counts the sends, independently of what beat records."""
    every_second, _ = IntervalSchedule.objects.get_or_create(every=1, period=IntervalSchedule.SECONDS)
    entry = PeriodicTask.objects.create(
        name="tick", task="dojo.tasks.add", interval=every_second, queue="ticks", args="[1, 2]"
    )
    sent = redis.Redis.from_url(redis_only.url)
    api = client_for(superuser)
    proc = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "dojo", "beat", "-l", "info", "-s", str(redis_only.tmp / "schedule")],
        cwd=ROOT,
        env=redis_only.env(DD_DATABASE_URL=shared_database),
        stdout=(redis_only.tmp / "beat.log").open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )

    def settled() -> int:
        """The number of sends once it has stopped growing for longer than beat's 5 s check of changes."""
        for _ in range(4):
            before = sent.llen("ticks")
            time.sleep(6)
            assert proc.poll() is None, (redis_only.tmp / "beat.log").read_text()[-2000:]
            if sent.llen("ticks") == before:
                return before
        raise AssertionError("beat kept sending a disabled entry")

    try:
        wait_for(lambda: sent.llen("ticks") >= 2, 30, "two sends by beat")
        entry.refresh_from_db()
        row = next(row for row in recurring_tasks() if row.key == "tick")
        assert entry.total_run_count >= 1 and row.last_run_at is not None, "the run is recorded without delay"
        assert row.next_run_at is not None

        assert api.post(ENABLED, {"key": "tick", "enabled": False}, format="json").status_code == 200
        stopped_at = settled()
        time.sleep(3)
        assert sent.llen("ticks") == stopped_at, "a disabled entry is not sent"

        assert api.post(ENABLED, {"key": "tick", "enabled": True}, format="json").status_code == 200
        wait_for(lambda: sent.llen("ticks") > stopped_at + 1, 30, "sends again once enabled")
    finally:
        stop_process(proc)


@pytest.mark.django_db
def test_static_entries_and_unknown_keys_are_refused(beat_schedule, superuser):
    api = client_for(superuser)

    static = api.post(ENABLED, {"key": "static-add", "enabled": False}, format="json")
    unknown = api.post(RUN, {"key": "nope"}, format="json")
    missing = api.post(ENABLED, {"enabled": False}, format="json")
    bad_backend = api.post(RUN, {"key": "static-add", "backend": "nope"}, format="json")

    assert static.status_code == 409 and "CELERY_BEAT_SCHEDULE" in static.json()["detail"]
    assert unknown.status_code == 404 and "nope" in unknown.json()["detail"]
    assert missing.status_code == 400 and "key" in missing.json()
    assert bad_backend.status_code == 400 and "backend" in bad_backend.json()
    assert sorted(audit_rows("toggle_periodic_task")) == [
        ("admin", "(disable)", "refused"),
        ("admin", "static-add (disable)", "refused"),
    ]
    assert sorted(audit_rows("run_periodic_task")) == [("admin", "nope", "refused"), ("admin", "static-add", "refused")]


@pytest.mark.django_db
def test_each_control_needs_its_own_permission():
    database_entry()
    toggler = make_user("toggler", staff=True)
    toggler.user_permissions.add(Permission.objects.get(codename="toggle_periodic_task"))
    nobody = client_for(make_user("staff", staff=True))
    api = client_for(toggler)

    assert nobody.post(ENABLED, {"key": "db-add", "enabled": False}, format="json").status_code == 403
    assert nobody.post(RUN, {"key": "db-add"}, format="json").status_code == 403
    refused_run = api.post(RUN, {"key": "db-add"}, format="json")
    assert refused_run.status_code == 403 and "run_periodic_task" in refused_run.json()["detail"]
    assert api.post(ENABLED, {"key": "db-add", "enabled": False}, format="json").status_code == 200
    assert PeriodicTask.objects.get(name="db-add").enabled is False
    assert APIClient().post(RUN, {"key": "db-add"}, format="json").status_code in (401, 403)
    # Refusals by permission are audited for signed-in users only.
    assert sorted(audit_rows("run_periodic_task")) == [("staff", "db-add", "refused"), ("toggler", "db-add", "refused")]


@pytest.mark.django_db
def test_read_only_mode_refuses_even_superusers(settings, superuser):
    settings.CELERY_READ_ONLY = True
    database_entry()
    api = client_for(superuser)

    response = api.post(ENABLED, {"key": "db-add", "enabled": False}, format="json")
    assert response.status_code == 403 and "READ_ONLY" in response.json()["detail"]
    assert api.post(RUN, {"key": "db-add"}, format="json").status_code == 403
    assert PeriodicTask.objects.get(name="db-add").enabled is True


@pytest.mark.django_db
def test_run_now_with_the_broker_down_is_503_without_the_password(settings, superuser):
    settings.CELERY_BROKER_URL = f"redis://:s3cret-pw@127.0.0.1:{free_port()}/0"
    database_entry()

    response = client_for(superuser).post(RUN, {"key": "db-add"}, format="json")

    assert response.status_code == 503
    assert "unreachable" in response.json()["detail"] and "s3cret-pw" not in response.content.decode()
    row = CeleryAuditLog.objects.get(action="run_periodic_task")
    assert row.result == "failed" and "s3cret-pw" not in row.detail
