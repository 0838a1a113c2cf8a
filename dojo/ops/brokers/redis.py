"""Redis (``redis://``, ``rediss://``, ``sentinel://``, ``redis+socket://``): queues are plain lists.

kombu keeps queue Q as one list per priority step (``Q``, ``Q\\x06\\x163``, ...): producers
LPUSH, consumers RPOP the lists in priority order, so the next message to be consumed (the
oldest of the first non-empty list) is at the right end. kombu's own client adds the
transport's key prefix (``global_keyprefix``) to some commands only (not LINDEX, LRANGE,
LREM), so the helpers here give full key names and a plain client on the channel's pool, which
keeps the bounded socket timeouts of `broker_connection()`.
"""

from collections import Counter
from collections.abc import Iterator

from kombu import Connection
from kombu.transport.redis import Channel
from redis import Redis

from dojo.ops.brokers import messages
from dojo.ops.brokers.transport import QueueDepth, VirtualTransport, Within, count_task_names, oldest

BATCH = 1000
REMOVE_BATCH = 100  # LREMs per pipeline: each may walk a long list, and the round trip is time-bounded


def priority_lists(channel: Channel, queue: str) -> list[str]:
    """The Redis keys (key prefix included) of `queue`'s lists, in the order workers consume them."""
    prefix = channel.global_keyprefix or ""
    return list(dict.fromkeys(prefix + channel._q_for_pri(queue, step) for step in channel.priority_steps))


def client(conn: Connection) -> Redis:
    """A client that sends keys as given (see the module docstring), on the connection's bounded pool."""
    return Redis(connection_pool=conn.default_channel.client.connection_pool)


def iter_messages(conn: Connection, queue: str, batch: int = BATCH) -> Iterator[bytes]:
    """Every raw message of `queue`, next-to-be-consumed first, read `batch` at a time so memory
    stays bounded whatever the queue's length."""
    redis = client(conn)
    for key in priority_lists(conn.default_channel, queue):
        length = redis.llen(key)
        for start in range(0, length, batch):
            chunk = redis.lrange(key, -(start + batch), -(start + 1))
            yield from reversed(chunk)


class RedisTransport(VirtualTransport):
    slot_store = "redis"

    def depths(self, conn: Connection, names: list[str]) -> dict[str, QueueDepth]:
        """One pipeline for every queue: LLEN of each priority list and LINDEX -1 (its next
        message), so 200 queues cost one round trip."""
        channel = conn.default_channel
        keys = {name: priority_lists(channel, name) for name in names}
        pipe = client(conn).pipeline(transaction=False)
        for name in names:
            for key in keys[name]:
                pipe.llen(key)
                pipe.lindex(key, -1)
        answers = iter(pipe.execute())
        depths = {}
        for name in names:
            ready, stamps = 0, []
            for _key in keys[name]:
                length, next_message = next(answers), next(answers)
                ready += length
                if next_message is not None:
                    stamps.append(messages.published_at(messages.decode(next_message)))
            depths[name] = QueueDepth(ready=ready, oldest_published_at=oldest(stamps))
        return depths

    def peek(self, conn: Connection, queue: str, first: int, within: Within) -> tuple[Counter, list[bytes]]:
        return count_task_names(within(iter_messages(conn, queue)), first)

    def purge_task_name(self, conn: Connection, queue: str, task_name: str) -> int:
        """Each list is scanned from its head (the newest end) in batches, and each match is removed
        with ``LREM key 1 raw``: a message a worker took meanwhile is simply not found, so it is not
        counted. Scanning from the head keeps positions stable while workers pop from the tail; new
        messages pushed at the head only make some already-read messages be read again, which
        removes nothing twice. (`iter_messages` counts positions from the tail, which shift under
        both.) LREM walks the list from the head to the message, so purging deep into a very long
        list costs O(length) per removed message; each call is bounded by the broker time bound."""
        redis = client(conn)
        return sum(_purge_list(redis, key, task_name) for key in priority_lists(conn.default_channel, queue))


def _purge_list(redis: Redis, key: str, task_name: str) -> int:
    removed = 0
    start = 0
    while chunk := redis.lrange(key, start, start + BATCH - 1):
        matching = _matching(chunk, task_name)
        removed_here = sum(
            _remove(redis, key, matching[i : i + REMOVE_BATCH]) for i in range(0, len(matching), REMOVE_BATCH)
        )
        removed += removed_here
        start += len(chunk) - removed_here  # the survivors after a removed message moved up by one
    return removed


def _matching(chunk: list[bytes], task_name: str) -> list[bytes]:
    """The raw messages of `task_name` in `chunk`. A plain substring test first: most messages of
    other tasks never need to be parsed."""
    needle = task_name.encode() if _appears_verbatim(task_name) else b""
    return [raw for raw in chunk if needle in raw and messages.task_name(raw) == task_name]


def _appears_verbatim(task_name: str) -> bool:
    """Whether JSON writes `task_name` as is (no escapes), so a substring test can rule messages out."""
    return task_name.isascii() and task_name.isprintable() and not any(char in task_name for char in '"\\/')


def _remove(redis: Redis, key: str, raws: list[bytes]) -> int:
    pipe = redis.pipeline(transaction=False)
    for raw in raws:
        pipe.lrem(key, 1, raw)
    return sum(pipe.execute())
