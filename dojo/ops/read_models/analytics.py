"""Task analytics over the event monitor's rollups (TaskRollup, FailureRollup): the per task name
table, one task name's page, the failures grouped by exception type and the throughput per minute.

Windows (WINDOWS): 1h reads the minute rows, 24h, 7d and 30d the hour rows (a 24 h table from
minute rows sums 60 times as many rows: 1.3 s on PostgreSQL with 100 task names, against tens of ms).
Each window is cut into at most 60 points of POINT_SECONDS (1h: 1 min, 24h: 1 h, 7d: 4 h, 30d:
12 h), aligned on multiples of the point width since the epoch in
UTC; the last point is the one holding now, so a window covers its length less at most one point
plus what has passed of the current point. A point with no rows counts zero runs and has no
percentiles (None).

Bounded and done in the database: the counts and the histograms' buckets (one SUM per bucket index
of the JSON lists, so no row's list is read in Python) are summed with GROUP BY task name and point
in one statement, over the task_rollup_window index (period, backend, bucket_start; on PostgreSQL
the planner is told so, see index_scans). A point that has settled (ended before the monitor's next
flushes) no longer changes: its sums are kept in Django's cache (5 min, up to an hour for points
that ended hours ago: cache_seconds), so a table reads only the points since the last one cached
(use a shared DD_CACHE_URL with several web processes). Every statement runs within the
project's database bound (statement_timeout on PostgreSQL, set per web connection by the
settings). "Now" is the database's clock
(dojo.ops.fleet.clock.database_now) unless a caller passes `now`.
"""

import logging
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from django.conf import settings
from django.core.cache import cache
from django.db import NotSupportedError, connection, transaction
from django.db.models import BigIntegerField, F, FloatField, IntegerField, Max, Min, QuerySet, Sum, Value
from django.db.models.expressions import Func
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import Cast, Coalesce

from dojo.models import FailureRollup, TaskRollup
from dojo.ops import histograms
from dojo.ops.fleet.clock import database_now
from dojo.ops.fleet.status_cache import CACHE_ERRORS
from dojo.ops.read_models.stored_results import results_stored

logger = logging.getLogger(__name__)
T = TypeVar("T")

WINDOWS: dict[str, int] = {"1h": 3600, "24h": 86400, "7d": 604800, "30d": 2592000}
DEFAULT_WINDOW = "24h"
POINT_SECONDS: dict[str, int] = {"1h": 60, "24h": 3600, "7d": 14400, "30d": 43200}
MINUTE_TIER_MAX_SECONDS = 3600  # windows up to this read minute rows, longer ones hour rows
SORT_KEYS = (
    "task_name",
    "runs",
    "failure_percent",
    "retry_percent",
    "runtime_p50",
    "runtime_p95",
    "runtime_p99",
    "wait_p95",
    "time_share_percent",
)
DEFAULT_SORT = "-runs"
MAX_SLOWEST = 20
# The slowest runs are read from this many of the task name's latest stored results in the window
# (newest first, over django-celery-results' task_name and date_done indexes): a bounded read.
SLOWEST_SCAN = 5000
MAX_THROUGHPUT_MINUTES = 1440
FAILURE_GROUPS_LIMIT = 200
TERMINAL_STATES = ("SUCCESS", "FAILURE")
SETTLE_SECONDS = 120  # at least: see settled_before()
POINT_CACHE_SECONDS = 300  # a settled point's sums in the cache; a write the monitor retried late shows after it
# Points that ended longer ago are kept longer (cache_seconds): (ended at least this long ago, seconds kept).
POINT_CACHE_TIERS = ((timedelta(hours=6), 3600), (timedelta(hours=1), 1800))
COUNTS = ("succeeded", "failed", "retried", "revoked", "recovered", "critical", "lost")


