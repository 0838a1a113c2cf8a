"""Revoke a queued task, terminate a running one.

A revoke reaches only the workers live at the time, and each keeps its revoked ids in memory:
the revocation is therefore stored too, and a worker that starts later loads the recent ones
(dojo/worker/startup.py). One window, DD_CELERY_REVOKE_WINDOW, says how long a revoke lasts:
how long its row counts (and is kept: dojo.ops.observe.history prunes older ones), which rows a
starting worker loads (each for what is left of its window) and how long every worker keeps a
revoked id in memory (instead of Celery's 3 h). Revoking an id again starts its window anew.
"""

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.utils import timezone

from dojo.models import TaskRevocation
from dojo.ops.brokers.connection import BrokerUnavailable
from dojo.ops.brokers.registry import Broker, get_broker
from dojo.ops.fleet.mailbox import broadcast
from dojo.ops.fleet.status_cache import forget_status, live_workers

TERMINATE_SIGNALS = ("SIGTERM", "SIGKILL")
# The most ids one revoke_tasks call takes: one broadcast and two statements whatever the count.
REVOKE_MANY_MAX = 500


class TaskNotRunning(LookupError):
    """No live worker is running the task: there is nothing to terminate."""


@dataclass(frozen=True)
class RevokeResult:
    backend: str
    task_id: str
    terminate: bool
    signal: str | None
    workers: list[str]  # the workers that acknowledged the revoke


def revocation_window() -> timedelta:
    """How long a revoke lasts (DD_CELERY_REVOKE_WINDOW, at least a second)."""
    return timedelta(seconds=max(1, settings.CELERY_REVOKE_WINDOW))


def recent_revocations(backend_alias: str) -> list[tuple[str, datetime]]:
    """(task id, when it was last revoked) of the ids revoked on `backend_alias` within the
    revocation window, newest first."""
    since = timezone.now() - revocation_window()
    rows = TaskRevocation.objects.filter(backend=backend_alias, revoked_at__gte=since)
    return list(rows.values_list("task_id", "revoked_at"))


def revoke_task(task_id: str, broker: Broker | None = None) -> RevokeResult:
    """Revoke `task_id` on every worker of `broker` and store the revocation.

    Raises BrokerUnavailable (and stores nothing) when the broker does not answer.
    """
    broker = broker or get_broker()
    live = live_workers(broker)
    arguments = {"task_id": task_id, "terminate": False, "signal": None}
    replies = _stored_then_sent(broker, task_id, False, arguments, len(live), None)
    return RevokeResult(broker.alias, task_id, terminate=False, signal=None, workers=sorted(replies))


@dataclass(frozen=True)
class RevokeManyResult:
    backend: str
    task_ids: list[str]  # each id once, in the order given
    workers: list[str]  # the workers that acknowledged the revoke


def revoke_tasks(task_ids: list[str], broker: Broker | None = None) -> RevokeManyResult:
    """Revoke every id of `task_ids` (1 to REVOKE_MANY_MAX, repeats counted once) on every worker
    of `broker` in one broadcast, the revocations stored first in one statement, as revoke_task
    does for one id (one per call would cost a status read and a broadcast each, and the control
    throttle would stop a few hundred).

    Raises ValueError for no id or too many; BrokerUnavailable (and stores nothing, the rows
    revoked before put back) when the broker does not answer.
    """
    ids = list(dict.fromkeys(task_ids))
    if not ids or len(ids) > REVOKE_MANY_MAX:
        raise ValueError(f"give 1 to {REVOKE_MANY_MAX} task ids, not {len(ids)}")
    broker = broker or get_broker()
    live = live_workers(broker)
    rows = TaskRevocation.objects.filter(backend=broker.alias, task_id__in=ids)
    before = {row.task_id: row for row in rows}
    now = timezone.now()
    TaskRevocation.objects.bulk_create(
        [TaskRevocation(backend=broker.alias, task_id=task_id, terminate=False, revoked_at=now) for task_id in ids],
        update_conflicts=True,
        unique_fields=["backend", "task_id"],
        update_fields=["terminate", "revoked_at"],
    )
    arguments = {"task_id": ids, "terminate": False, "signal": None}
    try:
        replies = broadcast(broker, "revoke", arguments, len(live))
    except BrokerUnavailable:
        created = [task_id for task_id in ids if task_id not in before]
        TaskRevocation.objects.filter(backend=broker.alias, task_id__in=created).delete()
        if before:
            TaskRevocation.objects.bulk_update(list(before.values()), ["terminate", "revoked_at"])
        raise
    forget_status(broker)
    return RevokeManyResult(broker.alias, ids, workers=sorted(replies))


def terminate_task(task_id: str, signal: str = "SIGTERM", broker: Broker | None = None) -> RevokeResult:
    """Revoke `task_id` and kill it with `signal` on the live worker running it.

    Raises TaskNotRunning when no live worker is running it, BrokerUnavailable when the broker
    does not answer.
    """
    if signal not in TERMINATE_SIGNALS:
        raise ValueError(f"signal must be one of {', '.join(TERMINATE_SIGNALS)}")
    broker = broker or get_broker()
    running_on = [
        name
        for name, reply in live_workers(broker).items()
        if any(task.get("id") == task_id for task in reply.get("active", []))
    ]
    if not running_on:
        raise TaskNotRunning(f"Task {task_id} is not running on any live worker of backend {broker.alias}.")
    arguments = {"task_id": task_id, "terminate": True, "signal": signal}
    replies = _stored_then_sent(broker, task_id, True, arguments, len(running_on), running_on)
    return RevokeResult(broker.alias, task_id, terminate=True, signal=signal, workers=sorted(replies))


def _stored_then_sent(
    broker: Broker,
    task_id: str,
    terminate: bool,
    arguments: dict,
    expected_replies: int,
    destination: list[str] | None,
) -> dict[str, dict]:
    """Store the revocation first (a worker starting meanwhile loads it), then broadcast it;
    a broadcast the broker refused leaves the rows as they were. Revoking an id again refreshes
    its time (the workers that get the broadcast restart theirs too)."""
    before = TaskRevocation.objects.filter(backend=broker.alias, task_id=task_id).first()
    row, created = TaskRevocation.objects.update_or_create(
        backend=broker.alias, task_id=task_id, defaults={"terminate": terminate, "revoked_at": timezone.now()}
    )
    try:
        replies = broadcast(broker, "revoke", arguments, expected_replies, destination)
    except BrokerUnavailable:
        if created:
            row.delete()
        elif before is not None:
            TaskRevocation.objects.filter(pk=row.pk).update(terminate=before.terminate, revoked_at=before.revoked_at)
        raise
    forget_status(broker)
    return replies
