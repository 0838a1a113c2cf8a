"""AMQP (RabbitMQ: ``amqp://``, ``amqps://``, ``pyamqp://``): the broker counts consumers, lists
no bindings, and cannot show a message without taking it off the queue."""

from amqp.exceptions import ResourceLocked
from kombu import Connection
from kombu.exceptions import ChannelError

from dojo.ops.brokers.transport import QueueDepth, Transport


class AmqpTransport(Transport):
    def bounded_options(self, timeout: float) -> dict:
        return {"read_timeout": timeout, "write_timeout": timeout}

    def _declared(self, conn: Connection, name: str) -> QueueDepth:
        """A passive declare per queue: RabbitMQ's own ready and consumer counts; an absent queue
        is 0 and 0 (nothing is created by looking)."""
        with conn.channel() as channel:  # a ChannelError closes the channel
            try:
                declared = channel.queue_declare(queue=name, passive=True)
            except ChannelError:
                return QueueDepth(ready=0, consumers=0)
        return QueueDepth(ready=declared.message_count, consumers=declared.consumer_count)

    def consumer_count(self, conn: Connection, queue: str) -> int:
        """A worker's control queue is exclusive to its live connection, so RESOURCE_LOCKED means
        it is consumed, and NOT_FOUND that its worker is gone."""
        with conn.channel() as channel:  # an error closes the channel
            try:
                return channel.queue_declare(queue=queue, passive=True).consumer_count
            except ResourceLocked:
                return 1
            except ChannelError:
                return 0