@dataclass(slots=True)
class TaskStats:
    """One task name over the window (all queues of the backend summed)."""

    task_name: str
    runs: int  # succeeded + failed (terminal runs)
    succeeded: int
    failed: int
    retried: int
    revoked: int
    recovered: int
    critical: int
    lost: int
    failure_percent: float | None  # failed / runs * 100, None when runs == 0
    retry_percent: float | None  # retried / runs * 100
    runtime_p50: float | None  # seconds
    runtime_p95: float | None
    runtime_p99: float | None
    wait_p95: float | None  # received -> started, seconds
    runtime_sum: float  # seconds
    time_share_percent: float | None  # runtime_sum / all task names' runtime_sum * 100
    runs_series: list[int] = field(default_factory=list)  # sparkline, one per point
    p95_series: list[float | None] = field(default_factory=list)


@dataclass(slots=True)
class TaskTable:
    window: str
    since: datetime
    until: datetime
    point_seconds: int
    points: list[datetime]  # each point's start
    rows: list[TaskStats]  # sorted as asked


@dataclass(slots=True)
class SeriesPoint:
    start: datetime
    succeeded: int
    failed: int
    retried: int
    revoked: int
    runtime_p50: float | None
    runtime_p95: float | None
    runtime_p99: float | None
    wait_p95: float | None


@dataclass(slots=True)
class FailureGroup:
    """Failures of one task name with one exception type over the window. latest_task_id,
    latest_exception and latest_traceback are task data: callers blank the last two for users
    who may not see task data."""

    task_name: str
    exception_type: str
    count: int
    first_seen: datetime
    last_seen: datetime
    latest_task_id: str
    latest_exception: str
    latest_traceback: str


@dataclass(slots=True)
class SlowRun:
    task_id: str
    runtime: float  # seconds, date_started -> date_done of the stored result
    worker: str
    done_at: datetime
    state: str


@dataclass(slots=True)
class TaskDetail:
    window: str
    since: datetime
    until: datetime
    point_seconds: int
    stats: TaskStats
    series: list[SeriesPoint]
    failures: list[FailureGroup]  # this task name's groups, most failures first
    slowest: list[SlowRun]  # the slowest recent runs, at most MAX_SLOWEST


@dataclass(slots=True)
class ThroughputPoint:
    start: datetime
    succeeded: int
    failed: int


@dataclass(frozen=True, slots=True)
class Window:
    """Where a window reads: its tier, its points and its bounds."""

    name: str
    period: int  # TaskRollup.Period of the rows read
    point_seconds: int
    since: datetime  # the first point's start
    until: datetime  # now, by the database's clock
    points: list[datetime]


def window_of(window: str, now: datetime | None = None) -> Window:
    """The window named `window` ending now; ValueError when it is not one of WINDOWS."""
    if window not in WINDOWS:
        raise ValueError(f"Unknown window {window!r}: one of {', '.join(WINDOWS)}.")
    seconds, point = WINDOWS[window], POINT_SECONDS[window]
    now = now or database_now()
    count = seconds // point
    last = _floor(now, point)
    points = [last - timedelta(seconds=point * (count - 1 - index)) for index in range(count)]
    period = TaskRollup.Period.MINUTE if seconds <= MINUTE_TIER_MAX_SECONDS else TaskRollup.Period.HOUR
    return Window(window, int(period), point, points[0], now, points)


def _floor(moment: datetime, seconds: int) -> datetime:
    epoch = int(moment.timestamp())
    return datetime.fromtimestamp(epoch - epoch % seconds, tz=UTC)


class PointIndex(Func):
    """The index of the point a row's bucket_start falls in: (epoch seconds - since) // width."""

    output_field = IntegerField()

    def __init__(self, since: datetime, width: int) -> None:
        super().__init__(F("bucket_start"))
        self.since_epoch = int(since.timestamp())
        self.width = int(width)

    def as_sqlite(self, compiler: Any, connection: Any, **extra: Any) -> tuple[str, list]:
        column, params = compiler.compile(self.source_expressions[0])
        sql = f"((CAST(STRFTIME('%%s', {column}) AS INTEGER) - {self.since_epoch}) / {self.width})"
        return sql, list(params)

    def as_postgresql(self, compiler: Any, connection: Any, **extra: Any) -> tuple[str, list]:
        column, params = compiler.compile(self.source_expressions[0])
        sql = f"(FLOOR((EXTRACT(EPOCH FROM {column}) - {self.since_epoch}) / {self.width}))::integer"
        return sql, list(params)

    def as_sql(self, compiler: Any, connection: Any, **extra: Any) -> tuple[str, list]:
        raise NotSupportedError(f"Task analytics read SQLite or PostgreSQL, not {connection.vendor}.")


