"""A task option of this project's own: at most N runs with the same key at once across the fleet.

    @shared_task(bind=True, base=ConcurrencyLimitedTask, concurrency_limit=2, concurrency_key="export:{user_id}")
    def export(self, user_id: int) -> None: ...

- concurrency_key: a template formatted with the run's arguments by name (defaults applied) and
  `name` (the task's name), or a callable(args, kwargs) -> str; default: the task's name.
- concurrency_lease: seconds of a slot's lease (default DD_CELERY_SLOT_LEASE_SECONDS, 30). The
  run renews it every third of that while it is alive (SlotRenewer); a run that dies without
  releasing it (killed, out of memory, its whole worker gone) frees it within one lease.
- concurrency_retry_delay: seconds before a blocked run first tries again (default 1); each
  further wait doubles it up to DD_CELERY_SLOT_WAIT_MAX_SECONDS (30), each drawn at random
  between half and all of it, so waiting runs do not poll the stores every second for hours.

A run that finds no free slot is recorded as a SemaphoreWaiter (blocked on the queue it came
from) and retried later like `self.retry(countdown=...)` does (same id, arguments, queue and
options; the run's state is RETRY meanwhile), except that it waits as long as it takes and the
wait does not use up the task's own retries: `request.retries` and `max_retries` keep counting
real retries only. (`self.retry(max_retries=None)` would not do: None means the task's default,
3.) Waiting never extends the run's deadline: the `expires` it had when it first waited travels
in DEADLINE_HEADER, its last try lands before it, and a run still blocked then is stored as
REVOKED ("expired"), as Celery stores an expired message.

A run's slot is released when the run ends, whatever the outcome (success, failure, soft time
limit), with a few bounded retries when the store fails (the lease frees it anyway). When the
run is killed instead, the worker's main process releases it at once: on `task_revoked`
(terminate from the dashboard or the API) and on `task_failure` with WorkerLostError (a pool
child that crashed or was killed) or TimeLimitExceeded (the hard time limit); see
dojo/worker/signals.py. The store is dojo.ops.limits.semaphores (Redis on a Redis broker, the
database otherwise); when the store fails, the run is retried like a blocked one. Runs called
directly or eagerly (no worker) are not limited.
"""

import inspect
import logging
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta

from billiard.exceptions import WorkerLostError
from celery import Task
from celery.exceptions import Ignore, Retry, TimeLimitExceeded
from celery.utils.time import maybe_iso8601, maybe_make_aware
from django.conf import settings
from django.db import DatabaseError, connections
from django.utils import timezone

from dojo.ops.brokers.connection import BrokerUnavailable
from dojo.ops.brokers.registry import broker_alias_of, get_broker
from dojo.ops.limits.semaphores import (
    Slot,
    acquire_slot,
    clear_waiter,
    record_waiter,
    release_run,
    release_slot,
    renew_slot,
)

logger = logging.getLogger(__name__)

STORE_ERRORS = (BrokerUnavailable, DatabaseError)
MIN_LEASE_SECONDS = 1.0
RELEASE_ATTEMPTS = 3  # a failed release is tried this many times in all, 0.2 s then 0.4 s apart
RELEASE_FIRST_PAUSE = 0.2
LAST_TRY_MARGIN = 0.5  # seconds: a blocked run with less than this left before its deadline gives up
WAITS_HEADER = "dojo_slot_waits"  # how many times the run waited for a slot so far
DEADLINE_HEADER = "dojo_slot_deadline"  # the run's expiry when it first waited (ISO), or None


def slot_lease(task_lease: float | None = None) -> float:
    """Seconds of a slot's lease: the task's own, else DD_CELERY_SLOT_LEASE_SECONDS."""
    return max(MIN_LEASE_SECONDS, float(task_lease or settings.CELERY_SLOT_LEASE_SECONDS))


def wait_countdown(first_delay: float, waits: int, cap: float) -> float:
    """Seconds before a blocked run tries again after `waits` earlier waits: `first_delay`
    doubled per wait, at most `cap`, drawn at random in [half of it, all of it] so the waiters
    of one key do not come back together."""
    nominal = min(float(cap), float(first_delay) * 2 ** min(waits, 64))
    return random.uniform(nominal / 2, nominal)  # noqa: S311 - spreads retries, not a secret


def with_retries(action: Callable[[], None], what: str) -> bool:
    """Run `action` (a release) up to RELEASE_ATTEMPTS times while the store fails; False if
    it never succeeded (the slot then frees when its lease ends)."""
    pause = RELEASE_FIRST_PAUSE
    for attempt in range(1, RELEASE_ATTEMPTS + 1):
        try:
            action()
        except STORE_ERRORS as exc:
            if attempt == RELEASE_ATTEMPTS:
                logger.warning("Could not release %s after %d attempts (%s); its lease frees it.", what, attempt, exc)
                return False
            logger.info("Releasing %s failed (%s); trying again in %.1f s.", what, exc, pause)
            time.sleep(pause)
            pause *= 2
        else:
            return True
    return False


