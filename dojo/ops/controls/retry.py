"""Retry a failed task: publish it again, as a new task, with its stored name, arguments and queue.

django-celery-results (with result_extended) stores a task's arguments as Celery's protocol 2
*representation* (`argsrepr`/`kwargsrepr`), JSON-encoded: the Python repr of the arguments made
by `celery.utils.saferepr`, cut at 1024 characters and at 3 levels of nesting. They are accepted
only when they read back exactly: a literal (dojo.ops.literals, no code runs), without the
Ellipsis of a cut level, shorter than the cut, and whose saferepr is the stored text again (which
rules out strings saferepr did not escape). Anything else is refused: rerunning a task with
arguments other than its own is worse than not rerunning it. A producer that set its own
argsrepr (to hide a secret, say) cannot be told apart: such tasks must not be retried from here.

The queue and the publish options (priority, per-call time limits) are the ones
dojo.worker.signals.remember_queue stored in the result's meta; without them, the default queue and the
task's own defaults. The retry runs now: a countdown, ETA or expiry of the first publish was a
moment that has passed, and the configured default expiry applies anew.
"""

import json
from dataclasses import dataclass
from typing import Any

from celery import states
from celery.utils.saferepr import saferepr
from django_celery_results.models import TaskResult
from kombu.exceptions import EncodeError

from dojo.celery import app
from dojo.ops.brokers.connection import broker_connection
from dojo.ops.brokers.queues import default_queue
from dojo.ops.brokers.registry import Broker, get_broker
from dojo.ops.fleet.status_cache import forget_status
from dojo.ops.literals import NotALiteral, parse_literal

# REVOKED too: an operator who revoked a task by mistake can run it again.
RETRYABLE_STATES = (states.FAILURE, states.REVOKED)
# The options kept in a result's meta (dojo.worker.signals.remember_queue) and the types they must have.
STORED_OPTIONS = {"priority": int, "time_limit": (int, float), "soft_time_limit": (int, float)}
CALL_FIELDS = ("task_id", "status", "task_name", "task_args", "task_kwargs", "meta")  # what a retry reads


class UnknownTask(LookupError):
    """No stored result has this task id."""


class NotRetryable(ValueError):
    """The task is not failed, or its stored name or arguments are incomplete."""


@dataclass(frozen=True)
class RetryResult:
    backend: str
    original_task_id: str
    task_id: str
    task_name: str
    queue: str


@dataclass(frozen=True)
class StoredCall:
    task_name: str
    args: list
    kwargs: dict
    queue: str
    options: dict  # publish options: STORED_OPTIONS


def stored_call(task_id: str, retryable: tuple[str, ...] = RETRYABLE_STATES) -> StoredCall:
    """The name, arguments, queue and publish options stored with the result of `task_id`, when
    its state is one of `retryable` (a lost task's result says STARTED).

    Raises UnknownTask or NotRetryable.
    """
    result = TaskResult.objects.filter(task_id=task_id).only(*CALL_FIELDS).first()
    if result is None:
        raise UnknownTask(f"No stored result has the task id {task_id}.")
    return call_of(result, retryable)


def stored_calls(task_ids: list[str]) -> dict[str, "StoredCall | NotRetryable"]:
    """stored_call of each of `task_ids` (a bulk retry's batch) in one query: the call, or why it
    cannot be retried. A task id without a stored result is missing from the answer."""
    found: dict[str, StoredCall | NotRetryable] = {}
    for result in TaskResult.objects.filter(task_id__in=task_ids).order_by("id").only(*CALL_FIELDS):
        if result.task_id in found:
            continue  # stored_call takes the first row of a task id
        try:
            found[result.task_id] = call_of(result)
        except NotRetryable as exc:
            found[result.task_id] = exc
    return found