@dataclass(slots=True)
class Sums:
    """Rollup rows summed: the counts, the runtime sum and both histograms (and the runtime p95,
    read once when the sums are, since a settled point's sums are kept in the cache)."""

    counts: dict[str, int]
    runtime_sum: float
    runtime: list[int]
    wait: list[int]
    runtime_p95: float | None = None


def _merged(parts: list[Sums]) -> Sums:
    """Several Sums added up at once (column by column: the table adds thousands)."""
    return Sums(
        counts={name: sum(part.counts[name] for part in parts) for name in COUNTS},
        runtime_sum=sum(part.runtime_sum for part in parts),
        runtime=[sum(column) for column in zip(*(part.runtime for part in parts), strict=True)],
        wait=[sum(column) for column in zip(*(part.wait for part in parts), strict=True)],
    )


def _empty_sums() -> Sums:
    return Sums(dict.fromkeys(COUNTS, 0), 0.0, histograms.empty(), histograms.empty())


PointSums = dict[int, dict[str, Sums]]  # point index -> task name -> its rows of that point summed


def _bucket_sums(column: str) -> dict[str, Any]:
    """One SUM per bucket index of a histogram column's JSON lists (a missing index sums 0)."""
    return {
        f"{column}_{index}": Coalesce(
            Sum(Cast(KeyTextTransform(str(index), column), BigIntegerField())), Value(0), output_field=BigIntegerField()
        )
        for index in range(histograms.SIZE)
    }


def _count_sums(names: Iterable[str]) -> dict[str, Any]:
    return {name: Coalesce(Sum(name), Value(0), output_field=BigIntegerField()) for name in names}


def _rows(backend: str, window: Window, task_name: str | None = None, since: datetime | None = None) -> QuerySet:
    rows = TaskRollup.objects.filter(
        period=window.period, backend=backend, bucket_start__gte=since or window.since, bucket_start__lte=window.until
    )
    if task_name is not None:
        rows = rows.filter(task_name=task_name)
    return rows.order_by()  # the model's ordering would join the GROUP BY


def _read_points(backend: str, span: Window, task_name: str | None, since: datetime) -> PointSums:
    """The rows from `since` to the window's end summed per point and task name (one statement)."""
    found: PointSums = defaultdict(dict)
    if connection.vendor == "postgresql":
        for name, point, *values in _postgresql_points(backend, span, task_name, since):
            counts = dict(zip(COUNTS, (int(value or 0) for value in values), strict=False))
            runtime_sum, runtime, wait = values[len(COUNTS) :]
            runtime = [v or 0 for v in runtime]
            p95 = histograms.percentile(runtime, 0.95)
            found[point][name] = Sums(counts, float(runtime_sum or 0.0), runtime, [v or 0 for v in wait], p95)
        return dict(found)
    sums = {
        **_count_sums(COUNTS),
        "runtime_sum": Coalesce(Sum("runtime_sum"), Value(0.0), output_field=FloatField()),
        **_bucket_sums("runtime_buckets"),
        **_bucket_sums("wait_buckets"),
    }
    rows = _rows(backend, span, task_name, since).annotate(point=PointIndex(span.since, span.point_seconds))
    for row in rows.values("task_name", "point").annotate(**sums):
        runtime = [int(row[f"runtime_buckets_{index}"]) for index in range(histograms.SIZE)]
        found[row["point"]][row["task_name"]] = Sums(
            counts={name: int(row[name] or 0) for name in COUNTS},
            runtime_sum=float(row["runtime_sum"] or 0.0),
            runtime=runtime,
            wait=[int(row[f"wait_buckets_{index}"]) for index in range(histograms.SIZE)],
            runtime_p95=histograms.percentile(runtime, 0.95),
        )
    return dict(found)


