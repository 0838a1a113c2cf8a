"""Task analytics read model (dojo.ops.read_models.analytics): TaskRollup / FailureRollup rows of
known values written here (histograms built with dojo.ops.histograms), stored results of known
runtimes, and one end-to-end check of real sleeps through a real worker and a real monitor."""

import time
from datetime import UTC, datetime, timedelta
from itertools import pairwise

import pytest
from django.core.cache import cache
from django.db import connection
from django_celery_results.models import TaskResult

from dojo.models import FailureRollup, TaskRollup
from dojo.ops import histograms
from dojo.ops.read_models import analytics
from unittests.conftest import free_port, wait_for
from unittests.ops.observe.test_monitor import monitors_on
from unittests.ops.observe.test_rollups import FLUSH

MINUTE, HOUR = TaskRollup.Period.MINUTE, TaskRollup.Period.HOUR
NOW = datetime(2026, 5, 4, 10, 17, 30, tzinfo=UTC)  # 10:17:30 UTC: inside the 24h window's 10:00 point


def hist(*runtimes: float) -> list[int]:
    counts = histograms.empty()
    for runtime in runtimes:
        counts[histograms.bucket_of(runtime)] += 1
    return counts


def rollup(name: str, start: datetime, *, period: int = MINUTE, backend: str = "default", queue: str = "celery", **kw):
    runtimes = kw.pop("runtimes", ())
    waits = kw.pop("waits", ())
    return TaskRollup.objects.create(
        period=period,
        bucket_start=start,
        backend=backend,
        task_name=name,
        queue=queue,
        runtime_buckets=histograms.add(histograms.empty(), hist(*runtimes)),
        wait_buckets=hist(*waits),
        runtime_sum=kw.pop("runtime_sum", sum(runtimes)),
        **kw,
    )


@pytest.mark.django_db
def test_stats_percentiles_rates_share_and_sparklines_over_hour_rows():
    """Two queues and two points of one task name add up; percentiles are read from the merged
    buckets (linear within a bucket), rates are of succeeded + failed, time share of all names.
    The 24h window reads hour rows, one point an hour."""
    span = analytics.window_of("24h", NOW)
    assert span.period == HOUR and span.point_seconds == 3600 and len(span.points) == 24
    assert span.points[-1] == datetime(2026, 5, 4, 10, 0, tzinfo=UTC)
    assert span.since == span.points[0] == datetime(2026, 5, 3, 11, 0, tzinfo=UTC)
    # "a": 90 runs of 0.3 s at 10:00 (queue celery), 10 of 1.2 s at 09:00 (queue other) -> p50, p95 known.
    ten = NOW.replace(minute=0, second=0)
    rollup("a", ten, period=HOUR, succeeded=85, failed=5, retried=9, runtimes=[0.3] * 90, waits=[0.02])
    rollup("a", datetime(2026, 5, 4, 9, 0, tzinfo=UTC), period=HOUR, queue="other", succeeded=10, runtimes=[1.2] * 10)
    rollup("b", datetime(2026, 5, 4, 9, 0, tzinfo=UTC), period=HOUR, succeeded=0, revoked=3, runtime_sum=0.0)
    rollup(
        "c", datetime(2026, 5, 3, 11, 0, tzinfo=UTC), period=HOUR, succeeded=4, failed=4, runtimes=[36.0] * 8, lost=1
    )
    rollup("old", datetime(2026, 5, 3, 10, 0, tzinfo=UTC), period=HOUR, succeeded=50)  # before the first point
    rollup("a", NOW.replace(minute=1, second=0), succeeded=999)  # the other tier (a minute row)
    rollup("a", ten, period=HOUR, backend="second", succeeded=777)  # another backend

    table = analytics.task_table("default", "24h", now=NOW)
    assert (table.window, table.point_seconds, table.since, table.until) == ("24h", 3600, span.since, NOW)
    assert [row.task_name for row in table.rows] == ["a", "c", "b"]  # -runs: 100, 8, 0
    a, c, b = table.rows
    assert (a.runs, a.succeeded, a.failed, a.retried) == (100, 95, 5, 9)
    assert a.failure_percent == pytest.approx(5.0) and a.retry_percent == pytest.approx(9.0)
    assert a.runtime_p50 == pytest.approx(0.25 + 0.25 * 50 / 90)  # rank 50 of 90 in (0.25, 0.5]
    assert a.runtime_p95 == pytest.approx(1.0 + 1.5 * 5 / 10)  # rank 95: 5th of 10 in (1, 2.5]
    assert a.runtime_p99 == pytest.approx(1.0 + 1.5 * 9 / 10)
    assert a.wait_p95 == pytest.approx(0.01 + 0.015 * 0.95)
    assert a.runtime_sum == pytest.approx(90 * 0.3 + 12.0)
    total = 90 * 0.3 + 12.0 + 8 * 36.0
    assert a.time_share_percent == pytest.approx((90 * 0.3 + 12.0) / total * 100)
    assert c.time_share_percent == pytest.approx(288.0 / total * 100) and c.lost == 1
    assert c.runtime_p50 == pytest.approx(30.0 + 30.0 * 4 / 8)  # (30, 60]
    assert (b.runs, b.revoked, b.failure_percent, b.retry_percent, b.runtime_p95, b.wait_p95) == (
        0,
        3,
        None,
        None,
        None,
        None,
    )
    assert b.time_share_percent == 0.0
    # Sparklines: 10:00 is the last point, 09:00 the one before.
    assert a.runs_series[-1] == 90 and a.runs_series[-2] == 10 and sum(a.runs_series) == 100
    assert a.p95_series[-1] == pytest.approx(0.25 + 0.25 * 0.95 * 90 / 90) and a.p95_series[-2] is not None
    assert a.p95_series[0] is None and len(a.runs_series) == len(a.p95_series) == 24
    assert c.runs_series[0] == 8  # 11:00 yesterday: the first point
    assert b.runs_series == [0] * 24


