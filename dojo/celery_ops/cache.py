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

from dojo.celery_ops.alerts import compute_alerts, recent_history
from dojo.celery_ops.backends import DEFAULT_ALIAS, CeleryBackend, get_backend
from dojo.celery_ops.connection import broker_timeout, mask_url
from dojo.celery_ops.registry import record_seen
from dojo.celery_ops.status import CeleryStatus, read_status

CACHE_KEY = "dojo.celery_ops.status"
_read_lock = threading.Lock()


def get_status(refresh: bool = False, backend: CeleryBackend | None = None) -> CeleryStatus:
    """The cached status of `backend` (the main one if None), or a fresh one when the
    cache is empty or `refresh` is set.

    A refresh accepts a read that started after it was asked for, so concurrent
    refreshes share one read too.
    """
    backend = backend or get_backend()
    if settings.CELERY_STATUS_CACHE_SECONDS <= 0:
        return _read_with_alerts(backend)
    key = _cache_key(backend)
    not_before = time.time() if refresh else 0.0
    with _read_lock:
        cached = cache.get(key)
        if cached is not None and cached.read_at >= not_before:
            return cached
        return _read_once_across_processes(key, not_before, backend)


def _read_once_across_processes(key: str, not_before: float, backend: CeleryBackend) -> CeleryStatus:
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
        status = _read_with_alerts(backend)
        cache.set(key, status, settings.CELERY_STATUS_CACHE_SECONDS)
        return status
    finally:
        cache.delete(lock_key)


def _read_with_alerts(backend: CeleryBackend) -> CeleryStatus:
    status = read_status(backend)
    if backend.alias == DEFAULT_ALIAS:  # the panel's worker list is the main backend's
        record_seen(status)
    return dataclasses.replace(status, alerts=compute_alerts(status, recent_history(backend.alias)))


def forget_status(backend: CeleryBackend | None = None) -> None:
    """Drop the cached status (after an action that changed it, such as a purge)."""
    cache.delete(_cache_key(backend or get_backend()))


def _cache_key(backend: CeleryBackend) -> str:
    return f"{CACHE_KEY}:{mask_url(backend.broker_url)}"
