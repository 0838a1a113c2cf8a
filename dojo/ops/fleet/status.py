"""The Celery status document: broker, queues, workers and their tasks, in one broadcast round."""

import contextlib
import logging
import time
from dataclasses import dataclass, field, fields
from functools import cached_property
from typing import Any

import orjson
from django.conf import settings
from django.db import DatabaseError

from dojo.ops.brokers.connection import BrokerUnavailable, broker_connection, broker_timeout
from dojo.ops.brokers.queues import configured_queues, default_queue
from dojo.ops.brokers.registry import DEFAULT_ALIAS, Broker, get_broker
from dojo.ops.fleet.load import QueueLoads, worker_loads
from dojo.ops.fleet.mailbox import query_workers
from dojo.ops.fleet.pauses import paused_queues
from dojo.ops.fleet.worker_reply import TASK_LISTS, cap_task_lists, task_count
from dojo.ops.redaction import mask_url, redact

# The state of a task on each list: one vocabulary for the API's task search and the panel's live tasks.
LIVE_STATES = {"active": "ACTIVE", "reserved": "RESERVED", "scheduled": "SCHEDULED"}
# The least share of DD_CELERY_BROKER_TIMEOUT the worker round gets, however long the queue reads took.
ROUND_FLOOR_SHARE = 0.5
# The queues outside DD_CELERY_QUEUES that live workers consumed at this process's last read, by
# backend: read with the configured ones, so a steady fleet's queues cost no second depth read. In
# memory (one set per backend), so a cache that does not answer costs the read nothing.
_consumed_before: dict[str, frozenset[str]] = {}

# orjson refuses (rather than turning into strings or dicts) the values it would not give back as they were.
EXACT_JSON = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_SUBCLASS | orjson.OPT_PASSTHROUGH_DATACLASS

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class QueueState:
    ready: int | None
    consumers: int | None


@dataclass(frozen=True)
class Alert:
    code: str
    severity: str  # "critical" or "warning"
    message: str


@dataclass(frozen=True)
class WorkerCounts:
    """One answering worker in the status summary: its task counts (None: it did not say) and
    its pool's max-concurrency (None: not given)."""

    active: int | None
    reserved: int | None
    scheduled: int | None
    concurrency: int | None


class _Counts:
    """What the document and its summary both answer from `worker_counts`."""

    broker_status: bool
    queue: str
    queues: dict[str, QueueState]

    @property
    def worker_counts(self) -> dict[str, WorkerCounts]:
        raise NotImplementedError

    @property
    def connected(self) -> bool:
        return self.broker_status

    @property
    def queue_length(self) -> int | None:
        state = self.queues.get(self.queue)
        return state.ready if state else None

    @property
    def worker_names(self) -> list[str]:
        return sorted(self.worker_counts)

    @property
    def workers(self) -> int:
        return len(self.worker_counts)

    @property
    def worker_status(self) -> bool:
        return self.workers > 0

    def _total(self, kind: str) -> int | None:
        """The tasks of that kind on the answering workers; None when one of them did not say."""
        counts = [getattr(counted, kind) for counted in self.worker_counts.values()]
        return None if None in counts else sum(counts)

    @property
    def active_tasks(self) -> int | None:
        return self._total("active")

    @property
    def reserved_tasks(self) -> int | None:
        return self._total("reserved")

    @property
    def scheduled_tasks(self) -> int | None:
        return self._total("scheduled")


@dataclass(frozen=True)
class StatusSummary(_Counts):
    """The counts of a status document, without its task lists: what readiness, /metrics and the
    queues table need, kept in the cache beside the document (status_cache.get_summary) so they
    do not unpickle every task of every worker. Its counts are the document's."""

    broker_status: bool
    queue: str
    queues: dict[str, QueueState] = field(default_factory=dict)
    counts: dict[str, WorkerCounts] = field(default_factory=dict)
    loads: QueueLoads = field(default_factory=QueueLoads)  # per queue, consumers by name only
    error: str | None = None
    read_at: float = field(default_factory=time.time)
    alerts: list[Alert] = field(default_factory=list)
    enabled: bool = True
    backend: str = DEFAULT_ALIAS
    history_available: bool = True

    @property
    def worker_counts(self) -> dict[str, WorkerCounts]:
        return self.counts