@pytest.mark.django_db
def test_sort_orders_put_none_last_either_way_and_bad_input_is_refused():
    rollup("fast", NOW.replace(second=0), succeeded=10, runtimes=[0.002] * 10)
    rollup("slow", NOW.replace(second=0), succeeded=2, failed=2, runtimes=[5.0] * 4)
    rollup("idle", NOW.replace(second=0), revoked=1)  # no runs: every percentile / % None

    def order(sort: str) -> list[str]:
        return [row.task_name for row in analytics.task_table("default", "1h", sort, now=NOW).rows]

    assert order("-runs") == ["fast", "slow", "idle"]
    assert order("runs") == ["idle", "slow", "fast"]
    assert order("task_name") == ["fast", "idle", "slow"]
    assert order("-task_name") == ["slow", "idle", "fast"]
    assert order("runtime_p95") == ["fast", "slow", "idle"]
    assert order("-runtime_p95") == ["slow", "fast", "idle"]
    assert order("failure_percent") == ["fast", "slow", "idle"]
    assert order("-failure_percent") == ["slow", "fast", "idle"]
    assert order("-wait_p95") == ["fast", "idle", "slow"]  # all None: by name
    for bad in ("bogus", "-", "--runs", ""):
        with pytest.raises(ValueError, match="sort"):
            analytics.task_table("default", "1h", bad, now=NOW)
    for bad in ("2h", "", "24H"):
        with pytest.raises(ValueError, match="window"):
            analytics.task_table("default", bad, now=NOW)
        with pytest.raises(ValueError, match="window"):
            analytics.task_detail("default", "fast", bad, now=NOW)


@pytest.mark.django_db
def test_windows_read_their_tier_and_cut_their_points():
    """1h reads minute rows, 24h, 7d and 30d hour rows; the points' count and width per window."""
    start = NOW.replace(minute=0, second=0)
    rollup("t", start, period=MINUTE, succeeded=1)
    rollup("t", start, period=HOUR, succeeded=100)
    rollup("t", start - timedelta(days=6, hours=20), period=HOUR, succeeded=10)  # inside 7d
    rollup("t", start - timedelta(days=20), period=HOUR, succeeded=1000)  # inside 30d only
    expected = {"1h": (1, 60, 60), "24h": (100, 24, 3600), "7d": (110, 42, 14400), "30d": (1110, 60, 43200)}
    for window, (runs, points, width) in expected.items():
        table = analytics.task_table("default", window, now=NOW)
        assert table.rows[0].runs == runs, window
        assert len(table.points) == points and table.point_seconds == width, window
        assert all(later - earlier == timedelta(seconds=width) for earlier, later in pairwise(table.points))
        assert table.points[0] == table.since and table.points[-1] <= NOW < table.points[-1] + timedelta(seconds=width)
        assert sum(table.rows[0].runs_series) == runs, window
    seven = analytics.task_table("default", "7d", now=NOW).rows[0]
    assert seven.runs_series[-1] == 100 and seven.runs_series[0] == 10  # 08:00 point holds 10:00; the 7d-ago one


