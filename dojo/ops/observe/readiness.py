"""The readiness rule, in one place: the broker answers and enough workers are alive.

Used by the readiness probe (dojo/api_v2/health.py) and `manage.py celery_status`.
"""

from dataclasses import dataclass, field

from django.conf import settings

from dojo.ops.fleet.status import CeleryStatus, StatusSummary

NOT_ENABLED = "Celery is not enabled"


@dataclass(frozen=True)
class Readiness:
    ready: bool
    reasons: list[str] = field(default_factory=list)  # why not ready; empty when ready
    workers: int = 0
    min_workers: int = 1
    broker_status: bool = False


def readiness(status: CeleryStatus | StatusSummary | None, min_workers: int | None = None) -> Readiness:
    """Whether `status` is ready: the broker answered and at least `min_workers` workers
    (default settings.CELERY_MIN_WORKERS) did. `status` is None when Celery is not enabled; the
    probe passes the cached summary (status_cache.get_summary), which has the document's counts.
    """
    min_workers = settings.CELERY_MIN_WORKERS if min_workers is None else min_workers
    if status is None or not status.enabled:
        return Readiness(ready=False, reasons=[NOT_ENABLED], workers=0, min_workers=min_workers)
    reasons = []
    if not status.broker_status:
        reasons.append("broker unreachable")
    elif status.workers < min_workers:
        reasons.append(f"{status.workers} worker(s) alive, {min_workers} required")
    return Readiness(
        ready=not reasons,
        reasons=reasons,
        workers=status.workers,
        min_workers=min_workers,
        broker_status=status.broker_status,
    )
