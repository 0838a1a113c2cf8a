"""What every process of the project stamps on the task messages it publishes (web, workers, beat).

Connected by dojo/celery.py, so delay, apply_async, send_task and retries all go through it.
"""

import time
from datetime import UTC, datetime, timedelta

from celery.signals import before_task_publish
from django.conf import settings

PUBLISHED_AT_HEADER = "dojo_published_at"  # read by dojo.ops.brokers.messages


@before_task_publish.connect
def apply_default_expires(headers: dict, **_kwargs) -> None:
    """Give every task published without `expires` the configured default expiry.

    Celery has no such setting; the headers dict is published after this signal,
    so setting it here covers apply_async, delay and send_task alike.
    """
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
