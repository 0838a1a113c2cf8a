"""The project's Celery app: `celery -A dojo worker` and `celery -A dojo beat`."""

import os
import time
from datetime import UTC, datetime, timedelta

from celery import Celery
from celery.signals import beat_init, before_task_publish, task_prerun, worker_ready, worker_shutdown

# Registers the workers' remote-control commands, and the startup hooks that keep pauses and revocations.
from dojo import worker_commands, worker_controls  # noqa: F401
from dojo.filesystem_transport import use_atomic_filesystem_transport
from dojo.heartbeat import on_beat_init, on_worker_ready, on_worker_shutdown

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dojo.settings.settings")
use_atomic_filesystem_transport()  # the embedded broker, without kombu's half-written message files

PUBLISHED_AT_HEADER = "dojo_published_at"  # read by dojo.celery_ops.queue_table

app = Celery("dojo")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

# Heartbeats of the worker, its pool children and beat in the CeleryProcess table (dojo/heartbeat.py).
worker_ready.connect(on_worker_ready)
worker_shutdown.connect(on_worker_shutdown)
beat_init.connect(on_beat_init)


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


@before_task_publish.connect
def stamp_publish_time(headers: dict, **_kwargs) -> None:
    """Stamp each task message with its publish time (epoch seconds), so the queues table can
    tell the age of the oldest ready message without consuming it. A retry is a new publish, so
    the stamp is always overwritten."""
    if "task" in headers:
        headers[PUBLISHED_AT_HEADER] = time.time()


@task_prerun.connect
def remember_queue(task, **_kwargs) -> None:
    """Keep the queue a task came from, the backend (DD_CELERY_BACKENDS alias) whose worker ran
    it and its publish options (priority, per-call time limits) with its stored result.

    django-celery-results stores `request.meta` with each result and nothing else about
    the delivery, so without this the panel could not say which queue ran a task, the
    dashboard could not count one backend's results apart from another's, and a retry
    (dojo.celery_ops.retry) could not publish the task with its original options.
    """
    from dojo.celery_ops.backends import backend_alias_of

    request = task.request
    delivery_info = request.delivery_info or {}
    hard_limit, soft_limit = request.timelimit or (None, None)
    options = {"priority": delivery_info.get("priority"), "time_limit": hard_limit, "soft_time_limit": soft_limit}
    request.meta = {
        **(getattr(request, "meta", None) or {}),
        "queue": delivery_info.get("routing_key"),
        "backend": backend_alias_of(task.app.conf.broker_url),
        "options": {name: value for name, value in options.items() if value is not None},
    }
