"""Recurring tasks: the static beat schedule (settings.CELERY_BEAT_SCHEDULE) and django-celery-beat's
database entries, by key (the entry's name), with the two controls: run now, enable/disable.

The rows come from the panel's periodic-tasks backend (schedule in words, last and next run);
a static entry that beat's DatabaseScheduler copied into the database keeps "static" and takes
its state from the database row.
"""

from dataclasses import dataclass
from datetime import datetime

from kombu.exceptions import OperationalError

from dojo.celery import app
from dojo.celery_ops.backends import CeleryBackend, get_backend
from dojo.celery_ops.connection import BrokerUnavailable, broker_connection, redact
from dojo.celery_panel.backends.periodic import BeatAndDatabasePeriodicTasksBackend
from dojo.celery_panel.pages import PeriodicTaskRow


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


@dataclass(frozen=True)
class RunResult:
    key: str
    task_id: str
    task_name: str
    queue: str
    backend: str


class UnknownRecurringTask(LookupError):
    """No static or database entry has this key."""


class RecurringTaskRefused(ValueError):
    """The entry cannot take this action (a static entry toggled, arguments that are not JSON lists/objects)."""


def _rows() -> list[PeriodicTaskRow]:
    return BeatAndDatabasePeriodicTasksBackend(app).get_periodic_tasks().tasks


def _routed_queue(task_name: str, queue: str | None) -> str:
    """The queue a publish of `task_name` goes to: the entry's own, else what the routes and the default say."""
    return queue or app.amqp.router.route({}, task_name)["queue"].name


def _recurring(row: PeriodicTaskRow) -> RecurringTask:
    return RecurringTask(
        key=row.name,
        task_path=row.task,
        queue_name=_routed_queue(row.task, row.queue),
        schedule=row.schedule,
        static=row.source == "static",
        enabled=row.enabled,
        last_run_at=row.last_run,
        next_run_at=row.next_run,
    )


def recurring_tasks() -> list[RecurringTask]:
    """Every recurring task, static and database, ordered by key."""
    return [_recurring(row) for row in _rows()]


def _row(key: str) -> PeriodicTaskRow:
    for row in _rows():
        if row.name == key:
            return row
    raise UnknownRecurringTask(f"No recurring task has the key {key!r}.")


def run_now(key: str, backend: CeleryBackend | None = None) -> RunResult:
    """Publish the entry's task with its args, kwargs and queue to `backend`'s broker, once, now."""
    backend = backend or get_backend()
    row = _row(key)
    if not isinstance(row.args or [], list) or not isinstance(row.kwargs or {}, dict):
        raise RecurringTaskRefused(f"The stored arguments of {key!r} are not a JSON list and object.")
    queue = _routed_queue(row.task, row.queue)
    with broker_connection(backend=backend) as conn:
        try:
            # connection=: the producer publishes on this bounded connection, not the app's pool;
            # retry=False: one attempt, the connection's time bound is the only wait.
            sent = app.send_task(
                row.task, args=row.args or [], kwargs=row.kwargs or {}, queue=queue, connection=conn, retry=False
            )
        except OperationalError as exc:  # kombu wraps the transport's errors when publishing
            raise BrokerUnavailable(redact(f"{type(exc).__name__}: {exc}")) from exc
    return RunResult(key=key, task_id=sent.id, task_name=row.task, queue=queue, backend=backend.alias)


def set_enabled(key: str, enabled: bool) -> RecurringTask:
    """Enable or disable a database entry and tell beat (PeriodicTasks.update_changed), as
    django-celery-beat's admin actions do. Static entries come from settings: refused."""
    from django_celery_beat.models import PeriodicTask, PeriodicTasks

    if _row(key).source == "static":
        raise RecurringTaskRefused(f"{key!r} comes from settings (CELERY_BEAT_SCHEDULE): change it there, not here.")
    PeriodicTask.objects.filter(name=key).update(enabled=enabled)
    PeriodicTasks.update_changed()
    return _recurring(_row(key))
