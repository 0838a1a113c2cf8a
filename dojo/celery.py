"""The project's Celery app: `celery -A dojo worker` and `celery -A dojo beat`."""

import os
from datetime import UTC, datetime, timedelta

from celery import Celery
from celery.signals import before_task_publish, task_prerun

from dojo import worker_commands  # noqa: F401  (registers the dojo_status command with the workers)

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dojo.settings.settings")

app = Celery("dojo")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@before_task_publish.connect
def apply_default_expires(headers: dict, **_kwargs) -> None:
    """Give every task published without `expires` the configured default expiry.

    Celery has no such setting; the headers dict is published after this signal,
    so setting it here covers apply_async, delay and send_task alike.
    """
    from django.conf import settings

    default_expires = settings.CELERY_TASK_DEFAULT_EXPIRES
    if default_expires and headers.get("expires") is None and "task" in headers:
        headers["expires"] = (datetime.now(UTC) + timedelta(seconds=default_expires)).isoformat()


@task_prerun.connect
def remember_queue(task, **_kwargs) -> None:
    """Keep the queue a task came from with its stored result.

    django-celery-results stores `request.meta` with each result and nothing else about
    the delivery, so without this the panel could not say which queue ran a task.
    """
    delivery_info = task.request.delivery_info or {}
    task.request.meta = {**(getattr(task.request, "meta", None) or {}), "queue": delivery_info.get("routing_key")}
