"""The bulk operations page (/admin/celery/bulk/) and an operation's detail (/admin/celery/bulk/<id>/).

The filter lives in the URL (TaskFilter.from_query / to_query), so a reload or a bookmark shows the
same set; Preview, Confirm, Cancel and the progress bar call the REST API (celery_bulk.js), which
checks the permission, the read-only mode and the fingerprint again. This module only parses the
query, says which buttons the user may see and lists the last operations (their audit), bounded.
The arguments-contain filter and the failures' reasons are task data: shown only to users who may
see it (dojo.permissions.may_see_task_data).
"""

from typing import Any

from django.contrib import admin
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBadRequest
from django.shortcuts import render
from django.urls import reverse

from dojo.celery_panel.task_filter_form import form_context
from dojo.models import BulkOperation
from dojo.ops.brokers.queues import configured_queues
from dojo.ops.controls.bulk import ACTION_PERMISSIONS, SUPPORTED_ACTIONS, progress
from dojo.ops.controls.bulk_messages import MESSAGE_FIELDS
from dojo.ops.read_models.task_filter import FILTER_FIELDS, FilterError, TaskFilter
from dojo.permissions import TASK_DATA_HIDDEN, controls_enabled, may_control, may_see_task_data

ACTION_LABELS = {
    BulkOperation.Action.RETRY: "Retry",
    BulkOperation.Action.DELETE_RESULTS: "Delete stored results",
    BulkOperation.Action.REVOKE: "Revoke queued messages",
    BulkOperation.Action.PURGE: "Purge queued messages (Redis)",
}
OPERATIONS_SHOWN = 50  # the newest operations listed on the page
FAILURES_SHOWN = 200  # an operation's kept failures listed on its detail page
HIDDEN = "hidden: needs the task-data permission"
MAX_ID = 2**63 - 1


def _shown_filter(operation: BulkOperation, task_data: bool) -> dict[str, str]:
    shown = dict(operation.filter or {})
    if "args_contain" in shown and not task_data:
        shown["args_contain"] = HIDDEN
    return shown


def _row(operation: BulkOperation, task_data: bool) -> dict[str, Any]:
    return {
        "operation": operation,
        "filter": _shown_filter(operation, task_data),
        "progress": progress(operation),
        "label": ACTION_LABELS.get(operation.action, operation.action),
    }


def may_bulk(user: Any) -> bool:
    """Whether `user` may start any bulk action (the controls on)."""
    return any(may_control(user, codename) for codename in ACTION_PERMISSIONS.values())


def tasks_page_bulk_url(task_filter: TaskFilter) -> str:
    """The bulk page with exactly the tasks page's filter (`task_filter.to_query()`), so its
    preview counts the set the tasks page lists."""
    query = task_filter.to_query()
    return f"{reverse('celery_panel:bulk')}?{query}" if query else reverse("celery_panel:bulk")


def bulk_page(request: HttpRequest) -> HttpResponse:
    task_data = may_see_task_data(request.user)
    try:
        task_filter = TaskFilter.from_query(request.GET)
    except FilterError as exc:
        return HttpResponseBadRequest(str(exc), content_type="text/plain")
    if task_filter.args_contain and not task_data:
        return HttpResponseBadRequest(
            "args_contain: filters on task data; it needs the permission to see task data.", content_type="text/plain"
        )
    action = request.GET.get("action", "") or BulkOperation.Action.RETRY
    if action not in SUPPORTED_ACTIONS:
        message = f"action: must be one of {', '.join(SUPPORTED_ACTIONS)}."
        return HttpResponseBadRequest(message, content_type="text/plain")
    allowed = {name: may_control(request.user, codename) for name, codename in ACTION_PERMISSIONS.items()}
    operations = BulkOperation.objects.order_by("-id")[:OPERATIONS_SHOWN]
    context = {
        **admin.site.each_context(request),
        "is_nav_sidebar_enabled": False,
        "title": "Bulk operations",
        "backend_name": "Bulk operations",
        "data_source": "the stored results (the preview counts them exactly) and the bulk operations' records "
        f"(the newest {OPERATIONS_SHOWN})",
        "filter_form": form_context(task_filter.to_dict(), task_data=task_data, applies=FILTER_FIELDS),
        "filter_query": task_filter.to_query(),
        "all_asked": request.GET.get("all") in ("1", "true", "on"),
        "include_retried": request.GET.get("include_retried") in ("1", "true", "on"),
        "queues": configured_queues(),
        "message_fields": ", ".join(name for name in MESSAGE_FIELDS if name != "queue"),
        "action": action,
        "actions": [(name, ACTION_LABELS[name], allowed[name]) for name in SUPPORTED_ACTIONS],
        "may_act": any(allowed.values()),
        "read_only": not controls_enabled(),
        "task_data": task_data,
        "task_data_note": TASK_DATA_HIDDEN,
        "operations": [_row(operation, task_data) for operation in operations],
    }
    return render(request, "celery_panel/bulk.html", context)


def bulk_operation(request: HttpRequest, operation_id: str) -> HttpResponse:
    if not operation_id.isascii() or not operation_id.isdigit() or not 0 < int(operation_id) <= MAX_ID:
        raise Http404("No bulk operation has this id.")
    operation = BulkOperation.objects.filter(pk=int(operation_id)).first()
    if operation is None:
        raise Http404("No bulk operation has this id.")
    task_data = may_see_task_data(request.user)
    failures = list(operation.failures.order_by("id").values_list("task_id", "reason")[:FAILURES_SHOWN])
    context = {
        **admin.site.each_context(request),
        "title": f"Bulk operation {operation.pk}",
        "row": _row(operation, task_data),
        "failures": [(task_id, reason if task_data else HIDDEN) for task_id, reason in failures],
        "failures_shown": FAILURES_SHOWN,
        "task_data": task_data,
    }
    return render(request, "celery_panel/bulk_operation.html", context)
