"""/metrics' task analytics families from rows written here (the totals tier of TaskRollup, lost
tasks, the monitor's heartbeat), scraped live from the view on a real Redis: the histogram and
counter values match the rows, promtool accepts the scrape, worker labels only when asked, and a
second scrape within the interval sends no query."""

from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from dojo.models import LostTask, MonitorHeartbeat, TaskRollup
from dojo.ops import histograms
from unittests.ops.observe.test_metrics import assert_promtool_accepts, samples, scrape

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def total(task: str, queue: str, worker: str = "", runtimes=(), waits=(), **counts: int) -> TaskRollup:
    runtime, wait = histograms.empty(), histograms.empty()
    for seconds in runtimes:
        runtime[histograms.bucket_of(seconds)] += 1
    for seconds in waits:
        wait[histograms.bucket_of(seconds)] += 1
    return TaskRollup.objects.create(
        period=TaskRollup.Period.TOTAL,
        bucket_start=EPOCH,
        backend="default",
        task_name=task,
        queue=queue,
        worker=worker,
        runtime_buckets=runtime,
        runtime_sum=sum(runtimes),
        runtime_max=max(runtimes, default=0.0),
        wait_buckets=wait,
        wait_sum=sum(waits),
        **counts,
    )


@pytest.fixture
def rows(db) -> None:
    # Two workers' rows of one key: summed unless DD_ANALYTICS_METRICS_BY_WORKER.
    total("app.report", "reports", "w1@a", runtimes=[0.2, 0.3, 4.0], waits=[0.01, 0.02, 0.5], succeeded=2, failed=1)
    total("app.report", "reports", "w2@b", runtimes=[0.2, 7200.0], waits=[1.0, 1.0], succeeded=2, retried=1, lost=1)
    total("app.mail", "celery", runtimes=[0.004], waits=[0.001], succeeded=1, received=1, started=1)


def labels(**pairs: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(pairs.items()))


def test_histograms_and_counters_match_the_totals_rows(redis_only, rows, api):
    body = scrape(api)
    assert_promtool_accepts(body)
    got = samples(body)
    report = {"backend": "default", "task": "app.report", "queue": "reports"}

    assert got[("celery_tasks_total", labels(**report, state="succeeded"))] == 4
    assert got[("celery_tasks_total", labels(**report, state="failed"))] == 1
    assert got[("celery_tasks_total", labels(**report, state="retried"))] == 1
    assert got[("celery_tasks_total", labels(**report, state="lost"))] == 1
    assert (
        got[("celery_tasks_total", labels(backend="default", task="app.mail", queue="celery", state="received"))] == 1
    )

    runtime = "celery_task_runtime_seconds"
    assert got[(f"{runtime}_count", labels(**report))] == 5
    assert got[(f"{runtime}_sum", labels(**report))] == pytest.approx(0.2 + 0.3 + 4.0 + 0.2 + 7200.0)
    assert got[(f"{runtime}_bucket", labels(**report, le="0.25"))] == 2
    assert got[(f"{runtime}_bucket", labels(**report, le="0.5"))] == 3
    assert got[(f"{runtime}_bucket", labels(**report, le="5.0"))] == 4
    assert got[(f"{runtime}_bucket", labels(**report, le="3600.0"))] == 4, "7200 s is past the last bound"
    assert got[(f"{runtime}_bucket", labels(**report, le="+Inf"))] == 5
    les = [key[1] for key in got if key[0] == f"{runtime}_bucket" and dict(key[1])["task"] == "app.report"]
    assert len(les) == histograms.SIZE, "every bound and +Inf"

    wait = "celery_task_wait_seconds"
    assert got[(f"{wait}_count", labels(**report))] == 5
    assert got[(f"{wait}_sum", labels(**report))] == pytest.approx(0.01 + 0.02 + 0.5 + 1.0 + 1.0)
    assert got[(f"{wait}_bucket", labels(**report, le="0.025"))] == 2
    assert got[(f"{wait}_bucket", labels(**report, le="1.0"))] == 5
    assert not any("worker" in dict(key[1]) for key in got if key[0].startswith("celery_task")), "no worker label"


def test_worker_label_only_with_the_setting(redis_only, rows, api, settings):
    settings.ANALYTICS_METRICS_BY_WORKER = True
    body = scrape(api)
    assert_promtool_accepts(body)
    got = samples(body)
    one = {"backend": "default", "task": "app.report", "queue": "reports"}
    assert got[("celery_tasks_total", labels(**one, worker="w1@a", state="succeeded"))] == 2
    assert got[("celery_tasks_total", labels(**one, worker="w2@b", state="succeeded"))] == 2
    assert got[("celery_task_runtime_seconds_count", labels(**one, worker="w2@b"))] == 2


def test_detection_and_monitor_gauges(redis_only, db, api):
    now = timezone.now()
    LostTask.objects.create(
        backend="default",
        task_id="gone-1",
        task_name="app.report",
        worker="w1@a",
        started_at=now - timedelta(minutes=2),
        worker_gone_at=now - timedelta(minutes=1),
        detected_at=now,
    )
    MonitorHeartbeat.objects.create(
        backend="default",
        hostname="mon",
        pid=1,
        started_at=now - timedelta(minutes=5),
        last_beat_at=now,
        broker_connected=True,
        events_seen=1234,
    )
    body = scrape(api)
    assert_promtool_accepts(body)
    got = samples(body)
    assert got[("dojo_celery_lost_tasks", ())] == 1
    assert got[("dojo_celery_periodic_tasks_late", ())] == 0
    assert got[("dojo_celery_beat_down", ())] == 0
    assert got[("dojo_celery_tasks_running_long", ())] == 0
    assert got[("dojo_celery_tasks_failure_rate_up", ())] == 0
    assert got[("dojo_celery_monitor_up", ())] == 1
    assert got[("dojo_celery_monitor_broker_connected", ())] == 1
    assert got[("dojo_celery_monitor_events_seen_total", ())] == 1234
    assert 0 <= got[("dojo_celery_monitor_last_beat_age_seconds", ())] < 5


def test_a_stopped_monitor_is_down_and_no_monitor_says_so(redis_only, db, api):
    got = samples(scrape(api))
    assert got[("dojo_celery_monitor_up", ())] == 0 and ("dojo_celery_monitor_events_seen_total", ()) not in got
    now = timezone.now()
    MonitorHeartbeat.objects.create(
        backend="default", hostname="mon", pid=1, started_at=now, last_beat_at=now - timedelta(seconds=30)
    )
    from django.core.cache import cache

    cache.clear()
    got = samples(scrape(api))
    assert got[("dojo_celery_monitor_up", ())] == 0
    assert got[("dojo_celery_monitor_last_beat_age_seconds", ())] >= 30


def test_a_second_scrape_within_the_interval_reads_no_analytics_row(redis_only, rows, api):
    first = samples(scrape(api))
    with CaptureQueriesContext(connection) as queries:
        second = samples(scrape(api))
    tables = " ".join(query["sql"] for query in queries.captured_queries)
    for table in ("dojo_taskrollup", "dojo_losttask", "dojo_monitorheartbeat", "django_celery_beat_periodictask"):
        assert table not in tables
    assert {k: v for k, v in first.items() if k[0].startswith("celery_")} == {
        k: v for k, v in second.items() if k[0].startswith("celery_")
    }
