"""The one place that talks to the Celery broker and workers.

Everything here takes and returns plain values and typed objects, reads Django
settings when called (never at import) and bounds every broker call by
``settings.CELERY_BROKER_TIMEOUT``.
"""

from dojo.celery_ops.cache import forget_status, get_status
from dojo.celery_ops.connection import BrokerUnavailable, broker_connection, mask_url
from dojo.celery_ops.queues import PurgeResult, UnknownQueue, configured_queues, purge_queue
from dojo.celery_ops.status import Alert, CeleryStatus, QueueState, read_status

__all__ = [
    "Alert",
    "BrokerUnavailable",
    "CeleryStatus",
    "PurgeResult",
    "QueueState",
    "UnknownQueue",
    "broker_connection",
    "configured_queues",
    "forget_status",
    "get_status",
    "mask_url",
    "purge_queue",
    "read_status",
]
