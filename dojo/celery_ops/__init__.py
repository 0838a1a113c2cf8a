"""The one place that talks to the Celery broker and workers.

Everything here takes and returns plain values and typed objects, reads Django
settings when called (never at import) and bounds every broker call by
``settings.CELERY_BROKER_TIMEOUT``.
"""

from dojo.celery_ops.connection import BrokerUnavailable, broker_connection, mask_url
from dojo.celery_ops.queues import PurgeResult, UnknownQueue, configured_queues, purge_queue
from dojo.celery_ops.status import CeleryStatus, get_status

__all__ = [
    "BrokerUnavailable",
    "CeleryStatus",
    "PurgeResult",
    "UnknownQueue",
    "broker_connection",
    "configured_queues",
    "get_status",
    "mask_url",
    "purge_queue",
]
