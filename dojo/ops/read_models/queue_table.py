"""The dashboard's queues table: one row per queue known to the configuration, to a live
worker, to a pause or to a periodic entry, with the pressure on it.

Columns and where they come from (the closest honest Celery meaning of the seed's columns):
- ready: messages waiting in the broker (every Redis priority list), read now.
- claimed: tasks live workers hold for the queue, reserved (prefetched) plus active.
- scheduled / oldest scheduled: ETA and countdown tasks workers hold until their time.
- blocked / oldest blocked: tasks that found no concurrency slot (dojo.ops.limits.semaphores).
- failed / finished: results stored in the last 24 h (django-celery-results) with state
  FAILURE / SUCCESS, by the backend and queue kept in their meta (dojo.worker.signals.remember_queue;
  a result without a backend counts for the main one), counted at most RESULTS_CACHE_SECONDS ago.
- latency: age of the oldest ready message, the next one a worker will take, from the
  publish time stamped in its headers (dojo.publishing.stamp_publish_time). None ("-") on
  brokers that cannot show a message without taking it (RabbitMQ), for a message published
  without the stamp, and for an empty queue. A table of thousands of queues is read with its
  counts only (the Redis transport reads the next messages for at most a few hundred queues at
  once): `with_latency` then reads the latency of the rows a caller shows (a page).
- live workers: answering workers that consume the queue now (a paused queue has none).
Worker columns come from the cached status document (at most DD_CELERY_STATUS_CACHE_SECONDS
old); broker columns are read now, in a thread of their own while the status is read, both
within one budget (dojo.ops.read_models.budget): the table never waits two broker bounds.
"""

import logging
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, overload

from celery import states
from django.conf import settings
from django.core.cache import cache
from django.db import DatabaseError

from dojo.ops.brokers.connection import BrokerUnavailable, broker_connection
from dojo.ops.brokers.queues import configured_queues, default_queue
from dojo.ops.brokers.registry import Broker, get_broker
from dojo.ops.brokers.transport import QueueDepth
from dojo.ops.fleet.load import QueueLoads, WorkerLoad
from dojo.ops.fleet.pauses import paused_queues
from dojo.ops.fleet.status import CeleryStatus
from dojo.ops.fleet.status_cache import get_status, get_summary
from dojo.ops.limits.semaphores import BlockedQueue, blocked_by_queue
from dojo.ops.read_models.budget import Budget, OutOfTime, broker_budget
from dojo.ops.read_models.stored_results import count_results as count_results_by
from dojo.ops.redaction import redact

logger = logging.getLogger(__name__)

RESULTS_WINDOW = timedelta(hours=24)
RESULTS_CACHE_SECONDS = 60
RESULTS_CACHE_KEY = "dojo.ops.read_models.queue_table.results"
# Where a queue name was learnt; a queue known only from the last two is a "shared" row.
CONFIGURATION, WORKER, PAUSE, PERIODIC = "configuration", "worker", "pause", "periodic"


@dataclass(slots=True)  # not frozen: a frozen init costs several times more, on 10,000 rows a read
class QueueTableRow:
    name: str
    ready_count: int | None  # None: the broker could not be read
    claimed_count: int | None  # None: an answering worker did not give its task lists in time
    scheduled_count: int | None
    blocked_count: int
    failed_count: int
    finished_count: int
    paused: bool
    latency_seconds: float | None
    live_worker_count: int | None  # None: an answering worker did not give its queues in time
    oldest_scheduled_at: datetime | None
    oldest_blocked_at: datetime | None
    sources: tuple[str, ...]


@dataclass
class QueueTable:
    backend: str
    rows: Sequence[QueueTableRow]  # QueueRows from queue_table(): built when asked for
    shared_rows: Sequence[QueueTableRow]  # queues known only from a pause or a periodic entry
    broker_error: str | None
    read_at: datetime
    results_error: str | None = None  # the result store could not be counted
    status: CeleryStatus | None = field(default=None, repr=False)  # the one the worker columns come from


@dataclass
class ResultCounts:
    """Counts by (backend alias, queue)."""

    failed: Counter = field(default_factory=Counter)
    finished: Counter = field(default_factory=Counter)
    error: str | None = None


