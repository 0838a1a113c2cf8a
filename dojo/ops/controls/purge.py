"""Purge: every ready message of a configured queue, or only one task name's messages.

Prefetched messages (held by workers) are not ready: they are neither removed nor counted.
Removing selected messages needs a broker that can do it without consuming (Redis); the
others refuse with PurgeByNameUnsupported (dojo.ops.brokers.transport). A purge by name is
bounded in time (DD_CELERY_PURGE_TASK_SECONDS): cut short, it answers complete=False with what
it removed so far, and calling it again goes on with the rest.
"""

import time
from dataclasses import dataclass

from django.conf import settings

from dojo.ops.brokers.connection import BrokerUnavailable, broker_connection
from dojo.ops.brokers.queues import UnknownQueue, configured_queues, default_queue
from dojo.ops.brokers.registry import Broker, get_broker
from dojo.ops.brokers.transport import PurgeTally
from dojo.ops.fleet.status_cache import forget_status


@dataclass(frozen=True)
class PurgeResult:
    queue: str
    purged: int
    backend: str = "default"


@dataclass(frozen=True)
class TaskPurgeResult:
    backend: str
    queue: str
    task_name: str
    purged: int
    complete: bool = True  # False: the time budget ran out; `purged` is what was removed until then


class PurgeInterrupted(BrokerUnavailable):
    """The broker failed in the middle of a purge by task name, after `purged` messages were removed."""

    def __init__(self, message: str, purged: int) -> None:
        super().__init__(message)
        self.purged = purged


def _configured(name: str) -> str:
    if name not in configured_queues():
        raise UnknownQueue(name)
    return name


def purge_queue(name: str | None = None, broker: Broker | None = None) -> PurgeResult:
    """Remove every ready message from the configured queue `name` (default queue if None)
    on `broker` (the main one if None).

    Raises UnknownQueue for a name that is not configured (nothing is touched) and
    BrokerUnavailable when the broker does not answer in time.
    """
    name = _configured(name or default_queue())
    broker = broker or get_broker()
    with broker_connection(broker=broker) as conn:
        purged = broker.transport.purge(conn, name)
    forget_status(broker)
    return PurgeResult(queue=name, purged=purged, backend=broker.alias)


def purge_task_name(
    queue: str, task_name: str, broker: Broker | None = None, seconds: float | None = None
) -> TaskPurgeResult:
    """Remove the ready messages of `task_name` from the configured `queue` (every priority
    sub-queue) on `broker`, for at most `seconds` (DD_CELERY_PURGE_TASK_SECONDS if None; one
    bounded broker call is always made). Each call starts from the newest messages: what an
    earlier call cleaned is only read again, which costs far less than removing.

    Raises UnknownQueue, PurgeByNameUnsupported (any broker but Redis), BrokerUnavailable when the
    broker cannot be reached, and PurgeInterrupted (a BrokerUnavailable) when it fails mid-way.
    """
    broker = broker or get_broker()
    _configured(queue)
    budget = settings.CELERY_PURGE_TASK_SECONDS if seconds is None else seconds
    tally = PurgeTally(deadline=time.monotonic() + budget)
    try:
        with broker_connection(broker=broker) as conn:
            broker.transport.purge_task_name(conn, queue, task_name, tally)
    except BrokerUnavailable as exc:
        if tally.purged:
            forget_status(broker)
            raise PurgeInterrupted(str(exc), tally.purged) from exc
        raise
    forget_status(broker)
    return TaskPurgeResult(
        backend=broker.alias, queue=queue, task_name=task_name, purged=tally.purged, complete=tally.complete
    )
