"""The status document from Django's cache, read from the broker at most once per period.

Single flight, per backend. Concurrent requests share one read in two steps:

1. Within a process, one `threading.Lock` per backend: one thread reads, the others wait for it
   and take its result from memory, so they share it even when the cache is down or a control
   dropped the cached document (every control refreshes, acts, then forgets the status).
2. Across processes (a shared DD_CACHE_URL), one lock key per backend holding its owner's random
   token, taken with `cache.add`. Only the owner deletes it (compare, then delete), and only while
   less than its lifetime has passed, so the key cannot have expired and been taken by another
   process between the compare and the delete; that is what makes Django's cache API (which has
   no atomic compare-and-delete) enough, for every cache backend. The lifetime is the longest a
   bounded read can take (`read_bound`), so the key outlives a slow read, and a reader that dies
   mid-read holds the others up at most that long. Waiters poll for the document, and refreshes
   also for the last read (kept apart from it, since a control drops the document right away).

A refresh accepts only a read that *began* after it was asked (`CeleryStatus.read_at`), so what
it answers is never older than the request; twenty concurrent refreshes cost at most the read in
progress plus one read they all share. A plain read answers from the cache without waiting for
any read in progress.

Faults: a cache that fails or does not answer (DD_CACHE_TIMEOUT) is left alone for the rest of
the read, which goes on uncached within the broker bound; a database that fails leaves the
broker's part of the document intact and marks the history-based alerts and the seen-workers
record unavailable (`CeleryStatus.history_available`, `seen_workers_recorded`, `database_error`).
"""

import dataclasses
import logging
import math
import pickle
import threading
import time
import uuid
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.db import DatabaseError
from redis.exceptions import RedisError

from dojo.ops.brokers.connection import BrokerUnavailable, broker_timeout
from dojo.ops.brokers.registry import DEFAULT_ALIAS, Broker, get_broker
from dojo.ops.fleet.alerts import DETECTIONS_UNAVAILABLE, compute_alerts, detection_alerts, recent_history
from dojo.ops.fleet.detections import detect
from dojo.ops.fleet.seen_workers import record_seen
from dojo.ops.fleet.status import Alert, CeleryStatus, StatusSummary, read_status
from dojo.ops.redaction import mask_url, redact

logger = logging.getLogger(__name__)

CACHE_KEY = "dojo.ops.fleet.status"
# What Django's cache backends raise when their server fails: redis-py's errors (timeouts
# included), socket and file errors, and the database cache's errors.
CACHE_ERRORS = (RedisError, OSError, DatabaseError)
POLL_SECONDS = 0.05  # how often a waiter in another process looks for the shared read


def read_bound() -> float:
    """The longest one status read can take: the broker part (connect, queue reads and the
    broadcast, each bounded by DD_CELERY_BROKER_TIMEOUT) and the database part (a connection and
    a few statements, each bounded by the database settings), with a second to spare."""
    statement = max(settings.DATABASE_STATEMENT_TIMEOUT or 30.0, settings.DATABASE_BUSY_TIMEOUT)
    return 4.5 * broker_timeout() + settings.DATABASE_CONNECT_TIMEOUT + 3 * statement + 1


def get_status(refresh: bool = False, broker: Broker | None = None) -> CeleryStatus:
    """The cached status of `broker` (the main one if None), or a fresh one when the
    cache has none or `refresh` is set (then one read that began after this call)."""
    asked_at = time.time()
    broker = broker or get_broker()
    if settings.CELERY_STATUS_CACHE_SECONDS <= 0:
        return _read_with_alerts(broker)
    key = _cache_key(broker)
    shared_cache = _StatusCache()
    if not refresh:
        cached = shared_cache.get(key)
        if cached is not None:
            return cached
    return _read_once(key, asked_at if refresh else 0.0, broker, shared_cache)


@dataclasses.dataclass
class _Flight:
    """This process's reads of one backend: one at a time, the last one kept for those that waited."""

    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)
    reads: int = 0
    last: CeleryStatus | None = None


