"""The scheduled (ETA/countdown) tasks of one backend across its workers, from the status document.

Where the rows come from: the cached status document (dojo.ops.fleet.status_cache.get_status),
which every panel page shares: at most one broadcast round per DD_CELERY_STATUS_CACHE_SECONDS
whatever the number of readers, and bounded in time by DD_CELERY_BROKER_TIMEOUT. Each worker's
scheduled list in it is cut to DD_CELERY_STATUS_MAX_TASKS_PER_WORKER entries, but its count is
exact, so the totals here are exact and what was cut is said per worker (`left_out`). The full
lists are not asked for with the built-in `scheduled` command: a worker holding 100,000 ETA
tasks would send all of them in one reply to every page view; the cap keeps one page's memory
and rendering bounded (cap x workers rows at most), and the operator who needs the rest raises
the cap.

"Late" is now - ETA for a task whose ETA has passed (None while not due). A live worker moves a
due task to its pool within moments, so a late row is either a worker that is stuck (its event
loop blocked: it did not run its timer) or a document read before the ETA: the page shows when
the lists were read next to the rows.
"""

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import DatabaseError
from django.utils import timezone

from dojo.models import TaskRevocation
from dojo.ops.brokers.registry import Broker
from dojo.ops.fleet.status_cache import get_status
from dojo.ops.fleet.worker_reply import task_count
from dojo.ops.redaction import args_preview, redact

# A filter longer than a task name or a worker name can be is a bad request (the view says so).
NAME_MAX_LENGTH = 255
ARGUMENTS_CHARS = 300  # of args and kwargs shown per row (the rest cut with "…")


@dataclass(frozen=True)
class ScheduledTask:
    id: str
    name: str | None
    eta: datetime | None
    late_seconds: float | None  # now - ETA once it has passed; None while not due (or no ETA)
    worker: str
    queue: str | None
    priority: int | None
    arguments: str | None = None  # args and kwargs, secrets masked; None without the task-data right
    revoked: bool = False  # revoked within DD_CELERY_REVOKE_WINDOW: the worker discards it when due

    @property
    def due(self) -> bool:
        return self.late_seconds is not None


@dataclass(frozen=True)
class ScheduledTasks:
    """Every listed scheduled task of a backend that matches the filter, and the exact counts."""

    backend: str
    rows: list[ScheduledTask]
    read_at: datetime
    total: int  # scheduled tasks on the answering workers, exact (listed or not)
    left_out: dict[str, int] = field(default_factory=dict)  # per worker: scheduled tasks not in the document
    workers: list[str] = field(default_factory=list)  # the answering workers
    unanswered: list[str] = field(default_factory=list)  # workers that did not give their scheduled list
    error: str | None = None  # the broker did not answer

    @property
    def not_listed(self) -> int:
        return sum(self.left_out.values())


def _parse_eta(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        eta = datetime.fromisoformat(value)
    except ValueError:
        return None
    return eta if eta.tzinfo else eta.replace(tzinfo=UTC)


def _row(worker: str, task: dict, now: datetime, with_task_data: bool) -> ScheduledTask:
    eta = _parse_eta(task.get("eta"))
    late = (now - eta).total_seconds() if eta is not None and eta <= now else None
    priority = task.get("priority")
    return ScheduledTask(
        id=str(task.get("id") or ""),
        name=task.get("name"),
        eta=eta,
        late_seconds=late,
        worker=worker,
        queue=(task.get("delivery_info") or {}).get("routing_key"),
        priority=priority if isinstance(priority, int) else None,
        arguments=_arguments(task) if with_task_data else None,
    )


def _arguments(task: dict) -> str:
    return args_preview(_text(task.get("args")), _text(task.get("kwargs")), ARGUMENTS_CHARS)


def _text(value: Any) -> str | None:
    """A worker's `scheduled` answer carries the arguments themselves (a list, a dict: JSON), or
    Celery's repr of them; args_preview masks a repr."""
    if value is None or isinstance(value, str):
        return value
    return repr(tuple(value) if isinstance(value, list) else value)


def _eta_order(row: ScheduledTask) -> tuple[bool, datetime, str, str]:
    """Most overdue first; a task without an ETA last."""
    return (row.eta is None, row.eta or datetime.max.replace(tzinfo=UTC), row.worker, row.id)


def scheduled_tasks(
    broker: Broker,
    task_name: str = "",
    worker: str = "",
    with_task_data: bool = False,
    now: datetime | None = None,
) -> ScheduledTasks:
    """The scheduled tasks of `broker`'s workers, by ETA (most overdue first), filtered by task name
    (exact or prefix) and worker (exact); arguments only `with_task_data`. The totals count every
    scheduled task of the answering workers, not only the filtered ones."""
    status = get_status(broker=broker)
    now = now or datetime.now(UTC)
    replies = status.worker_replies
    answered = {name: reply for name, reply in replies.items() if task_count(reply, "scheduled") is not None}
    rows = [
        _row(name, task, now, with_task_data)
        for name, reply in answered.items()
        if not worker or name == worker
        for task in reply.get("scheduled", [])
        if not task_name or (task.get("name") or "").startswith(task_name)
    ]
    rows.sort(key=_eta_order)
    return ScheduledTasks(
        backend=broker.alias,
        rows=rows,
        read_at=datetime.fromtimestamp(status.read_at, UTC),
        total=sum(task_count(reply, "scheduled") or 0 for reply in answered.values()),
        left_out=dict(sorted(status.tasks_left_out.get("scheduled", {}).items())),
        workers=sorted(replies),
        unanswered=sorted(set(replies) - set(answered)),
        error=None if status.connected else status.error or "the broker did not answer",
    )


def with_revocations(tasks: ScheduledTasks, shown: list[ScheduledTask]) -> tuple[list[ScheduledTask], str | None]:
    """`shown` (one page of `tasks.rows`) with the ids revoked within the revocation window marked:
    one query for the page's ids. The reason instead of the marks when the database failed."""
    ids = [row.id for row in shown if row.id]
    if not ids:
        return shown, None
    # DD_CELERY_REVOKE_WINDOW as dojo.ops.controls.revocations reads it (a layer above this one).
    since = timezone.now() - timedelta(seconds=max(1, settings.CELERY_REVOKE_WINDOW))
    try:
        revoked = set(
            TaskRevocation.objects.filter(backend=tasks.backend, task_id__in=ids, revoked_at__gte=since).values_list(
                "task_id", flat=True
            )
        )
    except DatabaseError as exc:
        return shown, redact(f"{type(exc).__name__}: {exc}")
    return [replace(row, revoked=True) if row.id in revoked else row for row in shown], None
