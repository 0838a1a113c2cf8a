"""Alerts computed from the live status and the recorded history."""

from collections.abc import Sequence
from datetime import timedelta
from itertools import pairwise

from django.conf import settings
from django.utils import timezone

from dojo.models import CeleryStatusSnapshot
from dojo.ops.fleet.detections import Detections
from dojo.ops.fleet.status import Alert, CeleryStatus
from dojo.ops.fleet.worker_reply import task_count

GROWTH_WINDOW = timedelta(minutes=10)
# At least this many points, spread over most of the window, before calling growth steady.
GROWTH_MIN_POINTS = 4
GROWTH_MIN_SPAN = timedelta(minutes=8)
DATABASE_UNAVAILABLE = Alert(
    "database_unavailable",
    "warning",
    "The database did not answer: alerts from the recorded history (queue_growing) are left out "
    "and the answering workers were not recorded as seen.",
)
DETECTIONS_UNAVAILABLE = Alert(
    "detections_unavailable",
    "warning",
    "The database did not answer the detections' queries: lost tasks, late periodic tasks, long runners and "
    "failure rates are left out.",
)


def compute_alerts(status: CeleryStatus, history: Sequence[CeleryStatusSnapshot] | None) -> list[Alert]:
    """Alerts for `status`; `history` is the recorded snapshots of the last GROWTH_WINDOW, oldest
    first, or None when the database did not answer: then the alerts that need it are left out."""
    alerts = [] if history is not None else [DATABASE_UNAVAILABLE]
    if not status.broker_status:
        return [Alert("broker_unreachable", "critical", f"The Celery broker is unreachable: {status.error}"), *alerts]
    min_workers = settings.CELERY_MIN_WORKERS
    if status.workers == 0:
        alerts.append(Alert("no_workers", "critical", "No Celery worker answered."))
    elif status.workers < min_workers:
        alerts.append(
            Alert("too_few_workers", "warning", f"{status.workers} worker(s) answered; at least {min_workers} wanted.")
        )
    limit = settings.CELERY_QUEUE_ALERT_LENGTH
    for name, queue in status.queues.items():
        if limit and queue.ready is not None and queue.ready > limit:
            alerts.append(
                Alert("queue_too_long", "warning", f"Queue {name!r} holds {queue.ready} messages (limit {limit}).")
            )
        if history and _growing_steadily([*(s.queue_lengths.get(name) for s in history), queue.ready], history):
            alerts.append(
                Alert("queue_growing", "warning", f"Queue {name!r} has grown steadily over the last 10 minutes.")
            )
    for name, stats in status.worker_stats.items():
        concurrency = (stats.get("pool") or {}).get("max-concurrency")
        active = task_count(status.worker_replies[name], "active") or 0  # exact, the list may be capped
        if concurrency and active >= concurrency:
            alerts.append(
                Alert("worker_saturated", "warning", f"Worker {name} runs {active} of {concurrency} tasks at once.")
            )
    return alerts


def _growing_steadily(lengths: list[int | None], history: Sequence[CeleryStatusSnapshot]) -> bool:
    """Never shrank and ended higher, over enough points spanning most of the window."""
    if len(history) + 1 < GROWTH_MIN_POINTS or None in lengths:
        return False
    if timezone.now() - history[0].created_at < GROWTH_MIN_SPAN:
        return False
    never_shrank = all(later >= earlier for earlier, later in pairwise(lengths))
    return never_shrank and lengths[-1] > lengths[0]


def recent_history(backend: str = "default") -> list[CeleryStatusSnapshot]:
    since = timezone.now() - GROWTH_WINDOW
    rows = CeleryStatusSnapshot.objects.filter(backend=backend, created_at__gte=since)
    return list(rows.order_by("created_at"))


def _names(items: Sequence[str], total: int) -> str:
    """Up to three names, and how many more: an alert stays one short line however many items."""
    shown = ", ".join(items[:3])
    return shown + (f" and {total - 3} more" if total > 3 else "")


def detection_alerts(found: Detections) -> list[Alert]:
    """One alert per detection that found something (dojo.ops.fleet.detections): lost_tasks,
    beat_down, periodic_task_late, task_running_long, failure_rate_up."""
    alerts = []
    if found.lost_total:
        lost = [f"{item.task_name} on {item.worker}" for item in found.lost_tasks]
        alerts.append(
            Alert(
                "lost_tasks",
                "critical",
                f"{found.lost_total} task(s) started on a worker that went away and never finished (last 24 h, "
                f"not retried): {_names(lost, found.lost_total)}.",
            )
        )
    if found.beat_down:
        alerts.append(
            Alert(
                "beat_down",
                "critical",
                "Celery beat wrote no heartbeat in the last 30 s, and periodic tasks are enabled.",
            )
        )
    if found.late_total:
        names = [f"{item.name} ({item.late_seconds:.0f} s past its grace)" for item in found.late_entries]
        alerts.append(
            Alert(
                "periodic_task_late",
                "warning",
                f"{found.late_total} periodic task(s) did not run when due: {_names(names, found.late_total)}.",
            )
        )
    if found.long_runners:
        names = [
            f"{item.task_name} on {item.worker} for {item.running_seconds:.0f} s (p95 {item.p95_seconds:.1f} s)"
            for item in found.long_runners
        ]
        alerts.append(
            Alert(
                "task_running_long",
                "warning",
                f"{len(names)} task(s) running more than {settings.ANALYTICS_SLOW_FACTOR:g}x their usual p95: "
                f"{_names(names, len(names))}.",
            )
        )
    if found.failure_rates:
        names = [
            f"{item.task_name} {item.percent:.0f}% of {item.runs} (usually {item.baseline_percent:.0f}%)"
            for item in found.failure_rates
        ]
        alerts.append(
            Alert(
                "failure_rate_up",
                "warning",
                f"Failure rate over the last 15 minutes above {settings.ANALYTICS_FAILURE_RATE_PERCENT:g}% and above "
                f"the usual: {_names(names, len(names))}.",
            )
        )
    return alerts