_flights: dict[str, _Flight] = {}
_flights_lock = threading.Lock()


def _flight(key: str) -> _Flight:
    with _flights_lock:
        return _flights.setdefault(key, _Flight())


def _read_once(key: str, not_before: float, broker: Broker, shared_cache: "_StatusCache") -> CeleryStatus:
    """One read for every thread of this process that asks meanwhile, then across processes."""
    flight = _flight(key)
    reads_before = flight.reads
    if not flight.lock.acquire(timeout=read_bound()):
        return _read_with_alerts(broker)  # this process's reader is stuck past any bound: read alone
    try:
        last = flight.last
        if flight.reads != reads_before and last is not None and last.read_at >= not_before:
            return last  # a read this thread waited for
        cached = _cached_since(shared_cache, key, not_before)
        if cached is not None:
            return cached  # another process read meanwhile
        status = _read_across_processes(key, not_before, broker, shared_cache)
        flight.last, flight.reads = status, flight.reads + 1
        return status
    finally:
        flight.lock.release()


def _cached_since(shared_cache: "_StatusCache", key: str, not_before: float) -> CeleryStatus | None:
    """The cached document if it was read at or after `not_before`. On a refresh its small summary
    is asked first, so a document older than the refresh is not unpickled for nothing."""
    if not_before:
        summary = shared_cache.get(_summary_key(key))
        if not isinstance(summary, StatusSummary) or summary.read_at < not_before:
            return None
    cached = shared_cache.get(key)
    return cached if cached is not None and cached.read_at >= not_before else None


def _read_across_processes(key: str, not_before: float, broker: Broker, shared_cache: "_StatusCache") -> CeleryStatus:
    # The last read stays under last_key while refreshes may wait for it: forget_status (which
    # every control calls after its refreshing read) drops `key`, not the read the others share.
    lock_key, last_key, token = f"{key}:reading", f"{key}:last", uuid.uuid4().hex
    lifetime = read_bound()
    give_up_at = time.monotonic() + lifetime  # by then the owner's key has expired, whatever became of it
    taken_at = time.monotonic()
    held = shared_cache.add(lock_key, token, math.ceil(lifetime))
    while not held and not shared_cache.down and time.monotonic() < give_up_at:
        time.sleep(POLL_SECONDS)  # another process is reading: take its result when it lands
        shared = shared_cache.get_many([key, last_key]) if not_before else {key: shared_cache.get(key)}
        for found in shared.values():
            if found is not None and found.read_at >= not_before:
                return found
        taken_at = time.monotonic()
        held = shared_cache.add(lock_key, token, math.ceil(lifetime))
    try:
        status = _read_with_alerts(broker)
        if not shared_cache.down:
            pickled = _PickledOnce(status)  # one pickle for both keys (15 ms at 1,000 workers)
            summary = status.summary()
            shared_cache.set_many({key: pickled, _summary_key(key): summary}, settings.CELERY_STATUS_CACHE_SECONDS)
            shared_cache.set(last_key, pickled, math.ceil(lifetime))
        return status
    finally:
        if held and time.monotonic() - taken_at < lifetime - 1:
            shared_cache.delete_if(lock_key, token)


def _read_with_alerts(broker: Broker) -> CeleryStatus:
    """The broker's status with its alerts; the database parts are left out when it fails."""
    status = read_status(broker)
    error = status.database_error  # the paused queues' read already found the database down
    if error is None:
        try:
            if broker.alias == DEFAULT_ALIAS:  # the panel's worker list is the main backend's
                record_seen(status)
            history = recent_history(broker.alias)
        except DatabaseError as exc:
            error = redact(f"{type(exc).__name__}: {exc}")
    if error is not None:
        logger.warning("Status of backend %s without the database parts: %s", broker.alias, error)
        return dataclasses.replace(
            status,
            alerts=compute_alerts(status, history=None),
            history_available=False,
            seen_workers_recorded=broker.alias != DEFAULT_ALIAS,
            database_error=error,
        )
    return dataclasses.replace(status, alerts=compute_alerts(status, history) + _detection_alerts(status, broker))


