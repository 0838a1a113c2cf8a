"""A task option of this project's own: at most N runs with the same key at once across the fleet.

    @shared_task(bind=True, base=ConcurrencyLimitedTask, concurrency_limit=2, concurrency_key="export:{user_id}")
    def export(self, user_id: int) -> None: ...

- concurrency_key: a template formatted with the run's arguments by name (defaults applied) and
  `name` (the task's name), or a callable(args, kwargs) -> str; default: the task's name.
- concurrency_expires: seconds a slot is held at most (a worker that dies holding one frees it
  then); default: the run's hard time limit, the task's, CELERY_TASK_TIME_LIMIT, else one hour.
- concurrency_retry_delay: seconds before a blocked run tries again (default 1, ±50 % jitter).

A run that finds no free slot is recorded as a SemaphoreWaiter (blocked on the queue it came
from) and retried later like `self.retry(countdown=...)` does (same id, arguments, queue and
options; the run's state is RETRY meanwhile), except that it waits as long as it takes and the
wait does not use up the task's own retries: `request.retries` and `max_retries` keep counting
real retries only. (`self.retry(max_retries=None)` would not do: None means the task's default,
3.) A run's slot is released when the run ends, whatever the outcome (success, failure, soft
time limit). The store is dojo.ops.limits.semaphores (Redis on a Redis
broker, the database otherwise); when the store fails, the run is retried like a blocked one.
Runs called directly or eagerly (no worker) are not limited.
"""

import inspect
import logging
import random
from collections.abc import Callable
from datetime import timedelta

from celery import Task
from celery.exceptions import Retry
from django.db import DatabaseError
from django.utils import timezone

from dojo.ops.brokers.connection import BrokerUnavailable
from dojo.ops.brokers.registry import broker_alias_of, get_broker
from dojo.ops.limits.semaphores import Slot, acquire_slot, clear_waiter, record_waiter, release_slot

logger = logging.getLogger(__name__)

DEFAULT_EXPIRES_SECONDS = 3600
RETRY_JITTER = 0.5
STORE_ERRORS = (BrokerUnavailable, DatabaseError)


class ConcurrencyLimitedTask(Task):
    abstract = True
    concurrency_limit: int | None = None
    concurrency_key: str | Callable[[tuple, dict], str] | None = None
    concurrency_expires: float | None = None
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
            expires=self._slot_expires(),
        )
        if not self._acquire(slot):
            raise self._retry_later(self._wait_for(slot))
        try:
            return super().__call__(*args, **kwargs)
        finally:
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

    def _slot_expires(self) -> float:
        if self.concurrency_expires:
            return float(self.concurrency_expires)
        run_hard_limit = (self.request.timelimit or (None, None))[0]
        hard_limit = run_hard_limit or self.time_limit or self.app.conf.task_time_limit
        return float(hard_limit or DEFAULT_EXPIRES_SECONDS)

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
        try:
            release_slot(slot)
        except STORE_ERRORS as exc:  # the slot expires on its own
            logger.warning("Concurrency key %r: could not release the slot of %s (%s).", slot.key, slot.holder, exc)

    def _wait_for(self, slot: Slot) -> float:
        """Record the run as blocked until its retry; the retry's countdown."""
        delay = self.concurrency_retry_delay
        countdown = max(0.0, delay * (1 + RETRY_JITTER * (2 * random.random() - 1)))  # noqa: S311 - spreads retries
        queue = (self.request.delivery_info or {}).get("routing_key") or self.app.conf.task_default_queue
        try:
            record_waiter(slot, self.name, queue, timezone.now() + timedelta(seconds=countdown))
        except DatabaseError as exc:
            logger.warning("Concurrency key %r: could not record the waiter %s (%s).", slot.key, slot.holder, exc)
        logger.info("%s[%s] waits for a slot of %r (limit %d).", self.name, slot.holder, slot.key, slot.limit)
        return countdown

    def _retry_later(self, countdown: float) -> Retry:
        """Send this run again in `countdown` s, keeping its retries count; the Retry to raise."""
        signature = self.signature_from_request(self.request, countdown=countdown)
        signature.apply_async()
        return Retry(when=countdown, sig=signature)
