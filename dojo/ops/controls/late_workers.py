"""Bringing a worker that comes online late in line with the stored controls.

A pause (`cancel_consumer`) and a revoke reach only the workers live when they are sent. The
project's own workers read the stored pauses and revocations as they start
(dojo/worker/startup.py); a worker that runs none of the project's code cannot, so the event
monitor (dojo.ops.observe.monitor), when it sees a worker come online, calls `bring_in_line`: the
built-in `cancel_consumer` for each paused queue of the backend, and the built-in `revoke` with
every stored revoked id, both sent to that worker only. Project workers get them too: harmless
(they already applied them), and simpler than telling them apart here.

Such a worker is exact only from then on: between the moment it starts consuming and these
commands (its worker-online event, the monitor, one round trip) it takes messages of a paused queue
at full speed, prefetch included, and may run a revoked task. The project's own workers have no
such window.

Sent also when DD_CELERY_READ_ONLY is set: read-only refuses new actions, while this only keeps
decisions an operator already took, as the project's own workers do at start whatever the mode.
Not applying them would let a late worker run what was paused or revoked.

A worker stopped here is recorded on the pause (QueuePause.stopped_workers), so resume gives it
`add_consumer` back (dojo.ops.controls.pauses).
"""

import logging
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from django.db import connections
from kombu.pidbox import Mailbox

from dojo.ops.brokers.connection import BrokerUnavailable, broker_connection, broker_timeout
from dojo.ops.brokers.registry import Broker
from dojo.ops.controls.pauses import record_stopped
from dojo.ops.controls.revocations import recent_revocations
from dojo.ops.fleet.mailbox import mailbox
from dojo.ops.fleet.pauses import paused_queues
from dojo.ops.redaction import redact

logger = logging.getLogger(__name__)

# How long each attempt waits for the worker's answer, then the next ones (doubling to the last),
# until ANSWER_WITHIN_SECONDS: a worker's worker-online event can come before its remote control
# listens (on Redis it subscribes as its event loop starts), and a command sent before that is lost.
FIRST_ATTEMPT_SECONDS = 0.1
LAST_ATTEMPT_SECONDS = 2.0
ANSWER_WITHIN_SECONDS = 10.0

_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dojo-late-workers")


@dataclass(frozen=True)
class LateWorker:
    worker: str
    answered: bool  # it answered (else the commands went out, unconfirmed, until ANSWER_WITHIN_SECONDS)
    stopped: list[str]  # paused queues it was consuming and was told to stop consuming
    revoked: int  # stored revoked ids sent to it
    attempts: int = 0


def bring_in_line(broker: Broker, worker_name: str) -> LateWorker:
    """Send `worker_name` the stored pauses and revocations of `broker` (see the module docstring).

    Each attempt publishes, to that worker only and in this order, the built-in active_queues (the
    one answer awaited), `cancel_consumer` of every paused queue and one `revoke` of the stored ids,
    then waits for the answer; the worker handles them in that order, so its active_queues answer
    says which paused queues it consumed before the cancels (it is recorded as stopped by those).
    Cancelling a queue a worker does not consume changes nothing (Celery deselects it and cancels
    no consumer; the worker only logs "Canceling queue"). With no answer the attempt is repeated
    (the commands are idempotent), for ANSWER_WITHIN_SECONDS. Raises BrokerUnavailable when the
    broker does not answer, DatabaseError when the stored controls cannot be read.
    """
    paused = sorted(paused_queues(broker.alias))
    revoked = [task_id for task_id, _revoked_at in recent_revocations(broker.alias)]
    if not paused and not revoked:
        return LateWorker(worker_name, answered=False, stopped=[], revoked=0)
    deadline = time.monotonic() + ANSWER_WITHIN_SECONDS
    wait, attempts, consumed = FIRST_ATTEMPT_SECONDS, 0, None
    with broker_connection(broker=broker) as conn:
        box = mailbox(conn)
        while consumed is None and time.monotonic() < deadline:
            attempts += 1
            consumed = _attempt(box, worker_name, paused, revoked, min(wait, deadline - time.monotonic()))
            wait = min(wait * 2, LAST_ATTEMPT_SECONDS)
    stopped = [queue for queue in paused if consumed is not None and queue in consumed]
    for queue in stopped:
        record_stopped(broker.alias, queue, [worker_name])
    logger.info(
        "Worker %s of backend %s brought in line: %s; %d revoked ids sent; %d attempts%s",
        worker_name,
        broker.alias,
        f"stopped consuming {', '.join(stopped)}" if stopped else "consumed no paused queue",
        len(revoked),
        attempts,
        "" if consumed is not None else f" (it did not answer in {ANSWER_WITHIN_SECONDS:g} s)",
    )
    return LateWorker(worker_name, consumed is not None, stopped, len(revoked), attempts)


def _attempt(box: Mailbox, worker: str, paused: list[str], revoked: list[str], wait: float) -> set[str] | None:
    """One round (see bring_in_line): the queues `worker` consumed before the cancels, or None
    when it did not answer within `wait`."""
    destination = [worker]
    expires = max(wait, broker_timeout())  # a copy the worker gets later than that is dropped
    ticket = uuid.uuid4().hex
    box._publish("active_queues", {}, destination=destination, reply_ticket=ticket, timeout=expires)
    for queue in paused:
        box._publish("cancel_consumer", {"queue": queue}, destination=destination, timeout=expires)
    if revoked:
        arguments = {"task_id": revoked, "terminate": False, "signal": None}
        box._publish("revoke", arguments, destination=destination, timeout=expires)
    for reply in box._collect(ticket, limit=1, timeout=max(wait, 0.01)):
        queues = reply.get(worker) if isinstance(reply, dict) else None
        if isinstance(queues, list):
            return {queue["name"] for queue in queues if isinstance(queue, dict) and "name" in queue}
    return None


def bring_in_line_soon(broker: Broker, worker_name: str) -> None:
    """`bring_in_line` in this module's one thread, so the caller (the monitor's event receiver)
    never waits on the broker or the database; failures are logged."""
    if worker_name:
        _executor.submit(_guarded, broker, worker_name)


def _guarded(broker: Broker, worker_name: str) -> None:
    try:
        bring_in_line(broker, worker_name)
    except BrokerUnavailable as exc:
        logger.warning("Worker %s of backend %s not brought in line: %s", worker_name, broker.alias, exc)
    except Exception as exc:  # the database or anything else: the monitor goes on
        logger.warning(
            "Worker %s of backend %s not brought in line: %s",
            worker_name,
            broker.alias,
            redact(f"{type(exc).__name__}: {exc}"),
        )
    finally:
        connections.close_all()  # this thread's connections only
