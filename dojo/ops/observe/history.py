"""The recorded status history: one snapshot a minute, kept DD_CELERY_HISTORY_DAYS days."""

from datetime import datetime, timedelta

from django.conf import settings
from django.utils import timezone

from dojo.models import CeleryStatusSnapshot, TaskRevocation
from dojo.ops.brokers.registry import configured_brokers
from dojo.ops.fleet.processes import prune_processes
from dojo.ops.fleet.seen_workers import prune_seen
from dojo.ops.fleet.status import CeleryStatus
from dojo.ops.fleet.status_cache import get_status


def record_snapshot() -> list[CeleryStatusSnapshot]:
    """Store the current status of every backend; prune snapshots past the kept days and
    revocations past the revocation window."""
    snapshots = []
    for broker in configured_brokers().values():
        status = get_status(broker=broker)
        if None in (status.active_tasks, status.reserved_tasks, status.scheduled_tasks):
            continue  # a worker did not give its task lists in time: a gap, not a wrong count
        snapshots.append(_snapshot(status))
    cutoff = timezone.now() - timedelta(days=settings.CELERY_HISTORY_DAYS)
    CeleryStatusSnapshot.objects.filter(created_at__lt=cutoff).delete()
    prune_seen()
    prune_processes()
    prune_revocations()
    return snapshots


def prune_revocations() -> int:
    """Delete the revocations older than DD_CELERY_REVOKE_WINDOW, the window in which
    dojo.ops.controls.revocations counts them (that room is above this one); how many."""
    cutoff = timezone.now() - timedelta(seconds=max(1, settings.CELERY_REVOKE_WINDOW))
    deleted, _by_model = TaskRevocation.objects.filter(revoked_at__lt=cutoff).delete()
    return deleted


def _snapshot(status: CeleryStatus) -> CeleryStatusSnapshot:
    return CeleryStatusSnapshot.objects.create(
        backend=status.backend,
        broker_status=status.broker_status,
        workers=status.workers,
        active_tasks=status.active_tasks,
        reserved_tasks=status.reserved_tasks,
        scheduled_tasks=status.scheduled_tasks,
        queue_lengths={name: queue.ready for name, queue in status.queues.items()},
        active_by_worker={name: len(tasks) for name, tasks in status.queue_details["active"].items()},
    )


def snapshots_since(since: datetime, backend: str = "default") -> list[CeleryStatusSnapshot]:
    rows = CeleryStatusSnapshot.objects.filter(backend=backend, created_at__gte=since)
    return list(rows.order_by("created_at"))
