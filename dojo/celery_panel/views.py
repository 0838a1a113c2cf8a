"""The panel's pages: thin views that ask the configured backend for a page object.

Every view is wrapped by admin.site.admin_view (dojo/celery_panel/urls.py): staff only,
others go to the admin login. Nothing here changes Celery state: a task's buttons call the REST
API (celery_controls.js).
"""

from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from django.conf import settings
from django.contrib import admin
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render

from dojo.celery_panel.analytics import overview_throughput
from dojo.celery_panel.backends.workers import offline_row, worker_row
from dojo.celery_panel.bulk import may_bulk, tasks_page_bulk_url
from dojo.celery_panel.conf import backend, panel_settings
from dojo.celery_panel.configuration import celery_settings
from dojo.celery_panel.controls import task_controls
from dojo.celery_panel.task_data import visible
from dojo.celery_panel.task_filter_form import form_context, tasks_page_query
from dojo.ops.brokers.registry import DEFAULT_ALIAS
from dojo.ops.fleet.seen_workers import seen_workers
from dojo.ops.fleet.status_cache import get_status
from dojo.ops.read_models.stored_results import ACTIVITY_WINDOW, recent_activity
from dojo.permissions import TASK_DATA_HIDDEN, may_control, may_see_task_data


def _render(
    request: HttpRequest, template: str, title: str, kind: str | None, status: int = 200, **context
) -> HttpResponse:
    """Every panel page: the admin's context, which backend served it, and its page object stripped
    of the task data the user may not see (dojo.celery_panel.task_data)."""
    served_by = backend(kind) if kind else None
    if "page" in context:
        context["page"] = visible(request, context["page"])
    context.update(
        admin.site.each_context(request),
        task_data_hidden=not may_see_task_data(request.user),
        task_data_note=TASK_DATA_HIDDEN,
        title=title,
        backend_name=type(served_by).__name__ if served_by else None,
        backend_description=getattr(served_by, "BACKEND_DESCRIPTION", ""),
        data_source=getattr(served_by, "DATA_SOURCE", ""),
    )
    return render(request, template, context, status=status)


def _page_number(request: HttpRequest) -> int:
    try:
        return max(1, int(request.GET.get("page", 1)))
    except ValueError:
        return 1


def tasks(request: HttpRequest) -> HttpResponse:
    """The tasks list for the URL's filter (dojo.celery_panel.task_filter_form): a bad value is the
    page with the field's message and status 400, nothing listed."""
    given = [(name, value) for name, values in request.GET.lists() for value in values]
    if any(value == "" for _name, value in given):
        # The form sends its empty fields too: the same page at the URL without them, for bookmarks.
        kept = urlencode([(name, value) for name, value in given if value != ""])
        return redirect(f"{request.path}?{kept}" if kept else request.path)
    tasks_backend = backend("tasks")
    task_data = may_see_task_data(request.user)
    asked = tasks_page_query(request.GET, tasks_backend, task_data)
    page = None
    if asked.error is None:
        kwargs = {"task_filter": asked.task_filter} if asked.task_filter is not None else {}
        page = tasks_backend.get_tasks(
            search_query=asked.search or None, page=_page_number(request), filter_type=asked.filter_type, **kwargs
        )
    show_bulk = asked.lists_stored_results and may_bulk(request.user)
    return _render(
        request,
        "celery_panel/tasks.html",
        "Tasks",
        "tasks",
        status=400 if asked.error else 200,
        page=page,
        asked=asked,
        search=asked.search,
        active_filter=asked.filter_type,
        filters=tasks_backend.AVAILABLE_FILTERS,
        filter_form=form_context(asked.values, task_data=task_data, applies=asked.applies, error=asked.error),
        may_apply=may_control(request.user, "apply_task"),
        bulk_url=tasks_page_bulk_url(asked.task_filter) if show_bulk and asked.task_filter else "",
    )


