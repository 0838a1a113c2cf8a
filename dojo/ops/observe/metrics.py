"""Prometheus metrics for the Celery fleet, built on each scrape from the cached status.

A collector of its own instead of global gauges: nothing is kept between scrapes, and a
scrape reads the status through the cache, so however often Prometheus comes the
broker sees at most one broadcast per DD_CELERY_STATUS_CACHE_SECONDS. Labels are
bounded: worker, queue and task names and task states, never a task id or argument.

The families are gauges written in the Prometheus text format (0.0.4) here rather than by
prometheus_client's registry: with 10,000 queues its per-sample objects, checks and formatting
were most of a scrape; the escaping and value forms are the format's own.

The stored-results family counts the results done in the last RESULTS_WINDOW (a range on
django-celery-results' date_done index, so a scrape never reads the whole table) and is kept
RESULTS_CACHE_SECONDS in Django's cache, about one scrape interval: scrapers of several
processes and replicas share one count.
"""

import logging
import math
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.db import DatabaseError
from django.db.models.functions import Now

from dojo.models import TASK_COUNT_FIELDS, MonitorHeartbeat, TaskRollup
from dojo.ops import histograms
from dojo.ops.brokers.registry import Broker, get_broker
from dojo.ops.fleet.detections import Detections, detect
from dojo.ops.fleet.processes import MONITOR_STALE_AFTER_SECONDS
from dojo.ops.fleet.status import CeleryStatus, StatusSummary
from dojo.ops.fleet.status_cache import cached_status, get_summary
from dojo.ops.read_models.stored_results import count_results, results_stored
from dojo.ops.redaction import redact

logger = logging.getLogger(__name__)

PREFIX = "dojo_celery_"
RESULTS_WINDOW = timedelta(hours=1)
RESULTS_CACHE_SECONDS = 15  # Prometheus's usual scrape interval
RESULTS_CACHE_KEY = "dojo.ops.observe.metrics.task_results"


@dataclass
class Gauge:
    """One gauge family: its samples are (label values, value)."""

    name: str
    documentation: str
    labels: list[str]
    samples: list[tuple[tuple[str, ...], float]] = field(default_factory=list)
    type: str = "gauge"

    def add_metric(self, values: list[str], value: float) -> None:
        self.samples.append((tuple(values), value))

    def text(self) -> str:
        lines = [f"# HELP {self.name} {_escape_help(self.documentation)}", f"# TYPE {self.name} gauge"]
        if not self.labels:
            lines += [f"{self.name} {_value(value)}" for _, value in self.samples]
        else:
            names = [f'{label}="' for label in self.labels]
            for values, value in self.samples:
                pairs = ",".join(name + _escape_label(v) + '"' for name, v in zip(names, values, strict=True))
                lines.append(f"{self.name}{{{pairs}}} {_value(value)}")
        return "\n".join(lines) + "\n"


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _escape_label(text: str) -> str:
    if "\\" in text or '"' in text or "\n" in text:
        return text.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
    return text


def _value(value: float) -> str:
    """Go's float forms, as Prometheus writes them: 1.0, +Inf, -Inf, NaN."""
    number = float(value)
    if math.isfinite(number):
        return repr(number)
    return "NaN" if math.isnan(number) else ("+Inf" if number > 0 else "-Inf")


def _gauge(name: str, documentation: str, value: float | None = None, labels: list[str] | None = None) -> Gauge:
    family = Gauge(PREFIX + name, documentation, labels or [])
    if value is not None:
        family.add_metric([], value)
    return family


class CeleryCollector:
    """Metric families from get_summary() of one backend and, with django-celery-results, the stored results."""

    def __init__(self, broker: Broker | None = None) -> None:
        self.broker = broker

    def collect(self) -> Iterator[Gauge]:
        enabled = bool(settings.CELERY_ENABLED)
        yield _gauge("enabled", "1 when the Celery integration is on (DD_CELERY_ENABLED), else 0.", int(enabled))
        if not enabled:
            return
        yield from status_metrics(get_summary(broker=self.broker))
        if results_stored():
            yield task_results_metric()
        yield from analytics_metrics(self.broker)


