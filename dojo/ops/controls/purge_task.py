"""Remove the ready messages of one task name from a queue, leaving the others in place.

Only Redis can do this without consuming: a queue is a set of plain lists (one per priority
step) that can be read with LRANGE and edited with LREM. Each list is scanned from its head
(the newest end) in batches, and each match is removed with ``LREM key 1 raw``: a message a
worker took meanwhile is simply not found, so it is not counted. Scanning from the head keeps
positions stable while workers pop from the tail; new messages pushed at the head only make
some already-read messages be read again, which removes nothing twice. (The oldest-first
`redis_lists.iter_messages` counts positions from the tail, which shift under both.)

Cost: LREM walks the list from the head to the message, so purging deep into a very long list
costs O(length) per removed message; each call is bounded by the broker time bound.
"""

from collections.abc import Iterator
from dataclasses import dataclass

from redis import Redis

from dojo.ops.brokers.connection import broker_connection
from dojo.ops.brokers.queues import UnknownQueue, configured_queues
from dojo.ops.brokers.redis_lists import BATCH, client, decode, priority_lists, redis_channel
from dojo.ops.brokers.registry import Broker, get_broker
from dojo.ops.fleet.status_cache import forget_status

REMOVE_BATCH = 100  # LREMs per pipeline: each may walk a long list, and the round trip is time-bounded


class PurgeByNameUnsupported(ValueError):
    """The broker cannot remove selected messages without consuming them."""


@dataclass(frozen=True)
class TaskPurgeResult:
    backend: str
    queue: str
    task_name: str
    purged: int


def purge_task_name(queue: str, task_name: str, backend: Broker | None = None) -> TaskPurgeResult:
    """Remove every ready message of `task_name` from the configured `queue` (every priority
    sub-queue) on `backend`; how many were removed. Prefetched messages are not touched.

    Raises UnknownQueue, PurgeByNameUnsupported (any broker but Redis) or BrokerUnavailable.
    """
    backend = backend or get_broker()
    if queue not in configured_queues():
        raise UnknownQueue(queue)
    if not backend.is_redis:
        raise PurgeByNameUnsupported(
            f"The {backend.transport} broker of backend {backend.alias} cannot remove selected messages without "
            "consuming them; only Redis can. Purging the whole queue still works."
        )
    with broker_connection(backend=backend) as conn:
        channel = redis_channel(conn)
        redis = client(channel)
        purged = sum(_purge_list(redis, key, task_name) for key in priority_lists(channel, queue))
    forget_status(backend)
    return TaskPurgeResult(backend=backend.alias, queue=queue, task_name=task_name, purged=purged)


def _purge_list(redis: Redis, key: str, task_name: str) -> int:
    removed = 0
    start = 0
    while chunk := redis.lrange(key, start, start + BATCH - 1):
        removed_here = sum(_remove(redis, key, group) for group in _groups(_matching(chunk, task_name)))
        removed += removed_here
        start += len(chunk) - removed_here  # the survivors after a removed message moved up by one
    return removed


def _matching(chunk: list[bytes], task_name: str) -> list[bytes]:
    """The raw messages of `task_name` in `chunk`. A plain substring test first: most messages of
    other tasks never need to be parsed."""
    needle = task_name.encode() if _appears_verbatim(task_name) else b""
    return [raw for raw in chunk if needle in raw and _task_of(raw) == task_name]


def _appears_verbatim(task_name: str) -> bool:
    """Whether JSON writes `task_name` as is (no escapes), so a substring test can rule messages out."""
    return task_name.isascii() and task_name.isprintable() and not any(char in task_name for char in '"\\/')


def _task_of(raw: bytes) -> str | None:
    headers = (decode(raw) or {}).get("headers")
    return headers.get("task") if isinstance(headers, dict) else None


def _groups(raws: list[bytes]) -> Iterator[list[bytes]]:
    for start in range(0, len(raws), REMOVE_BATCH):
        yield raws[start : start + REMOVE_BATCH]


def _remove(redis: Redis, key: str, raws: list[bytes]) -> int:
    pipe = redis.pipeline(transaction=False)
    for raw in raws:
        pipe.lrem(key, 1, raw)
    return sum(pipe.execute())
