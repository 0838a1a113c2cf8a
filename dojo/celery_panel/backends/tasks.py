"""Tasks backends: stored results (django-celery-results) and live tasks (the workers' own lists)."""

import json
import re
from datetime import UTC, datetime
from typing import Any, ClassVar

from celery import states
from django.conf import settings
from django.db.models import QuerySet

from dojo.celery_panel.backends.base import TasksBackend
from dojo.celery_panel.pages import TaskDetailPage, TaskListPage, TaskRow
from dojo.ops.fleet.status import LIVE_STATES, TASK_LISTS
from dojo.ops.fleet.status_cache import get_status
from dojo.ops.literals import literal_or_text, showable, shown_text
from dojo.ops.read_models.task_filter import FILTER_FIELDS, LIVE_FIELDS, TaskFilter, matches_live, stored_results

# Never count more matching rows than this for one page: past it the page says "10,000+".
COUNT_CAP = 10_000
UUID_RE = re.compile(r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$")

STATE_FILTERS = {
    "pending": "PENDING",
    "started": "STARTED",
    "success": "SUCCESS",
    "failure": "FAILURE",
    "retry": "RETRY",
    "revoked": "REVOKED",
}


def looks_like_task_id(query: str) -> bool:
    return bool(UUID_RE.match(query))


def decode_stored(value: str | None) -> Any:
    """A TaskResult text column (JSON) as a Python value; argsrepr strings become values when literal."""
    if value is None or value == "":
        return None
    try:
        decoded = json.loads(value)
    except (ValueError, RecursionError):
        return shown_text(value)
    if isinstance(decoded, str) and decoded[:1] in "([{":
        return literal_or_text(decoded)  # result_extended stores argsrepr/kwargsrepr: Python repr text, JSON-encoded
    return decoded if showable(decoded) else shown_text(value)


def pretty(value: Any) -> str:
    """JSON with indentation (tuples as lists, anything else as its str)."""
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, indent=2, sort_keys=True, default=str)
    except (TypeError, ValueError, RecursionError):  # keys JSON has not (tuples) or that do not sort (1 and "a")
        return str(value)


def own_time_limits(app: Any, task: Any) -> dict[str, int | None]:
    """The limits a task sets itself. Celery copies the app's limits onto every task that
    sets none when it binds it, so a value equal to the app's is not the task's own."""
    own = {}
    for attr in ("time_limit", "soft_time_limit"):
        value = getattr(task, attr, None)
        own[f"task_{attr}"] = None if value == app.conf.get(f"task_{attr}") else value
    return own


def configured_time_limits() -> tuple[int | None, int | None]:
    return (
        getattr(settings, "CELERY_TASK_TIME_LIMIT", None) or None,
        getattr(settings, "CELERY_TASK_SOFT_TIME_LIMIT", None) or None,
    )


class DjangoCeleryResultsTasksBackend(TasksBackend):
    """Task history from django-celery-results' TaskResult table: `stored_results(task_filter)`.

    Pages are ordered by (date_done DESC, id DESC), served by the indexes of the
    celery_panel migration 0001; counts stop at COUNT_CAP rows.
    """

    BACKEND_DESCRIPTION = "Task history stored by django-celery-results"
    DATA_SOURCE = "Database (django_celery_results.TaskResult)"
    DEFAULT_FILTER = None
    TASK_FILTER_FIELDS = FILTER_FIELDS
    # Each state link is a TaskFilter state: the panel turns an old ?filter=failure into state=FAILURE.
    AVAILABLE_FILTERS: ClassVar[list[dict[str, Any]]] = [
        {"value": None, "label": "All", "filter": {"state": ""}},
        *(
            {"value": value, "label": value.capitalize(), "filter": {"state": state}}
            for value, state in STATE_FILTERS.items()
        ),
    ]

    def _queryset(self, search_query: str | None, filter_type: str | None, task_filter: TaskFilter | None) -> QuerySet:
        qs = stored_results(task_filter or TaskFilter())
        state = STATE_FILTERS.get((filter_type or "").lower())
        if state:
            qs = qs.filter(status=state)
        if search_query:
            if looks_like_task_id(search_query):
                qs = qs.filter(task_id=search_query)
            else:
                qs = qs.filter(task_name__startswith=search_query)
        return qs

    def get_tasks(
        self,
        search_query: str | None = None,
        page: int = 1,
        per_page: int = 50,
        filter_type: str | None = None,
        task_filter: TaskFilter | None = None,
    ) -> TaskListPage:
        page = max(1, page)
        qs = self._queryset(search_query, filter_type, task_filter)
        start = (page - 1) * per_page
        rows = list(qs.defer("traceback").order_by("-date_done", "-id")[start : start + per_page + 1])
        has_next = len(rows) > per_page
        rows = rows[:per_page]
        if page == 1 and not has_next:
            total, capped = len(rows), False  # everything is on this page: no count query
        else:
            cap = COUNT_CAP
            total = qs.order_by().values("pk")[: cap + 1].count()
            capped = total > cap
            total = min(total, cap)
        return TaskListPage(
            tasks=[self._row(result) for result in rows],
            page=page,
            per_page=per_page,
            total_count=total,
            total_is_capped=capped,
            has_next=has_next,
        )

    def get_task_detail(self, task_id: str) -> TaskDetailPage:
        from django_celery_results.models import TaskResult

        result = TaskResult.objects.filter(task_id=task_id).first()
        if result is None:
            return TaskDetailPage(task=None, error=f"No stored result for task {task_id}")
        row = self._row(result)
        meta = decode_stored(result.meta)
        meta = meta if isinstance(meta, dict) else {}
        time_limit, soft_time_limit = configured_time_limits()
        task = self.app.tasks.get(result.task_name or "")
        return TaskDetailPage(
            task=row,
            traceback=result.traceback,
            retries=meta.get("retries"),
            time_limit=time_limit,
            soft_time_limit=soft_time_limit,
            extra={
                "args_json": pretty(row.args),
                "kwargs_json": pretty(row.kwargs),
                "result_json": pretty(row.result),
                **own_time_limits(self.app, task),
                "periodic_task_name": result.periodic_task_name,
                "content_type": result.content_type,
                "meta_json": pretty(meta) if meta else None,
                "backend": meta.get("backend"),  # the DD_CELERY_BACKENDS alias whose worker ran it
            },
        )

    @staticmethod
    def _row(result: Any) -> TaskRow:
        meta = decode_stored(result.meta) if "meta" in result.__dict__ else None
        queue = None
        if isinstance(meta, dict):
            # django-celery-results stores only request.meta and children; a queue there is a bonus.
            delivery = meta.get("delivery_info")
            queue = meta.get("queue") or (delivery.get("routing_key") if isinstance(delivery, dict) else None)
        return TaskRow(
            id=result.task_id,
            name=result.task_name,
            state=result.status,
            args=decode_stored(result.task_args),
            kwargs=decode_stored(result.task_kwargs),
            result=decode_stored(result.result),
            date_received=result.date_created,
            date_started=result.date_started,
            # django-celery-results stamps date_done on every save, STARTED and RETRY included.
            date_done=result.date_done if result.status in states.READY_STATES else None,
            worker=result.worker,
            queue=queue,
        )


