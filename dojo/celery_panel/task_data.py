"""Task data (arguments, results, tracebacks, meta) only for the users allowed to see it
(dojo.permissions.may_see_task_data): the page objects are stripped before they are rendered,
so what is hidden never reaches the HTML, whichever backend built the page."""

import dataclasses
from typing import Any

from django.http import HttpRequest

from dojo.celery_panel.pages import TaskDetailPage, TaskListPage, TaskRow, WorkerDetailPage
from dojo.permissions import may_see_task_data

TASK_FIELDS = ("args", "kwargs", "result")
EXTRA_KEYS = ("args_json", "kwargs_json", "result_json", "meta_json")
LIVE_KEYS = ("args", "kwargs")  # of the live tasks in a worker's reply


def _row(row: TaskRow | None) -> TaskRow | None:
    return dataclasses.replace(row, **dict.fromkeys(TASK_FIELDS)) if row else None


def _live(tasks: list[dict]) -> list[dict]:
    return [{key: value for key, value in task.items() if key not in LIVE_KEYS} for task in tasks]


def visible(request: HttpRequest, page: Any) -> Any:
    """`page` as `request.user` may see it."""
    if may_see_task_data(request.user):
        return page
    if isinstance(page, TaskListPage):
        return dataclasses.replace(page, tasks=[_row(row) for row in page.tasks])
    if isinstance(page, TaskDetailPage):
        extra = {key: value for key, value in page.extra.items() if key not in EXTRA_KEYS}
        return dataclasses.replace(page, task=_row(page.task), traceback=None, extra=extra)
    if isinstance(page, WorkerDetailPage):
        return dataclasses.replace(
            page, active=_live(page.active), reserved=_live(page.reserved), scheduled=_live(page.scheduled)
        )
    return page