class SlotRenewer(threading.Thread):
    """Renews a held slot every third of its lease until `stop()`, from inside the process that
    runs the task.

    Why here and not in the worker's main process: the lease must end when the run's process
    ends, however it ends. A thread dies with its process, so a pool child that is SIGKILLed
    (terminate, the OOM killer, the hard time limit, a crash) stops renewing at that instant,
    and so does a worker killed whole with its children; no bookkeeping can be out of date. The
    main process, by contrast, outlives its children and learns of a child's death only later
    (and would keep renewing a dead run's slot if it missed that), and its event loop would block
    on every store call. The cost: a run whose process is frozen (SIGSTOP, a C call holding the
    GIL for longer than the lease) loses its slot although it may go on later; the default lease
    (30 s) is far longer than such stalls usually last.

    A renewal that finds the slot gone (the store was unreachable for a whole lease, or the
    terminate path released it) stops renewing rather than taking a slot again: the run then
    goes on outside the limit, and a warning says so.
    """

    def __init__(self, slot: Slot) -> None:
        super().__init__(name=f"dojo-slot-renewer-{slot.holder}", daemon=True)
        self.slot = slot
        self.interval = slot.expires / 3
        self.renewals = 0
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._stopped = False

    def run(self) -> None:
        try:
            while not self._wake.wait(self.interval):
                with self._lock:  # stop() waits for a renewal in flight, so none lands after the release
                    if self._stopped:
                        return
                    if not self._renew():
                        return
        finally:
            connections.close_all()  # this thread's own database connections, if it used any

    def _renew(self) -> bool:
        """One renewal; False when there is nothing left to renew."""
        try:
            if renew_slot(self.slot):
                self.renewals += 1
                return True
        except STORE_ERRORS as exc:
            logger.warning(
                "Concurrency key %r: could not renew the slot of %s (%s).", self.slot.key, self.slot.holder, exc
            )
            return True  # try again at the next tick; the lease covers two more
        logger.warning(
            "Concurrency key %r: the slot of %s expired or was released while it ran; it runs on outside the limit.",
            self.slot.key,
            self.slot.holder,
        )
        return False

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            self._wake.set()
        self.join(timeout=1)


