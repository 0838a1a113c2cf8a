"""The detections (dojo.ops.fleet.detections) as alerts in the status document, in the API and on
the dashboard: lost tasks (rows written here, retried through the API onto a real Redis), failure
rate up (rollup rows written here), a late periodic task and beat down from a real `celery -A dojo
beat` stopped with SIGSTOP, a task running long on a real worker against rollup rows written here."""

import ast
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import timedelta

import pytest
from django.db import DatabaseError
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from dojo.models import CeleryAuditLog, LostTask, TaskRollup
from dojo.ops import histograms
from dojo.ops.fleet import detections
from dojo.ops.fleet.alerts import detection_alerts
from dojo.ops.fleet.detections import detect
from dojo.ops.fleet.status_cache import get_status
from unittests.conftest import ROOT, make_user, stop_process, wait_for

DETECTIONS = reverse("celery_detections")
RETRY = reverse("celery_lost_task_retry")


def client_for(user) -> APIClient:
    api = APIClient()
    api.force_authenticate(user)
    return api


def lost(task_id: str, minutes_ago: float = 1, retried: bool = False, backend: str = "default") -> LostTask:
    now = timezone.now()
    return LostTask.objects.create(
        backend=backend,
        task_id=task_id,
        task_name="dojo.tasks.add",
        queue="celery",
        worker="w1@host",
        started_at=now - timedelta(minutes=minutes_ago + 1),
        worker_gone_at=now - timedelta(minutes=minutes_ago + 0.5),
        detected_at=now - timedelta(minutes=minutes_ago),
        retried_at=now if retried else None,
    )


def rollup(period: int, task: str, minutes_ago: float, succeeded: int = 0, failed: int = 0, runtimes=()) -> None:
    """One rollup row of `period` starting at its bucket `minutes_ago` back."""
    start = timezone.now() - timedelta(minutes=minutes_ago)
    start = start.replace(second=0, microsecond=0)
    if period == TaskRollup.Period.HOUR:
        start = start.replace(minute=0)
    buckets = histograms.empty()
    for seconds in runtimes:
        buckets[histograms.bucket_of(seconds)] += 1
    TaskRollup.objects.create(
        period=period,
        bucket_start=start,
        backend="default",
        task_name=task,
        queue="celery",
        succeeded=succeeded,
        failed=failed,
        started=succeeded + failed,
        runtime_buckets=buckets,
        runtime_sum=sum(runtimes),
    )


@pytest.mark.django_db
def test_lost_tasks_recent_and_not_retried_only_newest_first():
    lost("t-old", minutes_ago=25 * 60)
    lost("t-retried", retried=True)
    lost("t-other-backend", backend="other")
    lost("t-first", minutes_ago=10)
    lost("t-second", minutes_ago=2)
    found = detect("default")
    assert [item.task_id for item in found.lost_tasks] == ["t-second", "t-first"]
    assert found.lost_total == 2
    (alert,) = detection_alerts(found)
    assert (alert.code, alert.severity) == ("lost_tasks", "critical")
    assert "2 task(s)" in alert.message and "dojo.tasks.add on w1@host" in alert.message


@pytest.mark.django_db
def test_lost_tasks_list_is_bounded_and_the_total_counted():
    for n in range(detections.MAX_ITEMS + 7):
        lost(f"t-{n}", minutes_ago=n / 100)
    found = detect("default")
    assert len(found.lost_tasks) == detections.MAX_ITEMS and found.lost_total == detections.MAX_ITEMS + 7
    assert len(detection_alerts(found)) == 1, "one alert however many lost tasks"


