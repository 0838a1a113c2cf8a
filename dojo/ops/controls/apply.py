"""Enqueue any registered task (Flower's apply): a task name some live worker of the backend has
registered, JSON arguments, a queue, a countdown or an ETA and a priority.

Only names a live worker reports registered are accepted (read from the status document, so at
most one broadcast round): a typo would otherwise sit in a queue until a worker rejects it. The
arguments are JSON (what the project's task messages carry) and their encoded size is capped by
DD_CELERY_APPLY_MAX_BYTES, so nobody fills a queue or the audit with one request. The audit
records the name, queue and new task id, never the arguments (task data).
"""

import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from django.conf import settings
from kombu.exceptions import EncodeError

from dojo.celery import app
from dojo.ops.brokers.connection import broker_connection
from dojo.ops.brokers.queues import configured_queues, default_queue
from dojo.ops.brokers.registry import Broker, get_broker
from dojo.ops.fleet.status_cache import forget_status, get_status

MAX_PRIORITY = 255  # AMQP's x-max-priority ceiling; Redis maps priorities onto its own steps


class NotRegistered(ValueError):
    """No live worker of the backend has registered the task name."""


class BadArguments(ValueError):
    """The arguments are not JSON of the right shape, or too big."""


class UnknownQueue(ValueError):
    """The queue is neither configured nor consumed by a live worker: nothing would run the task."""


@dataclass(frozen=True)
class ApplyResult:
    backend: str
    task_id: str
    task_name: str
    queue: str
    eta: datetime | None


@dataclass(frozen=True)
class ApplyChoices:
    """What the apply form offers: from the cached status, so at most one broadcast round."""

    task_names: list[str]  # registered by a live worker
    queues: list[str]  # configured, or consumed by a live worker


def apply_choices(broker: Broker | None = None) -> ApplyChoices:
    status = get_status(broker=broker or get_broker())
    consumed = {name for reply in status.worker_replies.values() for name in reply.get("active_queues", [])}
    return ApplyChoices(status.registered_tasks, sorted(consumed | set(configured_queues())))


def check_arguments(args: object, kwargs: object) -> None:
    """Raise BadArguments unless `args` is a list, `kwargs` an object with string keys, and both
    encode as JSON within DD_CELERY_APPLY_MAX_BYTES."""
    if not isinstance(args, list):
        raise BadArguments("args must be a JSON array.")
    if not isinstance(kwargs, dict) or not all(isinstance(key, str) for key in kwargs):
        raise BadArguments("kwargs must be a JSON object.")
    try:
        size = len(json.dumps([args, kwargs], allow_nan=False).encode())
    except (TypeError, ValueError) as exc:
        raise BadArguments(f"The arguments are not JSON: {exc}") from exc
    if size > settings.CELERY_APPLY_MAX_BYTES:
        raise BadArguments(f"The arguments take {size} bytes as JSON; at most {settings.CELERY_APPLY_MAX_BYTES}.")


def apply_task(
    task_name: str,
    args: list | None = None,
    kwargs: dict | None = None,
    queue: str | None = None,
    countdown: float | None = None,
    eta: datetime | None = None,
    priority: int | None = None,
    broker: Broker | None = None,
) -> ApplyResult:
    """Publish `task_name` with these arguments to `broker`. Raises NotRegistered, UnknownQueue,
    BadArguments (also for a countdown and an ETA together) or BrokerUnavailable (nothing was
    published)."""
    broker = broker or get_broker()
    args, kwargs = [] if args is None else args, {} if kwargs is None else kwargs
    check_arguments(args, kwargs)
    if countdown is not None and eta is not None:
        raise BadArguments("Give a countdown or an ETA, not both.")
    choices = apply_choices(broker)
    if task_name not in choices.task_names:
        raise NotRegistered(f"No live worker of backend {broker.alias} has registered the task {task_name}.")
    queue = queue or default_queue()
    if queue not in choices.queues:
        raise UnknownQueue(f"The queue {queue} is not configured and no live worker of {broker.alias} consumes it.")
    options: dict = {"queue": queue}
    if countdown is not None:
        options["countdown"] = countdown
    if eta is not None:
        options["eta"] = eta
    if priority is not None:
        options["priority"] = priority
    with broker_connection(broker=broker) as conn:
        try:
            sent = app.send_task(task_name, args=args, kwargs=kwargs, connection=conn, retry=False, **options)
        except EncodeError as exc:
            raise BadArguments(f"The arguments cannot be sent: {exc}") from exc
    forget_status(broker)
    if countdown is not None:
        eta = datetime.fromtimestamp(time.time() + countdown, UTC)
    return ApplyResult(broker.alias, sent.id, task_name, queue, eta)
