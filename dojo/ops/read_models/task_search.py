"""Task search across the live tasks (active, reserved, scheduled on the workers) and the stored results.

Besides its own name (a part of it, any case), state, worker and arg, a query holds a TaskFilter
(dojo.ops.read_models.task_filter): the stored results are `stored_results(task_filter)` narrowed
further, the live tasks are matched by `matches_live`, which finds none when the filter names what
only a stored result has (an exception type, a done window).
"""

import json
import time
from dataclasses import dataclass, field

from django.db.models import Q

from dojo.ops.fleet.status import LIVE_STATES, TASK_LISTS, CeleryStatus
from dojo.ops.read_models.stored_results import results_stored
from dojo.ops.read_models.task_filter import TaskFilter, matches_live, stored_results


@dataclass(frozen=True)
class TaskQuery:
    name: str = ""  # part of the task name
    state: str = ""  # a Celery state (SUCCESS, FAILURE, ...) or ACTIVE, RESERVED, SCHEDULED
    worker: str = ""  # the worker's full name
    arg: str = ""  # text found in the arguments
    limit: int = 100
    task_filter: TaskFilter = field(default_factory=TaskFilter)  # besides the above: all must match
    name_prefix: str = ""  # a task_name_prefix given with task_filter.task_name (which TaskFilter refuses)


def find_tasks(status: CeleryStatus, query: TaskQuery) -> list[dict]:
    """Live tasks first (longest running first), then stored results (newest first)."""
    live = sorted(_live_tasks(status, query), key=lambda task: task["time_start"] or float("inf"))
    return (live + _stored_tasks(query, query.limit - len(live)))[: query.limit]


def _matches_args(query: TaskQuery, args: object, kwargs: object) -> bool:
    return not query.arg or query.arg in json.dumps([args, kwargs], default=str)


def _live_tasks(status: CeleryStatus, query: TaskQuery) -> list[dict]:
    now = time.time()
    found = []
    for kind in TASK_LISTS:
        if query.state and query.state != LIVE_STATES[kind]:
            continue
        for worker, tasks in status.queue_details[kind].items():
            if query.worker and worker != query.worker:
                continue
            for task in tasks:
                name = task.get("name") or ""
                if query.name.lower() not in name.lower() or not name.startswith(query.name_prefix):
                    continue
                if not _matches_args(query, task.get("args"), task.get("kwargs")):
                    continue
                queue = (task.get("delivery_info") or {}).get("routing_key")
                if not matches_live(
                    query.task_filter,
                    name=name,
                    worker=worker,
                    queue=queue,
                    args=task.get("args"),
                    kwargs=task.get("kwargs"),
                ):
                    continue
                started = task.get("time_start")
                found.append(
                    {
                        "id": task["id"],
                        "name": task.get("name"),
                        "state": LIVE_STATES[kind],
                        "source": "live",
                        "worker": worker,
                        "args": task.get("args"),
                        "kwargs": task.get("kwargs"),
                        "time_start": started,
                        "runtime": round(now - started, 3) if started else None,
                        "eta": task.get("eta"),
                        "date_done": None,
                    }
                )
    return found


def _stored_tasks(query: TaskQuery, limit: int) -> list[dict]:
    """Stored results from django-celery-results (only when it is the result backend)."""
    if limit <= 0 or not results_stored() or query.state in LIVE_STATES.values():
        return []
    results = stored_results(query.task_filter).order_by("-date_done", "-id")
    if query.name_prefix:
        results = results.filter(task_name__startswith=query.name_prefix)
    if query.name:
        results = results.filter(task_name__icontains=query.name)
    if query.state:
        results = results.filter(status=query.state)
    if query.worker:
        results = results.filter(worker=query.worker)
    if query.arg:
        results = results.filter(Q(task_args__contains=query.arg) | Q(task_kwargs__contains=query.arg))
    return [
        {
            "id": row.task_id,
            "name": row.task_name,
            "state": row.status,
            "source": "stored",
            "worker": row.worker,
            "args": row.task_args,
            "kwargs": row.task_kwargs,
            "time_start": None,
            "runtime": None,
            "eta": None,
            "date_done": row.date_done.isoformat() if row.date_done else None,
        }
        for row in results[:limit]
    ]
