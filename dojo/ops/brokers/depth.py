"""Ready messages of many queues and the publish time of the next one to be consumed, in as
few broker round trips as the transport allows.

- Redis: one pipeline for every queue: LLEN of each priority list and LINDEX -1 (its next
  message), so 200 queues cost one round trip.
- The embedded filesystem broker: one listing of the data folder, then the first file (in
  kombu's consumption order) of each queue is read, not moved.
- Other brokers (RabbitMQ): a passive declare per queue; they cannot show a message without
  taking it, so the publish time is unknown (None).
"""

from dataclasses import dataclass

from kombu import Connection

from dojo.ops.brokers import messages, redis_lists
from dojo.ops.brokers.queues import read_queue
from dojo.ops.brokers.registry import Broker


@dataclass(frozen=True)
class QueueDepth:
    ready: int
    # Publish time (epoch seconds) of the oldest message at the consuming end, if stamped.
    oldest_published_at: float | None = None


def read_depths(conn: Connection, backend: Broker, names: list[str]) -> dict[str, QueueDepth]:
    """The depth of each queue in `names` on the connected `conn`."""
    if backend.is_redis:
        return _redis_depths(conn, names)
    if backend.transport == "filesystem":
        return _filesystem_depths(conn, names)
    return {name: QueueDepth(ready=read_queue(conn, name)[0]) for name in names}


def _redis_depths(conn: Connection, names: list[str]) -> dict[str, QueueDepth]:
    channel = redis_lists.redis_channel(conn)
    keys = {name: redis_lists.priority_lists(channel, name) for name in names}
    pipe = redis_lists.client(channel).pipeline(transaction=False)
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
                stamps.append(messages.published_at(redis_lists.decode(next_message)))
        depths[name] = QueueDepth(ready=ready, oldest_published_at=_oldest(stamps))
    return depths


def _filesystem_depths(conn: Connection, names: list[str]) -> dict[str, QueueDepth]:
    folder = conn.default_channel.data_folder_in
    wanted = set(names)
    counts = dict.fromkeys(names, 0)
    first_file: dict[str, str] = {}
    for filename in messages.iter_message_files(folder):
        queue = messages.queue_of(filename)
        if queue in wanted:
            counts[queue] += 1
            if queue not in first_file or filename < first_file[queue]:
                first_file[queue] = filename
    depths = {}
    for name in names:
        raw = messages.read_message_file(folder, first_file[name]) if name in first_file else None
        stamp = messages.published_at(redis_lists.decode(raw)) if raw is not None else None
        depths[name] = QueueDepth(ready=counts[name], oldest_published_at=stamp)
    return depths


def _oldest(stamps: list[float | None]) -> float | None:
    """The oldest stamp; None when any candidate is unstamped (its age cannot be known)."""
    if not stamps or None in stamps:
        return None
    return min(stamps)
