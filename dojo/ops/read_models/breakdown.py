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
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TypeVar

from django.conf import settings
from kombu import Connection

from dojo.ops.brokers import messages, redis_lists
from dojo.ops.brokers.connection import broker_connection
from dojo.ops.brokers.registry import Broker, get_broker
from dojo.ops.read_models.queue_table import known_queues
from dojo.ops.redaction import args_preview

FIRST_DEFAULT = 100
UNKNOWN_TASK = "(unknown)"  # a message without a task header (not a Celery protocol 2 task)
CLOCK_EVERY = 1000  # messages scanned between two looks at the clock
Item = TypeVar("Item")


class BreakdownUnsupported(Exception):
    """The broker cannot show a queue's messages without taking them."""


class UnknownQueue(LookupError):
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
    queue: str, backend: Broker | None = None, first: int = FIRST_DEFAULT, seconds: float | None = None
) -> QueueBreakdown:
    """Break down the ready messages of `queue` on `backend` (the main one if None), scanning for
    at most `seconds` (DD_CELERY_BREAKDOWN_SECONDS if None).

    Raises BreakdownUnsupported on brokers other than Redis and the filesystem one,
    BrokerUnavailable when the broker does not answer within the bound, and UnknownQueue for
    an empty queue that nothing names.
    """
    backend = backend or get_broker()
    if backend.is_redis:
        scan = _redis_scan
    elif backend.transport == "filesystem":
        scan = _filesystem_scan
    else:
        raise BreakdownUnsupported(
            f"The {backend.transport} broker cannot show the messages of a queue without taking them off the queue."
        )
    deadline = _Deadline(settings.CELERY_BREAKDOWN_SECONDS if seconds is None else seconds)
    with broker_connection(backend=backend) as conn:
        by_task, first_raw = scan(conn, queue, first, deadline)
    if not by_task and not deadline.reached and queue not in known_queues(backend):
        raise UnknownQueue(
            f"No message is in queue {queue!r}, and no configuration, worker, pause or periodic entry of backend "
            f"{backend.alias} names it."
        )
    now = time.time()
    return QueueBreakdown(
        backend=backend.alias,
        queue=queue,
        total=sum(by_task.values()),
        by_task=dict(by_task.most_common()),
        messages=[_summary(raw, now) for raw in first_raw],
        complete=not deadline.reached,
    )


def _count(raws: Iterator[bytes], first: int) -> tuple[Counter, list[bytes]]:
    """Task names counted over `raws` (in consumption order); the first `first` kept raw."""
    by_task: Counter = Counter()
    kept: list[bytes] = []
    for raw in raws:
        by_task[messages.task_name(raw) or UNKNOWN_TASK] += 1
        if len(kept) < first:
            kept.append(raw)
    return by_task, kept


def _redis_scan(conn: Connection, queue: str, first: int, deadline: _Deadline) -> tuple[Counter, list[bytes]]:
    channel = redis_lists.redis_channel(conn)
    return _count(deadline.within(raw for _key, raw in redis_lists.iter_messages(channel, queue)), first)


def _filesystem_scan(conn: Connection, queue: str, first: int, deadline: _Deadline) -> tuple[Counter, list[bytes]]:
    """Files come in no order and kombu consumes them by sorted name, so the first ones are the
    `first` smallest names, kept by trimming a short list rather than sorting every name."""
    folder = conn.default_channel.data_folder_in
    by_task: Counter = Counter()
    smallest: list[str] = []
    for name in deadline.within(messages.iter_message_files(folder)):
        if not messages.is_message_of(name, queue):
            continue
        raw = messages.read_message_file(folder, name)
        if raw is None:  # taken by a worker meanwhile
            continue
        by_task[messages.task_name(raw) or UNKNOWN_TASK] += 1
        smallest.append(name)
        if len(smallest) > 2 * first:
            smallest = sorted(smallest)[:first]
    first_raw = (messages.read_message_file(folder, name) for name in sorted(smallest)[:first])
    return by_task, [raw for raw in first_raw if raw is not None]


def _summary(raw: bytes, now: float) -> MessageSummary:
    envelope = redis_lists.decode(raw)
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
