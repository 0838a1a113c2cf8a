"""What a worker does at startup so that the controls outlive it.

- Pauses: the worker remembers its own queue selection (for `dojo_resume_queue`), then drops
  the queues paused on its backend before it consumes anything; once ready it reads the pauses
  again and cancels those consumers, in case a pause was broadcast while it was starting.
- Revocations: the worker keeps revoked ids for the revocation window (DD_CELERY_REVOKE_WINDOW)
  instead of Celery's 3 h (REVOKE_EXPIRES in celery/worker/state.py, read from the environment
  variable CELERY_WORKER_REVOKE_EXPIRES, not a setting), and the task ids revoked on its backend
  within that window go into its revoked set, each for what is left of its window, so a revoked
  task that is still queued (or due later) is discarded when it arrives.

A database that cannot be read is logged and the worker goes on: it must not refuse to start.
"""

import logging
import time

from celery.signals import celeryd_after_setup, worker_ready
from celery.worker import state as worker_state
from django.db import Error as DatabaseError
from django.utils import timezone

from dojo.ops.brokers.registry import broker_alias_of
from dojo.ops.controls.revocations import recent_revocations, revocation_window
from dojo.ops.fleet.pauses import paused_queues

logger = logging.getLogger(__name__)

# The queues this worker consumes by its own configuration (-Q, or every configured queue).
own_selection: set[str] = set()


def consumes_by_configuration(queue: str) -> bool:
    return queue in own_selection


def _stored_pauses(alias: str) -> set[str]:
    try:
        return paused_queues(alias)
    except DatabaseError as exc:
        logger.warning("Could not read the paused queues of backend %s; consuming every selected queue: %s", alias, exc)
        return set()


@celeryd_after_setup.connect
def apply_stored_controls(sender: str, instance, conf, **_kwargs) -> None:
    """Before the consumer starts: remember the selection, drop paused queues, load revocations."""
    queues = instance.app.amqp.queues
    own_selection.clear()
    own_selection.update(queues.consume_from)
    alias = broker_alias_of(conf.broker_url)
    paused = _stored_pauses(alias) & own_selection
    for name in sorted(paused):
        queues.deselect(name)
        logger.warning("Queue %s is paused on backend %s: not consuming it", name, alias)
    _load_revocations(alias)


def _load_revocations(alias: str) -> None:
    """Keep revoked ids for the window, then add the stored ones, stamped as if this worker
    had received each revoke when it was made (LimitedSet stamps with time.monotonic)."""
    window = revocation_window().total_seconds()
    worker_state.revoked.expires = window
    try:
        revoked = recent_revocations(alias)
    except DatabaseError as exc:
        logger.warning("Could not read the revoked tasks of backend %s: %s", alias, exc)
        return
    now, monotonic_now = timezone.now(), time.monotonic()
    for task_id, revoked_at in reversed(revoked):  # oldest first
        age = min(max(0.0, (now - revoked_at).total_seconds()), window)
        worker_state.revoked.add(task_id, now=monotonic_now - age)
    if revoked:
        logger.info("Loaded %d revoked task ids of backend %s", len(revoked), alias)


@worker_ready.connect
def cancel_paused_consumers(sender, **_kwargs) -> None:
    """Once consuming: cancel any queue paused while this worker was starting."""
    consumer = sender
    alias = broker_alias_of(consumer.app.conf.broker_url)
    consuming = {queue.name for queue in consumer.task_consumer.queues}
    for name in sorted(_stored_pauses(alias) & consuming):
        consumer.cancel_task_queue(name)
        logger.warning("Queue %s was paused on backend %s while this worker started: stopped consuming it", name, alias)