def task_detail(request: HttpRequest, task_id: str) -> HttpResponse:
    page = _found(backend("tasks").get_task_detail(task_id), "task")
    return _render(
        request,
        "celery_panel/task_detail.html",
        f"Task {task_id}",
        "tasks",
        page=page,
        controls=task_controls(request, page.task.state),
        task_backend=page.extra.get("backend") or DEFAULT_ALIAS,
    )


def workers(request: HttpRequest) -> HttpResponse:
    return _render(request, "celery_panel/workers.html", "Workers", "workers", page=backend("workers").get_workers())


def worker_detail(request: HttpRequest, worker_id: str) -> HttpResponse:
    page = _found(backend("workers").get_worker_detail(worker_id), "worker")
    return _render(request, "celery_panel/worker_detail.html", worker_id, "workers", page=page)


def queues(request: HttpRequest) -> HttpResponse:
    return _render(request, "celery_panel/queues.html", "Queues", "queues", page=backend("queues").get_queues())


def queue_detail(request: HttpRequest, queue_name: str) -> HttpResponse:
    page = _found(backend("queues").get_queue_detail(queue_name), "queue")
    return _render(request, "celery_panel/queue_detail.html", f"Queue {queue_name}", "queues", page=page)


def _found(page: Any, subject: str) -> Any:
    """A detail page whose `subject` (worker, queue, task) the backend found; else a 404 with its error."""
    if getattr(page, subject) is None:
        raise Http404(page.error or f"{subject.capitalize()} not found")
    return page


def periodic_tasks(request: HttpRequest) -> HttpResponse:
    page = backend("periodic_tasks").get_periodic_tasks()
    return _render(request, "celery_panel/periodic_tasks.html", "Periodic tasks", "periodic_tasks", page=page)


def _declared(
    request: HttpRequest, template: str, title: str, served_by: str, data_source: str, **context
) -> HttpResponse:
    """Render a page that is not one backend's: it names what served it itself."""
    context.update(admin.site.each_context(request), title=title, backend_name=served_by, data_source=data_source)
    return render(request, template, context)


def overview(request: HttpRequest) -> HttpResponse:
    """Workers, recent activity and throughput, queues, registered and periodic tasks: at most one
    broadcast round."""
    status = get_status()
    read_at = datetime.fromtimestamp(status.read_at, tz=UTC)
    seen = seen_workers()
    workers = [worker_row(name, reply, read_at) for name, reply in sorted(status.worker_replies.items())]
    workers += [offline_row(row) for name, row in sorted(seen.items()) if name not in status.worker_replies]
    periodic_backend = backend("periodic_tasks")
    throughput, throughput_error = overview_throughput(DEFAULT_ALIAS)
    return _declared(
        request,
        "celery_panel/overview.html",
        "Celery overview",
        "Overview",
        "the cached status document (one dojo_status broadcast), django-celery-results, the event "
        "monitor's minute rollups and " + type(periodic_backend).__name__,
        status=status,
        workers=workers,
        online_count=sum(row.online for row in workers),
        offline_count=sum(not row.online for row in workers),
        activity=recent_activity(),
        activity_window=ACTIVITY_WINDOW,
        throughput=throughput,
        throughput_error=throughput_error,
        periodic=periodic_backend.get_periodic_tasks(),
    )


def configuration(request: HttpRequest) -> HttpResponse:
    """Celery's runtime configuration with secrets masked, and the panel's own settings."""
    backends = []
    for key, path in sorted(panel_settings().items()):
        kind = key.removesuffix("_backend")
        try:
            data_source = getattr(backend(kind), "DATA_SOURCE", "")
        except ImportError as exc:
            data_source = f"cannot be imported: {exc}"
        backends.append({"page": kind.replace("_", " "), "path": path, "data_source": data_source})
    return _declared(
        request,
        "celery_panel/configuration.html",
        "Celery configuration",
        "Configuration",
        "Django settings CELERY_* (Celery's defaults where absent), secrets masked",
        groups=celery_settings(),
        backends=backends,
        offline_hours=settings.CELERY_WORKER_OFFLINE_HOURS,
    )