@pytest.mark.django_db
def test_failure_rate_up_above_threshold_and_own_rate_with_enough_runs(settings):
    settings.ANALYTICS_FAILURE_RATE_PERCENT = 10
    minute, hour = TaskRollup.Period.MINUTE, TaskRollup.Period.HOUR
    # up: 4 of 10 failed in the last 15 minutes; the rest of the day 1 of 100 (the hour rows hold the recent ones too)
    rollup(minute, "app.up", 3, succeeded=6, failed=4)
    rollup(hour, "app.up", 0, succeeded=6, failed=4)
    rollup(hour, "app.up", 180, succeeded=99, failed=1)
    # always this bad: 3 of 10 now, 30 of 100 before
    rollup(minute, "app.always", 3, succeeded=7, failed=3)
    rollup(hour, "app.always", 0, succeeded=7, failed=3)
    rollup(hour, "app.always", 180, succeeded=70, failed=30)
    # too few runs: 1 of 1
    rollup(minute, "app.once", 3, failed=1)
    rollup(hour, "app.once", 0, failed=1)
    # below the threshold: 1 of 20, never failed before
    rollup(minute, "app.low", 3, succeeded=19, failed=1)
    rollup(hour, "app.low", 0, succeeded=19, failed=1)
    # failures older than 15 minutes do not count as recent
    rollup(minute, "app.earlier", 30, succeeded=0, failed=10)
    rollup(hour, "app.earlier", 0, succeeded=0, failed=10)

    (item,) = detect("default").failure_rates
    assert (item.task_name, item.runs, item.failed, item.percent) == ("app.up", 10, 4, 40.0)
    assert item.baseline_percent == 1.0
    (alert,) = detection_alerts(detect("default"))
    assert alert.code == "failure_rate_up" and "app.up 40% of 10 (usually 1%)" in alert.message


@pytest.mark.django_db
def test_a_periodic_entry_late_by_its_interval_plus_grace_against_the_database_clock(settings):
    from django_celery_beat.models import CrontabSchedule, IntervalSchedule, PeriodicTask

    settings.ANALYTICS_PERIODIC_GRACE_SECONDS = 60
    minute, _ = IntervalSchedule.objects.get_or_create(every=1, period=IntervalSchedule.MINUTES)
    now = timezone.now()
    PeriodicTask.objects.create(
        name="late", task="dojo.tasks.add", interval=minute, last_run_at=now - timedelta(minutes=3)
    )
    PeriodicTask.objects.create(
        name="in-grace", task="dojo.tasks.add", interval=minute, last_run_at=now - timedelta(seconds=100)
    )
    PeriodicTask.objects.create(
        name="off", task="dojo.tasks.add", interval=minute, enabled=False, last_run_at=now - timedelta(hours=1)
    )
    hourly, _ = CrontabSchedule.objects.get_or_create(minute="0", hour="*", timezone="UTC")
    PeriodicTask.objects.create(
        name="cron-late", task="dojo.tasks.add", crontab=hourly, last_run_at=now - timedelta(hours=3)
    )
    found = detect("default")
    assert [item.name for item in found.late_entries] == ["cron-late", "late"]
    late = found.late_entries[1]
    assert 55 < late.late_seconds < 65 and late.schedule == "interval"
    assert found.beat_expected and found.beat_down, "entries are enabled and no beat ever wrote a heartbeat"
    assert {alert.code for alert in detection_alerts(found)} == {"beat_down", "periodic_task_late"}
    assert detect("other").late_entries == [], "django-celery-beat's entries are the main backend's"


@pytest.mark.django_db
def test_no_entries_no_beat_expected_and_nothing_detected():
    found = detect("default")
    assert not found.beat_expected and not found.beat_down
    assert detection_alerts(found) == []


def test_the_status_document_carries_the_detection_alerts_and_survives_their_failure(
    redis_only, db, monkeypatch, settings
):
    """The alert is in the document a real status read (Redis, no worker) returns; when the
    detections' queries fail (injected: a database that fails only there cannot be produced for
    real) the document keeps its other alerts and says the detections are unavailable."""
    settings.CELERY_STATUS_CACHE_SECONDS = 0
    lost("t-doc")
    codes = [alert.code for alert in get_status().alerts]
    assert codes == ["no_workers", "lost_tasks"]

    def failing(*args, **kwargs):
        raise DatabaseError("detections query failed")

    monkeypatch.setattr("dojo.ops.fleet.status_cache.detect", failing)
    assert [alert.code for alert in get_status().alerts] == ["no_workers", "detections_unavailable"]