def queue_table(
    broker: Broker | None = None,
    status: "CeleryStatus | Future[CeleryStatus] | None" = None,
    budget: Budget | None = None,
) -> QueueTable:
    """The queues table of `broker` (the main one if None). Never raises for the broker: when
    it is unreachable the rows hold what is known, ready counts are None, broker_error says why.

    One budget for the broker (`budget`, else one broker bound from now): the depths are read in
    a thread of their own while the status is read (or awaited, when `status` is a read in
    progress under `budget`); what misses the deadline is unknown, with the reason. A status
    already read is used as is; without one it is read here, in this thread (its database part
    may need this thread's transaction). A status that found the broker down is not waited on twice."""
    read = status if isinstance(status, CeleryStatus) else None
    return start_queue_table(broker, read, budget).table(status)


def start_queue_table(
    broker: Broker | None = None, status: CeleryStatus | None = None, budget: Budget | None = None
) -> "PendingTable":
    """queue_table() in two steps: this reads the table's database parts and starts the depth
    read (in a thread of its own), and PendingTable.table() waits for the broker and builds the
    table. A caller can do its own reads in between, while Redis counts 10,000 queues: even start
    the status read after this one, and hand it to table(). A status already read (`status`)
    names the queues only workers consume, which are then read at once."""
    broker = broker or get_broker()
    budget = budget or broker_budget()
    read_at = datetime.now(UTC)
    paused = paused_queues(broker.alias)
    periodic = _periodic_queues()
    known = [*configured_queues(), *sorted((paused | periodic) - set(configured_queues()))]
    if isinstance(status, CeleryStatus):
        known += sorted(set(_consumed(status.queue_loads())) - set(known))
    if isinstance(status, CeleryStatus) and not status.broker_status:
        depth_read = None  # a status that has just found the broker down saves a second wait
    else:
        depth_read = budget.start(partial(_read_depths, broker, known), "queue-depths")
    return PendingTable(
        broker,
        budget,
        status,
        read_at,
        paused,
        periodic,
        known,
        depth_read,
        blocked_by_queue(broker.alias),
        result_counts(),
    )


@dataclass
class PendingTable:
    """A queues table whose broker reads are under way (start_queue_table)."""

    broker: Broker
    budget: Budget
    status: CeleryStatus | None
    read_at: datetime
    paused: set[str]
    periodic: set[str]
    known: list[str]
    depth_read: "Future[dict[str, QueueDepth]] | None"
    blocked: dict[str, BlockedQueue]
    results: ResultCounts

    def table(self, status: "CeleryStatus | Future[CeleryStatus] | None" = None) -> QueueTable:
        """The table, once the broker has answered or the budget's deadline has passed. The worker
        columns come from `status` (a read in progress under the same budget, or one already read),
        else from the status given to start_queue_table, else from one read here, in this thread."""
        broker, budget, results = self.broker, self.budget, self.results
        status, late = _status_within(budget, self.status if status is None else status, broker)
        down = None if late or status.broker_status else status.error or "The broker is unreachable."
        loads = status.queue_loads()  # counted before the task lists were capped
        sources = _sources(loads, self.paused, self.periodic)
        read = set(self.known)
        extra = [name for name in sources if name not in read]  # consumed, not configured: known from the status
        # Read while the first read runs (its answer decides whether this one is waited for).
        extra_read = budget.start(partial(_read_depths, broker, extra), "queue-depths") if extra and not down else None
        depths, broker_error = _depths_within(budget, self.depth_read, down)
        if extra_read is not None and broker_error is None:
            more, error = _depths_within(budget, extra_read, None)
            depths.update(more)
            if error:
                broker_error = f"Ready counts of {', '.join(extra)} (known from the workers) were not read: {error}"
        failed = {queue: count for (alias, queue), count in results.failed.items() if alias == broker.alias}
        finished = {queue: count for (alias, queue), count in results.finished.items() if alias == broker.alias}
        idle = loads.default_factory()  # the load of a queue no worker holds
        columns = _Columns(
            depths=depths,
            loads=loads,
            idle_load=(idle.claimed_count, idle.scheduled_count, idle.consumers, None),
            blocked=self.blocked,
            failed=failed,
            finished=finished,
            paused=self.paused,
            sources=sources,
            now=time.time(),
        )
        listed = [name for name, found in sources.items() if CONFIGURATION in found or WORKER in found]
        shared = [name for name, found in sources.items() if CONFIGURATION not in found and WORKER not in found]
        return QueueTable(
            backend=broker.alias,
            rows=QueueRows(listed, columns),
            shared_rows=QueueRows(shared, columns),
            broker_error=broker_error,
            read_at=self.read_at,
            results_error=results.error,
            status=status,
        )


