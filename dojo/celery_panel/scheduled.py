"""The scheduled (ETA/countdown) tasks page (/admin/celery/scheduled/): every task the workers of
one backend hold until its ETA, the most overdue first, with how late it is once past due; revoke
one (a button per row) or the selected ones (one POST to /api/v2/celery/tasks/revoke-many/).

A thin view: the rows are dojo.ops.read_models.scheduled's (the cached status document); this
module checks the query, sorts (dojo.celery_panel.sorting), pages and says which buttons the user
may see. The buttons call the REST API, which checks the permission again (celery_controls.js for
one task, celery_scheduled.js for the selected ones).
"""

from dataclasses import dataclass

from django.contrib import admin
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest
from django.shortcuts import render

from dojo.celery_panel.sorting import Column, sort_table
from dojo.ops.brokers.registry import UnknownBroker, configured_brokers, get_broker
from dojo.ops.read_models.scheduled import NAME_MAX_LENGTH, scheduled_tasks, with_revocations
from dojo.permissions import TASK_DATA_HIDDEN, controls_enabled, may_control, may_see_task_data

COLUMNS = [
    Column("Select"),
    Column("Task id", "id"),
    Column("Task", "name"),
    Column("ETA", "eta", "When the worker runs it, at the earliest."),
    Column("Late", "late_seconds", "Seconds since the ETA passed while the worker still held it; - while not due."),
    Column("Worker", "worker"),
    Column("Queue", "queue"),
    Column("Priority", "priority"),
    Column("Arguments"),
    Column("Controls"),
]
SORT_PARAM = "o"
PAGE_PARAM = "page"
PER_PAGE = 200  # rows shown at once; the rest on the next pages


class BadQuery(ValueError):
    pass


@dataclass(frozen=True)
class Pager:
    number: int
    count: int
    first_index: int
    last_index: int
    total: int
    next_url: str
    previous_url: str


def _page_number(request: HttpRequest) -> int:
    value = request.GET.get(PAGE_PARAM, "1")
    if not value.isascii() or not value.isdigit() or int(value) < 1:
        raise BadQuery(f"{PAGE_PARAM}: a page number (1, 2, ...) is expected, not {value[:40]!r}.")
    return int(value)


def _name(request: HttpRequest, param: str) -> str:
    value = request.GET.get(param, "").strip()
    if len(value) > NAME_MAX_LENGTH or "\x00" in value:
        raise BadQuery(f"{param}: at most {NAME_MAX_LENGTH} characters, without NUL.")
    return value


def _url(request: HttpRequest, number: int) -> str:
    query = request.GET.copy()
    query[PAGE_PARAM] = str(number)
    return f"?{query.urlencode()}"


def scheduled(request: HttpRequest) -> HttpResponse:
    try:
        broker = get_broker(request.GET.get("backend") or None)
        number = _page_number(request)
        task_name, worker = _name(request, "task_name"), _name(request, "worker")
    except UnknownBroker as exc:
        return HttpResponseBadRequest(f"backend: {exc}", content_type="text/plain")
    except BadQuery as exc:
        return HttpResponseBadRequest(str(exc), content_type="text/plain")
    task_data = may_see_task_data(request.user)
    tasks = scheduled_tasks(broker, task_name=task_name, worker=worker, with_task_data=task_data)
    query = request.GET.copy()
    query.pop(PAGE_PARAM, None)  # a new order starts again at the first page
    table = sort_table(tasks.rows, COLUMNS, query, SORT_PARAM, "scheduled")
    count = max(1, -(-len(table.rows) // PER_PAGE))
    number = min(number, count)
    start = (number - 1) * PER_PAGE
    shown, revocations_error = with_revocations(tasks, table.rows[start : start + PER_PAGE])
    pager = Pager(
        number=number,
        count=count,
        first_index=start + 1 if shown else 0,
        last_index=start + len(shown),
        total=len(table.rows),
        next_url=_url(request, number + 1) if number < count else "",
        previous_url=_url(request, number - 1) if number > 1 else "",
    )
    context = {
        **admin.site.each_context(request),
        "is_nav_sidebar_enabled": False,  # the table needs the page's whole width
        "title": "Scheduled tasks",
        "backend_name": "Scheduled tasks",
        "data_source": "the cached status document (one dojo_status broadcast; scheduled lists capped per worker "
        "by DD_CELERY_STATUS_MAX_TASKS_PER_WORKER, counts exact) and the stored revocations",
        "backend": broker,
        "backends": list(configured_brokers()),
        "tasks": tasks,
        "table": table,
        "rows": shown,
        "pager": pager,
        "task_name": task_name,
        "worker": worker,
        "filtered": bool(task_name or worker),
        "revocations_error": revocations_error,
        "task_data_hidden": not task_data,
        "task_data_note": TASK_DATA_HIDDEN,
        "may_revoke": may_control(request.user, "revoke_task"),
        "read_only": not controls_enabled(),
    }
    return render(request, "celery_panel/scheduled.html", context)