# --- the API: the detections and the retry of a lost task -------------------------------------


def stored_started_result(task_id: str) -> None:
    from django_celery_results.models import TaskResult

    TaskResult.objects.create(
        task_id=task_id, task_name="dojo.tasks.add", status="STARTED", task_args='"(2, 3)"', task_kwargs='"{}"'
    )


def test_retry_a_lost_task_publishes_its_stored_call_once_and_records_it(redis_only, db):
    import redis

    admin = make_user("admin-" + uuid.uuid4().hex[:6], superuser=True)
    api = client_for(admin)
    stored_started_result("lost-1")
    row = lost("lost-1")
    lost("lost-no-result")

    answer = api.post(RETRY, {"task_id": "lost-1"}, format="json")
    assert answer.status_code == 200, answer.content
    body = answer.json()
    assert body["original_task_id"] == "lost-1" and body["task_name"] == "dojo.tasks.add" and body["queue"] == "celery"
    row.refresh_from_db()
    assert row.retried_at is not None and row.retried_task_id == body["task_id"]
    assert redis.Redis.from_url(redis_only.url).llen("celery") == 1, "published once, to its queue"

    again = api.post(RETRY, {"task_id": "lost-1"}, format="json")
    assert again.status_code == 409 and "retried already" in again.json()["detail"]
    unknown = api.post(RETRY, {"task_id": "never-lost"}, format="json")
    assert unknown.status_code == 404 and "detail" in unknown.json()
    no_result = api.post(RETRY, {"task_id": "lost-no-result"}, format="json")
    assert no_result.status_code == 409 and "No stored result" in no_result.json()["detail"]
    assert LostTask.objects.get(task_id="lost-no-result").retried_at is None, "a refused retry gives its claim back"
    bad = api.post(RETRY, {"task_id": ""}, format="json")
    assert bad.status_code == 400

    audit = list(CeleryAuditLog.objects.filter(action="retry_lost_task").order_by("pk").values_list("target", "result"))
    assert audit == [
        ("lost-1", "ok"),
        ("lost-1", "refused"),
        ("never-lost", "refused"),
        ("lost-no-result", "refused"),
        ("", "refused"),
    ]
    listed = api.get(DETECTIONS).json()
    assert [item["task_id"] for item in listed["lost_tasks"]] == ["lost-no-result"], (
        "a retried task is no longer listed"
    )


def test_retry_needs_the_permission_and_is_refused_in_read_only_mode(redis_only, db, settings):
    stored_started_result("lost-2")
    lost("lost-2")
    staff = make_user("staff-" + uuid.uuid4().hex[:6], staff=True)
    assert client_for(staff).post(RETRY, {"task_id": "lost-2"}, format="json").status_code == 403
    retrier = make_user("retrier-" + uuid.uuid4().hex[:6], staff=True, permissions=("retry_task",))
    settings.CELERY_READ_ONLY = True
    refused = client_for(retrier).post(RETRY, {"task_id": "lost-2"}, format="json")
    assert refused.status_code == 403 and "DD_CELERY_READ_ONLY" in refused.json()["detail"]
    assert LostTask.objects.get(task_id="lost-2").retried_at is None


def test_the_detections_api_lists_items_and_refuses_bad_input(redis_only, db):
    lost("api-lost")
    rollup(TaskRollup.Period.MINUTE, "app.up", 2, succeeded=5, failed=5)
    rollup(TaskRollup.Period.HOUR, "app.up", 0, succeeded=5, failed=5)
    staff = client_for(make_user("viewer-" + uuid.uuid4().hex[:6], staff=True))
    body = staff.get(DETECTIONS).json()
    assert body["backend"] == "default" and body["lost_total"] == 1
    assert body["lost_tasks"][0]["worker"] == "w1@host"
    assert body["failure_rates"][0]["task_name"] == "app.up" and body["failure_rates"][0]["percent"] == 50.0
    assert body["long_runners"] == [] and body["late_entries"] == []
    assert staff.get(DETECTIONS, {"backend": "nope"}).status_code == 400
    assert APIClient().get(DETECTIONS).status_code in (401, 403)