def status_metrics(status: CeleryStatus | StatusSummary) -> Iterator[Gauge]:
    """The families read from one status document's summary (workers that answered, queues, task
    totals): its counts only, never the task lists."""
    if isinstance(status, CeleryStatus):
        status = status.summary()
    yield _gauge("broker_connected", "1 when the broker answered within the time bound, else 0.", int(status.connected))
    yield _gauge("workers_up", "Workers that answered the status broadcast.", status.workers)

    up = _gauge("worker_up", "1 for each worker that answered the status broadcast.", labels=["worker"])
    active = _gauge("worker_active_tasks", "Tasks running on the worker.", labels=["worker"])
    concurrency = _gauge(
        "worker_concurrency", "Tasks the worker's pool can run at once (max-concurrency).", labels=["worker"]
    )
    for worker, counts in sorted(status.worker_counts.items()):
        up.add_metric([worker], 1)
        active.add_metric([worker], counts.active or 0)
        if counts.concurrency is not None:
            concurrency.add_metric([worker], counts.concurrency)
    yield from (up, active, concurrency)

    ready = _gauge(
        "queue_ready_messages",
        "Ready messages in the queue, priority sub-queues included; prefetched messages are not counted.",
        labels=["queue"],
    )
    consumers = _gauge(
        "queue_consumers",
        "Consumers of the queue: the broker's count (AMQP), elsewhere the answering workers consuming it.",
        labels=["queue"],
    )
    for queue, state in sorted(status.queues.items()):
        if state.ready is not None:
            ready.add_metric([queue], state.ready)
        if state.consumers is not None:
            consumers.add_metric([queue], state.consumers)
    yield from (ready, consumers)

    yield _gauge("active_tasks", "Tasks running on the answering workers.", status.active_tasks)
    yield _gauge("reserved_tasks", "Tasks prefetched by the answering workers and not started.", status.reserved_tasks)
    yield _gauge("scheduled_tasks", "ETA/countdown tasks held by the answering workers.", status.scheduled_tasks)
    yield _gauge(
        "status_read_timestamp_seconds",
        "When the status behind these metrics was read from the broker (Unix time; it may come from the cache).",
        status.read_at,
    )


def task_results_metric() -> Gauge:
    """Stored django-celery-results rows done in the last RESULTS_WINDOW by state and task name:
    one GROUP BY query over an index range, at most once per RESULTS_CACHE_SECONDS."""
    family = _gauge(
        "task_results",
        "Task results stored by django-celery-results and done in the last hour, by state and task name "
        "(a count of kept rows over a sliding window, not a running total; counted at most 15 s ago).",
        labels=["state", "task"],
    )
    counts = recent_result_counts()
    for (task_name, state), n in sorted(counts.items()):
        family.add_metric([state, task_name], n)
    return family


def recent_result_counts() -> Counter:
    """count_results() by task name and state over RESULTS_WINDOW, through the cache. A query
    that fails raises (DatabaseError) and is not kept."""
    counts = cache.get(RESULTS_CACHE_KEY)
    if counts is None:
        counts = count_results(("task_name", "status"), RESULTS_WINDOW)
        cache.set(RESULTS_CACHE_KEY, counts, RESULTS_CACHE_SECONDS)
    return counts


def exposition(broker: Broker | None = None) -> bytes:
    """The metrics of `broker` (the main one if None) in the Prometheus text format."""
    return "".join(family.text() for family in CeleryCollector(broker).collect()).encode()


# Task analytics: the totals tier of TaskRollup (period 0, which only grows) as Prometheus
# counters and histograms, the detections as gauges, the event monitor's own health. Each family is
# one query, kept ANALYTICS_CACHE_SECONDS (one scrape interval) in Django's cache like the results counts.
ANALYTICS_CACHE_SECONDS = RESULTS_CACHE_SECONDS
ANALYTICS_CACHE_KEY = "dojo.ops.observe.metrics.analytics"
TASK_STATES = TASK_COUNT_FIELDS  # the states of celery_tasks_total


@dataclass
class Family:
    """A counter or histogram family: samples are (metric name suffix, label pairs, value)."""

    name: str
    documentation: str
    type: str  # "counter" or "histogram"
    samples: list[tuple[str, tuple[tuple[str, str], ...], float]] = field(default_factory=list)

    def text(self) -> str:
        lines = [f"# HELP {self.name} {_escape_help(self.documentation)}", f"# TYPE {self.name} {self.type}"]
        for suffix, labels, value in self.samples:
            pairs = ",".join(f'{label}="{_escape_label(text)}"' for label, text in labels)
            lines.append(
                f"{self.name}{suffix}{{{pairs}}} {_value(value)}" if pairs else f"{self.name}{suffix} {_value(value)}"
            )
        return "\n".join(lines) + "\n"


