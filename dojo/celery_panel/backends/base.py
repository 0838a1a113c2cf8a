"""The backend interface. A backend is any class with these attributes and methods;
subclassing these bases is optional and only saves writing the defaults."""

from typing import Any, ClassVar

from celery import Celery

from dojo.celery_panel.pages import (
    PeriodicTaskListPage,
    QueueDetailPage,
    QueueListPage,
    TaskDetailPage,
    TaskListPage,
    WorkerDetailPage,
    WorkerListPage,
)
from dojo.ops.read_models.task_filter import TaskFilter


class Backend:
    BACKEND_DESCRIPTION: ClassVar[str] = ""
    DATA_SOURCE: ClassVar[str] = ""
    DEFAULT_FILTER: ClassVar[str | None] = None
    AVAILABLE_FILTERS: ClassVar[list[dict[str, Any]]] = []

    def __init__(self, app: Celery) -> None:
        self.app = app


class TasksBackend(Backend):
    # The TaskFilter fields get_tasks applies. Empty (the default, and any backend written before
    # the filter): the panel never passes `task_filter` and refuses those fields in the URL.
    TASK_FILTER_FIELDS: ClassVar[tuple[str, ...]] = ()

    def get_tasks(
        self,
        search_query: str | None = None,
        page: int = 1,
        per_page: int = 50,
        filter_type: str | None = None,
        task_filter: TaskFilter | None = None,
    ) -> TaskListPage:
        raise NotImplementedError

    def get_task_detail(self, task_id: str) -> TaskDetailPage:
        raise NotImplementedError


class WorkersBackend(Backend):
    def get_workers(self) -> WorkerListPage:
        raise NotImplementedError

    def get_worker_detail(self, worker_id: str) -> WorkerDetailPage:
        raise NotImplementedError


class QueuesBackend(Backend):
    def get_queues(self) -> QueueListPage:
        raise NotImplementedError

    def get_queue_detail(self, queue_name: str) -> QueueDetailPage:
        raise NotImplementedError


class PeriodicTasksBackend(Backend):
    def get_periodic_tasks(self) -> PeriodicTaskListPage:
        raise NotImplementedError
