"""What is inside a queue: counts by task name over every ready message, and the first ones in
the order workers will take them, read without consuming anything.

Memory stays bounded whatever the queue's length: messages are scanned in batches and not
kept, only the task name is parsed from each (messages.task_name), and only the first
`first` are decoded. Time is bounded too: the scan stops after DD_CELERY_BREAKDOWN_SECONDS and
says so (complete=False). The scan is a snapshot: workers may take messages meanwhile.
Supported on Redis and the embedded filesystem broker; AMQP (RabbitMQ) cannot show a message
without taking it off the queue.
"""

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TypeVar

from django.conf import settings

from dojo.ops.brokers import messages
from dojo.ops.brokers.connection import broker_connection
from dojo.ops.brokers.registry import Broker, get_broker
from dojo.ops.read_models.queue_table import known_queues
from dojo.ops.redaction import args_preview

FIRST_DEFAULT = 100
CLOCK_EVERY = 1000  # messages scanned between two looks at the clock
Item = TypeVar("Item")


class QueueNotFound(LookupError):
    """The queue holds no message and no configuration, worker, pause or periodic entry names it:
    most likely a mistyped name, which an empty answer would hide."""


@dataclass(frozen=True)
class MessageSummary:
    id: str | None
    task: str | None
    priority: int | None
    eta: str | None  # ISO 8601, as Celery put it in the headers
    age_seconds: float | None  # since it was published; None when it carries no publish stamp
    args_preview: str  # secrets masked, truncated; "" when the message has no argsrepr header


@dataclass
class QueueBreakdown:
    backend: str
    queue: str
    total: int
    by_task: dict[str, int] = field(default_factory=dict)
    messages: list[MessageSummary] = field(default_factory=list)
    complete: bool = True  # False: the time budget ran out; the counts cover the `total` scanned


class _Deadline:
    """Cuts a scan short once `seconds` have passed, and remembers that it did."""

    def __init__(self, seconds: float) -> None:
        self.at = time.monotonic() + seconds
        self.reached = False

    def within(self, items: Iterable[Item]) -> Iterator[Item]:
        for i, item in enumerate(items):
            if i % CLOCK_EVERY == 0 and time.monotonic() >= self.at:
                self.reached = True
                return
            yield item


def breakdown(
    queue: str, broker: Broker | None = None, first: int = FIRST_DEFAULT, seconds: float | None = None
) -> QueueBreakdown:
    """Break down the ready messages of `queue` on `broker` (the main one if None), scanning for
    at most `seconds` (DD_CELERY_BREAKDOWN_SECONDS if None).

    Raises PeekUnsupported (dojo.ops.brokers.transport) on brokers other than Redis and the filesystem one,
    BrokerUnavailable when the broker does not answer within the bound, and QueueNotFound for
    an empty queue that nothing names.
    """
    broker = broker or get_broker()
    deadline = _Deadline(settings.CELERY_BREAKDOWN_SECONDS if seconds is None else seconds)
    with broker_connection(broker=broker) as conn:
        by_task, first_raw = broker.transport.peek(conn, queue, first, deadline.within)
    if not by_task and not deadline.reached and queue not in known_queues(broker):
        raise QueueNotFound(
            f"No message is in queue {queue!r}, and no configuration, worker, pause or periodic entry of backend "
            f"{broker.alias} names it."
        )
    now = time.time()
    return QueueBreakdown(
        backend=broker.alias,
        queue=queue,
        total=sum(by_task.values()),
        by_task=dict(by_task.most_common()),
        messages=[_summary(raw, now) for raw in first_raw],
        complete=not deadline.reached,
    )


def _summary(raw: bytes, now: float) -> MessageSummary:
    envelope = messages.decode(raw)
    headers = messages.headers_of(envelope)
    properties = (envelope or {}).get("properties") or {}
    stamp = messages.published_at(envelope)
    return MessageSummary(
        id=headers.get("id"),
        task=headers.get("task"),
        priority=properties.get("priority"),
        eta=headers.get("eta"),
        age_seconds=max(0.0, now - stamp) if stamp is not None else None,
        args_preview=args_preview(headers.get("argsrepr"), headers.get("kwargsrepr")),
    )
