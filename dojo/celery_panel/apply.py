"""The panel's "Enqueue a task" page: a form the page's script POSTs as JSON to the REST API
(POST /api/v2/celery/tasks/apply/), which checks the permission, validates, publishes and audits;
the page then shows the new task's id with a link to it. The task names and queues offered are
the cached status's (dojo.ops.controls.apply.apply_choices)."""

from django.conf import settings
from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from dojo.ops.brokers.connection import BrokerUnavailable
from dojo.ops.brokers.queues import default_queue
from dojo.ops.brokers.registry import get_broker
from dojo.ops.controls.apply import ApplyChoices, apply_choices
from dojo.permissions import may_control


def apply_page(request: HttpRequest) -> HttpResponse:
    broker = get_broker()
    try:
        choices, error = apply_choices(broker), ""
    except BrokerUnavailable as exc:
        choices, error = ApplyChoices([], []), f"The workers could not be asked for their tasks: {exc}"
    context = {
        **admin.site.each_context(request),
        "title": "Enqueue a task",
        "backend_alias": broker.alias,
        "choices": choices,
        "default_queue": default_queue(),
        "error": error,
        "allowed": may_control(request.user, "apply_task"),
        "max_bytes": settings.CELERY_APPLY_MAX_BYTES,
    }
    return render(request, "celery_panel/apply.html", context)
