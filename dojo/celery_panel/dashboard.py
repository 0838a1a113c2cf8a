"""The operator dashboard (/admin/celery/dashboard/): queue pressure, processes, recurring tasks,
concurrency limits and the controls, for the backend chosen with ?backend=.

A thin view: the rows come from dojo.ops (queue_table, processes, recurring, semaphores);
this module only picks the backend, sorts the tables (dojo.celery_panel.sorting), sums the cards
and says which controls the user may see. The buttons call the REST API (celery_controls.js).

One budget for the page's broker reads (dojo.ops.read_models.budget): the status, the queue
depths and the slots on the broker's Redis are read at once, each in a thread of its own, while
this thread reads the database; a part that has not answered by the deadline is named on the
page with the reason, and its late result is dropped.
"""

from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

from django.conf import settings
from django.contrib import admin
from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest
from django.shortcuts import render
from django.urls import reverse

from dojo.celery_panel.controls import user_controls
from dojo.celery_panel.sorting import Column, SortedTable, sort_table
from dojo.ops.brokers.connection import BrokerUnavailable
from dojo.ops.brokers.queues import default_queue
from dojo.ops.brokers.registry import Broker, UnknownBroker, configured_brokers, get_broker
from dojo.ops.fleet.detections import Detections, detect
from dojo.ops.fleet.processes import STALE_AFTER_SECONDS, ProcessRow, list_processes, monitor_state, pool_pids
from dojo.ops.fleet.status import CeleryStatus
from dojo.ops.fleet.status_cache import get_status
from dojo.ops.limits.semaphores import HeldSlots, held_slots, semaphore_states, slots_on_broker
from dojo.ops.read_models.budget import Budget, OutOfTime, broker_budget, done
from dojo.ops.read_models.queue_table import (
    QueueRows,
    QueueTable,
    QueueTableRow,
    by_pressure,
    start_queue_table,
    status_within,
    with_latency,
)
from dojo.ops.read_models.recurring import recurring_tasks
from dojo.ops.read_models.stored_results import recent_activity
from dojo.ops.redaction import mask_url, redact
from dojo.permissions import controls_enabled

QUEUE_COLUMNS = [
    Column("Queue", "name"),
    Column("Ready", "ready_count", "Messages waiting in the broker, every priority list included."),
    Column("Claimed", "claimed_count", "Reserved (prefetched) plus active on the answering workers."),
    Column("Scheduled", "scheduled_count", "ETA/countdown tasks the workers hold until they are due."),
    Column("Blocked", "blocked_count", "Tasks waiting for a concurrency (semaphore) slot."),
    Column("Failed", "failed_count", "FAILURE results stored in the last 24 h."),
    Column("Finished", "finished_count", "SUCCESS results stored in the last 24 h."),
    Column("Paused", "paused"),
    Column("Latency", "latency_seconds", "Age of the oldest ready message; - where the broker cannot tell."),
    Column("Live workers", "live_worker_count", "Answering workers consuming the queue now."),
    Column("Oldest scheduled", "oldest_scheduled_at"),
    Column("Oldest blocked", "oldest_blocked_at"),
    Column("Controls"),
]
SHARED_QUEUE_COLUMNS = [
    Column("Queue", "name"),
    Column("Known from", "sources"),
    Column("Paused", "paused"),
    Column("Controls"),
]
PROCESS_COLUMNS = [
    Column("Name", "name"),
    Column("Kind", "kind"),
    Column("State", "is_live"),
    Column("Last heartbeat", "last_heartbeat_at"),
    Column("Host", "hostname"),
    Column("PID", "pid"),
    Column(
        "Source",
        "source",
        "heartbeat: written by this project's process; events: Celery's worker events, "
        "read by the event monitor (any worker); both: seen both ways",
    ),
]
RECURRING_COLUMNS = [
    Column("Key", "key"),
    Column("Task", "task_path"),
    Column("Queue", "queue_name"),
    Column("Schedule", "schedule"),
    Column("Type", "static"),
    Column("Enabled", "enabled"),
    Column("Last run", "last_run_at"),
    Column("Next run", "next_run_at"),
    Column("Controls"),
]
SEMAPHORE_COLUMNS = [
    Column("Key", "key"),
    Column("Available", "available_slots"),
    Column("Limit", "limit"),
    Column("Blocked waiters", "blocked_waiters"),
    Column("Expires", "expires_at"),
]
# One sort parameter per table, and the anchor its links return to.
SORT_PARAMS = {"queues": "qo", "shared": "sqo", "processes": "po", "recurring": "ro", "semaphores": "so"}
# A queues table of more than QUEUES_SHOWN_WHOLE rows is shown QUEUES_PER_PAGE rows at a time,
# worst first unless sorted otherwise (?qp=2 is the second page): rendering thousands of rows is
# the page's whole cost, and the latency of a wide table is read for the rows shown only
# (dojo.ops.read_models.queue_table.with_latency).
QUEUES_PAGE_PARAM = "qp"
QUEUES_SHOWN_WHOLE = 300
QUEUES_PER_PAGE = 100


