"""Pausing a queue: the live workers of a backend stop consuming it, and the pause is stored so
that a worker starting later does not consume it either (dojo/worker/startup.py reads the
stored pauses as a worker starts; dojo.ops.controls.late_workers tells the workers that run none
of the project's code, when the event monitor sees them come online).

Pause sends the built-in `cancel_consumer`, which every Celery worker knows, and records on the
pause the workers it stopped (QueuePause.stopped_workers).

Resume never sends the built-in `add_consumer` to everyone: it would make every worker that gets
it consume the queue, also those that never did. It sends two commands, each only to workers
that know it and should obey it:
- `dojo_resume_queue` (dojo/worker/commands.py) to the workers known to run the project's code
  (their stats announced dojo_status: dojo.ops.fleet.mailbox.status_speakers); each obeys only
  for a queue it consumes by its own configuration, so it also covers a project worker that
  started during the pause and left the queue out.
- the built-in `add_consumer` to the other workers recorded as stopped by this pause: a worker
  that runs none of the project's code does not know `dojo_resume_queue` (it logs a "pidbox
  command error" with a traceback), and what it consumed when the pause stopped it is the only
  record of its own selection.
"""

from dataclasses import dataclass

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db import transaction

from dojo.models import QueuePause
from dojo.ops.brokers.connection import BrokerUnavailable, broker_connection
from dojo.ops.brokers.registry import Broker, get_broker
from dojo.ops.fleet.mailbox import broadcast, status_speakers
from dojo.ops.fleet.status_cache import CACHE_ERRORS, forget_status, live_workers

QUEUE_NAME_MAX_LENGTH = QueuePause._meta.get_field("queue").max_length
RESUME_COMMAND = "dojo_resume_queue"
ADD_CONSUMER = "add_consumer"  # built-in: every Celery worker knows it


class InvalidQueueName(ValueError):
    """Empty, or longer than a queue name can be."""


@dataclass(frozen=True)
class PauseResult:
    backend: str
    queue: str
    paused: bool
    # Pause: the live workers that were consuming the queue and acknowledged the cancel.
    # Resume: the workers that consume it again (those whose own configuration includes it).
    workers: list[str]


def validate_queue_name(queue: str) -> str:
    if not queue or len(queue) > QUEUE_NAME_MAX_LENGTH:
        raise InvalidQueueName(f"A queue name has 1 to {QUEUE_NAME_MAX_LENGTH} characters.")
    return queue


def pause_queue(
    queue: str, broker: Broker | None = None, user: AbstractBaseUser | AnonymousUser | None = None
) -> PauseResult:
    """Store the pause of `queue` and tell every live worker of `broker` to stop consuming it.

    A queue nobody consumes may be paused ahead of time. Pausing a paused queue again adds the
    workers it stops to those already recorded. Raises BrokerUnavailable (and stores nothing)
    when the broker does not answer.
    """
    broker = broker or get_broker()
    validate_queue_name(queue)
    live = live_workers(broker)
    paused_by = user.get_username() if user is not None and user.is_authenticated else ""
    _pause, created = QueuePause.objects.get_or_create(
        backend=broker.alias, queue=queue, defaults={"paused_by": paused_by}
    )
    try:
        replies = broadcast(broker, "cancel_consumer", {"queue": queue}, expected_replies=len(live))
    except BrokerUnavailable:
        if created:
            QueuePause.objects.filter(backend=broker.alias, queue=queue).delete()
        raise
    forget_status(broker)
    consuming = {name for name, reply in live.items() if queue in reply.get("active_queues", [])}
    stopped = sorted(name for name, reply in replies.items() if name in consuming and "ok" in reply)
    record_stopped(broker.alias, queue, stopped)
    return PauseResult(backend=broker.alias, queue=queue, paused=True, workers=stopped)


def record_stopped(backend_alias: str, queue: str, workers: list[str]) -> None:
    """Add `workers` to those the pause of `queue` stopped (nothing if it is not paused)."""
    if not workers:
        return
    with transaction.atomic():
        pause = QueuePause.objects.select_for_update().filter(backend=backend_alias, queue=queue).first()
        if pause is None:
            return
        merged = sorted(set(pause.stopped_workers or []) | set(workers))
        if merged != pause.stopped_workers:
            QueuePause.objects.filter(pk=pause.pk).update(stopped_workers=merged)


def resume_queue(
    queue: str, broker: Broker | None = None, user: AbstractBaseUser | AnonymousUser | None = None
) -> PauseResult:
    """Drop the pause of `queue` and let the workers it stopped start again: `dojo_resume_queue`
    to the project's workers, `add_consumer` to the other workers recorded as stopped (see the
    module docstring). `user` is taken for symmetry with pause_queue (the audit row names who
    resumed). Raises BrokerUnavailable (and keeps the pause) when the broker does not answer."""
    broker = broker or get_broker()
    validate_queue_name(queue)
    live = live_workers(broker)  # a fresh read: it also learns which workers speak dojo_status
    speakers = _speakers(broker)
    stored = QueuePause.objects.filter(backend=broker.alias, queue=queue).first()
    stopped = set(stored.stopped_workers or []) if stored is not None else set()
    # Known speakers that are not live now still get the command (a busy or late worker), with no reply awaited.
    own = sorted(speakers)
    plain = sorted(stopped - speakers)
    if stored is not None:
        stored.delete()
    resumed: list[str] = []
    try:
        if own:
            replies = broadcast(broker, RESUME_COMMAND, {"queue": queue}, len(live.keys() & speakers), own)
            resumed += [name for name, reply in replies.items() if isinstance(reply, dict) and reply.get("resumed")]
        if plain:
            replies = broadcast(broker, ADD_CONSUMER, {"queue": queue}, len(live.keys() & set(plain)), plain)
            resumed += [name for name, reply in replies.items() if isinstance(reply, dict) and "ok" in reply]
    except BrokerUnavailable:
        if stored is not None:
            QueuePause.objects.create(
                backend=stored.backend,
                queue=stored.queue,
                paused_by=stored.paused_by,
                stopped_workers=stored.stopped_workers,
            )
        raise
    forget_status(broker)
    return PauseResult(backend=broker.alias, queue=queue, paused=False, workers=sorted(resumed))


def _speakers(broker: Broker) -> set[str]:
    """The workers of `broker` known to run the project's code; none when the cache fails (then
    only the workers recorded as stopped are resumed, with add_consumer)."""
    try:
        with broker_connection(broker=broker) as conn:
            return status_speakers(conn)
    except CACHE_ERRORS:
        return set()