def _array_sums(column: str) -> str:
    return "ARRAY[" + ", ".join(f"SUM(({column}->>{index})::integer)" for index in range(histograms.SIZE)) + "]"


# PostgreSQL: the same sums as the ORM's on SQLite, with SUM(integer) (an int8 accumulator, not
# SUM(bigint)'s numeric one) and the buckets handed back as two arrays rather than 46 columns.
_POSTGRESQL_POINTS = f"""
SELECT task_name, (EXTRACT(EPOCH FROM bucket_start)::bigint - %s) / %s AS point,
    {", ".join(f"SUM({name})::bigint" for name in COUNTS)}, SUM(runtime_sum),
    {_array_sums("runtime_buckets")}, {_array_sums("wait_buckets")}
FROM {TaskRollup._meta.db_table}
WHERE period = %s AND backend = %s AND bucket_start >= %s AND bucket_start <= %s {{task}}
GROUP BY 1, 2
"""  # noqa: S608 - no input in the text: the model's table and fixed names; the values are parameters


def _postgresql_points(backend: str, span: Window, task_name: str | None, since: datetime) -> list[tuple]:
    params: list[Any] = [int(span.since.timestamp()), span.point_seconds, span.period, backend, since, span.until]
    if task_name is not None:
        params.append(task_name)
    sql = _POSTGRESQL_POINTS.replace("{task}", "AND task_name = %s" if task_name is not None else "")
    with index_scans() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


@contextmanager
def index_scans() -> Iterator[Any]:
    """A cursor whose statements (PostgreSQL) read the window through its index, without JIT or
    parallel workers, sorting in memory.

    The planner takes period's and bucket_start's selectivities as independent, while every
    minute row is recent: it expects ten times the hour rows a recent range holds, so it scans the
    whole table (and pays JIT compilation for the cost it imagines). The task_rollup_window /
    failure_rollup_window indexes (period, backend, bucket_start) fit every read here; extended
    statistics would need a migration. SET LOCAL lasts until the transaction ends: inside a
    caller's own transaction the settings are put back."""
    if connection.vendor != "postgresql":
        with connection.cursor() as cursor:
            yield cursor
        return
    outer = connection.in_atomic_block
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            "SET LOCAL enable_seqscan = off; SET LOCAL jit = off; SET LOCAL work_mem = '32MB'; "
            "SET LOCAL max_parallel_workers_per_gather = 0"
        )
        yield cursor
        if outer:  # after a failure the savepoint's rollback undoes the SET LOCAL itself
            cursor.execute(
                "SET LOCAL enable_seqscan TO DEFAULT; SET LOCAL jit TO DEFAULT; SET LOCAL work_mem TO DEFAULT; "
                "SET LOCAL max_parallel_workers_per_gather TO DEFAULT"
            )


def settled_before(now: datetime) -> datetime:
    """Rows of buckets that ended before this are final: the monitor writes a minute's events at
    its next flushes (a failed write is tried again at the following one)."""
    return now - timedelta(seconds=max(SETTLE_SECONDS, 3 * float(settings.ANALYTICS_FLUSH_SECONDS)))


def _cached_points(
    kind: str, backend: str, span: Window, read: Callable[[datetime], dict[int, T]], empty: T
) -> dict[int, T]:
    """`read(since)` per point index of the window, the points that ended before settled_before()
    kept in Django's cache for cache_seconds() (they no longer change, but for a write the
    monitor retried late): one read from the first point not cached to now. A cache that fails
    is left out (everything read from the database)."""
    width = timedelta(seconds=span.point_seconds)
    final = settled_before(span.until)
    keys = {
        index: f"dojo.analytics.{kind}:{backend}:{span.period}:{span.point_seconds}:{int(start.timestamp())}"
        for index, start in enumerate(span.points)
        if start + width <= final
    }
    try:
        cached = cache.get_many(list(keys.values())) if keys else {}
    except CACHE_ERRORS as exc:
        logger.warning("Task analytics read without the cache, which failed: %s", exc)
        cached, keys = {}, {}
    found = {index: cached[key] for index, key in keys.items() if key in cached}
    first = next((index for index in range(len(span.points)) if index not in found), None)
    if first is None:
        return found
    fresh = read(span.points[first])
    by_seconds: dict[int, dict[str, T]] = defaultdict(dict)
    for index, key in keys.items():
        if index >= first and index not in found:
            by_seconds[cache_seconds(span.until - span.points[index] - width)][key] = fresh.get(index, empty)
    try:
        for seconds, values in by_seconds.items():
            cache.set_many(values, seconds)
    except CACHE_ERRORS as exc:
        logger.warning("Task analytics points not cached, the cache failed: %s", exc)
    return {**found, **fresh}


