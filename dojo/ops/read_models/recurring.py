"""Recurring tasks as they are configured: the static beat schedule (settings.CELERY_BEAT_SCHEDULE)
and django-celery-beat's database entries, with their schedule in words and their last and
next run. The panel's periodic-tasks page, the dashboard and the recurring-task controls read them here.
"""

import dataclasses
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from celery.schedules import BaseSchedule, crontab, schedule, solar
from django.conf import settings
from django.utils import timezone

from dojo.celery import app
from dojo.ops.durations import every, interval_words


@dataclass(frozen=True)
class PeriodicEntry:
    name: str
    task: str
    schedule: str  # in words
    source: str  # "static" (CELERY_BEAT_SCHEDULE) or "database" (django-celery-beat)
    enabled: bool = True
    last_run: datetime | None = None
    next_run: datetime | None = None
    queue: str | None = None
    args: Any = None
    kwargs: Any = None


@dataclass(frozen=True)
class RecurringTask:
    key: str
    task_path: str
    queue_name: str  # the entry's queue, else the queue the task is routed to
    schedule: str  # in words
    static: bool  # from settings (cannot be toggled here) or a database entry
    enabled: bool
    last_run_at: datetime | None
    next_run_at: datetime | None


DAY_NAMES = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"]


def crontab_words(minute: str, hour: str, day_of_month: str, month_of_year: str, day_of_week: str) -> str:
    """ "at 02:00 every day", "at 02:00 every Monday", else the cron fields."""
    fields = [str(value).replace(" ", "") for value in (minute, hour, day_of_month, month_of_year, day_of_week)]
    minute, hour, day_of_month, month_of_year, day_of_week = fields
    if minute.isdigit() and hour.isdigit() and day_of_month == "*" and month_of_year == "*":
        at = f"at {int(hour):02d}:{int(minute):02d}"
        if day_of_week == "*":
            return f"{at} every day"
        if day_of_week.isdigit() and int(day_of_week) <= 7:
            return f"{at} every {DAY_NAMES[int(day_of_week) % 7]}"
    return "cron " + " ".join(fields)


def solar_words(event: str, latitude: float, longitude: float) -> str:
    return f"{event.replace('_', ' ')} at {latitude},{longitude}"


def schedule_words(value: Any) -> str:
    """A celery schedule (or a number of seconds, or a timedelta) in words."""
    if isinstance(value, int | float):
        return interval_words(value)
    if isinstance(value, timedelta):
        return interval_words(value.total_seconds())
    if isinstance(value, crontab):
        return crontab_words(
            value._orig_minute,
            value._orig_hour,
            value._orig_day_of_month,
            value._orig_month_of_year,
            value._orig_day_of_week,
        )
    if isinstance(value, solar):
        return solar_words(value.event, value.lat, value.lon)
    if isinstance(value, schedule):
        return interval_words(value.run_every.total_seconds())
    return str(value)


def next_run(value: Any, last_run: datetime | None) -> datetime | None:
    """When a schedule next runs: after its last run, or for calendar schedules after now.

    An interval whose last run is unknown has no known next run.
    """
    if isinstance(value, int | float | timedelta):
        value = schedule(value)
    if not isinstance(value, BaseSchedule):
        return None
    if last_run is None and type(value) is schedule:
        return None
    base = last_run or timezone.now()
    try:
        moment = timezone.now() + value.remaining_estimate(base)
    except (TypeError, ValueError, AttributeError):
        return None
    return (moment + timedelta(microseconds=500_000)).replace(microsecond=0)  # to the nearest second


def static_entries() -> list[PeriodicEntry]:
    """The static schedule from settings (CELERY_BEAT_SCHEDULE), by name."""
    rows = []
    for name, entry in sorted((getattr(settings, "CELERY_BEAT_SCHEDULE", None) or {}).items()):
        options = entry.get("options") or {}
        rows.append(
            PeriodicEntry(
                name=name,
                task=entry["task"],
                schedule=schedule_words(entry["schedule"]),
                source="static",
                next_run=next_run(entry["schedule"], None),
                queue=options.get("queue"),
                args=list(entry.get("args") or []),
                kwargs=dict(entry.get("kwargs") or {}),
            )
        )
    return rows


def _loads(text: str | None, default: Any) -> Any:
    try:
        return json.loads(text) if text else default
    except ValueError:
        return text


def database_entries() -> list[PeriodicEntry]:
    """Entries stored by django-celery-beat (edited in the admin, run by its DatabaseScheduler), by name."""
    from django_celery_beat.models import PeriodicTask

    entries = PeriodicTask.objects.select_related("interval", "crontab", "solar", "clocked").order_by("name")
    return [_database_entry(entry) for entry in entries]


def _database_words(entry: Any) -> str:
    if entry.interval:
        return every(entry.interval.every, entry.interval.period.removesuffix("s"))
    if entry.crontab:
        c = entry.crontab
        words = crontab_words(c.minute, c.hour, c.day_of_month, c.month_of_year, c.day_of_week)
        return f"{words} ({c.timezone})"
    if entry.solar:
        return solar_words(entry.solar.event, entry.solar.latitude, entry.solar.longitude)
    if entry.clocked:
        return f"once at {entry.clocked.clocked_time:%Y-%m-%d %H:%M:%S %Z}"
    return "no schedule"


def _database_entry(entry: Any) -> PeriodicEntry:
    try:
        upcoming = None if entry.clocked else next_run(entry.schedule, entry.last_run_at)
    except Exception:  # a malformed entry must not break the page
        upcoming = None
    if entry.clocked and not entry.last_run_at:
        upcoming = entry.clocked.clocked_time
    return PeriodicEntry(
        name=entry.name,
        task=entry.task,
        schedule=_database_words(entry) + (" (one-off)" if entry.one_off else ""),
        source="database",
        enabled=entry.enabled,
        last_run=entry.last_run_at,
        next_run=upcoming if entry.enabled else None,
        queue=entry.queue or None,
        args=_loads(entry.args, []),
        kwargs=_loads(entry.kwargs, {}),
    )


def all_entries() -> list[PeriodicEntry]:
    """Both sources, by name. DatabaseScheduler copies the static entries into the database under
    their own names: such an entry keeps source "static" and takes its state (enabled, runs) from
    the database."""
    database = {row.name: row for row in database_entries()}
    rows = []
    for row in static_entries():
        stored = database.pop(row.name, None)
        if stored is not None:
            row = dataclasses.replace(
                row,
                enabled=stored.enabled,
                last_run=stored.last_run,
                next_run=stored.next_run if stored.next_run or not stored.enabled else row.next_run,
            )
        rows.append(row)
    return sorted([*rows, *database.values()], key=lambda row: row.name)


def routed_queue(task_name: str, queue: str | None) -> str:
    """The queue a publish of `task_name` goes to: the entry's own, else what the routes and the default say."""
    return queue or app.amqp.router.route({}, task_name)["queue"].name


def recurring_task(row: PeriodicEntry) -> RecurringTask:
    return RecurringTask(
        key=row.name,
        task_path=row.task,
        queue_name=routed_queue(row.task, row.queue),
        schedule=row.schedule,
        static=row.source == "static",
        enabled=row.enabled,
        last_run_at=row.last_run,
        next_run_at=row.next_run,
    )


def recurring_tasks() -> list[RecurringTask]:
    """Every recurring task, static and database, ordered by key."""
    return [recurring_task(row) for row in all_entries()]
