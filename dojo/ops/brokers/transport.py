"""One interface over the brokers' transports: what each can tell and do, and how.

The transport is chosen once, from the broker URL's scheme (`transport_for`); no module outside
this package branches on it. Each method takes a connection made by `broker_connection()`, so
every call is bounded in time. Reads are snapshots: workers may take messages meanwhile.

- `bounded_options`: the socket timeouts that bound every call (library defaults wait forever).
- `depths`: ready messages of many queues (every Redis priority list), consumers where the
  broker counts them (AMQP), and the publish time of the next message where it can be seen.
- `peek`: counts by task name and the first messages, read without consuming.
- `purge` / `purge_task_name`: empty a queue / remove one task name's messages, within a
  deadline, keeping count in a `PurgeTally` as it goes.
- `message_window` / `purge_matching`: read a queue's messages a window at a time from a
  position / remove the messages a filter matches, for bulk operations (Redis only).
- `consumer_counts`: the consumers of many queues (the workers' control queues on AMQP).
- `bound_workers`: the workers bound to the control exchange, where the broker lists bindings;
  `remove_binding` removes one worker's binding (a killed worker's, which nothing else removes).
- `slot_store`: where the concurrency limits keep their slots ("redis" on the broker, else "database").
- `prune_control_messages`: remove stale remote-control messages the transport never cleans.
"""

from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from kombu import Connection
from kombu.exceptions import ChannelError

from dojo.ops.brokers.messages import UNKNOWN_TASK, MessageMatch, task_name

if TYPE_CHECKING:
    from dojo.ops.brokers.registry import Broker

# Cuts an iteration short (a time budget); peek scans through it.
Within = Callable[[Iterable[bytes]], Iterator[bytes]]


class PeekUnsupported(Exception):
    """The broker cannot show a queue's messages without taking them."""


class PurgeByNameUnsupported(ValueError):
    """The broker cannot remove selected messages without consuming them."""


@dataclass
class PurgeTally:
    """How far a purge by task name got: kept up to date as it goes, so a purge cut short (by its
    deadline or by a broker that fails mid-way) still tells what it removed."""

    deadline: float  # time.monotonic() past which no further broker call is started
    purged: int = 0
    complete: bool = True  # False: stopped at the deadline before everything was scanned


class SelectUnsupported(ValueError):
    """The broker cannot read (or remove) a queue's messages by a filter without consuming them."""


Position = tuple[int, int]  # in a queue: a priority list's index, and an offset from its head


@dataclass
class PurgeStep:
    """One step of a bulk purge: where it starts and stops, updated as it goes."""

    position: Position | None  # where to go on from; None: every list scanned, or the cap reached
    most: int  # messages this step removes at most
    windows: int  # broker calls this step makes at most
    total: int = 0  # removed so far by the whole operation (the broker's counter)


@dataclass(frozen=True)
class QueueDepth:
    ready: int
    consumers: int | None = None  # the broker's own count (AMQP); None where it keeps none
    # Publish time (epoch seconds) of the oldest message at the consuming end, if stamped and visible.
    oldest_published_at: float | None = None