def _detection_alerts(status: CeleryStatus, broker: Broker) -> list[Alert]:
    """The alerts of dojo.ops.fleet.detections; one warning instead when their queries fail."""
    try:
        return detection_alerts(detect(broker.alias, status.worker_replies, status.read_at))
    except DatabaseError as exc:
        error = redact(f"{type(exc).__name__}: {exc}")
        logger.warning("Status of backend %s without the detections: %s", broker.alias, error)
        return [DETECTIONS_UNAVAILABLE]


class _PickledOnce:
    """`value` pickled once for several cache keys: the cache pickles this as those bytes, and
    unpickling it gives `value` back, so readers get the document as before."""

    def __init__(self, value: CeleryStatus) -> None:
        self.pickled = pickle.dumps(value, pickle.HIGHEST_PROTOCOL)

    def __reduce__(self) -> tuple[Any, tuple[bytes]]:
        return pickle.loads, (self.pickled,)


class _StatusCache:
    """Django's cache for one status read: the first call that fails or times out turns the
    cache off for the rest of the read (each further call would wait as long again)."""

    def __init__(self) -> None:
        self.down = False

    def _call(self, default: Any, method: str, *args: Any) -> Any:
        if self.down:
            return default
        try:
            return getattr(cache, method)(*args)
        except CACHE_ERRORS as exc:
            self.down = True
            logger.warning("The cache failed; the status is read uncached: %s", redact(f"{type(exc).__name__}: {exc}"))
            return default

    def get(self, key: str) -> Any:
        return self._call(None, "get", key)

    def get_many(self, keys: list[str]) -> dict[str, Any]:
        return self._call({}, "get_many", keys)

    def add(self, key: str, value: str, timeout: int) -> bool:
        return self._call(False, "add", key, value, timeout)

    def set(self, key: str, value: Any, timeout: int) -> None:
        self._call(None, "set", key, value, timeout)

    def set_many(self, values: dict[str, Any], timeout: int) -> None:
        self._call(None, "set_many", values, timeout)

    def delete_if(self, key: str, token: str) -> None:
        """Delete `key` if it still holds `token` (see the module's docstring for why this is safe)."""
        if self.get(key) == token:
            self._call(None, "delete", key)


def cached_status(broker: Broker) -> CeleryStatus | None:
    """The cached status of `broker` if there is one, without reading the broker."""
    return _StatusCache().get(_cache_key(broker))


def forget_status(broker: Broker | None = None) -> None:
    """Drop the cached status and its summary (after an action that changed it, such as a purge)."""
    key = _cache_key(broker or get_broker())
    _StatusCache()._call(None, "delete_many", [key, _summary_key(key)])


def get_summary(broker: Broker | None = None) -> StatusSummary:
    """The counts of the cached status of `broker` (the main one if None): the small summary kept
    beside the document when there is one, else those of get_status() (which reads and caches both)."""
    broker = broker or get_broker()
    if settings.CELERY_STATUS_CACHE_SECONDS > 0:
        summary = _StatusCache().get(_summary_key(_cache_key(broker)))
        if isinstance(summary, StatusSummary):
            return summary
    return get_status(broker=broker).summary()


def _summary_key(key: str) -> str:
    return f"{key}:summary"


def _cache_key(broker: Broker) -> str:
    """One document per backend: its alias, its URL (database or virtual host included) and its
    Redis key prefix, so backends that share a server but not a fleet never share a document."""
    prefix = broker.transport_options.get("global_keyprefix") or ""
    return f"{CACHE_KEY}:{broker.alias}:{mask_url(broker.broker_url)}:{prefix}"


def live_workers(broker: Broker) -> dict[str, dict]:
    """Each live worker's dojo_status reply (active tasks, active_queues, ...), read now: the
    controls send their command to these and wait for as many replies.

    Raises BrokerUnavailable when the broker does not answer.
    """
    status = get_status(refresh=True, broker=broker)
    if not status.connected:
        raise BrokerUnavailable(status.error or "the broker did not answer")
    return status.worker_replies