def call_of(result: TaskResult, retryable: tuple[str, ...] = RETRYABLE_STATES) -> StoredCall:
    """The call stored with `result` (read with CALL_FIELDS); raises NotRetryable."""
    task_id = result.task_id
    if result.status not in retryable:
        raise NotRetryable(f"Only {' or '.join(retryable)} tasks can be retried; {task_id} is {result.status}.")
    if not result.task_name:
        raise NotRetryable(f"Task {task_id} was stored without its name (result_extended was off).")
    args = _stored_arguments(result.task_args, "args", (list, tuple))
    kwargs = _stored_arguments(result.task_kwargs, "kwargs", (dict,))
    meta = _json_or_none(result.meta)
    meta = meta if isinstance(meta, dict) else {}
    stored_options = meta.get("options") if isinstance(meta.get("options"), dict) else {}
    options = {
        name: value
        for name, value in stored_options.items()
        if name in STORED_OPTIONS and isinstance(value, STORED_OPTIONS[name]) and not isinstance(value, bool)
    }
    return StoredCall(result.task_name, list(args), dict(kwargs), meta.get("queue") or default_queue(), options)


def retry_task(
    task_id: str, broker: Broker | None = None, retryable: tuple[str, ...] = RETRYABLE_STATES
) -> RetryResult:
    """Publish the stored call of `task_id` (in one of the `retryable` states) again to `broker`;
    the new task's id.

    Raises UnknownTask, NotRetryable, or BrokerUnavailable (nothing was published).
    """
    broker = broker or get_broker()
    call = stored_call(task_id, retryable)
    with broker_connection(broker=broker) as conn:
        try:
            sent = app.send_task(
                call.task_name,
                args=call.args,
                kwargs=call.kwargs,
                queue=call.queue,
                connection=conn,
                retry=False,
                **call.options,
            )
        except EncodeError as exc:
            raise NotRetryable(f"The stored arguments of {task_id} cannot be sent as JSON: {exc}") from exc
    forget_status(broker)
    return RetryResult(broker.alias, task_id, sent.id, call.task_name, call.queue)


def _json_or_none(text: str | None) -> Any:
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return None


def _stored_arguments(text: str | None, what: str, kinds: tuple[type, ...]) -> Any:
    """The stored `what` (args or kwargs) as a value of one of `kinds`, or NotRetryable."""
    incomplete = f"The stored {what} are incomplete"
    if not text:
        raise NotRetryable(f"{incomplete}: none were stored (result_extended was off).")
    value = _json_or_none(text)
    if isinstance(value, str):
        value = _literal_representation(value, what)
    if not isinstance(value, kinds):
        raise NotRetryable(f"{incomplete}: {text[:100]!r} is not a {' or '.join(kind.__name__ for kind in kinds)}.")
    try:
        json.dumps(value)
    except (TypeError, ValueError) as exc:
        raise NotRetryable(f"The stored {what} cannot be sent as JSON: {exc}") from exc
    return value


def _literal_representation(text: str, what: str) -> Any:
    """A protocol 2 argsrepr/kwargsrepr as the value it represents, only when it is exact."""
    limit = app.amqp.argsrepr_maxsize if what == "args" else app.amqp.kwargsrepr_maxsize
    if len(text) >= limit:
        raise NotRetryable(f"The stored {what} are incomplete: Celery cut them at {limit} characters.")
    try:
        value = parse_literal(text)
    except NotALiteral:
        raise NotRetryable(f"The stored {what} are not literal values: {text[:100]!r}.") from None
    if _contains_ellipsis(value):
        raise NotRetryable(f"The stored {what} are incomplete: Celery cut nested values ('...').")
    if saferepr(value, limit, maxlevels=app.conf.task_repr_maxlevels) != text:
        raise NotRetryable(f"The stored {what} do not read back exactly: {text[:100]!r}.")
    return value


def _contains_ellipsis(value: Any) -> bool:
    if value is Ellipsis:
        return True
    if isinstance(value, dict):
        return any(_contains_ellipsis(key) or _contains_ellipsis(item) for key, item in value.items())
    if isinstance(value, list | tuple | set | frozenset):
        return any(_contains_ellipsis(item) for item in value)
    return False
