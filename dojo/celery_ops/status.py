"""The Celery status document: workers, broker, default queue depth and task limits."""

import time
from dataclasses import dataclass, field

from django.conf import settings

from dojo.celery_ops.connection import BrokerUnavailable, broker_connection, broker_timeout, mask_url
from dojo.celery_ops.queues import default_queue, queue_depth
from dojo.celery_ops.workers import ping_workers


@dataclass(frozen=True)
class CeleryStatus:
    broker_status: bool
    queue: str
    queue_length: int | None
    worker_names: list[str] = field(default_factory=list)
    error: str | None = None
    enabled: bool = True

    @property
    def connected(self) -> bool:
        return self.broker_status

    @property
    def workers(self) -> int:
        return len(self.worker_names)

    @property
    def worker_status(self) -> bool:
        return self.workers > 0

    @property
    def broker_url(self) -> str:
        return mask_url(settings.CELERY_BROKER_URL)

    @property
    def task_time_limit(self) -> int | None:
        return settings.CELERY_TASK_TIME_LIMIT or None

    @property
    def task_soft_time_limit(self) -> int | None:
        return settings.CELERY_TASK_SOFT_TIME_LIMIT or None

    @property
    def task_default_expires(self) -> int | None:
        return settings.CELERY_TASK_DEFAULT_EXPIRES or None


def get_status() -> CeleryStatus:
    """Read the status from the broker and the workers within the broker time bound.

    The depth read comes first: it is cheap and proves the broker answers. The ping
    gets what is left of the time bound.
    """
    deadline = time.monotonic() + broker_timeout()
    queue = default_queue()
    try:
        with broker_connection() as conn:
            queue_length = queue_depth(conn, queue)
            worker_names = ping_workers(conn, timeout=deadline - time.monotonic())
    except BrokerUnavailable as exc:
        return CeleryStatus(broker_status=False, queue=queue, queue_length=None, error=str(exc))
    return CeleryStatus(broker_status=True, queue=queue, queue_length=queue_length, worker_names=worker_names)