@dataclass(frozen=True)
class Fact:
    label: str
    value: str


@dataclass(frozen=True)
class Card:
    key: str
    label: str
    value: Any  # None shows "-"
    url: str
    detail: str = ""


@dataclass(frozen=True)
class QueuesPage:
    number: int
    count: int  # pages
    total: int  # queues in the table, every page
    first_index: int  # 1-based position of the page's first row
    last_index: int
    next_url: str
    previous_url: str

    @property
    def paginated(self) -> bool:
        return self.count > 1

    @property
    def more(self) -> int:
        """Queues after this page."""
        return self.total - self.last_index


class BadPage(ValueError):
    pass


@dataclass(frozen=True)
class Section:
    table: SortedTable | None
    error: str | None = None


@dataclass(frozen=True)
class Unavailable:
    """A part of the page that could not be read, and why."""

    key: str
    label: str
    reason: str


def _sorted(request: HttpRequest, name: str, rows: list, columns: list[Column]) -> SortedTable:
    return sort_table(rows, columns, request.GET, SORT_PARAMS[name], name)


def _semaphores(request: HttpRequest, broker: Broker, budget: Budget, held: "Future[HeldSlots]") -> Section:
    """The semaphores table; the reason instead when their store (the broker's Redis) did not answer."""
    try:
        states = semaphore_states(broker, budget.result(held))
    except (BrokerUnavailable, OutOfTime) as exc:
        return Section(None, str(exc))
    return Section(_sorted(request, "semaphores", states, SEMAPHORE_COLUMNS))


def _unavailable(status: CeleryStatus, table: QueueTable, semaphores: Section) -> list[Unavailable]:
    parts = [
        ("status", "Status and workers", None if status.broker_status else status.error or "the broker is unreachable"),
        ("queues", "Queues (broker columns)", table.broker_error),
        ("semaphores", "Concurrency limits", semaphores.error),
    ]
    return [Unavailable(key, label, reason) for key, label, reason in parts if reason]


def _sum(values: list[int | None]) -> int | None:
    """The total, or None ("-") when a part of it is unknown."""
    return None if any(value is None for value in values) else sum(values)


def _anchor_url(request: HttpRequest, anchor: str, param: str = "", ordering: str = "") -> str:
    query = request.GET.copy()
    if param:
        query[param] = ordering
    return f"?{query.urlencode()}#{anchor}"


def _page_number(request: HttpRequest) -> int:
    value = request.GET.get(QUEUES_PAGE_PARAM, "1")
    if not value.isascii() or not value.isdigit() or int(value) < 1:
        raise BadPage(f"{QUEUES_PAGE_PARAM}: a page number (1, 2, ...) is expected, not {value[:40]!r}.")
    return int(value)


