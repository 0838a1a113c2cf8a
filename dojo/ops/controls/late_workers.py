"""Bringing a worker that comes online late in line with the stored controls.

A pause (`cancel_consumer`) and a revoke reach only the workers live when they are sent. The
project's own workers read the stored pauses and revocations as they start
(dojo/worker/startup.py); a worker that runs none of the project's code cannot, so the event
monitor (dojo.ops.observe.monitor), when it sees a worker come online, calls `bring_in_line`: the
built-in `cancel_consumer` for each paused queue of the backend the worker consumes, and the
built-in `revoke` with every stored revoked id, both sent to that worker only. Project workers
get them too: harmless (they already applied them), and simpler than telling them apart here.

Such a worker is exact only from then on: between its start and these commands (the worker-online
event, then one round trip) it may take a message of a paused queue or run a revoked task. The
project's own workers have no such window.

Sent also when DD_CELERY_READ_ONLY is set: read-only refuses new actions, while this only keeps
decisions an operator already took, as the project's own workers do at start whatever the mode.
Not applying them would let a late worker run what was paused or revoked.

A worker cancelled here is recorded on the pause (QueuePause.stopped_workers), so resume gives it
`add_consumer` back (dojo.ops.controls.pauses).
"""

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from django.db import connections

from dojo.ops.brokers.connection import BrokerUnavailable
from dojo.ops.brokers.registry import Broker
from dojo.ops.controls.pauses import record_stopped
from dojo.ops.controls.revocations import recent_revocations
from dojo.ops.fleet.mailbox import broadcast
from dojo.ops.fleet.pauses import paused_queues
from dojo.ops.redaction import redact

logger = logging.getLogger(__name__)

# A worker's remote control may start listening just after its worker-online event: ask again.
ANSWER_ATTEMPTS = 3

_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dojo-late-workers")


@dataclass(frozen=True)
class LateWorker:
    worker: str
    answered: bool  # it answered active_queues (else the commands went out unconfirmed)
    cancelled: list[str]  # paused queues it was told to stop consuming
    revoked: int  # stored revoked ids sent to it


def bring_in_line(broker: Broker, worker_name: str) -> LateWorker:
    """Send `worker_name` the stored pauses and revocations of `broker` (see the module docstring).

    Its active_queues say which paused queues it consumes (cancel only those, and record it as
    stopped by them); a worker that never answers is sent a cancel of every paused queue, which
    a worker not consuming a queue ignores. Raises BrokerUnavailable when the broker does not
    answer, DatabaseError when the stored controls cannot be read.
    """
    paused = paused_queues(broker.alias)
    revoked = [task_id for task_id, _revoked_at in recent_revocations(broker.alias)]
    if not paused and not revoked:
        return LateWorker(worker_name, answered=False, cancelled=[], revoked=0)
    destination = [worker_name]
    consumed = _active_queues(broker, worker_name) if paused else set()
    answered = consumed is not None
    cancelled = sorted(paused & consumed) if consumed is not None else sorted(paused)
    expected = 1 if answered else 0
    for queue in cancelled:
        broadcast(broker, "cancel_consumer", {"queue": queue}, expected, destination)
        if answered:
            record_stopped(broker.alias, queue, destination)
    if revoked:
        arguments = {"task_id": revoked, "terminate": False, "signal": None}
        broadcast(broker, "revoke", arguments, expected, destination)
    if cancelled or revoked:
        logger.info(
            "Worker %s of backend %s came online: cancelled %s, sent %d revoked ids%s",
            worker_name,
            broker.alias,
            ", ".join(cancelled) or "no queue",
            len(revoked),
            "" if answered else " (it did not answer)",
        )
    return LateWorker(worker_name, answered=answered, cancelled=cancelled, revoked=len(revoked))


def _active_queues(broker: Broker, worker_name: str) -> set[str] | None:
    """The queues `worker_name` consumes, or None when it did not answer."""
    for _attempt in range(ANSWER_ATTEMPTS):
        reply = broadcast(broker, "active_queues", {}, 1, [worker_name]).get(worker_name)
        if isinstance(reply, list):
            return {queue["name"] for queue in reply if isinstance(queue, dict) and "name" in queue}
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
