"""Task analytics over the event monitor's rollups (TaskRollup, FailureRollup): the per task name
table, one task name's page, the failures grouped by exception type and the throughput per minute.

Windows (WINDOWS): 1h and 24h read the minute rows, 7d and 30d the hour rows (minute rows are kept
DD_ANALYTICS_MINUTE_HOURS only). Each window is cut into at most 60 points of POINT_SECONDS (1h: 1
min, 24h: 30 min, 7d: 4 h, 30d: 12 h), aligned on multiples of the point width since the epoch in
UTC; the last point is the one holding now, so a window covers its length less at most one point
plus what has passed of the current point. A point with no rows counts zero runs and has no
percentiles (None).

Bounded and done in the database: the counts and the histograms' buckets (one SUM per bucket index
of the JSON lists, so no row's list is read in Python) are summed with GROUP BY task name and point
in one statement, over the task_rollup_window index (period, backend, bucket_start). Every
statement runs within the project's database bound (statement_timeout on PostgreSQL, set per web
connection by the settings). "Now" is the database's clock (dojo.ops.fleet.clock.database_now)
unless a caller passes `now`.
"""

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from django.db import NotSupportedError
from django.db.models import BigIntegerField, Count, F, FloatField, IntegerField, Max, Min, Q, QuerySet, Sum, Value
from django.db.models.expressions import Func
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import Cast, Coalesce

from dojo.models import FailureRollup, TaskRollup
from dojo.ops import histograms
from dojo.ops.fleet.clock import database_now
from dojo.ops.read_models.stored_results import results_stored

WINDOWS: dict[str, int] = {"1h": 3600, "24h": 86400, "7d": 604800, "30d": 2592000}
DEFAULT_WINDOW = "24h"
POINT_SECONDS: dict[str, int] = {"1h": 60, "24h": 1800, "7d": 14400, "30d": 43200}
MINUTE_TIER_MAX_SECONDS = 86400  # windows up to this read minute rows, longer ones hour rows
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


def _histogram(row: dict[str, Any], column: str) -> list[int]:
    return [int(row[f"{column}_{index}"]) for index in range(histograms.SIZE)]


def _rows(backend: str, window: Window, task_name: str | None = None) -> QuerySet:
    rows = TaskRollup.objects.filter(
        period=window.period, backend=backend, bucket_start__gte=window.since, bucket_start__lte=window.until
    )
    if task_name is not None:
        rows = rows.filter(task_name=task_name)
    return rows.order_by()  # the model's ordering would join the GROUP BY


def _percent(part: int, whole: int) -> float | None:
    return part / whole * 100 if whole else None


def _stats(task_name: str, totals: dict[str, Any], all_runtime: float) -> TaskStats:
    runtime, wait = _histogram(totals, "runtime_buckets"), _histogram(totals, "wait_buckets")
    runs = int(totals["succeeded"]) + int(totals["failed"])
    runtime_sum = float(totals["runtime_sum"] or 0.0)
    return TaskStats(
        task_name=task_name,
        runs=runs,
        **{name: int(totals[name]) for name in COUNTS},
        failure_percent=_percent(int(totals["failed"]), runs),
        retry_percent=_percent(int(totals["retried"]), runs),
        runtime_p50=histograms.percentile(runtime, 0.50),
        runtime_p95=histograms.percentile(runtime, 0.95),
        runtime_p99=histograms.percentile(runtime, 0.99),
        wait_p95=histograms.percentile(wait, 0.95),
        runtime_sum=runtime_sum,
        time_share_percent=runtime_sum / all_runtime * 100 if all_runtime > 0 else None,
    )


