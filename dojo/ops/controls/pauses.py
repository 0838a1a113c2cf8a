"""Pausing a queue: the live workers of a backend stop consuming it, and the pause is stored so
that a worker starting later does not consume it either (dojo/worker/startup.py reads the
stored pauses as a worker starts).

Resume does not send `add_consumer`, which would make every worker consume the queue: it sends
`dojo_resume_queue` (dojo/worker/commands.py), which each worker obeys only for a queue it
consumes by its own configuration.
"""

from dataclasses import dataclass

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser

from dojo.models import QueuePause
from dojo.ops.brokers.connection import BrokerUnavailable
from dojo.ops.brokers.registry import Broker, get_broker
from dojo.ops.fleet.mailbox import broadcast
from dojo.ops.fleet.status_cache import forget_status, live_workers

QUEUE_NAME_MAX_LENGTH = QueuePause._meta.get_field("queue").max_length
RESUME_COMMAND = "dojo_resume_queue"


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

    A queue nobody consumes may be paused ahead of time. Raises BrokerUnavailable (and stores
    nothing) when the broker does not answer.
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
    return PauseResult(backend=broker.alias, queue=queue, paused=True, workers=stopped)


def resume_queue(
    queue: str, broker: Broker | None = None, user: AbstractBaseUser | AnonymousUser | None = None
) -> PauseResult:
    """Drop the pause of `queue` and let the live workers that consume it by their own
    configuration start again. `user` is taken for symmetry with pause_queue (the audit row
    names who resumed). Raises BrokerUnavailable (and keeps the pause) when the broker does not
    answer."""
    broker = broker or get_broker()
    validate_queue_name(queue)
    live = live_workers(broker)
    stored = QueuePause.objects.filter(backend=broker.alias, queue=queue).first()
    if stored is not None:
        stored.delete()
    try:
        replies = broadcast(broker, RESUME_COMMAND, {"queue": queue}, expected_replies=len(live))
    except BrokerUnavailable:
        if stored is not None:
            QueuePause.objects.create(backend=stored.backend, queue=stored.queue, paused_by=stored.paused_by)
        raise
    forget_status(broker)
    resumed = sorted(name for name, reply in replies.items() if isinstance(reply, dict) and reply.get("resumed"))
    return PauseResult(backend=broker.alias, queue=queue, paused=False, workers=resumed)
