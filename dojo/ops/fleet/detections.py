"""Detections over the recorded task analytics: lost tasks, late periodic tasks and beat down,
tasks running far longer than usual, and failure rates going up.

Each is read from the models directly (the event monitor's LostTask and TaskRollup rows,
django-celery-beat's entries, beat's CeleryProcess heartbeat) with a few bounded queries: every
list is cut at MAX_ITEMS (its total is kept), and the ages that decide are taken against the
database's clock (Now()), so a web host whose clock drifts does not invent or hide a detection.
The status document turns them into alerts (dojo.ops.fleet.alerts.detection_alerts), /metrics into
gauges, the dashboard and the API list their items.
"""

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db.models import Q, Sum
from django.db.models.functions import Now

from dojo.models import CeleryProcess, LostTask, TaskRollup
from dojo.ops import histograms
from dojo.ops.brokers.registry import DEFAULT_ALIAS

MAX_ITEMS = 50  # the longest list of each detection kept in a status document or an answer
LOST_WINDOW = timedelta(hours=24)  # a lost task detected longer ago than this is no longer reported
BEAT_DOWN_AFTER = timedelta(seconds=30)  # beat writes its heartbeat every second
RUNTIME_WINDOW = timedelta(hours=24)  # the runtimes a task's usual p95 is read from (hour rows)
FAILURE_WINDOW = timedelta(minutes=15)  # the recent failure rate (minute rows)
BASELINE_WINDOW = timedelta(hours=24)  # the task's own usual failure rate (hour rows)
MIN_RUNS = 5  # fewer finished runs than this in a window decide nothing (one failure of one run is no rate)
INTERVAL_SECONDS = {"days": 86400, "hours": 3600, "minutes": 60, "seconds": 1, "microseconds": 1e-6}


@dataclass(frozen=True)
class LostTaskItem:
    id: int
    task_id: str
    task_name: str
    queue: str
    worker: str
    started_at: datetime
    worker_gone_at: datetime
    detected_at: datetime


@dataclass(frozen=True)
class LateEntry:
    name: str
    task: str
    schedule: str  # "interval" or "crontab"
    last_run_at: datetime | None
    due_at: datetime  # when it should have run last (its interval after the last run)
    late_seconds: float  # past due_at plus the grace


@dataclass(frozen=True)
class LongRunner:
    task_id: str
    task_name: str
    worker: str
    running_seconds: float
    p95_seconds: float
    runs: int  # the runs of the last 24 h the p95 is read from


@dataclass(frozen=True)
class FailureRate:
    task_name: str
    runs: int  # finished (succeeded + failed) in the last 15 minutes
    failed: int
    percent: float
    baseline_percent: float  # the rest of the last 24 h


@dataclass(frozen=True)
class Detections:
    backend: str
    lost_tasks: list[LostTaskItem] = field(default_factory=list)
    lost_total: int = 0
    late_entries: list[LateEntry] = field(default_factory=list)
    late_total: int = 0
    beat_expected: bool = False  # enabled interval or crontab entries exist
    beat_down: bool = False
    beat_last_heartbeat_at: datetime | None = None
    long_runners: list[LongRunner] = field(default_factory=list)
    failure_rates: list[FailureRate] = field(default_factory=list)


def detect(backend: str, worker_replies: dict[str, dict] | None = None, read_at: float | None = None) -> Detections:
    """Every detection of `backend`; the long runners from the active tasks of `worker_replies`
    (a status document's) as of `read_at` (epoch seconds). Raises DatabaseError."""
    lost, lost_total = lost_tasks(backend)
    late, late_total, expected, down, last_beat = [], 0, False, False, None
    if backend == DEFAULT_ALIAS:  # django-celery-beat's entries are the main backend's
        late, late_total, expected = late_entries()
        down, last_beat = beat_state(backend, expected)
    return Detections(
        backend=backend,
        lost_tasks=lost,
        lost_total=lost_total,
        late_entries=late,
        late_total=late_total,
        beat_expected=expected,
        beat_down=down,
        beat_last_heartbeat_at=last_beat,
        long_runners=long_runners(backend, worker_replies or {}, read_at) if worker_replies else [],
        failure_rates=failure_rates(backend),
    )


def lost_tasks(backend: str) -> tuple[list[LostTaskItem], int]:
    """Lost tasks detected in the last LOST_WINDOW and not retried, newest first (at most
    MAX_ITEMS), and their total."""
    rows = LostTask.objects.filter(backend=backend, retried_at__isnull=True, detected_at__gte=Now() - LOST_WINDOW)
    items = [
        LostTaskItem(
            row.pk,
            row.task_id,
            row.task_name,
            row.queue,
            row.worker,
            row.started_at,
            row.worker_gone_at,
            row.detected_at,
        )
        for row in rows.order_by("-detected_at", "-pk")[:MAX_ITEMS]
    ]
    return items, len(items) if len(items) < MAX_ITEMS else rows.count()


def _interval_seconds(interval: Any) -> float:
    return interval.every * INTERVAL_SECONDS.get(interval.period, 1)


def _due_at(entry: Any, reference: datetime) -> datetime | None:
    """When `entry` should have run next after `reference` (its last run)."""
    if entry.interval_id:
        return reference + timedelta(seconds=_interval_seconds(entry.interval))
    try:
        start, delta, _now = entry.crontab.schedule.remaining_delta(reference)
        return start + delta
    except (TypeError, ValueError, AttributeError, OverflowError):
        return None  # a malformed crontab decides nothing


