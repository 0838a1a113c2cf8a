"""Purge: every ready message of a configured queue, or only one task name's messages.

Prefetched messages (held by workers) are not ready: they are neither removed nor counted.
Removing selected messages needs a broker that can do it without consuming (Redis); the
others refuse with PurgeByNameUnsupported (dojo.ops.brokers.transport).
"""

from dataclasses import dataclass

from dojo.ops.brokers.connection import broker_connection
from dojo.ops.brokers.queues import UnknownQueue, configured_queues, default_queue
from dojo.ops.brokers.registry import Broker, get_broker
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


def purge_task_name(queue: str, task_name: str, broker: Broker | None = None) -> TaskPurgeResult:
    """Remove every ready message of `task_name` from the configured `queue` (every priority
    sub-queue) on `broker`; how many were removed.

    Raises UnknownQueue, PurgeByNameUnsupported (any broker but Redis) or BrokerUnavailable.
    """
    broker = broker or get_broker()
    _configured(queue)
    with broker_connection(broker=broker) as conn:
        purged = broker.transport.purge_task_name(conn, queue, task_name)
    forget_status(broker)
    return TaskPurgeResult(backend=broker.alias, queue=queue, task_name=task_name, purged=purged)