def cache_seconds(age: timedelta) -> int:
    """How long a settled point's sums are kept, by how long ago it ended: the older, the less
    likely a write the monitor retried late, and entries of different ages do not all expire
    together (a table's first read caches every point; after that, reads cover the newest)."""
    for older_than, seconds in POINT_CACHE_TIERS:
        if age >= older_than:
            return seconds
    return POINT_CACHE_SECONDS


def point_sums(backend: str, span: Window) -> PointSums:
    """Every task name's rows summed per point of the window, the settled points cached."""
    return _cached_points("points", backend, span, lambda since: _read_points(backend, span, None, since), {})


def all_runtime(backend: str, span: Window) -> float:
    """Every task name's runtime sum over the window (a time share's denominator): one SUM per
    point without the histograms, the settled points cached."""

    def read(since: datetime) -> dict[int, float]:
        rows = _rows(backend, span, since=since).annotate(point=PointIndex(span.since, span.point_seconds))
        with index_scans():
            return {
                row["point"]: float(row["total"] or 0.0)
                for row in rows.values("point").annotate(total=Sum("runtime_sum"))
            }

    return sum(_cached_points("runtime", backend, span, read, 0.0).values())


def _percent(part: int, whole: int) -> float | None:
    return part / whole * 100 if whole else None


def _stats(task_name: str, sums: Sums, all_runtime: float, points: int) -> TaskStats:
    runs = sums.counts["succeeded"] + sums.counts["failed"]
    return TaskStats(
        task_name=task_name,
        runs=runs,
        **sums.counts,
        failure_percent=_percent(sums.counts["failed"], runs),
        retry_percent=_percent(sums.counts["retried"], runs),
        runtime_p50=histograms.percentile(sums.runtime, 0.50),
        runtime_p95=histograms.percentile(sums.runtime, 0.95),
        runtime_p99=histograms.percentile(sums.runtime, 0.99),
        wait_p95=histograms.percentile(sums.wait, 0.95),
        runtime_sum=sums.runtime_sum,
        time_share_percent=sums.runtime_sum / all_runtime * 100 if all_runtime > 0 else None,
        runs_series=[0] * points,
        p95_series=[None] * points,
    )


def _sort_key(sort: str) -> tuple[str, bool]:
    key, descending = (sort[1:], True) if sort.startswith("-") else (sort, False)
    if key not in SORT_KEYS:
        raise ValueError(f"Unknown sort {sort!r}: one of {', '.join(SORT_KEYS)}, '-' first for descending.")
    return key, descending


def sorted_rows(rows: list[TaskStats], sort: str) -> list[TaskStats]:
    """`rows` sorted by `sort` ("key" or "-key"), None values last either way, then by name."""
    key, descending = _sort_key(sort)
    by_name = sorted(rows, key=lambda row: row.task_name)
    if key == "task_name":
        return by_name[::-1] if descending else by_name
    present = [row for row in by_name if getattr(row, key) is not None]
    missing = [row for row in by_name if getattr(row, key) is None]
    return sorted(present, key=lambda row: getattr(row, key), reverse=descending) + missing