@pytest.mark.django_db
def test_database_clock_is_used_without_now():
    rollup("live", datetime.now(UTC).replace(second=0, microsecond=0), succeeded=3)
    table = analytics.task_table("default", "1h")
    assert [row.runs for row in table.rows] == [3] and table.rows[0].runs_series[-1] in (0, 3)
    assert abs((table.until - datetime.now(UTC)).total_seconds()) < 60


@pytest.mark.django_db
def test_throughput_has_one_point_per_minute_with_zeros():
    rollup("x", datetime(2026, 5, 4, 10, 17, tzinfo=UTC), succeeded=4, failed=1)
    rollup("y", datetime(2026, 5, 4, 10, 17, tzinfo=UTC), queue="q2", succeeded=2)
    rollup("x", datetime(2026, 5, 4, 10, 15, tzinfo=UTC), failed=7)
    rollup("x", datetime(2026, 5, 4, 10, 12, tzinfo=UTC), succeeded=99)  # outside 5 minutes
    points = analytics.throughput("default", 5, now=NOW)
    assert [p.start.minute for p in points] == [13, 14, 15, 16, 17]
    assert [(p.succeeded, p.failed) for p in points] == [(0, 0), (0, 0), (0, 7), (0, 0), (6, 1)]
    assert len(analytics.throughput("default", 1440, now=NOW)) == 1440
    for bad in (0, 1441, -1, "5", 2.5, True):
        with pytest.raises(ValueError, match="minutes"):
            analytics.throughput("default", bad, now=NOW)


def failure(name: str, exception_type: str, start: datetime, count: int, last: datetime, text: str, **kw):
    return FailureRollup.objects.create(
        period=kw.pop("period", HOUR),
        bucket_start=start,
        backend=kw.pop("backend", "default"),
        task_name=name,
        exception_type=exception_type,
        count=count,
        first_seen=start,
        last_seen=last,
        latest_task_id=f"id-{text}",
        latest_exception=text,
        latest_traceback=f"Traceback: {text}",
    )


@pytest.mark.django_db
def test_failure_groups_sum_over_the_window_most_failures_first_with_the_latest_text():
    m1, m2 = datetime(2026, 5, 4, 9, 0, tzinfo=UTC), datetime(2026, 5, 4, 10, 0, tzinfo=UTC)
    failure("a", "ValueError", m1, 3, m1 + timedelta(seconds=50), "a-old")
    failure("a", "ValueError", m2, 2, m2 + timedelta(seconds=10), "a-new")
    failure("a", "KeyError", m2, 1, m2 + timedelta(seconds=20), "a-key")
    failure("b", "OSError", m1, 4, m1 + timedelta(seconds=5), "b-os")
    failure("b", "OSError", m1 - timedelta(days=2), 100, m1 - timedelta(days=2), "b-gone")  # outside 24h
    minute = datetime(2026, 5, 4, 10, 5, tzinfo=UTC)
    failure("a", "ValueError", minute, 50, minute, "minute-tier", period=MINUTE)
    groups = analytics.failure_groups("default", "24h", now=NOW)
    assert [(g.task_name, g.exception_type, g.count) for g in groups] == [
        ("a", "ValueError", 5),
        ("b", "OSError", 4),
        ("a", "KeyError", 1),
    ]
    first = groups[0]
    assert (first.first_seen, first.last_seen) == (m1, m2 + timedelta(seconds=10))
    assert (first.latest_task_id, first.latest_exception, first.latest_traceback) == (
        "id-a-new",
        "a-new",
        "Traceback: a-new",
    )
    assert [g.exception_type for g in analytics.failure_groups("default", "24h", "a", now=NOW)] == [
        "ValueError",
        "KeyError",
    ]
    assert len(analytics.failure_groups("default", "24h", limit=1, now=NOW)) == 1
    assert analytics.failure_groups("default", "1h", now=NOW)[0].count == 50  # minute rows
    assert [(g.task_name, g.count) for g in analytics.failure_groups("default", "7d", now=NOW)][:1] == [("b", 104)]
    assert analytics.failure_groups("other", "24h", now=NOW) == []


