"""AMQP (RabbitMQ: ``amqp://``, ``amqps://``, ``pyamqp://``): the broker counts consumers, lists
no bindings, and cannot show a message without taking it off the queue.

Every look here is a passive declare on one scratch channel shared by all the queues of a read:
one round trip per queue instead of three (open, declare, close). RabbitMQ closes a channel on
NOT_FOUND and RESOURCE_LOCKED, so only then is a new one opened (one more round trip).
"""

import time
from collections.abc import Iterable

from amqp.exceptions import ResourceLocked
from kombu import Connection
from kombu.exceptions import ChannelError, OperationalError

from dojo.ops.brokers.transport import QueueDepth, Transport

# The queue reads of one status read stop starting passive declares after this share of the
# connection's time bound (DD_CELERY_BROKER_TIMEOUT), so the worker round keeps its own budget.
QUEUE_READ_SHARE = 0.5


class QueueReadsTooSlow(OperationalError):
    """The broker answered the passive declares too slowly to read every queue within the bound."""


class _ScratchChannel:
    """One channel for many passive declares, reopened only after the broker closed it."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.channel = None

    def declare(self, name: str):
        """The declare-ok of `name`; raises what the broker answered (the channel is then renewed)."""
        if self.channel is None:
            self.channel = self.conn.channel()
        try:
            return self.channel.queue_declare(queue=name, passive=True)
        except ChannelError:
            self.channel = None  # the broker closed it
            raise

    def close(self) -> None:
        if self.channel is not None:
            self.channel.close()
            self.channel = None


class AmqpTransport(Transport):
    def bounded_options(self, timeout: float) -> dict:
        return {"read_timeout": timeout, "write_timeout": timeout}

    def depths(self, conn: Connection, names: list[str]) -> dict[str, QueueDepth]:
        """RabbitMQ's own ready and consumer counts of each queue by passive declares on one
        channel; an absent queue is 0 and 0 (nothing is created by looking).

        No declare starts after QUEUE_READ_SHARE of the connection's time bound: a broker that
        slow raises QueueReadsTooSlow (the read reports the broker unavailable) rather than
        leaving the worker round no time."""
        stop_at = time.monotonic() + QUEUE_READ_SHARE * float(conn.connect_timeout or 0)
        scratch = _ScratchChannel(conn)
        depths = {}
        try:
            for name in names:
                if conn.connect_timeout and time.monotonic() > stop_at:
                    raise QueueReadsTooSlow(
                        f"the broker answered {len(depths)} of {len(names)} queue reads within "
                        f"{QUEUE_READ_SHARE * conn.connect_timeout:.2f} s (half of DD_CELERY_BROKER_TIMEOUT; "
                        "raise it for a distant broker with many queues)"
                    )
                try:
                    declared = scratch.declare(name)
                except ChannelError:
                    depths[name] = QueueDepth(ready=0, consumers=0)
                    continue
                depths[name] = QueueDepth(ready=declared.message_count, consumers=declared.consumer_count)
        finally:
            scratch.close()
        return depths

    def consumer_count(self, conn: Connection, queue: str) -> int:
        return self.consumer_counts(conn, [queue])[queue]

    def consumer_counts(self, conn: Connection, queues: Iterable[str]) -> dict[str, int]:
        """Consumers of each queue, on one channel. A worker's control queue is exclusive to its
        live connection, so RESOURCE_LOCKED means it is consumed, and NOT_FOUND that its worker
        is gone."""
        scratch = _ScratchChannel(conn)
        counts = {}
        try:
            for queue in queues:
                try:
                    counts[queue] = scratch.declare(queue).consumer_count
                except ResourceLocked:
                    counts[queue] = 1
                except ChannelError:
                    counts[queue] = 0
        finally:
            scratch.close()
        return counts