def task_table(
    backend: str, window: str = DEFAULT_WINDOW, sort: str = DEFAULT_SORT, *, now: datetime | None = None
) -> TaskTable:
    """Every task name with rows in the window, with its stats and sparklines; ValueError on a
    bad window or sort. The settled points come from the cache (point_sums)."""
    _sort_key(sort)
    span = window_of(window, now)
    points = point_sums(backend, span)
    parts: dict[str, list[Sums]] = defaultdict(list)
    for tasks in points.values():
        for name, sums in tasks.items():
            parts[name].append(sums)
    totals = {name: _merged(sums) for name, sums in parts.items()}
    all_runtime = sum(sums.runtime_sum for sums in totals.values())
    stats = {name: _stats(name, sums, all_runtime, len(span.points)) for name, sums in totals.items()}
    for index, tasks in points.items():
        if not 0 <= index < len(span.points):
            continue
        for name, sums in tasks.items():
            item = stats[name]
            item.runs_series[index] = sums.counts["succeeded"] + sums.counts["failed"]
            item.p95_series[index] = sums.runtime_p95
    return TaskTable(
        window=span.name,
        since=span.since,
        until=span.until,
        point_seconds=span.point_seconds,
        points=span.points,
        rows=sorted_rows(list(stats.values()), sort),
    )


def task_detail(
    backend: str, task_name: str, window: str = DEFAULT_WINDOW, *, now: datetime | None = None
) -> TaskDetail:
    """One task name over the window: its stats, a series of outcomes and percentiles per point,
    its failure groups and its slowest recent stored runs. ValueError on a bad window;
    LookupError when the name has no rows in the window and no stored results. Its time share
    is of every task name's runtime (all_runtime)."""
    span = window_of(window, now)
    points = _read_points(backend, span, task_name, span.since)
    slowest = slowest_runs(task_name, span.since, backend)
    if not points and not slowest and not _has_stored_results(task_name):
        raise LookupError(f"No task named {task_name!r} ran on {backend} in the last {window}.")
    total = _merged([tasks[task_name] for tasks in points.values()]) if points else _empty_sums()
    stats = _stats(task_name, total, all_runtime(backend, span), len(span.points))
    series = [SeriesPoint(start, 0, 0, 0, 0, None, None, None, None) for start in span.points]
    for index, tasks in points.items():
        if not 0 <= index < len(span.points):
            continue
        sums, point = tasks[task_name], series[index]
        point.succeeded, point.failed = sums.counts["succeeded"], sums.counts["failed"]
        point.retried, point.revoked = sums.counts["retried"], sums.counts["revoked"]
        point.runtime_p50 = histograms.percentile(sums.runtime, 0.50)
        point.runtime_p95 = histograms.percentile(sums.runtime, 0.95)
        point.runtime_p99 = histograms.percentile(sums.runtime, 0.99)
        point.wait_p95 = histograms.percentile(sums.wait, 0.95)
        stats.runs_series[index] = point.succeeded + point.failed
        stats.p95_series[index] = point.runtime_p95
    return TaskDetail(
        window=span.name,
        since=span.since,
        until=span.until,
        point_seconds=span.point_seconds,
        stats=stats,
        series=series,
        failures=_failure_groups(backend, span, task_name, FAILURE_GROUPS_LIMIT),
        slowest=slowest,
    )


def _has_stored_results(task_name: str) -> bool:
    if not results_stored():
        return False
    from django_celery_results.models import TaskResult

    return TaskResult.objects.filter(task_name=task_name).exists()


def slowest_runs(
    task_name: str, since: datetime, backend: str | None = None, limit: int = MAX_SLOWEST
) -> list[SlowRun]:
    """The slowest of the task name's latest SLOWEST_SCAN stored results done since `since`,
    slowest first: runtime = date_done - date_started (django-celery-results writes date_started
    on the STARTED state, CELERY_TASK_TRACK_STARTED). Results without a start time are left out;
    [] when results are not stored by django-celery-results. `backend` is not filtered on: a
    stored result keeps its broker in the meta text, which is not indexed."""
    if not results_stored():
        return []
    from django_celery_results.models import TaskResult

    latest = (
        TaskResult.objects.filter(
            task_name=task_name, date_done__gte=since, date_started__isnull=False, status__in=TERMINAL_STATES
        )
        .order_by("-date_done")
        .values_list("task_id", "date_started", "date_done", "worker", "status")[:SLOWEST_SCAN]
    )
    runs = [
        SlowRun(task_id, (done - started).total_seconds(), worker or "", done, state)
        for task_id, started, done, worker, state in latest
        if done and started
    ]
    runs.sort(key=lambda run: (-run.runtime, run.task_id))
    return runs[:limit]