class ConcurrencyLimitedTask(Task):
    abstract = True
    concurrency_limit: int | None = None
    concurrency_key: str | Callable[[tuple, dict], str] | None = None
    concurrency_lease: float | None = None
    concurrency_retry_delay: float = 1.0

    def __call__(self, *args, **kwargs):
        request = self.request
        if not self.concurrency_limit or request.called_directly or request.is_eager:
            return super().__call__(*args, **kwargs)
        slot = Slot(
            broker=get_broker(broker_alias_of(self.app.conf.broker_url)),
            key=self.concurrency_key_for(args, kwargs),
            holder=request.id,
            limit=self.concurrency_limit,
            expires=slot_lease(self.concurrency_lease),
        )
        if not self._acquire(slot):
            raise self._retry_later(self._wait_for(slot))
        renewer = SlotRenewer(slot)
        renewer.start()
        try:
            return super().__call__(*args, **kwargs)
        finally:
            renewer.stop()
            self._release(slot)

    def concurrency_key_for(self, args: tuple, kwargs: dict) -> str:
        """The key this run counts against."""
        if callable(self.concurrency_key):
            return str(self.concurrency_key(args, kwargs))
        if self.concurrency_key is None:
            return self.name
        bound = inspect.signature(self.run).bind(*args, **kwargs)
        bound.apply_defaults()
        return self.concurrency_key.format(**{"name": self.name, **bound.arguments})

    def _acquire(self, slot: Slot) -> bool:
        try:
            acquired = acquire_slot(slot)
            if acquired:
                clear_waiter(slot)
        except STORE_ERRORS as exc:
            logger.warning("Concurrency key %r: the slot store failed (%s); retrying later.", slot.key, exc)
            return False
        return acquired

    def _release(self, slot: Slot) -> None:
        with_retries(lambda: release_slot(slot), f"the slot of {slot.holder} (key {slot.key!r})")

    def _deadline(self) -> datetime | None:
        """The run's expiry when it first waited (kept in DEADLINE_HEADER), else its expiry now."""
        headers = self.request.headers or {}
        value = headers.get(DEADLINE_HEADER, self.request.expires)
        try:
            deadline = maybe_iso8601(value)
        except (TypeError, ValueError):
            return None
        return maybe_make_aware(deadline) if deadline else None

    def _wait_for(self, slot: Slot) -> float:
        """Record the run as blocked until its retry; the retry's countdown. Raises Ignore (the
        run stored as expired) when its deadline is too near to wait again."""
        request = self.request
        headers = request.headers or {}
        waits = int(headers.get(WAITS_HEADER) or 0)
        deadline = self._deadline()
        now = timezone.now()
        countdown = wait_countdown(self.concurrency_retry_delay, waits, settings.CELERY_SLOT_WAIT_MAX_SECONDS)
        if deadline is not None:
            remaining = (deadline - now).total_seconds()
            if remaining <= LAST_TRY_MARGIN:
                self._expire(slot, deadline)
            countdown = min(countdown, remaining - LAST_TRY_MARGIN / 2)  # the last try lands before it
        # signature_from_request (in _retry_later) sends the run's custom headers along.
        request.headers = {
            **headers,
            WAITS_HEADER: waits + 1,
            DEADLINE_HEADER: deadline.isoformat() if deadline else None,
        }
        queue = (request.delivery_info or {}).get("routing_key") or self.app.conf.task_default_queue
        try:
            record_waiter(slot, self.name, queue, now + timedelta(seconds=countdown))
        except DatabaseError as exc:
            logger.warning("Concurrency key %r: could not record the waiter %s (%s).", slot.key, slot.holder, exc)
        logger.info(
            "%s[%s] waits for a slot of %r (limit %d): wait %d, tries again in %.2f s.",
            self.name,
            slot.holder,
            slot.key,
            slot.limit,
            waits + 1,
            countdown,
        )
        return countdown

    def _expire(self, slot: Slot, deadline: datetime) -> None:
        """Give up: the run's deadline passed while it waited. Stored as Celery stores an expired run."""
        logger.info("%s[%s] found no slot of %r before its deadline %s.", self.name, slot.holder, slot.key, deadline)
        self.backend.mark_as_revoked(slot.holder, "expired", request=self.request)
        try:
            clear_waiter(slot)
        except DatabaseError as exc:
            logger.warning("Concurrency key %r: could not clear the waiter %s (%s).", slot.key, slot.holder, exc)
        raise Ignore()

    def _retry_later(self, countdown: float) -> Retry:
        """Send this run again in `countdown` s, keeping its retries count; the Retry to raise."""
        signature = self.signature_from_request(self.request, countdown=countdown)
        signature.apply_async()
        return Retry(when=countdown, sig=signature)


# --- the worker's main process (connected in dojo/worker/signals.py) -----------------------

_releaser: ThreadPoolExecutor | None = None
_releaser_lock = threading.Lock()


def _in_background(action: Callable[[], None]) -> None:
    """Run `action` on one thread of this process: the signals below fire in the worker's main
    process, whose event loop must not wait on the store (nor sleep between retries)."""
    global _releaser  # one executor per process, made on first use
    with _releaser_lock:
        if _releaser is None:
            _releaser = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dojo-slot-release")
    _releaser.submit(action)


def _release_run_now(task: Task, task_id: str, why: str) -> None:
    broker = get_broker(broker_alias_of(task.app.conf.broker_url))

    def release() -> None:
        try:
            if with_retries(lambda: release_run(broker, task_id), f"the slot of {why} run {task_id}"):
                logger.info("Released the concurrency slot of %s run %s[%s].", why, task.name, task_id)
        finally:
            connections.close_all()

    _in_background(release)


def _is_limited(task: object) -> bool:
    return isinstance(task, ConcurrencyLimitedTask) and bool(task.concurrency_limit)


def release_revoked_run(sender: Task | None = None, request=None, terminated: bool = False, **_kwargs) -> None:
    """task_revoked: a terminated run's slot is given back at once (its process was killed
    before its `finally`); a revoked or expired waiter is no longer counted as blocked.

    The signal carries the run's context without its arguments, so the slot is found by the
    run's id (dojo.ops.limits.semaphores.release_run), not by its key.
    """
    if _is_limited(sender) and request is not None and request.id:
        _release_run_now(sender, request.id, "the terminated" if terminated else "the revoked")


def release_lost_run(sender: Task | None = None, task_id: str | None = None, exception=None, **_kwargs) -> None:
    """task_failure from the worker's main process: the pool child running it died
    (WorkerLostError: a crash, the OOM killer, a SIGKILL) or was killed at the hard time limit
    (TimeLimitExceeded); either way no `finally` ran in it."""
    if _is_limited(sender) and task_id and isinstance(exception, (WorkerLostError, TimeLimitExceeded)):
        _release_run_now(sender, task_id, "the lost")