class InspectTasksBackend(TasksBackend):
    """Live tasks only: what the workers hold now (active, reserved, scheduled), from the cached status."""

    BACKEND_DESCRIPTION = "Live tasks the workers hold now (no history)"
    DATA_SOURCE = "Celery workers via the dojo_status broadcast (cached status)"
    DEFAULT_FILTER = None
    TASK_FILTER_FIELDS = LIVE_FIELDS  # a live task has no stored state, exception or done time
    AVAILABLE_FILTERS: ClassVar[list[dict[str, Any]]] = [
        {"value": None, "label": "All"},
        *({"value": kind, "label": kind.capitalize()} for kind in TASK_LISTS),
    ]

    def _live(self) -> tuple[list[tuple[str, TaskRow, dict]], str | None]:
        status = get_status()
        live = []
        for kind in TASK_LISTS:
            for worker, tasks in sorted(status.queue_details.get(kind, {}).items()):
                for info in tasks:
                    live.append((kind, self._row(kind, worker, info), info))
        return live, status.error

    @staticmethod
    def _row(kind: str, worker: str, info: dict) -> TaskRow:
        started = info.get("time_start")
        eta = info.get("eta")
        return TaskRow(
            id=info.get("id") or "",
            name=info.get("name"),
            state=LIVE_STATES[kind],
            args=literal_or_text(info.get("args")),
            kwargs=literal_or_text(info.get("kwargs")),
            # time_start is epoch seconds on current Celery; anything else is not a date.
            date_started=datetime.fromtimestamp(started, UTC) if isinstance(started, int | float) else None,
            date_received=datetime.fromisoformat(eta) if isinstance(eta, str) else None,
            worker=worker,
            queue=(info.get("delivery_info") or {}).get("routing_key"),
        )

    def get_tasks(
        self,
        search_query: str | None = None,
        page: int = 1,
        per_page: int = 50,
        filter_type: str | None = None,
        task_filter: TaskFilter | None = None,
    ) -> TaskListPage:
        live, error = self._live()
        rows = [
            row
            for kind, row, info in live
            if (not filter_type or kind == filter_type)
            and (not search_query or row.id == search_query or (row.name or "").startswith(search_query))
            and (
                task_filter is None
                or matches_live(
                    task_filter,
                    name=row.name,
                    worker=row.worker,
                    queue=row.queue,
                    args=info.get("args"),
                    kwargs=info.get("kwargs"),
                )
            )
        ]
        page = max(1, page)
        start = (page - 1) * per_page
        return TaskListPage(
            tasks=rows[start : start + per_page],
            page=page,
            per_page=per_page,
            total_count=len(rows),
            has_next=start + per_page < len(rows),
            error=error,
        )

    def get_task_detail(self, task_id: str) -> TaskDetailPage:
        live, _error = self._live()
        for _kind, row, info in live:
            if row.id == task_id:
                time_limit, soft_time_limit = configured_time_limits()
                task = self.app.tasks.get(row.name or "")
                return TaskDetailPage(
                    task=row,
                    time_limit=time_limit,
                    soft_time_limit=soft_time_limit,
                    extra={
                        "args_json": pretty(row.args),
                        "kwargs_json": pretty(row.kwargs),
                        "worker_pid": info.get("worker_pid"),
                        "eta": info.get("eta"),
                        **own_time_limits(self.app, task),
                    },
                )
        return TaskDetailPage(task=None, error=f"Task {task_id} is not held by any live worker")