def stored(task_id: str, name: str, runtime: float | None, done: datetime, state: str = "SUCCESS") -> None:
    TaskResult.objects.create(task_id=task_id, task_name=name, status=state, worker="w1@h")
    TaskResult.objects.filter(task_id=task_id).update(  # date_done is auto_now: set it after
        date_done=done, date_started=done - timedelta(seconds=runtime) if runtime is not None else None
    )


@pytest.mark.django_db
def test_task_detail_series_failures_and_slowest_stored_runs():
    now = datetime.now(UTC)  # stored results: date_done within the window of the real clock
    minute = now.replace(second=0, microsecond=0)
    rollup("d", minute, succeeded=3, failed=1, retried=2, revoked=1, runtimes=[0.3, 0.3, 0.3, 2.0], waits=[0.5] * 4)
    rollup("d", minute - timedelta(minutes=3), succeeded=1, runtimes=[7.0])
    rollup("other", minute, succeeded=1, runtimes=[1.0], runtime_sum=1.0)
    failure("d", "ValueError", minute, 1, minute, "d-fail", period=MINUTE)
    for index, runtime in enumerate([0.5, 9.0, 3.0, 0.1]):
        stored(f"run-{index}", "d", runtime, now - timedelta(seconds=10 + index))
    stored("unstarted", "d", None, now - timedelta(seconds=5))
    stored("pending", "d", 50.0, now - timedelta(seconds=5), state="STARTED")
    stored("ancient", "d", 99.0, now - timedelta(hours=3))  # outside 1h
    stored("other-name", "e", 99.0, now - timedelta(seconds=5))

    detail = analytics.task_detail("default", "d", "1h")
    assert (detail.window, detail.point_seconds, len(detail.series)) == ("1h", 60, 60)
    assert detail.stats.runs == 5 and detail.stats.retried == 2
    assert detail.stats.time_share_percent == pytest.approx((0.9 + 2.0 + 7.0) / (0.9 + 2.0 + 7.0 + 1.0) * 100)
    last = detail.series[-1] if detail.series[-1].start == minute else detail.series[-2]
    assert (last.succeeded, last.failed, last.retried, last.revoked) == (3, 1, 2, 1)
    assert 0.25 < last.runtime_p50 <= 0.5 and 1.0 < last.runtime_p99 <= 2.5 and 0.25 < last.wait_p95 <= 0.5
    assert sum(point.succeeded for point in detail.series) == 4
    assert sum(point.runtime_p95 is None for point in detail.series) == 58
    assert [(g.exception_type, g.latest_exception) for g in detail.failures] == [("ValueError", "d-fail")]
    assert [run.task_id for run in detail.slowest] == ["run-1", "run-2", "run-0", "run-3"]
    assert detail.slowest[0].runtime == pytest.approx(9.0) and detail.slowest[0].state == "SUCCESS"
    assert detail.slowest[0].worker == "w1@h"

    # Stored results only (no rollups): found; nothing at all: LookupError.
    assert analytics.task_detail("default", "e", "1h").stats.runs == 0
    assert analytics.task_detail("default", "e", "1h").slowest[0].task_id == "other-name"
    with pytest.raises(LookupError):
        analytics.task_detail("default", "nobody", "1h")
    with pytest.raises(LookupError):
        analytics.task_detail("second", "d-not-there", "24h")


@pytest.mark.django_db
def test_slowest_runs_are_bounded_to_the_latest_stored_results(monkeypatch):
    now = datetime.now(UTC)
    monkeypatch.setattr(analytics, "SLOWEST_SCAN", 3)
    for index, runtime in enumerate([1.0, 2.0, 3.0, 60.0]):  # the 60 s run is the oldest: not scanned
        stored(f"s{index}", "s", runtime, now - timedelta(seconds=10 - index))
    assert [run.task_id for run in analytics.slowest_runs("s", now - timedelta(hours=1))] == ["s3", "s2", "s1"]


# --- end to end: a real worker, a real monitor -----------------------------------------------


@pytest.fixture
def monitored(redis_only, shared_database: str):
    yield from monitors_on(redis_only, shared_database)