@dataclass(frozen=True)
class CeleryStatus(_Counts):
    """What the broker and the workers said in a read that began at `read_at` (epoch seconds)."""

    broker_status: bool
    queue: str
    queues: dict[str, QueueState] = field(default_factory=dict)
    # Each answering worker's part (dojo.ops.fleet.worker_reply.describe_worker): from dojo_status or
    # the built-in inspect commands; {"error": ...} from a worker that failed to answer dojo_status.
    worker_replies: dict[str, dict] = field(default_factory=dict)
    error: str | None = None
    read_at: float = field(default_factory=time.time)
    alerts: list[Alert] = field(default_factory=list)
    enabled: bool = True
    backend: str = DEFAULT_ALIAS
    # The parts that need the database (status_cache._read_with_alerts): false when it did not
    # answer, and then `alerts` holds only the live ones (no queue_growing) and the workers that
    # answered were not recorded in the seen-workers registry.
    history_available: bool = True
    seen_workers_recorded: bool = True
    database_error: str | None = None
    # The loads per queue counted from the whole replies, before their task lists were capped.
    loads: QueueLoads | None = None

    @property
    def worker_names(self) -> list[str]:
        return sorted(self.worker_replies)

    @property
    def workers(self) -> int:
        return len(self.worker_replies)

    @cached_property  # the three task totals each read it
    def worker_counts(self) -> dict[str, WorkerCounts]:
        def concurrency(reply: dict) -> int | None:
            return ((reply.get("stats") or {}).get("pool") or {}).get("max-concurrency")

        return {
            name: WorkerCounts(*(task_count(reply, kind) for kind in TASK_LISTS), concurrency(reply))
            for name, reply in self.worker_replies.items()
        }

    @property
    def queue_details(self) -> dict[str, dict[str, list[dict]]]:
        """Each worker's task lists, each cut to DD_CELERY_STATUS_MAX_TASKS_PER_WORKER (see tasks_left_out)."""
        return {kind: {name: reply.get(kind, []) for name, reply in self.worker_replies.items()} for kind in TASK_LISTS}

    @property
    def tasks_left_out(self) -> dict[str, dict[str, int]]:
        """By list kind, the workers whose list was capped and how many of its tasks were left out."""
        return {
            kind: {
                name: reply["left_out"][kind]
                for name, reply in self.worker_replies.items()
                if kind in reply.get("left_out", {})
            }
            for kind in TASK_LISTS
        }

    def __getstate__(self) -> dict[str, Any]:
        """What the status cache pickles: the fields, the worker replies as one JSON string (orjson
        writes 1,000 workers' replies in a tenth of pickle's time and reads them in half), and no
        cached property. Replies orjson would not give back as they are (a datetime, a key that is not
        a string, an integer past 64 bits) are pickled as they are; a NaN comes back None and a
        tuple a list, as the API renders them."""
        state = {part.name: getattr(self, part.name) for part in fields(self)}
        with contextlib.suppress(TypeError):  # orjson.JSONEncodeError
            state["worker_replies"] = orjson.dumps(self.worker_replies, option=EXACT_JSON)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        if isinstance(state["worker_replies"], bytes):
            state = {**state, "worker_replies": orjson.loads(state["worker_replies"])}
        self.__dict__.update(state)

    def queue_loads(self) -> QueueLoads:
        """The loads per queue, counted before the task lists were capped (exact)."""
        return self.loads if self.loads is not None else worker_loads(self.worker_replies)

    def summary(self) -> StatusSummary:
        """The counts of this document without its task lists."""
        return StatusSummary(
            broker_status=self.broker_status,
            queue=self.queue,
            queues=self.queues,
            counts=self.worker_counts,
            loads=self.queue_loads().counts_only(),
            error=self.error,
            read_at=self.read_at,
            alerts=self.alerts,
            enabled=self.enabled,
            backend=self.backend,
            history_available=self.history_available,
        )

    @property
    def registered_tasks(self) -> list[str]:
        return sorted({name for reply in self.worker_replies.values() for name in reply.get("registered", [])})

    @property
    def worker_stats(self) -> dict[str, dict]:
        """Every answering worker's stats; None for one that did not give them."""
        return {name: reply.get("stats") for name, reply in self.worker_replies.items()}

    @property
    def broker_url(self) -> str:
        return mask_url(get_broker(self.backend).broker_url)

    @property
    def task_time_limit(self) -> int | None:
        return settings.CELERY_TASK_TIME_LIMIT or None

    @property
    def task_soft_time_limit(self) -> int | None:
        return settings.CELERY_TASK_SOFT_TIME_LIMIT or None

    @property
    def task_default_expires(self) -> int | None:
        return settings.CELERY_TASK_DEFAULT_EXPIRES or None