def late_entries() -> tuple[list[LateEntry], int, bool]:
    """Enabled interval and crontab entries of django-celery-beat whose next run after the last one
    (or after the entry was last changed, if it never ran) is more than DD_ANALYTICS_PERIODIC_GRACE_SECONDS
    past, against the database's clock; most late first. Also whether any such entry is enabled."""
    from django_celery_beat.models import PeriodicTask

    grace = timedelta(seconds=settings.ANALYTICS_PERIODIC_GRACE_SECONDS)
    entries = (
        PeriodicTask.objects.filter(enabled=True)
        .filter(Q(interval__isnull=False) | Q(crontab__isnull=False))
        .exclude(one_off=True, last_run_at__isnull=False)
        .select_related("interval", "crontab")
        .annotate(db_now=Now())
        .order_by("name")
    )
    late, expected = [], False
    for entry in entries[: MAX_ITEMS * 20]:  # the schedule is small; the bound keeps a runaway table cheap
        expected = True
        reference = entry.last_run_at or entry.start_time or entry.date_changed
        due = _due_at(entry, reference) if reference else None
        if due is None:
            continue
        past = (entry.db_now - due - grace).total_seconds()
        if past > 0:
            schedule = "interval" if entry.interval_id else "crontab"
            late.append(LateEntry(entry.name, entry.task, schedule, entry.last_run_at, due, past))
    late.sort(key=lambda item: -item.late_seconds)
    return late[:MAX_ITEMS], len(late), expected


def beat_state(backend: str, expected: bool) -> tuple[bool, datetime | None]:
    """Whether beat is down (expected, and no beat heartbeat in the last BEAT_DOWN_AFTER), and its last heartbeat."""
    rows = CeleryProcess.objects.filter(backend=backend, kind=CeleryProcess.Kind.BEAT)
    last = rows.order_by("-last_heartbeat_at").values_list("last_heartbeat_at", flat=True).first()
    if not expected:
        return False, last
    fresh = rows.filter(last_heartbeat_at__gte=Now() - BEAT_DOWN_AFTER).exists() if last else False
    return not fresh, last


def usual_runtimes(backend: str, task_names: set[str]) -> dict[str, tuple[float, int]]:
    """Each task name's p95 runtime over the last RUNTIME_WINDOW (hour rows) and its runs."""
    merged: dict[str, list[int]] = defaultdict(histograms.empty)
    rows = TaskRollup.objects.filter(
        period=TaskRollup.Period.HOUR,
        backend=backend,
        task_name__in=sorted(task_names),
        bucket_start__gte=Now() - RUNTIME_WINDOW,
    ).values_list("task_name", "runtime_buckets")
    for name, buckets in rows:
        histograms.add(merged[name], buckets or [])
    out = {}
    for name, counts in merged.items():
        p95 = histograms.percentile(counts, 0.95)
        if p95 is not None:
            out[name] = (p95, sum(counts))
    return out


def long_runners(backend: str, worker_replies: dict[str, dict], read_at: float | None) -> list[LongRunner]:
    """Active tasks running more than DD_ANALYTICS_SLOW_FACTOR x their task's own p95 of the last 24 h
    (with at least MIN_RUNS runs), longest first."""
    active = [
        (worker, task)
        for worker, reply in worker_replies.items()
        for task in reply.get("active") or []
        if isinstance(task, dict) and task.get("name") and isinstance(task.get("time_start"), int | float)
    ]
    if not active or read_at is None:
        return []
    usual = usual_runtimes(backend, {task["name"] for _, task in active})
    factor = settings.ANALYTICS_SLOW_FACTOR
    found = []
    for worker, task in active:
        p95, runs = usual.get(task["name"], (None, 0))
        running = read_at - task["time_start"]
        if p95 is not None and runs >= MIN_RUNS and running > factor * p95:
            found.append(LongRunner(str(task.get("id") or ""), task["name"], worker, running, p95, runs))
    found.sort(key=lambda item: -item.running_seconds)
    return found[:MAX_ITEMS]


def _finished_by_name(period: int, backend: str, window: timedelta) -> dict[str, tuple[int, int]]:
    rows = (
        TaskRollup.objects.filter(period=period, backend=backend, bucket_start__gte=Now() - window)
        .values("task_name")
        .annotate(failed=Sum("failed"), succeeded=Sum("succeeded"))
    )
    return {row["task_name"]: (row["failed"] or 0, (row["failed"] or 0) + (row["succeeded"] or 0)) for row in rows}


def failure_rates(backend: str) -> list[FailureRate]:
    """Task names whose failure % over the last FAILURE_WINDOW (at least MIN_RUNS finished runs) is
    above DD_ANALYTICS_FAILURE_RATE_PERCENT and above their own rate over the rest of the last 24 h,
    highest first."""
    recent = _finished_by_name(TaskRollup.Period.MINUTE, backend, FAILURE_WINDOW)
    candidates = {
        name: (failed, runs)
        for name, (failed, runs) in recent.items()
        if runs >= MIN_RUNS and 100.0 * failed / runs > settings.ANALYTICS_FAILURE_RATE_PERCENT
    }
    if not candidates:
        return []
    day = _finished_by_name(TaskRollup.Period.HOUR, backend, BASELINE_WINDOW)
    found = []
    for name, (failed, runs) in candidates.items():
        day_failed, day_runs = day.get(name, (0, 0))
        rest_failed, rest_runs = max(0, day_failed - failed), max(0, day_runs - runs)
        baseline = 100.0 * rest_failed / rest_runs if rest_runs else 0.0
        percent = 100.0 * failed / runs
        if percent > baseline:
            found.append(FailureRate(name, runs, failed, percent, baseline))
    found.sort(key=lambda item: (-item.percent, item.task_name))
    return found[:MAX_ITEMS]