def _cached(key: str, read: Callable[[], Any]) -> Any:
    """`read()` through Django's cache for ANALYTICS_CACHE_SECONDS; a failure raises and is not kept."""
    value = cache.get(key)
    if value is None:
        value = read()
        cache.set(key, value, ANALYTICS_CACHE_SECONDS)
    return value


def _total_rows(backend: str) -> list[dict]:
    """The totals tier of `backend`, summed over workers unless DD_ANALYTICS_METRICS_BY_WORKER:
    one query."""
    by_worker = settings.ANALYTICS_METRICS_BY_WORKER
    fields = [
        "task_name",
        "queue",
        "worker",
        "runtime_sum",
        "runtime_buckets",
        "wait_sum",
        "wait_buckets",
        *TASK_STATES,
    ]
    rows = TaskRollup.objects.filter(period=TaskRollup.Period.TOTAL, backend=backend).values_list(*fields)
    merged: dict[tuple[str, ...], dict] = {}
    for row in rows.iterator(chunk_size=2000):
        values = dict(zip(fields, row, strict=True))
        key = (values["task_name"], values["queue"]) + ((values["worker"],) if by_worker else ())
        total = merged.setdefault(
            key,
            {"runtime_sum": 0.0, "wait_sum": 0.0, "runtime": histograms.empty(), "wait": histograms.empty()}
            | dict.fromkeys(TASK_STATES, 0),
        )
        total["runtime_sum"] += values["runtime_sum"]
        total["wait_sum"] += values["wait_sum"]
        histograms.add(total["runtime"], values["runtime_buckets"] or [])
        histograms.add(total["wait"], values["wait_buckets"] or [])
        for state in TASK_STATES:
            total[state] += values[state]
    return [{"key": key, **total} for key, total in sorted(merged.items())]


@dataclass(frozen=True)
class Rendered:
    """Families already in the text format (kept in the cache as text: rendering is most of the cost)."""

    name: str
    body: str

    def text(self) -> str:
        return self.body


def task_rollup_metrics(backend: str) -> list[Rendered]:
    """celery_tasks_total{state}, celery_task_runtime_seconds and celery_task_wait_seconds by task
    name and queue (and worker with DD_ANALYTICS_METRICS_BY_WORKER), from the totals tier: one
    query, rendered once per ANALYTICS_CACHE_SECONDS."""
    by_worker = settings.ANALYTICS_METRICS_BY_WORKER
    key = f"{ANALYTICS_CACHE_KEY}:totals:{backend}:{by_worker}"
    return [Rendered("celery_tasks", _cached(key, lambda: _render_totals(backend, by_worker)))]


def _render_totals(backend: str, by_worker: bool) -> str:
    names = ["task", "queue", "worker"] if by_worker else ["task", "queue"]
    counter = Family(
        "celery_tasks_total",
        "Task events counted by the event monitor since it first ran, by outcome (state), task name and queue.",
        "counter",
    )
    runtime = Family(
        "celery_task_runtime_seconds", "Task runtimes (started to succeeded or failed), in seconds.", "histogram"
    )
    wait = Family("celery_task_wait_seconds", "Task waits from received to started, in seconds.", "histogram")
    parts = {family.name: [family.text()] for family in (counter, runtime, wait)}  # HELP and TYPE
    bounds = [*(repr(bound) for bound in histograms.BOUNDS), "+Inf"]
    for row in _total_rows(backend):
        labels = f'backend="{_escape_label(backend)}",' + ",".join(
            f'{name}="{_escape_label(value)}"' for name, value in zip(names, row["key"], strict=True)
        )
        parts[counter.name] += [
            f'celery_tasks_total{{{labels},state="{state}"}} {_value(row[state])}\n' for state in TASK_STATES
        ]
        for name, counts, total in (
            (runtime.name, row["runtime"], row["runtime_sum"]),
            (wait.name, row["wait"], row["wait_sum"]),
        ):
            cumulative = histograms.cumulative(counts)
            lines = parts[name]
            lines += [f'{name}_bucket{{{labels},le="{le}"}} {n}.0\n' for le, n in zip(bounds, cumulative, strict=True)]
            lines.append(f"{name}_sum{{{labels}}} {_value(total)}\n{name}_count{{{labels}}} {cumulative[-1]}.0\n")
    return "".join("".join(lines) for lines in parts.values())


