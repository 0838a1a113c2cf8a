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

import math
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta

from django.conf import settings
from django.core.cache import cache

from dojo.ops.brokers.registry import Broker
from dojo.ops.fleet.status import CeleryStatus, StatusSummary
from dojo.ops.fleet.status_cache import get_summary
from dojo.ops.read_models.stored_results import count_results, results_stored

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