@dataclass(slots=True)
class _Columns:
    """What one table read found, by queue: the rows are built from it when they are asked for."""

    depths: dict[str, QueueDepth]
    loads: QueueLoads
    idle_load: tuple[int | None, int | None, int | None, None]  # claimed, scheduled, consumers, oldest ETA
    blocked: dict[str, BlockedQueue]
    failed: dict[str, int]
    finished: dict[str, int]
    paused: set[str]
    sources: dict[str, tuple[str, ...]]
    now: float
    stamps: dict[str, float] = field(default_factory=dict)  # publish stamps read later (with_latency)

    def row(self, name: str) -> QueueTableRow:
        # Most of 10,000 queues have no worker load, no blocked task and no result: the shared
        # idle values, read once, rather than the load's properties per queue.
        load = self.loads.get(name)
        claimed, scheduled, consumers, oldest_eta = (
            self.idle_load
            if load is None
            else (load.claimed_count, load.scheduled_count, load.consumers, load.oldest_eta)
        )
        depth = self.depths.get(name)
        waiting = self.blocked.get(name)
        stamp = self.stamp(name, depth)
        return QueueTableRow(
            name=name,
            ready_count=depth.ready if depth else None,
            claimed_count=claimed,
            scheduled_count=scheduled,
            blocked_count=waiting.count if waiting else 0,
            failed_count=self.failed.get(name, 0),
            finished_count=self.finished.get(name, 0),
            paused=name in self.paused,
            latency_seconds=max(0.0, self.now - stamp) if stamp is not None else None,
            live_worker_count=consumers,
            oldest_scheduled_at=oldest_eta,
            oldest_blocked_at=waiting.oldest_blocked_at if waiting else None,
            sources=self.sources[name],
        )

    def stamp(self, name: str, depth: QueueDepth | None) -> float | None:
        stamp = self.stamps.get(name)
        return stamp if stamp is not None else depth.oldest_published_at if depth else None