class Transport:
    """A broker kombu reaches through a transport that shows nothing beyond a passive declare
    (SQS, SQLAlchemy, ...): depth by declare, purge, no peek, no bindings, slots in the database."""

    slot_store: ClassVar[str] = "database"

    def __init__(self, broker: "Broker") -> None:
        self.broker = broker

    @property
    def name(self) -> str:
        """The URL scheme: redis, amqp, filesystem, ..."""
        return self.broker.broker_url.split("://", 1)[0]

    def bounded_options(self, timeout: float) -> dict:
        return {"socket_connect_timeout": timeout, "socket_timeout": timeout}

    def depths(self, conn: Connection, names: list[str]) -> dict[str, QueueDepth]:
        return {name: self._declared(conn, name) for name in names}

    def _declared(self, conn: Connection, name: str) -> QueueDepth:
        """A passive declare looks without creating anything; an absent queue (which on Redis is
        simply an empty one) raises NOT_FOUND and counts as 0. Prefetched messages are not ready."""
        with conn.channel() as channel:  # a ChannelError closes the channel on AMQP
            try:
                declared = channel.queue_declare(queue=name, passive=True)
            except ChannelError:
                return QueueDepth(ready=0)
        return QueueDepth(ready=declared.message_count)

    def consumer_count(self, conn: Connection, queue: str) -> int:
        """Consumers of `queue` by a passive declare; an absent queue has none."""
        with conn.channel() as channel:  # an error closes the channel on AMQP
            try:
                return channel.queue_declare(queue=queue, passive=True).consumer_count
            except ChannelError:
                return 0

    def consumer_counts(self, conn: Connection, queues: Iterable[str]) -> dict[str, int]:
        """Consumers of each of `queues` (see consumer_count)."""
        return {queue: self.consumer_count(conn, queue) for queue in queues}

    def peek(self, conn: Connection, queue: str, first: int, within: Within) -> tuple[Counter, list[bytes]]:
        raise PeekUnsupported(
            f"The {self.name} broker cannot show the messages of a queue without taking them off the queue."
        )

    def purge(self, conn: Connection, name: str) -> int:
        """Remove every ready message of `name` (every priority sub-queue); how many."""
        with conn.channel() as channel:
            try:
                return channel.queue_purge(name) or 0
            except ChannelError:  # absent queue: nothing to purge
                return 0

    def purge_task_name(self, conn: Connection, queue: str, task_name: str, tally: PurgeTally) -> None:
        raise PurgeByNameUnsupported(
            f"The {self.name} broker of backend {self.broker.alias} cannot remove selected messages without "
            "consuming them; only Redis can. Purging the whole queue still works."
        )

    def message_window(self, conn: Connection, queue: str, position: Position, size: int) -> list[bytes] | None:
        """Up to `size` raw messages of `queue` from `position`, in a stable order; None past the end."""
        raise self._unselectable()

    def purge_matching(
        self, conn: Connection, queue: str, match: MessageMatch, step: PurgeStep, counter: str, cap: int
    ) -> None:
        """Remove the messages `match` takes (see RedisTransport.purge_matching)."""
        raise self._unselectable()

    def _unselectable(self) -> SelectUnsupported:
        return SelectUnsupported(
            f"The {self.name} broker of backend {self.broker.alias} cannot read or remove queued messages by a "
            "filter without consuming them; only Redis can."
        )

    def bound_workers(self, conn: Connection, control_exchange: str) -> set[str] | None:
        """Names of the workers bound to the control exchange; None where the broker cannot tell."""
        return None

    def remove_binding(self, conn: Connection, control_exchange: str, worker: str) -> bool:
        """Remove `worker`'s binding to the control exchange, where the broker keeps bindings
        that outlive their worker; whether one was removed."""
        return False

    def prune_control_messages(self, max_age_seconds: float) -> int:
        return 0


class VirtualTransport(Transport):
    """kombu's virtual transports (Redis, filesystem) keep the exchange bindings themselves.

    Every worker binds its remote-control queue (``NAME.celery.pidbox``) to the pidbox fanout
    exchange and unbinds on a warm shutdown, so the bindings name the live workers plus any
    that were killed.
    """

    def bound_workers(self, conn: Connection, control_exchange: str) -> set[str] | None:
        suffix = f".{control_exchange}.pidbox"
        table = conn.default_channel.get_table(f"{control_exchange}.pidbox")
        return {queue.removesuffix(suffix) for _key, _pattern, queue in table}


def oldest(stamps: list[float | None]) -> float | None:
    """The oldest stamp; None when any candidate is unstamped (its age cannot be known)."""
    if not stamps or None in stamps:
        return None
    return min(stamps)


def count_task_names(raws: Iterable[bytes], first: int) -> tuple[Counter, list[bytes]]:
    """Task names counted over `raws` (in consumption order); the first `first` kept raw."""
    by_task: Counter = Counter()
    kept: list[bytes] = []
    for raw in raws:
        by_task[task_name(raw) or UNKNOWN_TASK] += 1
        if len(kept) < first:
            kept.append(raw)
    return by_task, kept
