"""The status document from Django's cache, read from the broker at most once per period.

Concurrent requests share one read (single flight): within a process a lock, across
processes an add-only cache key, so with a shared cache (DD_CACHE_URL) the whole web
tier sends one broadcast per DD_CELERY_STATUS_CACHE_SECONDS.
"""

import dataclasses
import threading
import time

from django.conf import settings
from django.core.cache import cache

from dojo.ops.brokers.connection import BrokerUnavailable, broker_timeout
from dojo.ops.brokers.registry import DEFAULT_ALIAS, Broker, get_broker
from dojo.ops.fleet.alerts import compute_alerts, recent_history
from dojo.ops.fleet.seen_workers import record_seen
from dojo.ops.fleet.status import CeleryStatus, read_status
from dojo.ops.redaction import mask_url

CACHE_KEY = "dojo.ops.fleet.status"
_read_lock = threading.Lock()


def get_status(refresh: bool = False, broker: Broker | None = None) -> CeleryStatus:
    """The cached status of `broker` (the main one if None), or a fresh one when the
    cache is empty or `refresh` is set.

    A refresh accepts a read that started after it was asked for, so concurrent
    refreshes share one read too.
    """
    broker = broker or get_broker()
    if settings.CELERY_STATUS_CACHE_SECONDS <= 0:
        return _read_with_alerts(broker)
    key = _cache_key(broker)
    not_before = time.time() if refresh else 0.0
    with _read_lock:
        cached = cache.get(key)
        if cached is not None and cached.read_at >= not_before:
            return cached
        return _read_once_across_processes(key, not_before, broker)


def _read_once_across_processes(key: str, not_before: float, broker: Broker) -> CeleryStatus:
    lock_key = f"{key}:reading"
    give_up_at = time.monotonic() + broker_timeout() + 0.5
    while not cache.add(lock_key, True, timeout=int(broker_timeout()) + 2):
        if time.monotonic() > give_up_at:
            break  # the other reader is stuck or gone: read anyway
        time.sleep(0.02)
        cached = cache.get(key)
        if cached is not None and cached.read_at >= not_before:
            return cached
    try:
        status = _read_with_alerts(broker)
        cache.set(key, status, settings.CELERY_STATUS_CACHE_SECONDS)
        return status
    finally:
        cache.delete(lock_key)


def _read_with_alerts(broker: Broker) -> CeleryStatus:
    status = read_status(broker)
    if broker.alias == DEFAULT_ALIAS:  # the panel's worker list is the main backend's
        record_seen(status)
    return dataclasses.replace(status, alerts=compute_alerts(status, recent_history(broker.alias)))


def forget_status(broker: Broker | None = None) -> None:
    """Drop the cached status (after an action that changed it, such as a purge)."""
    cache.delete(_cache_key(broker or get_broker()))


def _cache_key(broker: Broker) -> str:
    return f"{CACHE_KEY}:{mask_url(broker.broker_url)}"


def live_workers(broker: Broker) -> dict[str, dict]:
    """Each live worker's dojo_status reply (active tasks, active_queues, ...), read now: the
    controls send their command to these and wait for as many replies.

    Raises BrokerUnavailable when the broker does not answer.
    """
    status = get_status(refresh=True, broker=broker)
    if not status.connected:
        raise BrokerUnavailable(status.error or "the broker did not answer")
    return status.worker_replies