class QueueRows(Sequence[QueueTableRow]):
    """The rows of a queues table in its order, each built the first time it is asked for: a page
    of a table of 10,000 queues builds its 100 rows, not 10,000. The order worst first
    (by_pressure), the column totals (`column`) and a page's latency (with_latency) work on what
    the read found, without building rows; iterating builds every row (once)."""

    __slots__ = ("_built", "_columns", "names")

    def __init__(self, names: list[str], columns: _Columns, built: dict[str, QueueTableRow] | None = None) -> None:
        self.names = names
        self._columns = columns
        self._built = {} if built is None else built  # shared by the orders of one read's rows

    def __len__(self) -> int:
        return len(self.names)

    @overload
    def __getitem__(self, index: int) -> QueueTableRow: ...

    @overload
    def __getitem__(self, index: slice) -> list[QueueTableRow]: ...

    def __getitem__(self, index: int | slice) -> QueueTableRow | list[QueueTableRow]:
        if isinstance(index, slice):
            return [self._row(name) for name in self.names[index]]
        return self._row(self.names[index])

    def __iter__(self) -> Iterator[QueueTableRow]:
        return (self._row(name) for name in self.names)

    def __repr__(self) -> str:
        return f"QueueRows({len(self.names)} queues)"

    def _row(self, name: str) -> QueueTableRow:
        row = self._built.get(name)
        if row is None:
            row = self._built[name] = self._columns.row(name)
        return row

    def rows_of(self, names: list[str]) -> list[QueueTableRow]:
        """The rows of `names` (queues of this table), in that order."""
        return [self._row(name) for name in names]

    def ordered(self, names: list[str]) -> "QueueRows":
        """The same rows in the order of `names` (the same queues)."""
        return QueueRows(names, self._columns, self._built)

    def column(self, attr: str) -> list[Any]:
        """Every row's `attr`, in order; the ready counts, the scheduled counts and the latencies
        without building the rows."""
        columns, names = self._columns, self.names
        if attr == "ready_count":
            depths = columns.depths
            return [depth.ready if depth else None for depth in map(depths.get, names)]
        if attr == "scheduled_count":
            loads, idle = columns.loads, columns.idle_load[1]
            return [idle if load is None else load.scheduled_count for load in map(loads.get, names)]
        if attr == "latency_seconds":
            depths, now = columns.depths, columns.now
            stamps = [columns.stamp(name, depths.get(name)) for name in names]
            return [None if stamp is None else max(0.0, now - stamp) for stamp in stamps]
        return [getattr(row, attr) for row in self]

    def pressure_order(self) -> list[str]:
        """The names worst first (see by_pressure)."""
        depths, blocked = self._columns.depths, self._columns.blocked
        keys = []
        for name in self.names:
            depth, waiting = depths.get(name), blocked.get(name)
            ready = depth.ready if depth else 0
            keys.append((depth is None, -(ready + (waiting.count if waiting else 0)), name))
        keys.sort()
        return [key[2] for key in keys]

    def with_stamps(self, depths: dict[str, QueueDepth]) -> "QueueRows":
        """The same rows with the publish stamps of `depths` (read later) where they have one."""
        stamps = {name: depth.oldest_published_at for name, depth in depths.items() if depth.oldest_published_at}
        columns = replace(self._columns, stamps={**self._columns.stamps, **stamps})
        return QueueRows(self.names, columns)


def by_pressure(rows: Sequence[QueueTableRow]) -> Sequence[QueueTableRow]:
    """Worst first: the most work waiting (ready plus blocked), then by name; rows whose ready
    count is unknown (broker unread) after the known ones. A table's QueueRows are ordered
    without building their rows (still built when asked for)."""
    if isinstance(rows, QueueRows):
        return rows.ordered(rows.pressure_order())

    def pressure(row: QueueTableRow) -> tuple[bool, int, str]:
        return row.ready_count is None, -((row.ready_count or 0) + row.blocked_count), row.name

    return sorted(rows, key=pressure)


def with_latency(broker: Broker, table: QueueTable, names: list[str], budget: Budget) -> QueueTable:
    """`table` with the latency of the rows `names` read now (one depth read of just those queues,
    within `budget`), for a caller that shows a page of a table too wide to be read with its
    latency. Their ready counts stay those of the table's read, so a page agrees with its order
    and totals. A read that fails leaves the latency unknown and says why in broker_error."""
    if not names or table.broker_error:
        return table
    depths, error = _depths_within(budget, budget.start(partial(_read_depths, broker, names), "queue-latency"), None)
    if error:
        return replace(table, broker_error=f"The latency of the queues shown was not read: {error}")
    if isinstance(table.rows, QueueRows):
        return replace(table, rows=table.rows.with_stamps(depths))
    now = time.time()

    def updated(row: QueueTableRow) -> QueueTableRow:
        stamp = depths[row.name].oldest_published_at if row.name in depths else None
        return replace(row, latency_seconds=max(0.0, now - stamp)) if stamp is not None else row

    return replace(table, rows=[updated(row) for row in table.rows])


def status_within(budget: Budget, status: "CeleryStatus | Future[CeleryStatus] | None", broker: Broker) -> CeleryStatus:
    """`status` itself, the read in progress once it lands, or a fresh one read in this thread;
    a read still running at the deadline gives a status of a broker that did not answer."""
    return _status_within(budget, status, broker)[0]


def _status_within(
    budget: Budget, status: "CeleryStatus | Future[CeleryStatus] | None", broker: Broker
) -> tuple[CeleryStatus, bool]:
    """status_within, and whether the read missed the deadline."""
    if status is None:
        return get_status(broker=broker), False
    if isinstance(status, CeleryStatus):
        return status, False
    try:
        return budget.result(status), False
    except OutOfTime as exc:
        return CeleryStatus(broker_status=False, queue=default_queue(), error=str(exc), backend=broker.alias), True


