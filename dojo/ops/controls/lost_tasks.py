"""Retry a lost task (dojo.models.LostTask, found by the event monitor): the project's single retry
(dojo.ops.controls.retry) from the task's stored result, which CELERY_TASK_TRACK_STARTED and
CELERY_RESULT_EXTENDED write at its start (name, arguments, queue), then the row records when and
as which new task. A row is claimed before the publish (a conditional update), so two operators
retrying at once publish it once; a publish that fails gives the claim back.
"""

from celery import states
from django.db.models.functions import Now

from dojo.models import LostTask
from dojo.ops.brokers.registry import Broker, get_broker
from dojo.ops.controls.retry import RETRYABLE_STATES, RetryResult, UnknownTask, retry_task

# A lost task's stored result says STARTED (it never ended); one that failed or was revoked since can be retried too.
LOST_RETRYABLE_STATES = (states.STARTED, *RETRYABLE_STATES)
CLAIMED = "(retrying)"  # retried_task_id while the publish is in flight


class UnknownLostTask(LookupError):
    """No lost task of this backend has this task id."""


class LostTaskConflict(ValueError):
    """The lost task was retried already, or its stored result cannot be retried (finished, or absent)."""


def retry_lost_task(task_id: str, broker: Broker | None = None) -> RetryResult:
    """Publish lost task `task_id` of `broker` again and record it on its LostTask row.

    Raises UnknownLostTask, LostTaskConflict, NotRetryable (stored arguments incomplete) or
    BrokerUnavailable (nothing was published, the row is left as it was).
    """
    broker = broker or get_broker()
    row = LostTask.objects.filter(backend=broker.alias, task_id=task_id).first()
    if row is None:
        raise UnknownLostTask(f"No lost task of backend {broker.alias} has the task id {task_id}.")
    claimed = LostTask.objects.filter(pk=row.pk, retried_at__isnull=True).update(
        retried_at=Now(), retried_task_id=CLAIMED
    )
    if not claimed:
        raise LostTaskConflict(f"Lost task {task_id} was retried already.")
    try:
        result = retry_task(task_id, broker, LOST_RETRYABLE_STATES)
    except UnknownTask:
        LostTask.objects.filter(pk=row.pk).update(retried_at=None, retried_task_id="")
        raise LostTaskConflict(
            f"No stored result has the task id {task_id}, so its arguments are unknown (the result backend is not "
            "django-db, or CELERY_TASK_TRACK_STARTED / CELERY_RESULT_EXTENDED were off)."
        ) from None
    except BaseException:
        LostTask.objects.filter(pk=row.pk).update(retried_at=None, retried_task_id="")
        raise
    LostTask.objects.filter(pk=row.pk).update(retried_task_id=result.task_id)
    return result