def failure_groups(
    backend: str,
    window: str = DEFAULT_WINDOW,
    task_name: str | None = None,
    limit: int = FAILURE_GROUPS_LIMIT,
    *,
    now: datetime | None = None,
) -> list[FailureGroup]:
    """Failures over the window grouped by task name and exception type, most failures first
    (then the latest first), at most `limit`; ValueError on a bad window or limit."""
    if not 1 <= limit <= 10_000:
        raise ValueError("limit: from 1 to 10000.")
    return _failure_groups(backend, window_of(window, now), task_name, limit)


def _failure_groups(backend: str, span: Window, task_name: str | None, limit: int) -> list[FailureGroup]:
    rows = FailureRollup.objects.filter(
        period=span.period, backend=backend, bucket_start__gte=span.since, bucket_start__lte=span.until
    ).order_by()
    if task_name is not None:
        rows = rows.filter(task_name=task_name)
    with index_scans():
        groups = list(
            rows.values("task_name", "exception_type")
            .annotate(total=Sum("count"), first=Min("first_seen"), last=Max("last_seen"))
            .order_by("-total", "-last", "task_name", "exception_type")[:limit]
        )
        if not groups:
            return []
        # The latest failure's text of each group: its row with the group's last_seen (one statement).
        wanted = {(group["task_name"], group["exception_type"]): group["last"] for group in groups}
        latest: dict[tuple[str, str], FailureRollup] = {}
        candidates = rows.filter(last_seen__in=sorted(set(wanted.values()))).only(
            "task_name",
            "exception_type",
            "bucket_start",
            "last_seen",
            "latest_task_id",
            "latest_exception",
            "latest_traceback",
        )
        for row in candidates:
            key = (row.task_name, row.exception_type)
            if wanted.get(key) != row.last_seen:
                continue
            if key not in latest or row.bucket_start > latest[key].bucket_start:
                latest[key] = row
    found = []
    for group in groups:
        row = latest.get((group["task_name"], group["exception_type"]))
        found.append(
            FailureGroup(
                task_name=group["task_name"],
                exception_type=group["exception_type"],
                count=int(group["total"] or 0),
                first_seen=group["first"],
                last_seen=group["last"],
                latest_task_id=row.latest_task_id if row else "",
                latest_exception=row.latest_exception if row else "",
                latest_traceback=row.latest_traceback if row else "",
            )
        )
    return found


def throughput(backend: str, minutes: int = 60, *, now: datetime | None = None) -> list[ThroughputPoint]:
    """Succeeded and failed per minute over the last `minutes` (1..MAX_THROUGHPUT_MINUTES, the
    current minute last), from the minute rows; zeros for empty minutes. ValueError otherwise."""
    if isinstance(minutes, bool) or not isinstance(minutes, int) or not 1 <= minutes <= MAX_THROUGHPUT_MINUTES:
        raise ValueError(f"minutes: an integer from 1 to {MAX_THROUGHPUT_MINUTES}.")
    now = now or database_now()
    last = _floor(now, 60)
    starts = [last - timedelta(minutes=minutes - 1 - index) for index in range(minutes)]
    counts = (
        TaskRollup.objects.filter(
            period=TaskRollup.Period.MINUTE, backend=backend, bucket_start__gte=starts[0], bucket_start__lte=now
        )
        .order_by()
        .values("bucket_start")
        .annotate(**_count_sums(("succeeded", "failed")))
    )
    with index_scans():
        by_start = {_floor(row["bucket_start"], 60): row for row in counts}
    points = []
    for start in starts:
        row = by_start.get(start)
        points.append(ThroughputPoint(start, int(row["succeeded"]) if row else 0, int(row["failed"]) if row else 0))
    return points