def test_the_dashboard_lists_lost_tasks_with_a_retry_button_for_who_may_retry(redis_only, db, client):
    lost("dash-lost")
    admin = make_user("dash-" + uuid.uuid4().hex[:6], superuser=True)
    client.force_login(admin)
    page = client.get(reverse("celery_panel:dashboard")).content.decode()
    assert 'data-task-id="dash-lost"' in page and 'data-control="retry"' in page
    assert f'data-url="{RETRY}"' in page
    viewer = make_user("dash-view-" + uuid.uuid4().hex[:6], staff=True)
    client.force_login(viewer)
    page = client.get(reverse("celery_panel:dashboard")).content.decode()
    assert 'data-task-id="dash-lost"' in page and 'data-control="retry"' not in page


# --- real processes ---------------------------------------------------------------------------


def test_stopping_a_real_beat_makes_its_entry_late_and_beat_down(redis_only, shared_database, settings, monkeypatch):
    """`celery -A dojo beat` runs a 2 s entry and beats; SIGSTOP: the entry turns late past its
    interval plus a 1 s grace, and beat down past the (shortened) heartbeat limit; SIGCONT: both clear."""
    from django_celery_beat.models import IntervalSchedule, PeriodicTask

    settings.ANALYTICS_PERIODIC_GRACE_SECONDS = 1
    monkeypatch.setattr(detections, "BEAT_DOWN_AFTER", timedelta(seconds=3))
    every, _ = IntervalSchedule.objects.get_or_create(every=2, period=IntervalSchedule.SECONDS)
    PeriodicTask.objects.create(name="tick", task="dojo.tasks.add", interval=every, queue="ticks", args="[1, 2]")
    log = redis_only.tmp / "beat.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "dojo", "beat", "-l", "info", "-s", str(redis_only.tmp / "schedule")],
        cwd=ROOT,
        env=redis_only.env(DD_DATABASE_URL=shared_database),
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )

    def running_and_on_time() -> bool:
        assert proc.poll() is None, log.read_text()[-2000:]
        found = detect("default")
        ran = PeriodicTask.objects.get(name="tick").last_run_at is not None
        return ran and not found.beat_down and "tick" not in {item.name for item in found.late_entries}

    try:
        wait_for(running_and_on_time, 60, "beat running the entry and beating")
        os.kill(proc.pid, signal.SIGSTOP)
        stopped = time.monotonic()

        def late_and_down() -> bool:
            found = detect("default")
            return found.beat_down and "tick" in {item.name for item in found.late_entries}

        wait_for(late_and_down, 20, "the entry late and beat down")
        assert time.monotonic() - stopped > 2, "not late before its interval and grace passed"
        codes = {alert.code for alert in detection_alerts(detect("default"))}
        assert {"beat_down", "periodic_task_late"} <= codes
        os.kill(proc.pid, signal.SIGCONT)
        wait_for(running_and_on_time, 30, "on time again once beat goes on")
    finally:
        os.kill(proc.pid, signal.SIGCONT)
        stop_process(proc)


def test_a_task_running_far_longer_than_its_p95_on_a_real_worker(redis_only, db, settings):
    """Hour rows say dojo.tasks.sleep usually takes under 0.1 s (p95 ~0.1 s); a real worker runs
    sleep(20): past 3 x p95 the status document has task_running_long naming it, and the API lists it."""
    settings.CELERY_STATUS_CACHE_SECONDS = 0
    settings.ANALYTICS_SLOW_FACTOR = 3
    rollup(TaskRollup.Period.HOUR, "dojo.tasks.sleep", 0, succeeded=20, runtimes=[0.08] * 20)
    rollup(TaskRollup.Period.HOUR, "dojo.tasks.add", 0, succeeded=20, runtimes=[0.001] * 20)
    worker = redis_only.start_worker("slowpoke")
    task = redis_only.client().send_task("dojo.tasks.sleep", args=(20,), queue="celery")
    try:

        def flagged() -> bool:
            return any(alert.code == "task_running_long" for alert in get_status().alerts)

        wait_for(flagged, 30, "the running task flagged")
        status = get_status()
        (item,) = detect("default", status.worker_replies, status.read_at).long_runners
        assert (item.task_id, item.task_name, item.worker) == (task.id, "dojo.tasks.sleep", worker)
        assert 0.05 < item.p95_seconds <= 0.1 and item.running_seconds > 3 * item.p95_seconds and item.runs == 20
        staff = client_for(make_user("long-" + uuid.uuid4().hex[:6], staff=True))
        listed = staff.get(DETECTIONS).json()["long_runners"]
        assert [row["task_id"] for row in listed] == [task.id]
    finally:
        redis_only.stop_workers()