def _queues_page(
    request: HttpRequest, broker: Broker, table: QueueTable, budget: Budget
) -> tuple[QueueTable, SortedTable, QueuesPage]:
    """One page of the queues table. A table of at most QUEUES_SHOWN_WHOLE rows is one page and
    keeps its order (configured queues first) unless ?qo= sorts it; a wider one is shown worst
    first (by_pressure) unless ?qo= sorts it, and its latency is read for the page's rows only
    (it is read without it). A page past the last shows the last."""
    number = _page_number(request)
    wide = len(table.rows) > QUEUES_SHOWN_WHOLE
    query = request.GET.copy()
    query.pop(QUEUES_PAGE_PARAM, None)  # a new order starts again at the first page
    if query.get(SORT_PARAMS["queues"]):  # sorted on any column: every row is built
        ordered = sort_table(table.rows, QUEUE_COLUMNS, query, SORT_PARAMS["queues"], "queues")
        rows: Sequence[QueueTableRow] = ordered.rows
    else:  # the table's order, or worst first: only the page's rows are built
        rows = by_pressure(table.rows) if wide else table.rows
        ordered = sort_table([], QUEUE_COLUMNS, query, SORT_PARAMS["queues"], "queues")
    per_page = QUEUES_PER_PAGE if wide else max(1, len(rows))
    count = max(1, -(-len(rows) // per_page))
    number = min(number, count)
    start = (number - 1) * per_page
    shown = list(rows[start : start + per_page])
    if wide:
        table = with_latency(broker, table, [row.name for row in shown], budget)
        shown = _rows_of(table, shown)
    page = QueuesPage(
        number=number,
        count=count,
        total=len(rows),
        first_index=start + 1 if shown else 0,
        last_index=start + len(shown),
        next_url=_anchor_url(request, "queues", QUEUES_PAGE_PARAM, str(number + 1)) if number < count else "",
        previous_url=_anchor_url(request, "queues", QUEUES_PAGE_PARAM, str(number - 1)) if number > 1 else "",
    )
    return table, replace(ordered, rows=shown), page


def _rows_of(table: QueueTable, shown: list[QueueTableRow]) -> list[QueueTableRow]:
    """The rows of `table` (after with_latency) for the queues of `shown`, in that order."""
    names = [row.name for row in shown]
    if isinstance(table.rows, QueueRows):
        return table.rows.rows_of(names)
    fresh = {row.name: row for row in table.rows}
    return [fresh[name] for name in names]


def _column(rows: Sequence[QueueTableRow], attr: str) -> list[Any]:
    """One column of the table, read without building the rows when they are QueueRows."""
    return rows.column(attr) if isinstance(rows, QueueRows) else [getattr(row, attr) for row in rows]


def summary_cards(
    request: HttpRequest,
    table: QueueTable,
    status: CeleryStatus,
    processes: list[ProcessRow],
    activity: dict[str, int] | None,
    page: QueuesPage | None = None,
) -> list[Card]:
    """The cards; `activity` is recent_activity() of the table's backend."""
    workers = [row for row in processes if row.kind == "worker"]
    live = sum(row.is_live for row in workers)
    latencies = [seconds for seconds in _column(table.rows, "latency_seconds") if seconds is not None]
    tasks_url = reverse("celery_panel:tasks")
    queues = SORT_PARAMS["queues"]
    return [
        Card(
            "workers",
            "Workers live / stale",
            f"{live} / {len(workers) - live}",
            _anchor_url(request, "processes"),
            f"stale: no heartbeat for {STALE_AFTER_SECONDS:g} s",
        ),
        Card(
            "ready",
            "Ready",
            _sum(_column(table.rows, "ready_count")),
            _anchor_url(request, "queues", queues, "-2"),
        ),
        Card(
            "running",
            "Running",
            status.active_tasks if status.broker_status else None,
            f"{tasks_url}?filter=started",
            "active on the answering workers",
        ),
        Card(
            "scheduled",
            "Scheduled",
            _sum(_column(table.rows, "scheduled_count")),
            _anchor_url(request, "queues", queues, "-4"),
        ),
        Card(
            "failed",
            "Failed (1 h)",
            None if activity is None else activity.get("FAILURE", 0),
            f"{tasks_url}?filter=failure",
            "stored results of this backend",
        ),
        Card(
            "finished",
            "Finished (1 h)",
            None if activity is None else activity.get("SUCCESS", 0),
            f"{tasks_url}?filter=success",
            "stored results of this backend",
        ),
        Card(
            "latency",
            "Worst latency",
            f"{max(latencies):.1f} s" if latencies else None,
            _anchor_url(request, "queues", queues, "-9"),
            "oldest ready message" + (" of the queues shown" if page and page.paginated else ""),
        ),
    ]


def backend_facts(broker: Broker, table: QueueTable, status: CeleryStatus) -> list[Fact]:
    return [
        Fact("Broker", mask_url(broker.broker_url)),
        Fact("Result backend", mask_url(settings.CELERY_RESULT_BACKEND or "") or "-"),
        Fact("Default queue", default_queue()),
        Fact("Queues", str(len(table.rows))),
        Fact("Workers answering", str(status.workers) if status.broker_status else "-"),
    ]


@dataclass(frozen=True)
class DetectionsPart:
    """The dashboard's detections section: what was found, or why it could not be read."""

    found: Detections | None
    error: str = ""


def _detections(broker: Broker, status: CeleryStatus) -> DetectionsPart:
    try:
        return DetectionsPart(detect(broker.alias, status.worker_replies, status.read_at))
    except DatabaseError as exc:
        return DetectionsPart(None, redact(f"{type(exc).__name__}: {exc}"))


def dashboard(request: HttpRequest) -> HttpResponse:
    try:
        broker = get_broker(request.GET.get("backend"))
        _page_number(request)
    except UnknownBroker as exc:
        return HttpResponseBadRequest(f"backend: {exc}", content_type="text/plain")
    except BadPage as exc:
        return HttpResponseBadRequest(str(exc), content_type="text/plain")
    budget = broker_budget()
    # The depth read first: Redis counts the queues (tens of milliseconds for 10,000) while
    # everything that does not need the counts is read.
    pending = start_queue_table(broker, budget=budget)
    status_read = budget.start(partial(get_status, broker=broker), "status")
    # Slots kept in this project's database are read in this thread, like every other row.
    held = budget.start(partial(held_slots, broker), "semaphores") if slots_on_broker(broker) else None
    activity = recent_activity(broker.alias)
    recurring = recurring_tasks()
    monitor = monitor_state(broker.alias)
    admin_context = admin.site.each_context(request)
    controls = user_controls(request)
    early = status_within(budget, status_read, broker)  # the same read (or miss) as the table's below
    processes = list_processes(broker.alias, pool_pids(early))
    detections = _detections(broker, early)
    semaphores = _semaphores(request, broker, budget, held or done(held_slots(broker)))
    table, queues, page = _queues_page(request, broker, pending.table(status_read), budget)
    status = table.status
    context = {
        **admin_context,
        "is_nav_sidebar_enabled": False,  # the queues table needs the page's whole width
        "title": "Celery dashboard",
        "backend_name": "Dashboard",
        "data_source": "the queues table (broker read now, workers from the cached status), heartbeats, "
        "the beat schedule and django-celery-beat, concurrency limits, django-celery-results",
        "backend": broker,
        "backends": list(configured_brokers()),
        "backend_facts": backend_facts(broker, table, status),
        "summary_cards": summary_cards(request, table, status, processes, activity, page),
        "unavailable": _unavailable(status, table, semaphores),
        "results_error": table.results_error,
        "queues": queues,
        "queues_page": page,
        "shared_queues": _sorted(request, "shared", table.shared_rows, SHARED_QUEUE_COLUMNS),
        "processes": _sorted(request, "processes", processes, PROCESS_COLUMNS),
        "monitor": monitor,
        "detections": detections,
        "recurring": _sorted(request, "recurring", recurring, RECURRING_COLUMNS),
        "semaphores": semaphores,
        "controls": controls,
        "read_only": not controls_enabled(),
    }
    return render(request, "celery_panel/dashboard.html", context)
