"""Queue depth and purge, read and done without side effects on the broker."""

from dataclasses import dataclass

from django.conf import settings
from kombu import Connection
from kombu.exceptions import ChannelError

from dojo.ops.brokers.connection import broker_connection
from dojo.ops.brokers.registry import Broker


class UnknownQueue(ValueError):
    """The queue name is not one of the configured queues."""


@dataclass(frozen=True)
class PurgeResult:
    queue: str
    purged: int
    backend: str = "default"


def configured_queues() -> list[str]:
    """Names of the configured queues, the default queue first."""
    default = settings.CELERY_TASK_DEFAULT_QUEUE
    names = [default, *(settings.CELERY_TASK_QUEUES or {})]
    return list(dict.fromkeys(names))


def default_queue() -> str:
    return settings.CELERY_TASK_DEFAULT_QUEUE


def read_queue(conn: Connection, name: str) -> tuple[int, int | None]:
    """Ready messages in queue `name` (every Redis priority sub-queue included) and its
    consumer count where the broker keeps one (AMQP), else None.

    A passive declare looks without creating anything; an absent queue (which on
    Redis is simply an empty one) raises NOT_FOUND and counts as 0. Messages a worker
    has prefetched are not ready and are not counted.
    """
    counts_consumers = conn.transport.driver_type == "amqp"
    with conn.channel() as channel:  # a ChannelError closes the channel on AMQP
        try:
            declared = channel.queue_declare(queue=name, passive=True)
        except ChannelError:
            return 0, 0 if counts_consumers else None
    return declared.message_count, declared.consumer_count if counts_consumers else None


def purge_queue(name: str | None = None, backend: Broker | None = None) -> PurgeResult:
    """Remove every ready message from the configured queue `name` (default queue if None)
    on `backend` (the main one if None).

    Raises UnknownQueue for a name that is not configured (nothing is touched) and
    BrokerUnavailable when the broker does not answer in time.
    """
    name = name or default_queue()
    if name not in configured_queues():
        raise UnknownQueue(name)
    with broker_connection(backend=backend) as conn, conn.channel() as channel:
        try:
            purged = channel.queue_purge(name)
        except ChannelError:  # absent queue: nothing to purge
            purged = 0
    return PurgeResult(queue=name, purged=purged or 0, backend=backend.alias if backend else "default")
