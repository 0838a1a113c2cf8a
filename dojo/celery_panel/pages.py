"""Typed page objects: what a backend returns and a page template shows.

A custom backend builds these and nothing else; see docs/celery_panel_backends.md.
"""

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

# A periodic entry is the service layer's own row (static or database); custom backends build it too.
from dojo.ops.read_models.recurring import PeriodicEntry as PeriodicTaskRow


@dataclass(frozen=True)
class FilterChoice:
    value: str | None
    label: str


@dataclass(frozen=True)
class TaskRow:
    id: str
    name: str | None
    state: str
    args: Any = None
    kwargs: Any = None
    result: Any = None
    date_received: datetime | None = None
    date_started: datetime | None = None
    date_done: datetime | None = None
    worker: str | None = None
    queue: str | None = None

    @property
    def duration(self) -> float | None:
        """Seconds from start (or receipt) to completion; None while unknown."""
        begin = self.date_started or self.date_received
        if begin and self.date_done:
            return (self.date_done - begin).total_seconds()
        return None


@dataclass(frozen=True)
class TaskListPage:
    tasks: list[TaskRow]
    page: int = 1
    per_page: int = 50
    # Rows matching; a lower bound when total_is_capped (counting further would be slow); None if unknown.
    total_count: int | None = None
    total_is_capped: bool = False
    has_next: bool = False
    error: str | None = None


@dataclass(frozen=True)
class TaskDetailPage:
    task: TaskRow | None
    error: str | None = None
    traceback: str | None = None
    retries: int | None = None
    time_limit: int | None = None
    soft_time_limit: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class WorkerRow:
    name: str
    online: bool
    last_seen: datetime | None = None
    pool: str | None = None
    concurrency: int | None = None
    active: int | None = 0  # None: the worker did not give its active list in time

    @property
    def hostname(self) -> str:
        return self.name.split("@", 1)[-1]


@dataclass(frozen=True)
class WorkerListPage:
    workers: list[WorkerRow]
    error: str | None = None


@dataclass(frozen=True)
class WorkerDetailPage:
    worker: WorkerRow | None
    error: str | None = None
    pid: int | None = None
    prefetch_count: int | None = None
    total_tasks: int | None = None
    active: list[dict] = field(default_factory=list)
    reserved: list[dict] = field(default_factory=list)
    scheduled: list[dict] = field(default_factory=list)
    registered: list[str] = field(default_factory=list)
    queues: list[str] = field(default_factory=list)
    processes: list[int] = field(default_factory=list)
    rusage: dict[str, Any] = field(default_factory=dict)
    broker: str | None = None  # masked URL
    unanswered: list[str] = field(default_factory=list)  # inspect commands it did not answer in time


@dataclass(frozen=True)
class QueueRow:
    name: str
    exchange: str | None = None
    exchange_type: str | None = None
    routing_key: str | None = None
    durable: bool | None = None
    consumers: int | None = None
    ready: int | None = None
    configured: bool = True
    consumed_by: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class QueueListPage:
    queues: list[QueueRow]
    error: str | None = None


@dataclass(frozen=True)
class QueueDetailPage:
    queue: QueueRow | None
    error: str | None = None


@dataclass(frozen=True)
class PeriodicTaskListPage:
    tasks: list[PeriodicTaskRow]
    error: str | None = None