def read_status(broker: Broker | None = None) -> CeleryStatus:
    """Read the status from `broker` (the main one if None) and its workers.

    The queue reads come first: they are cheap and prove the broker answers. The worker round
    gets what is left of DD_CELERY_BROKER_TIMEOUT (T) counted from the start, but never less than
    ROUND_FLOOR_SHARE of it, so slow queue reads (many queues on AMQP) never leave it nothing and
    report a healthy fleet empty. Bound of the broker part: connecting ≤ T, the queue reads ≤ 1.5 T
    (AMQP starts no passive declare after T/2, each ≤ T; Redis is one pipeline ≤ T), the round
    ≤ max(T - elapsed, T/2), and a second depth read ≤ 1.5 T only when a worker consumes a queue
    the first did not read: at most 4.5 T (status_cache.read_bound), plus on AMQP the control-queue
    consumer counts of the remembered workers (one channel, one round trip each; mailbox).

    The queues read are every queue the dashboard knows: the configured ones, the paused ones
    (QueuePause rows) and the ones a live worker consumes (remembered from the last read, and
    read after the round when one is new), so alerts and /metrics cover them all.
    """
    read_at = time.time()
    bound = broker_timeout()
    deadline = time.monotonic() + bound
    broker = broker or get_broker()
    queue = default_queue()
    configured = configured_queues()
    paused, database_error = _paused(broker)
    consumed_key = f"{broker.alias}:{mask_url(broker.broker_url)}"
    consumed_before = _consumed_before.get(consumed_key, frozenset())
    first = list(dict.fromkeys([*configured, *sorted(paused), *sorted(consumed_before)]))
    try:
        with broker_connection(broker=broker) as conn:
            depths = broker.transport.depths(conn, first)
            consumers = {name: depths[name].consumers for name in configured}
            round_timeout = max(deadline - time.monotonic(), ROUND_FLOOR_SHARE * bound)
            replies = query_workers(conn, broker, round_timeout, consumers)
            consuming = worker_loads(replies)
            consumed = {name for name, load in consuming.items() if load.consumed_by}
            new = sorted(consumed - set(depths))
            if new:  # a queue only a worker consumes, not read yet
                depths.update(broker.transport.depths(conn, new))
    except BrokerUnavailable as exc:
        return CeleryStatus(
            broker_status=False,
            queue=queue,
            error=str(exc),
            read_at=read_at,
            backend=broker.alias,
            database_error=database_error,
        )
    keep = set(configured) | paused | consumed
    depths = {name: depth for name, depth in depths.items() if name in keep}
    _consumed_before[consumed_key] = frozenset(consumed - set(configured))
    cap = settings.CELERY_STATUS_MAX_TASKS_PER_WORKER
    replies = {name: cap_task_lists(reply, cap) for name, reply in replies.items()}
    idle = consuming.default_factory()  # not consuming[name]: that would store an idle load per queue
    queues = {
        name: QueueState(
            ready=depth.ready,
            consumers=depth.consumers if depth.consumers is not None else (consuming.get(name) or idle).consumers,
        )
        for name, depth in depths.items()
    }
    return CeleryStatus(
        broker_status=True,
        queue=queue,
        queues=queues,
        worker_replies=replies,
        read_at=read_at,
        backend=broker.alias,
        loads=consuming,
        database_error=database_error,
    )


def _paused(broker: Broker) -> tuple[set[str], str | None]:
    """The paused queues of `broker`, and why the database did not answer (then none are known,
    and status_cache._read_with_alerts leaves the database parts out without asking it again)."""
    try:
        return paused_queues(broker.alias), None
    except DatabaseError as exc:
        return set(), redact(f"{type(exc).__name__}: {exc}")
