"""Rollup rows written as the event monitor writes them: a minute row and the same counts merged
into its hour row (dojo.ops.observe.rollups writes both tiers in one flush), so a test reads the
same figures from a window over either tier."""

from datetime import datetime

from dojo.models import TASK_COUNT_FIELDS, FailureRollup, TaskRollup
from dojo.ops import histograms

MINUTE, HOUR = TaskRollup.Period.MINUTE, TaskRollup.Period.HOUR
SUMS = ("runtime_sum", "wait_sum", "publish_wait_sum")
BUCKETS = ("runtime_buckets", "wait_buckets", "publish_wait_buckets")


def _hour_of(start: datetime) -> datetime:
    return start.replace(minute=0, second=0, microsecond=0)


def task_rollup(*, bucket_start: datetime, **fields) -> TaskRollup:
    """The minute row of `fields`, and its counts, sums and buckets added to its hour row."""
    minute = TaskRollup.objects.create(period=MINUTE, bucket_start=bucket_start, **fields)
    key = {name: getattr(minute, name) for name in ("backend", "task_name", "queue", "worker")}
    hour, _ = TaskRollup.objects.get_or_create(period=HOUR, bucket_start=_hour_of(bucket_start), **key)
    for name in (*TASK_COUNT_FIELDS, *SUMS):
        setattr(hour, name, getattr(hour, name) + getattr(minute, name))
    hour.runtime_max = max(hour.runtime_max, minute.runtime_max)
    for name in BUCKETS:
        setattr(hour, name, histograms.add(getattr(hour, name) or histograms.empty(), getattr(minute, name) or []))
    hour.save()
    return minute


def failure_rollup(*, bucket_start: datetime, **fields) -> FailureRollup:
    """The minute failure group of `fields`, and its count added to its hour row."""
    minute = FailureRollup.objects.create(period=MINUTE, bucket_start=bucket_start, **fields)
    key = {name: fields[name] for name in ("backend", "task_name", "exception_type")}
    hour, _ = FailureRollup.objects.get_or_create(
        period=HOUR, bucket_start=_hour_of(bucket_start), **key, defaults={**fields, "count": 0}
    )
    hour.count += minute.count
    hour.first_seen, hour.last_seen = min(hour.first_seen, minute.first_seen), max(hour.last_seen, minute.last_seen)
    if minute.last_seen >= hour.last_seen:
        hour.latest_task_id, hour.latest_exception = minute.latest_task_id, minute.latest_exception
        hour.latest_traceback = minute.latest_traceback
    hour.save()
    return minute
