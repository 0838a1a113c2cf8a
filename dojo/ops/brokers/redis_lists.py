"""Looking inside a Redis queue without consuming it.

kombu keeps queue Q as one list per priority step (``Q``, ``Q\\x06\\x163``, ...): producers
LPUSH, consumers RPOP the lists in priority order, so the next message to be consumed (the
oldest of the first non-empty list) is at the right end. kombu's own client adds the
transport's key prefix (``global_keyprefix``) to some commands only (not LINDEX, LRANGE,
LREM), so these helpers give full key names and a plain client on the channel's pool, which
keeps the bounded socket timeouts of `broker_connection()`. Reads are snapshots: workers may
take messages meanwhile.
"""

import json
from collections.abc import Iterator

from kombu import Connection
from kombu.transport.redis import Channel
from redis import Redis

BATCH = 1000


def redis_channel(conn: Connection) -> Channel:
    return conn.default_channel


def priority_lists(channel: Channel, queue: str) -> list[str]:
    """The Redis keys (key prefix included) of `queue`'s lists, in the order workers consume them."""
    prefix = channel.global_keyprefix or ""
    return list(dict.fromkeys(prefix + channel._q_for_pri(queue, step) for step in channel.priority_steps))


def client(channel: Channel) -> Redis:
    """A client that sends keys as given (see the module docstring), on the channel's bounded pool."""
    return Redis(connection_pool=channel.client.connection_pool)


def decode(raw: bytes | str) -> dict | None:
    """The kombu message envelope (body, headers, properties), or None if it is not JSON."""
    try:
        payload = json.loads(raw)
    except (TypeError, ValueError):
        return None
    return payload if isinstance(payload, dict) else None


def iter_messages(channel: Channel, queue: str, batch: int = BATCH) -> Iterator[tuple[str, bytes]]:
    """(list key, raw message) for every message of `queue`, next-to-be-consumed first,
    read `batch` at a time so memory stays bounded whatever the queue's length."""
    redis = client(channel)
    for key in priority_lists(channel, queue):
        length = redis.llen(key)
        for start in range(0, length, batch):
            chunk = redis.lrange(key, -(start + batch), -(start + 1))
            for raw in reversed(chunk):
                yield key, raw