def test_real_sleeps_give_task_detail_percentiles_within_their_buckets(redis_only, shared_database, monitored):
    """Known sleeps on a real project worker, rolled up by a real `manage.py celery_monitor`:
    task_detail's p50 / p95 fall in the sleeps' buckets and the slowest stored run is a 1.2 s one."""
    monitored(**FLUSH)
    # Results stored in the shared database (django-db), where the slowest runs are read from.
    redis_only.start_worker("an1", DD_DATABASE_URL=shared_database, DD_CELERY_RESULT_BACKEND="django-db")
    client = redis_only.client()
    client.conf.task_send_sent_event = True
    time.sleep(1.5)  # enable_events reached the worker
    sleeps = [client.send_task("dojo.tasks.sleep", args=(0.3,)) for _ in range(8)]
    sleeps += [client.send_task("dojo.tasks.sleep", args=(1.2,)) for _ in range(2)]
    done = TaskResult.objects.filter(task_id__in=[result.id for result in sleeps], status="SUCCESS")
    wait_for(lambda: done.count() == 10, 30, "the sleeps stored")

    def rolled_up() -> bool:
        try:
            return analytics.task_detail("default", "dojo.tasks.sleep", "1h").stats.runs == 10
        except LookupError:
            return False

    wait_for(rolled_up, 20, "the sleeps rolled up")
    detail = analytics.task_detail("default", "dojo.tasks.sleep", "1h")
    assert 0.25 < detail.stats.runtime_p50 <= 0.5
    assert 1.0 < detail.stats.runtime_p95 <= 2.5
    assert detail.stats.wait_p95 is not None and detail.stats.failure_percent == 0.0
    assert sum(point.succeeded for point in detail.series) == 10
    assert len(detail.slowest) == 10 and 1.15 < detail.slowest[0].runtime < 2.5
    assert {run.task_id for run in detail.slowest[:2]} == {result.id for result in sleeps[8:]}
    assert "dojo.tasks.sleep" in [row.task_name for row in analytics.task_table("default", "1h").rows]
    client.close()


@pytest.mark.django_db
def test_settled_points_come_from_the_cache_and_the_current_point_from_the_database():
    """A point that ended before settled_before() is read once and kept: a row written into it
    later shows only once the cache entry goes (cache_seconds); the current point is
    always read."""
    settled, current = datetime(2026, 5, 4, 9, 40, tzinfo=UTC), NOW.replace(second=0)
    rollup("k", settled, succeeded=2)
    rollup("k", current, succeeded=3)
    first = analytics.task_table("default", "1h", now=NOW).rows[0]
    assert first.runs == 5 and first.runs_series[-1] == 3
    rollup("k", settled, queue="late", succeeded=10)  # a write the monitor retried late
    rollup("k", current, queue="late", succeeded=100)
    second = analytics.task_table("default", "1h", now=NOW).rows[0]
    assert second.runs == 105 and second.runs_series[-1] == 103  # the settled 09:40 point: cached
    assert analytics.task_detail("default", "k", "1h", now=NOW).stats.runs == 115  # a task's page reads it all
    cache.clear()
    assert analytics.task_table("default", "1h", now=NOW).rows[0].runs == 115
    # Kept 5 min once settled, 30 min an hour after, an hour once 6 h old.
    ages = [timedelta(minutes=3), timedelta(minutes=59), timedelta(hours=1), timedelta(hours=6), timedelta(days=20)]
    assert [analytics.cache_seconds(age) for age in ages] == [300, 300, 1800, 3600, 3600]


@pytest.mark.django_db
def test_a_cache_that_fails_is_left_out(settings):
    """A real fault: Django's cache on a Redis port where nothing listens."""
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": f"redis://127.0.0.1:{free_port()}/0",
            "OPTIONS": {"socket_connect_timeout": 0.5, "socket_timeout": 0.5},
        }
    }
    rollup("k", datetime(2026, 5, 4, 9, 40, tzinfo=UTC), succeeded=2)
    rollup("k", NOW.replace(second=0), succeeded=3)
    assert analytics.task_table("default", "1h", now=NOW).rows[0].runs == 5
    assert analytics.task_detail("default", "k", "1h", now=NOW).stats.time_share_percent is None  # no runtime


@pytest.mark.django_db
def test_the_planner_settings_do_not_outlive_the_read():
    """PostgreSQL: the reads' SET LOCAL (no seq scan, no JIT) is put back inside a caller's transaction."""
    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL only (DD_DATABASE_URL=postgres://...)")
    rollup("k", NOW.replace(second=0), succeeded=3)
    assert analytics.task_table("default", "1h", now=NOW).rows[0].runs == 3
    assert analytics.failure_groups("default", "1h", now=NOW) == []
    with connection.cursor() as cursor:
        cursor.execute("SHOW enable_seqscan")
        assert cursor.fetchone()[0] == "on"
