"""What every process of the project stamps on the task messages it publishes (web, workers, beat).

Connected by dojo/celery.py, so delay, apply_async, send_task and retries all go through it.

The default expiry counts from the message's ETA (its countdown) when it has one, so work
scheduled later than the default expiry is not discarded when it falls due. A re-publish of a
run (`self.retry`, the concurrency limiter's re-send: both go through Celery's
`signature_from_request`) copies the run's `expires` and its custom headers into the new
message. The stamp therefore leaves its own value in DEFAULT_EXPIRES_HEADER: an `expires` equal
to it is the project's carried-over default and is stamped afresh from the new ETA; any other
`expires` is the caller's and is never changed. (A re-publish that must keep a run's default
expiry as it is drops DEFAULT_EXPIRES_HEADER from the headers it sends.)
"""

import time
from datetime import UTC, datetime, timedelta

from celery import current_app
from celery.signals import before_task_publish
from celery.utils.time import maybe_make_aware
from django.conf import settings

PUBLISHED_AT_HEADER = "dojo_published_at"  # read by dojo.ops.brokers.messages
# The default expiry this project stamped, as the ISO text it put in `expires`.
DEFAULT_EXPIRES_HEADER = "dojo_default_expires"


@before_task_publish.connect
def apply_default_expires(headers: dict, **_kwargs) -> None:
    """Give every task published without an `expires` of its caller's the configured default
    expiry, counted from its ETA (now when it has none or one in the past).

    Celery has no such setting; the headers dict is published after this signal,
    so setting it here covers apply_async, delay, send_task and retries alike.
    """
    if "task" not in headers:
        return
    stamped = headers.pop(DEFAULT_EXPIRES_HEADER, None)
    expires = headers.get("expires")
    if expires is not None and expires != stamped:
        return  # the caller's own expiry
    default_expires = settings.CELERY_TASK_DEFAULT_EXPIRES
    if not default_expires:
        headers["expires"] = None  # a default carried over from when it was on: off now
        return
    now = datetime.now(UTC)
    start = max(now, _eta(headers.get("eta")) or now)
    headers["expires"] = headers[DEFAULT_EXPIRES_HEADER] = (start + timedelta(seconds=default_expires)).isoformat()


def _eta(value: str | None) -> datetime | None:
    """The message's ETA header as an aware datetime; a naive one is in the app's time zone,
    as the worker reads it."""
    if not value:
        return None
    try:
        eta = datetime.fromisoformat(value)
    except (TypeError, ValueError):
        return None  # the worker refuses such a message anyway
    return maybe_make_aware(eta, current_app.timezone)


@before_task_publish.connect
def stamp_publish_time(headers: dict, **_kwargs) -> None:
    """Stamp each task message with its publish time (epoch seconds), so the queues table can
    tell the age of the oldest ready message without consuming it. A retry is a new publish, so
    the stamp is always overwritten."""
    if "task" in headers:
        headers[PUBLISHED_AT_HEADER] = time.time()