def test_a_worker_killed_mid_task_is_a_lost_task_alerted_scraped_and_retried(redis_only, shared_database, settings):
    """End to end with Part A's real monitor: a project worker (results in the shared database)
    runs sleep(6); SIGKILL mid-task; the monitor writes the LostTask row; the status document
    alerts lost_tasks, /metrics counts it, and the API's retry runs it again to SUCCESS on a
    second worker, recorded on the row."""
    from django.core.cache import cache
    from django_celery_results.models import TaskResult

    from unittests.ops.observe.test_metrics import assert_promtool_accepts, samples, scrape
    from unittests.ops.observe.test_monitor import monitors_on

    settings.CELERY_STATUS_CACHE_SECONDS = 0
    monitors = monitors_on(redis_only, shared_database)
    start_monitor = next(monitors)
    env = {"DD_DATABASE_URL": shared_database, "DD_CELERY_RESULT_BACKEND": "django-db"}
    try:
        start_monitor(DD_ANALYTICS_FLUSH_SECONDS="1", DD_ANALYTICS_LOST_GRACE_SECONDS="1")
        doomed_worker = redis_only.start_worker("k1", **env)
        client = redis_only.client()
        time.sleep(1.5)  # enable_events reached the worker (the monitor sends it every second)
        doomed = client.send_task("dojo.tasks.sleep", args=(6,))
        wait_for(lambda: TaskResult.objects.filter(task_id=doomed.id, status="STARTED").exists(), 30, "started")
        proc = next(proc for proc in redis_only.workers if doomed_worker in proc.args)
        os.killpg(proc.pid, signal.SIGKILL)
        wait_for(lambda: LostTask.objects.filter(task_id=doomed.id).exists(), 30, "the monitor's LostTask row")
        assert "lost_tasks" in {alert.code for alert in get_status().alerts}

        admin = make_user("e2e-" + uuid.uuid4().hex[:6], superuser=True)
        api = client_for(admin)
        wait_for(lambda: not cache.clear() and _lost_counted(samples(scrape(api))), 10, "lost counted in /metrics")
        body = scrape(api)
        assert_promtool_accepts(body)
        assert samples(body)[("dojo_celery_lost_tasks", ())] == 1

        redis_only.start_worker("k2", **env)
        answer = api.post(RETRY, {"task_id": doomed.id}, format="json")
        assert answer.status_code == 200, answer.content
        new_id = answer.json()["task_id"]
        done = lambda: TaskResult.objects.filter(task_id=new_id, status="SUCCESS").exists()  # noqa: E731
        wait_for(done, 30, "the retried task's success (stored by the second worker)")
        retried = TaskResult.objects.get(task_id=new_id)
        assert retried.task_name == "dojo.tasks.sleep"
        assert list(ast.literal_eval(json.loads(retried.task_args))) == [6], "the stored arguments, again"
        assert LostTask.objects.get(task_id=doomed.id).retried_task_id == new_id
        assert "lost_tasks" not in {alert.code for alert in get_status().alerts}, "a retried task is not alerted"
        client.close()
    finally:
        redis_only.stop_workers()
        next(monitors, None)


def _lost_counted(got: dict) -> bool:
    return any(
        name == "celery_tasks_total" and dict(pairs).get("state") == "lost" and value == 1
        for (name, pairs), value in got.items()
    )
