"""Which workers were seen and when: a worker that stops answering shows as offline, then is forgotten.

Every uncached status read records the workers that answered (cache._read_with_alerts);
rows not seen for DD_CELERY_WORKER_OFFLINE_HOURS are deleted by the snapshot task.
"""

from datetime import UTC, datetime, timedelta

from django.conf import settings

from dojo.models import CeleryWorkerSeen
from dojo.ops.fleet.clock import database_now
from dojo.ops.fleet.status import CeleryStatus


def record_seen(status: CeleryStatus) -> None:
    """Mark every worker that answered `status` as seen at the time of the read."""
    names = status.worker_names
    if not status.broker_status or not names:
        return
    seen_at = datetime.fromtimestamp(status.read_at, tz=UTC)
    known = set(CeleryWorkerSeen.objects.filter(name__in=names).values_list("name", flat=True))
    CeleryWorkerSeen.objects.filter(name__in=known, last_seen__lt=seen_at).update(last_seen=seen_at)
    CeleryWorkerSeen.objects.bulk_create(
        [CeleryWorkerSeen(name=name, first_seen=seen_at, last_seen=seen_at) for name in names if name not in known],
        ignore_conflicts=True,  # another process recorded it meanwhile
    )


def _cutoff() -> datetime:
    return database_now() - timedelta(hours=settings.CELERY_WORKER_OFFLINE_HOURS)  # the database's clock


def seen_workers() -> dict[str, CeleryWorkerSeen]:
    """Workers seen within DD_CELERY_WORKER_OFFLINE_HOURS, by name."""
    return {row.name: row for row in CeleryWorkerSeen.objects.filter(last_seen__gte=_cutoff())}


def prune_seen() -> int:
    """Forget workers not seen for DD_CELERY_WORKER_OFFLINE_HOURS; how many were deleted."""
    deleted, _ = CeleryWorkerSeen.objects.filter(last_seen__lt=_cutoff()).delete()
    return deleted
