"""The two controls of a recurring task, by key (the entry's name): run now, enable/disable.

The entries come from dojo.ops.read_models.recurring (static beat schedule and django-celery-beat).
"""

from dataclasses import dataclass

from kombu.exceptions import OperationalError

from dojo.celery import app
from dojo.ops.brokers.connection import BrokerUnavailable, broker_connection
from dojo.ops.brokers.registry import Broker, get_broker
from dojo.ops.read_models.recurring import PeriodicEntry, RecurringTask, all_entries, recurring_task, routed_queue
from dojo.ops.redaction import redact


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


def _row(key: str) -> PeriodicEntry:
    for row in all_entries():
        if row.name == key:
            return row
    raise UnknownRecurringTask(f"No recurring task has the key {key!r}.")


def run_now(key: str, broker: Broker | None = None) -> RunResult:
    """Publish the entry's task with its args, kwargs and queue to `broker`, once, now."""
    broker = broker or get_broker()
    row = _row(key)
    if not isinstance(row.args or [], list) or not isinstance(row.kwargs or {}, dict):
        raise RecurringTaskRefused(f"The stored arguments of {key!r} are not a JSON list and object.")
    queue = routed_queue(row.task, row.queue)
    with broker_connection(broker=broker) as conn:
        try:
            # connection=: the producer publishes on this bounded connection, not the app's pool;
            # retry=False: one attempt, the connection's time bound is the only wait.
            sent = app.send_task(
                row.task, args=row.args or [], kwargs=row.kwargs or {}, queue=queue, connection=conn, retry=False
            )
        except OperationalError as exc:  # kombu wraps the transport's errors when publishing
            raise BrokerUnavailable(redact(f"{type(exc).__name__}: {exc}")) from exc
    return RunResult(key=key, task_id=sent.id, task_name=row.task, queue=queue, backend=broker.alias)


def set_enabled(key: str, enabled: bool) -> RecurringTask:
    """Enable or disable a database entry and tell beat (PeriodicTasks.update_changed), as
    django-celery-beat's admin actions do. Static entries come from settings: refused."""
    from django_celery_beat.models import PeriodicTask, PeriodicTasks

    if _row(key).source == "static":
        raise RecurringTaskRefused(f"{key!r} comes from settings (CELERY_BEAT_SCHEDULE): change it there, not here.")
    PeriodicTask.objects.filter(name=key).update(enabled=enabled)
    PeriodicTasks.update_changed()
    return recurring_task(_row(key))