def _task_totals(rows: QuerySet) -> list[dict[str, Any]]:
    """Per task name: every count, the runtime sum and both histograms, summed in SQL."""
    return list(
        rows.values("task_name").annotate(
            **_count_sums(COUNTS),
            runtime_sum=Coalesce(Sum("runtime_sum"), Value(0.0), output_field=FloatField()),
            **_bucket_sums("runtime_buckets"),
            **_bucket_sums("wait_buckets"),
        )
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
    bad window or sort. Two grouped statements: per task name, and per task name and point."""
    _sort_key(sort)
    span = window_of(window, now)
    rows = _rows(backend, span)
    totals = _task_totals(rows)
    all_runtime = sum(float(row["runtime_sum"] or 0.0) for row in totals)
    stats = {row["task_name"]: _stats(row["task_name"], row, all_runtime) for row in totals}
    for item in stats.values():
        item.runs_series = [0] * len(span.points)
        item.p95_series = [None] * len(span.points)
    per_point = (
        rows.annotate(point=PointIndex(span.since, span.point_seconds))
        .values("task_name", "point")
        .annotate(**_count_sums(("succeeded", "failed")), **_bucket_sums("runtime_buckets"))
    )
    for row in per_point:
        item, index = stats.get(row["task_name"]), row["point"]
        if item is None or not 0 <= index < len(span.points):
            continue
        item.runs_series[index] = int(row["succeeded"]) + int(row["failed"])
        item.p95_series[index] = histograms.percentile(_histogram(row, "runtime_buckets"), 0.95)
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
    LookupError when the name has no rows in the window and no stored results."""
    span = window_of(window, now)
    rows = _rows(backend, span, task_name)
    totals = _task_totals(rows)
    slowest = slowest_runs(task_name, span.since, backend)
    if not totals and not slowest and not _has_stored_results(task_name):
        raise LookupError(f"No task named {task_name!r} ran on {backend} in the last {window}.")
    all_runtime = _rows(backend, span).aggregate(total=Sum("runtime_sum"))["total"] or 0.0
    if totals:
        stats = _stats(task_name, totals[0], float(all_runtime))
    else:
        stats = _stats(task_name, defaultdict(int, runtime_sum=0.0), float(all_runtime))
    stats.runs_series = [0] * len(span.points)
    stats.p95_series = [None] * len(span.points)
    series = [SeriesPoint(start, 0, 0, 0, 0, None, None, None, None) for start in span.points]
    per_point = (
        rows.annotate(point=PointIndex(span.since, span.point_seconds))
        .values("point")
        .annotate(
            **_count_sums(("succeeded", "failed", "retried", "revoked")),
            **_bucket_sums("runtime_buckets"),
            **_bucket_sums("wait_buckets"),
        )
    )
    for row in per_point:
        index = row["point"]
        if not 0 <= index < len(span.points):
            continue
        runtime = _histogram(row, "runtime_buckets")
        point = series[index]
        point.succeeded, point.failed = int(row["succeeded"]), int(row["failed"])
        point.retried, point.revoked = int(row["retried"]), int(row["revoked"])
        point.runtime_p50 = histograms.percentile(runtime, 0.50)
        point.runtime_p95 = histograms.percentile(runtime, 0.95)
        point.runtime_p99 = histograms.percentile(runtime, 0.99)
        point.wait_p95 = histograms.percentile(_histogram(row, "wait_buckets"), 0.95)
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
    groups = list(
        rows.values("task_name", "exception_type")
        .annotate(total=Sum("count"), first=Min("first_seen"), last=Max("last_seen"), n=Count("id"))
        .order_by("-total", "-last", "task_name", "exception_type")[:limit]
    )
    if not groups:
        return []
    # The latest failure's text of each group: its row with the group's last_seen (one statement).
    wanted = {(group["task_name"], group["exception_type"]): group["last"] for group in groups}
    match = Q()
    for (name, exception_type), last in wanted.items():
        match |= Q(task_name=name, exception_type=exception_type, last_seen=last)
    latest: dict[tuple[str, str], FailureRollup] = {}
    for row in rows.filter(match).only(
        "task_name", "exception_type", "bucket_start", "latest_task_id", "latest_exception", "latest_traceback"
    ):
        key = (row.task_name, row.exception_type)
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
    by_start = {_floor(row["bucket_start"], 60): row for row in counts}
    points = []
    for start in starts:
        row = by_start.get(start)
        points.append(ThroughputPoint(start, int(row["succeeded"]) if row else 0, int(row["failed"]) if row else 0))
    return points
