"""Periodic tasks: the static CELERY_BEAT_SCHEDULE and django-celery-beat's database entries."""

import json
from datetime import datetime, timedelta
from typing import Any, ClassVar

from celery.schedules import BaseSchedule, crontab, schedule, solar
from django.conf import settings
from django.utils import timezone

from dojo.celery_panel.backends.base import PeriodicTasksBackend
from dojo.celery_panel.pages import PeriodicTaskListPage, PeriodicTaskRow

UNITS = (("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1))
DAY_NAMES = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"]


def every(count: float, unit: str) -> str:
    """ "every minute", "every 5 minutes"."""
    count = int(count) if float(count).is_integer() else count
    return f"every {unit}" if count == 1 else f"every {count} {unit}s"


def interval_words(seconds: float) -> str:
    """An interval in the largest unit that divides it: 300 → "every 5 minutes"."""
    for unit, size in UNITS:
        if seconds >= size and seconds % size == 0:
            return every(seconds // size, unit)
    return every(seconds, "second")


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


class BeatScheduleBackend(PeriodicTasksBackend):
    """The static schedule from settings; beat keeps the last runs elsewhere (file or database)."""

    BACKEND_DESCRIPTION = "the static beat schedule"
    DATA_SOURCE: ClassVar[str] = "settings.CELERY_BEAT_SCHEDULE"

    def get_periodic_tasks(self) -> PeriodicTaskListPage:
        return PeriodicTaskListPage(tasks=self.static_rows())

    @staticmethod
    def static_rows() -> list[PeriodicTaskRow]:
        rows = []
        for name, entry in sorted((getattr(settings, "CELERY_BEAT_SCHEDULE", None) or {}).items()):
            options = entry.get("options") or {}
            rows.append(
                PeriodicTaskRow(
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


class DjangoCeleryBeatBackend(PeriodicTasksBackend):
    """Entries stored by django-celery-beat (edited in the admin, run by its DatabaseScheduler)."""

    BACKEND_DESCRIPTION = "django-celery-beat's periodic tasks"
    DATA_SOURCE: ClassVar[str] = "django_celery_beat.models.PeriodicTask (database)"

    def get_periodic_tasks(self) -> PeriodicTaskListPage:
        return PeriodicTaskListPage(tasks=self.database_rows())

    @staticmethod
    def database_rows() -> list[PeriodicTaskRow]:
        from django_celery_beat.models import PeriodicTask

        entries = PeriodicTask.objects.select_related("interval", "crontab", "solar", "clocked").order_by("name")
        return [_database_row(entry) for entry in entries]


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


def _database_row(entry: Any) -> PeriodicTaskRow:
    try:
        upcoming = None if entry.clocked else next_run(entry.schedule, entry.last_run_at)
    except Exception:  # a malformed entry must not break the page
        upcoming = None
    if entry.clocked and not entry.last_run_at:
        upcoming = entry.clocked.clocked_time
    return PeriodicTaskRow(
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


class BeatAndDatabasePeriodicTasksBackend(PeriodicTasksBackend):
    """Both sources, by name. DatabaseScheduler copies the static entries into the database under
    their own names: such a row keeps source "static" and takes its state (enabled, runs) from the database."""

    BACKEND_DESCRIPTION = "the static beat schedule and django-celery-beat's entries, by name"
    DATA_SOURCE: ClassVar[str] = "settings.CELERY_BEAT_SCHEDULE and django_celery_beat.models.PeriodicTask"

    def get_periodic_tasks(self) -> PeriodicTaskListPage:
        database = {row.name: row for row in DjangoCeleryBeatBackend.database_rows()}
        rows = []
        for row in BeatScheduleBackend.static_rows():
            stored = database.pop(row.name, None)
            if stored is not None:
                row = PeriodicTaskRow(
                    **{
                        **row.__dict__,
                        "enabled": stored.enabled,
                        "last_run": stored.last_run,
                        "next_run": stored.next_run if stored.next_run or not stored.enabled else row.next_run,
                    }
                )
            rows.append(row)
        return PeriodicTaskListPage(tasks=sorted([*rows, *database.values()], key=lambda row: row.name))