def _consumed(loads: dict[str, WorkerLoad]) -> list[str]:
    return [name for name, load in loads.items() if load.consumers]


def known_queues(broker: Broker | None = None) -> set[str]:
    """Every queue name the table would list for `broker`: configured, consumed by a worker of
    the cached status, paused or named by a periodic entry."""
    broker = broker or get_broker()
    loads = get_summary(broker=broker).loads
    return set(_sources(loads, paused_queues(broker.alias), _periodic_queues()))


def _sources(loads: dict[str, WorkerLoad], paused: set[str], periodic: set[str]) -> dict[str, tuple[str, ...]]:
    """Each known queue with where it was learnt: configured queues first (default queue
    first), then the others by name. The many queues known from the configuration alone share
    one tuple (no object per queue)."""
    configured = configured_queues()
    is_configured = set(configured)
    more: dict[str, list[str]] = {}
    for source, names in ((WORKER, set(_consumed(loads))), (PAUSE, paused), (PERIODIC, periodic)):
        for name in names:
            more.setdefault(name, [CONFIGURATION] if name in is_configured else []).append(source)
    sources = dict.fromkeys(configured, (CONFIGURATION,))
    sources.update((name, tuple(found)) for name, found in more.items())
    return {name: sources[name] for name in [*configured, *sorted(set(more) - is_configured)]}


def _read_depths(broker: Broker, names: list[str]) -> dict[str, QueueDepth]:
    """Depths read now; raises BrokerUnavailable when the broker is unreachable."""
    with broker_connection(broker=broker) as conn:
        return broker.transport.depths(conn, names)


def _depths_within(
    budget: Budget, read: "Future[dict[str, QueueDepth]] | None", down: str | None
) -> tuple[dict[str, QueueDepth], str | None]:
    """The depths `read` found by the deadline; none, and the reason, when the broker did not
    answer (`down`: the reason a status read just found, the same broker's)."""
    if down is not None or read is None:
        return {}, down or "The broker is unreachable."
    try:
        return dict(budget.result(read)), None
    except (BrokerUnavailable, OutOfTime) as exc:
        return {}, str(exc)


def _periodic_queues() -> set[str]:
    """Queues named by the static beat schedule (options.queue) and django-celery-beat entries."""
    from django_celery_beat.models import PeriodicTask

    static = {(entry.get("options") or {}).get("queue") for entry in (settings.CELERY_BEAT_SCHEDULE or {}).values()}
    stored = set(PeriodicTask.objects.exclude(queue__isnull=True).exclude(queue="").values_list("queue", flat=True))
    return {name for name in static | stored if name}


def result_counts() -> ResultCounts:
    """count_results(), kept RESULTS_CACHE_SECONDS in Django's cache: the query scans every
    result of the window (about 0.3 s for 200,000 on SQLite, see bench/queues_table.py) and a
    day's counts barely move within a minute. A failed count is not kept."""
    counts = cache.get(RESULTS_CACHE_KEY)
    if counts is None:
        counts = count_results()
        if counts.error is None:
            cache.set(RESULTS_CACHE_KEY, counts, RESULTS_CACHE_SECONDS)
    return counts


def count_results() -> ResultCounts:
    """FAILURE and SUCCESS results of the last 24 h by broker and queue (dojo.ops.read_models.stored_results)."""
    counts = ResultCounts()
    try:
        grouped = count_results_by(("backend", "queue", "status"), RESULTS_WINDOW, (states.FAILURE, states.SUCCESS))
    except DatabaseError as exc:  # e.g. a meta that is not JSON: the table still shows the rest
        logger.warning("Counting stored results by queue failed: %s", exc)
        counts.error = redact(f"{type(exc).__name__}: {exc}")
        return counts
    for (alias, queue, state), n in grouped.items():
        (counts.failed if state == states.FAILURE else counts.finished)[alias, queue] += n
    return counts