def detection_metrics(broker: Broker) -> list[Gauge]:
    """The detections (dojo.ops.fleet.detections) as gauges: the long runners from the cached status
    document's active tasks (none when no document is cached: a scrape never reads the broker for them)."""

    def read() -> Detections:
        status = cached_status(broker)
        return detect(broker.alias, status.worker_replies if status else None, status.read_at if status else None)

    found = _cached(f"{ANALYTICS_CACHE_KEY}:detections:{broker.alias}", read)
    failing = _gauge(
        "task_failure_rate_up",
        "Failure % over the last 15 minutes of each task name whose rate is above DD_ANALYTICS_FAILURE_RATE_PERCENT "
        "and above its own over the rest of the last 24 h (only those task names).",
        labels=["task"],
    )
    for item in found.failure_rates:
        failing.add_metric([item.task_name], item.percent)
    return [
        _gauge(
            "lost_tasks",
            "Tasks lost on a worker that went away, detected in the last 24 h and not retried.",
            found.lost_total,
        ),
        _gauge("periodic_tasks_late", "Enabled periodic tasks past their due time plus the grace.", found.late_total),
        _gauge(
            "beat_expected",
            "1 when enabled interval or crontab periodic tasks exist, else 0.",
            int(found.beat_expected),
        ),
        _gauge(
            "beat_down",
            "1 when beat is expected and wrote no heartbeat in the last 30 s, else 0.",
            int(found.beat_down),
        ),
        _gauge(
            "tasks_running_long",
            "Active tasks running more than DD_ANALYTICS_SLOW_FACTOR x their own p95 runtime of the last 24 h.",
            len(found.long_runners),
        ),
        _gauge(
            "tasks_failure_rate_up",
            "Task names whose failure rate is up (see task_failure_rate_up).",
            len(found.failure_rates),
        ),
        failing,
    ]


def monitor_metrics(backend: str) -> list[Gauge | Family]:
    """The event monitor's health from its MonitorHeartbeat row (one query, cached)."""

    def read() -> dict:
        row = MonitorHeartbeat.objects.filter(backend=backend).annotate(db_now=Now()).first()
        if row is None:
            return {}
        live = row.stopped_at is None and (row.db_now - row.last_beat_at).total_seconds() <= MONITOR_STALE_AFTER_SECONDS
        return {
            "up": int(live),
            "connected": int(live and row.broker_connected),
            "age": max(0.0, (row.db_now - row.last_beat_at).total_seconds()),
            "events": row.events_seen,
        }

    state = _cached(f"{ANALYTICS_CACHE_KEY}:monitor:{backend}", read)
    families: list[Gauge | Family] = [
        _gauge("monitor_up", "1 while the event monitor (manage.py celery_monitor) beats, else 0.", state.get("up", 0)),
        _gauge(
            "monitor_broker_connected",
            "1 while the live monitor's event receiver is connected.",
            state.get("connected", 0),
        ),
    ]
    if state:
        families.append(
            _gauge(
                "monitor_last_beat_age_seconds",
                "Seconds since the monitor's last heartbeat (database clock).",
                state["age"],
            )
        )
        events = Family(
            PREFIX + "monitor_events_seen_total", "Events the monitor received since it started.", "counter"
        )
        events.samples.append(("", (), state["events"]))
        families.append(events)
    return families


def analytics_metrics(broker: Broker | None) -> Iterator[Gauge | Family | Rendered]:
    """The task analytics families; left out (and logged) when the database does not answer."""
    broker = broker or get_broker()
    try:
        families = [*task_rollup_metrics(broker.alias), *detection_metrics(broker), *monitor_metrics(broker.alias)]
    except DatabaseError as exc:
        logger.warning("/metrics without the task analytics: %s", redact(f"{type(exc).__name__}: {exc}"))
        return
    yield from families
