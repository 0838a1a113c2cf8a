"""Bulk operations over a filter of stored results: preview, then act, in the background.

preview() counts what a filter matches for an action and shows the first matches, with a
fingerprint: the sha256 of the normalized filter and action, the count and the largest matching
result id. start() takes that confirmation back: it counts again and refuses (Conflict, with a
fresh preview) when the set grew beyond DD_BULK_GROWTH_PERCENT of the confirmed count or the
fingerprint was made for other conditions; else it writes a BulkOperation and sends its runner
(dojo.tasks.run_bulk_operation). An empty filter is never "everything" unless `all_` says so.

The runner (run_operation) works in batches of DD_BULK_BATCH_SIZE by keyset on the result id,
from the operation's cursor up to the preview's largest id (results stored later are left
alone), pausing DD_BULK_BATCH_PAUSE_SECONDS between batches and checking for a cancel before
each. Each batch's progress (cursor, counts, failures) is written in the transaction of the
batch's database effects, and under a lease (BulkOperation.runner, checked with the row locked):
a second runner of the same operation stops at its first batch.

Resuming after a worker died is beat's periodic resume_stale(), not acks_late: on Redis a killed
worker's unacknowledged message comes back only after the visibility timeout (an hour by
default), and a redelivered runner would race the live one. resume_stale() sends a runner for
every pending or running operation whose row was not updated for DD_BULK_STALE_SECONDS; the new
runner takes the lease over and goes on from the cursor.

Actions on stored results: retry (the single retry's stored call: name, args, kwargs, queue,
options; each result at most once per operation and, unless include_retried, never one an earlier
operation retried) and delete_results. Actions on one queue's messages (dojo.ops.controls.
bulk_messages): revoke (stored revocations, as the single revoke) and purge (Redis). Their preview
reads the queue; the start keeps the count it found as the operation's message_limit, which the
runner never exceeds, and the runner's cursor is a position in the queue (`_cursor_of`).

A retry batch's claims (BulkRetriedTask, `sending`, with the new task ids) and the cursor are
committed before the batch is published, then marked `sent`. A runner killed while publishing
leaves `sending` claims: its successor settles them as `sent` when the new task id has a stored
result, else `unknown` (counted as failures, never sent again): a task run twice is worse than a
retry the operator can ask for again (include_retried).
"""

import logging
import time
import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db import transaction
from django.db.models import Count, Exists, F, Max, OuterRef, Q, QuerySet
from django.db.models.functions import Coalesce
from django.utils import timezone
from kombu.exceptions import EncodeError

from dojo.celery import app
from dojo.models import BulkOperation, BulkOperationFailure, BulkRetriedTask, CeleryAuditLog
from dojo.ops.brokers.connection import BrokerUnavailable, broker_connection
from dojo.ops.brokers.queues import default_queue
from dojo.ops.brokers.registry import get_broker
from dojo.ops.brokers.transport import Position
from dojo.ops.controls import bulk_messages
from dojo.ops.controls.audit import Result, record_action
from dojo.ops.controls.retry import RETRYABLE_STATES, StoredCall, UnknownTask, stored_calls
from dojo.ops.controls.revocations import REVOKE_MANY_MAX, revoke_tasks
from dojo.ops.fleet.status_cache import forget_status
from dojo.ops.read_models.task_filter import TaskFilter, stored_results
from dojo.ops.redaction import redact

logger = logging.getLogger(__name__)

Action = BulkOperation.Action
State = BulkOperation.State
SUPPORTED_ACTIONS = (Action.RETRY, Action.DELETE_RESULTS, Action.REVOKE, Action.PURGE)
MESSAGE_ACTIONS = (Action.REVOKE, Action.PURGE)
# The permission (a codename of dojo.CeleryAuditLog's Meta permissions) each action needs.
ACTION_PERMISSIONS = {
    Action.RETRY: "retry_task",
    Action.DELETE_RESULTS: "delete_results",
    Action.REVOKE: "revoke_task",
    Action.PURGE: "purge_queue",
}
ACTIVE_STATES = (State.PENDING, State.RUNNING)
SAMPLE_SIZE = 20
REASON_CHARS = 1000
RUNNER_TASK = "dojo.tasks.run_bulk_operation"
POSITION_BASE = 2**40  # a message action's cursor: priority list index * POSITION_BASE + offset
END = 2**62  # ... once the queue's end (or the cap) was reached


class EmptyFilter(ValueError):
    """An empty filter without all_=True: never "everything" by accident."""


class UnsupportedAction(ValueError):
    """An action this module cannot run (yet)."""


class BadFingerprint(ValueError):
    """A fingerprint that is not one preview() made."""


class RunnerUnsent(BrokerUnavailable):
    """The operation was written but its runner could not be sent: it is failed."""


class NotCancellable(ValueError):
    """The operation has already ended."""


@dataclass(frozen=True)
class Preview:
    action: str
    filter: dict[str, str]
    all: bool
    include_retried: bool
    count: int
    max_id: int
    sample: list[dict[str, Any]]
    fingerprint: str


class Conflict(Exception):
    """The set changed since the preview: `preview` is the set as it is now."""

    def __init__(self, message: str, preview: Preview) -> None:
        super().__init__(message)
        self.preview = preview


@dataclass
class _Batch:
    """What one batch did: counts and the failures to keep."""

    done: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)


def matching(task_filter: TaskFilter, action: str, include_retried: bool = False) -> QuerySet:
    """The stored results `action` would act on for `task_filter`: for a retry, only failed or
    revoked results of the filter's backend (the main one when blank: a retry is published
    there), without those an earlier operation retried unless `include_retried`."""
    if action == Action.RETRY:
        rows = stored_results(replace(task_filter, backend=task_filter.backend_alias))
        rows = rows.filter(status__in=RETRYABLE_STATES)
        if not include_retried:
            rows = rows.filter(~Exists(BulkRetriedTask.objects.filter(task_id=OuterRef("task_id"))))
        return rows
    return stored_results(task_filter)


def _check_action(action: str) -> None:
    if action not in SUPPORTED_ACTIONS:
        raise UnsupportedAction(f"action must be one of {', '.join(SUPPORTED_ACTIONS)}.")


def _digest(task_filter: TaskFilter, action: str, all_: bool, include_retried: bool) -> str:
    return task_filter.digest(action, f"all={all_}", f"include_retried={include_retried}")[:40]


def preview(task_filter: TaskFilter, action: str, all_: bool = False, include_retried: bool = False) -> Preview:
    """The exact count of what `action` would act on, the first SAMPLE_SIZE matches (in the
    order the runner takes them) and the fingerprint start() wants back.

    Raises UnsupportedAction, EmptyFilter (an empty filter without all_), DatabaseError; for a
    message action also FilterError, PurgeDisabled, ScanTooLong, SelectUnsupported, BrokerUnavailable.
    """
    _check_action(action)
    if task_filter.is_empty and not all_:
        raise EmptyFilter('An empty filter matches every stored result: narrow it, or say "all": true.')
    if action in MESSAGE_ACTIONS:
        return _message_preview(task_filter, action, all_, include_retried)
    rows = matching(task_filter, action, include_retried)
    totals = rows.aggregate(count=Count("id"), max_id=Coalesce(Max("id"), 0))
    count, max_id = totals["count"], totals["max_id"]
    first = rows.order_by("id").values_list("task_id", "task_name", "status", "date_done")[:SAMPLE_SIZE]
    keys = ("task_id", "task_name", "state", "date_done")
    sample = [dict(zip(keys, row, strict=True)) for row in first]
    fingerprint = f"{_digest(task_filter, action, all_, include_retried)}.{count}.{max_id}"
    return Preview(action, task_filter.to_dict(), all_, include_retried, count, max_id, sample, fingerprint)


def _message_preview(task_filter: TaskFilter, action: str, all_: bool, include_retried: bool) -> Preview:
    bulk_messages.check_filter(task_filter)
    if action == Action.PURGE:
        bulk_messages.check_purge_allowed()
    found = bulk_messages.scan(task_filter, revoke=action == Action.REVOKE, sample_size=SAMPLE_SIZE)
    fingerprint = f"{_digest(task_filter, action, all_, include_retried)}.{found.count}.0"
    return Preview(action, task_filter.to_dict(), all_, include_retried, found.count, 0, found.sample, fingerprint)


def _parse_fingerprint(fingerprint: str) -> tuple[str, int, int]:
    digest, _, rest = fingerprint.partition(".")
    count, _, max_id = rest.partition(".")
    if len(digest) != 40 or not count.isdigit() or not max_id.isdigit():
        raise BadFingerprint("fingerprint: not one a preview made (digest.count.max_id).")
    return digest, int(count), int(max_id)


def start(
    task_filter: TaskFilter,
    action: str,
    confirmed_count: int,
    fingerprint: str,
    user: AbstractBaseUser | AnonymousUser | None,
    all_: bool = False,
    include_retried: bool = False,
) -> BulkOperation:
    """Start the operation a preview confirmed, if its set is still the one shown.

    Raises UnsupportedAction, EmptyFilter, BadFingerprint, Conflict (with a fresh preview),
    RunnerUnsent (the runner could not be sent: the operation is written as failed); for a message
    action also what preview() raises.
    """
    current = preview(task_filter, action, all_, include_retried)
    digest, shown_count, max_id = _parse_fingerprint(fingerprint)
    if digest != _digest(task_filter, action, all_, include_retried):
        raise Conflict("The fingerprint was made for another filter or action: preview again.", current)
    if shown_count != confirmed_count:
        raise Conflict(f"The confirmed count {confirmed_count} is not the previewed {shown_count}.", current)
    allowed = confirmed_count * settings.BULK_GROWTH_PERCENT / 100
    if current.count - confirmed_count > allowed:
        raise Conflict(
            f"The set grew from {confirmed_count} to {current.count} since the preview "
            f"(DD_BULK_GROWTH_PERCENT={settings.BULK_GROWTH_PERCENT:g}): confirm the new count.",
            current,
        )
    authenticated = user is not None and user.is_authenticated
    audit = record_action(
        user,
        backend=task_filter.backend_alias[:100],
        action=f"bulk_{action}",
        target=task_filter.to_query() or "all",
        result=Result.OK,
        counts={"confirmed": confirmed_count},
        detail="started",
    )
    operation = BulkOperation.objects.create(
        user=user if authenticated else None,
        username=user.get_username() if authenticated else "",
        action=action,
        backend=task_filter.backend_alias,
        filter={**task_filter.to_dict(), **({"all": "true"} if all_ else {})},
        include_retried=include_retried,
        confirmed_count=confirmed_count,
        fingerprint=fingerprint,
        max_id=max_id,
        message_limit=current.count if action in MESSAGE_ACTIONS else None,
        updated_at=timezone.now(),
        audit=audit,
    )
    try:
        send_runner(operation.pk)
    except BrokerUnavailable as exc:
        _finish(operation.pk, State.FAILED, f"The runner could not be sent: {exc}")
        raise RunnerUnsent(str(exc)) from exc
    return operation


def send_runner(operation_id: int) -> str:
    """Send the runner task of `operation_id` to DD_BULK_QUEUE on the main broker; its task id."""
    with broker_connection() as conn:
        sent = app.send_task(
            RUNNER_TASK, args=[operation_id], queue=settings.BULK_QUEUE or default_queue(), connection=conn, retry=False
        )
    return sent.id


def cancel(operation_id: int) -> BulkOperation:
    """Ask the runner to stop before its next batch; an operation no runner took yet is cancelled
    at once. Raises BulkOperation.DoesNotExist, NotCancellable."""
    operation = BulkOperation.objects.get(pk=operation_id)
    if operation.state not in ACTIVE_STATES:
        raise NotCancellable(f"Operation {operation_id} is {operation.state}: there is nothing to cancel.")
    now = timezone.now()
    BulkOperation.objects.filter(pk=operation_id, state__in=ACTIVE_STATES).update(cancel_requested=True, updated_at=now)
    if BulkOperation.objects.filter(pk=operation_id, state=State.PENDING, runner="").exists():
        _finish(operation_id, State.CANCELLED, "cancelled before a runner took it", only_pending=True)
    return BulkOperation.objects.get(pk=operation_id)


def resume_stale(stale_seconds: float | None = None) -> list[int]:
    """Send a runner again for each pending or running operation not updated for
    `stale_seconds` (DD_BULK_STALE_SECONDS if None): its runner died. The ids sent."""
    stale = settings.BULK_STALE_SECONDS if stale_seconds is None else stale_seconds
    before = timezone.now() - timedelta(seconds=stale)
    ids = list(
        BulkOperation.objects.filter(state__in=ACTIVE_STATES, updated_at__lte=before).values_list("pk", flat=True)[:100]
    )
    for operation_id in ids:
        send_runner(operation_id)
    return ids


def progress(operation: BulkOperation, now: datetime | None = None) -> dict[str, Any]:
    """done / total, the rate since the start (results per second) and the time left at that rate.

    The total is the confirmed count while the operation runs; once done, what it processed (results
    that stopped matching meanwhile, deleted or retried elsewhere, are not left "to do")."""
    now = now or timezone.now()
    processed = operation.done_count + operation.failed_count
    total = processed if operation.state == State.DONE else max(operation.confirmed_count, processed)
    elapsed = ((operation.finished_at or now) - operation.started_at).total_seconds() if operation.started_at else 0
    rate = processed / elapsed if elapsed > 0 else None
    left = None
    if operation.state in ACTIVE_STATES and rate:
        left = max(0, total - processed) / rate
    elif operation.state not in ACTIVE_STATES:
        left = 0.0
    return {
        "processed": processed,
        "total": total,
        "percent": round(100 * processed / total, 1) if total else 100.0,
        "rate_per_second": round(rate, 1) if rate is not None else None,
        "seconds_left": round(left, 1) if left is not None else None,
    }


# --- the runner ------------------------------------------------------------------------------


class _LostLease(Exception):
    """Another runner took the operation over."""


def run_operation(operation_id: int, runner_id: str) -> str:
    """Run (or go on with) the operation `operation_id` as runner `runner_id`; its final state,
    or "skipped" when another live runner holds it or it has ended."""
    now = timezone.now()
    stale = now - timedelta(seconds=settings.BULK_STALE_SECONDS)
    taken = (
        BulkOperation.objects.filter(pk=operation_id, state__in=ACTIVE_STATES)
        .filter(Q(runner="") | Q(runner=runner_id) | Q(updated_at__lte=stale))
        .update(runner=runner_id, state=State.RUNNING, started_at=Coalesce(F("started_at"), now), updated_at=now)
    )
    if not taken:
        return "skipped"
    operation = BulkOperation.objects.get(pk=operation_id)
    try:
        if operation.action == Action.RETRY:
            _settle_in_flight(operation, runner_id)
        while True:
            operation.refresh_from_db(fields=["cancel_requested", "runner"])
            if operation.runner != runner_id:
                return "skipped"
            if operation.cancel_requested:
                _finish(operation_id, State.CANCELLED, "cancelled")
                return State.CANCELLED
            if not _run_batch(operation, runner_id):
                _finish(operation_id, State.DONE, "")
                return State.DONE
            time.sleep(settings.BULK_BATCH_PAUSE_SECONDS)
    except _LostLease:
        return "skipped"
    except SoftTimeLimitExceeded:
        # A soft time limit (DD_CELERY_TASK_SOFT_TIME_LIMIT) is no failure: the batch in flight rolled
        # back (or its claims are settled), and a new runner goes on from the cursor.
        BulkOperation.objects.filter(pk=operation_id, runner=runner_id).update(runner="", updated_at=timezone.now())
        send_runner(operation_id)
        return "continued"
    except Exception as exc:
        logger.exception("Bulk operation %s failed", operation_id)
        _finish(operation_id, State.FAILED, redact(f"{type(exc).__name__}: {exc}"))
        return State.FAILED


def _locked(operation_id: int, runner_id: str) -> BulkOperation:
    """The operation's row locked for this transaction, while `runner_id` holds it."""
    operation = BulkOperation.objects.select_for_update().get(pk=operation_id)
    if operation.runner != runner_id or operation.state != State.RUNNING:
        raise _LostLease
    return operation


def _next_ids(operation: BulkOperation, columns: tuple[str, ...]) -> list[tuple]:
    task_filter = TaskFilter.from_query(operation.filter)
    rows = matching(task_filter, operation.action, operation.include_retried)
    rows = rows.filter(id__gt=operation.cursor, id__lte=operation.max_id).order_by("id")
    return list(rows.values_list("id", *columns)[: settings.BULK_BATCH_SIZE])


def _record(operation: BulkOperation, cursor: int, done: int, failures: list[tuple[str, str]]) -> None:
    """Advance the cursor and counts and keep the failures (the first DD_BULK_MAX_FAILURES), in
    the caller's transaction."""
    room = max(0, settings.BULK_MAX_FAILURES - operation.failed_count)
    BulkOperationFailure.objects.bulk_create(
        BulkOperationFailure(operation_id=operation.pk, task_id=task_id, reason=redact(reason)[:REASON_CHARS])
        for task_id, reason in failures[:room]
    )
    BulkOperation.objects.filter(pk=operation.pk).update(
        cursor=max(cursor, operation.cursor),
        done_count=F("done_count") + done,
        failed_count=F("failed_count") + len(failures),
        updated_at=timezone.now(),
    )


def _run_batch(operation: BulkOperation, runner_id: str) -> bool:
    """One batch of the operation; False when nothing is left."""
    if operation.action == Action.DELETE_RESULTS:
        return _delete_batch(operation, runner_id)
    if operation.action == Action.REVOKE:
        return _revoke_batch(operation, runner_id)
    if operation.action == Action.PURGE:
        return _purge_batch(operation, runner_id)
    return _retry_batch(operation, runner_id)


def _position_of(cursor: int) -> Position | None:
    return None if cursor >= END else divmod(cursor, POSITION_BASE)


def _cursor_of(position: Position | None) -> int:
    return END if position is None else position[0] * POSITION_BASE + position[1]


def _revoke_batch(operation: BulkOperation, runner_id: str) -> bool:
    """Revoke the next matching messages' ids not revoked yet. The revocations are stored in the
    transaction that records the batch: a runner killed before it commits leaves none stored (a
    worker that got the broadcast still skips them), and the next runner revokes and counts them."""
    operation.refresh_from_db(fields=["cursor", "done_count"])
    position = _position_of(operation.cursor)
    left = (operation.message_limit or 0) - operation.done_count
    if position is None or left <= 0:
        return False
    broker = get_broker(operation.backend)
    most = min(settings.BULK_BATCH_SIZE, left)
    ids, after = bulk_messages.revoke_ids(broker, TaskFilter.from_query(operation.filter), position, most)
    with transaction.atomic():
        locked = _locked(operation.pk, runner_id)
        for first in range(0, len(ids), REVOKE_MANY_MAX):
            revoke_tasks(ids[first : first + REVOKE_MANY_MAX], broker)
        _record(locked, _cursor_of(after), len(ids), [])
    return True


def _purge_batch(operation: BulkOperation, runner_id: str) -> bool:
    """Remove the next matching messages; the count is the broker's own (bulk_messages.purge_step)."""
    operation.refresh_from_db(fields=["cursor", "done_count"])
    position = _position_of(operation.cursor)
    cap = operation.message_limit or 0
    if position is None or operation.done_count >= cap:
        return False
    bulk_messages.check_purge_allowed()  # turned off meanwhile: the operation stops, as failed
    broker = get_broker(operation.backend)
    task_filter = TaskFilter.from_query(operation.filter)
    step = bulk_messages.purge_step(
        broker, task_filter, operation.pk, position, settings.BULK_BATCH_SIZE, cap, operation.done_count
    )
    with transaction.atomic():
        locked = _locked(operation.pk, runner_id)
        _record(locked, _cursor_of(step.position), max(0, step.total - locked.done_count), [])
    forget_status(broker)
    return True


def _delete_batch(operation: BulkOperation, runner_id: str) -> bool:
    from django_celery_results.models import TaskResult

    with transaction.atomic():
        locked = _locked(operation.pk, runner_id)
        ids = [row[0] for row in _next_ids(locked, ())]
        if not ids:
            return False
        deleted, _ = TaskResult.objects.filter(id__in=ids).delete()
        _record(locked, ids[-1], deleted, [])
    return True


def _retry_batch(operation: BulkOperation, runner_id: str) -> bool:
    calls = []
    with transaction.atomic():
        locked = _locked(operation.pk, runner_id)
        rows = _next_ids(locked, ("task_id",))
        if not rows:
            return False
        failures = []
        stored = stored_calls([task_id for _id, task_id in rows])
        for _id, task_id in rows:
            call = stored.get(task_id)
            if isinstance(call, StoredCall):
                calls.append((task_id, call, str(uuid.uuid4())))
            else:
                failures.append((task_id, str(call or UnknownTask(f"No stored result has the task id {task_id}."))))
        BulkRetriedTask.objects.bulk_create(
            BulkRetriedTask(operation_id=locked.pk, task_id=task_id, new_task_id=new_id)
            for task_id, _call, new_id in calls
        )
        _record(locked, rows[-1][0], 0, failures)
    sent: list[str] = []
    unsendable: list[tuple[str, str]] = []
    broker = get_broker(operation.backend)
    try:
        with broker_connection(broker=broker) as conn:
            for task_id, call, new_id in calls:
                try:
                    app.send_task(
                        call.task_name,
                        args=call.args,
                        kwargs=call.kwargs,
                        queue=call.queue,
                        connection=conn,
                        retry=False,
                        task_id=new_id,
                        # Not a child of the runner: Celery would keep every retry's AsyncResult in the
                        # runner's request.children (about 0.9 MiB per 1,000 retries, for the whole run).
                        add_to_parent=False,
                        **call.options,
                    )
                except EncodeError as exc:
                    unsendable.append((task_id, f"The stored arguments cannot be sent as JSON: {exc}"))
                else:
                    sent.append(task_id)
    except BrokerUnavailable:
        # Not attempted: release the claims, so the operation (resumed) or a later one can send them.
        attempted = set(sent) | {task_id for task_id, _ in unsendable}
        with transaction.atomic():
            BulkRetriedTask.objects.filter(operation_id=operation.pk, state=BulkRetriedTask.State.SENDING).exclude(
                task_id__in=attempted
            ).delete()
            _mark_sent(operation, runner_id, sent, unsendable, rewind_to=_first_unattempted(calls, attempted, rows))
        raise
    with transaction.atomic():
        _mark_sent(operation, runner_id, sent, unsendable)
    forget_status(broker)
    return True


def _first_unattempted(calls: list, attempted: set[str], rows: list[tuple]) -> int | None:
    """The cursor to go back to: just before the first result of the batch not attempted."""
    pending = {task_id for task_id, _c, _n in calls} - attempted
    for index, (_id, task_id) in enumerate(rows):
        if task_id in pending:
            return rows[index - 1][0] if index else None
    return None


def _mark_sent(
    operation: BulkOperation,
    runner_id: str,
    sent: list[str],
    unsendable: list[tuple[str, str]],
    rewind_to: int | None = None,
) -> None:
    locked = _locked(operation.pk, runner_id)
    claims = BulkRetriedTask.objects.filter(operation_id=operation.pk, state=BulkRetriedTask.State.SENDING)
    claims.filter(task_id__in=sent).update(state=BulkRetriedTask.State.SENT)
    claims.filter(task_id__in=[task_id for task_id, _ in unsendable]).delete()
    _record(locked, 0, len(sent), unsendable)
    if rewind_to is not None:
        BulkOperation.objects.filter(pk=operation.pk).update(cursor=rewind_to)


def _settle_in_flight(operation: BulkOperation, runner_id: str) -> None:
    """Claims an earlier runner left `sending` (it died while publishing their batch): `sent` if
    the new task id has a stored result (it ran), else `unknown`, a failure never sent again."""
    from django_celery_results.models import TaskResult

    claims = BulkRetriedTask.objects.filter(operation_id=operation.pk, state=BulkRetriedTask.State.SENDING)
    while True:
        with transaction.atomic():
            locked = _locked(operation.pk, runner_id)
            batch = list(claims.values_list("task_id", "new_task_id")[: settings.BULK_BATCH_SIZE])
            if not batch:
                return
            ran = set(
                TaskResult.objects.filter(task_id__in=[new for _t, new in batch]).values_list("task_id", flat=True)
            )
            sent = [task_id for task_id, new in batch if new in ran]
            unknown = [(task_id, new) for task_id, new in batch if new not in ran]
            claims.filter(task_id__in=sent).update(state=BulkRetriedTask.State.SENT)
            claims.filter(task_id__in=[task_id for task_id, _ in unknown]).update(state=BulkRetriedTask.State.UNKNOWN)
            reasons = [
                (task_id, f"The runner stopped while publishing it; it may have been sent as {new} (not sent again).")
                for task_id, new in unknown
            ]
            _record(locked, 0, len(sent), reasons)


def _finish(operation_id: int, state: str, detail: str, only_pending: bool = False) -> None:
    """End the operation in `state` and write its outcome on its audit row."""
    now = timezone.now()
    rows = BulkOperation.objects.filter(pk=operation_id, state__in=(State.PENDING,) if only_pending else ACTIVE_STATES)
    if not rows.update(state=state, finished_at=now, updated_at=now, detail=detail[:10_000]):
        return
    operation = BulkOperation.objects.get(pk=operation_id)
    if operation.audit_id is not None:
        CeleryAuditLog.objects.filter(pk=operation.audit_id).update(
            result=Result.FAILED if state == State.FAILED else Result.OK,
            counts={
                "confirmed": operation.confirmed_count,
                "done": operation.done_count,
                "failed": operation.failed_count,
                "cancelled": int(state == State.CANCELLED),
            },
            detail=f"operation {operation_id} {state}" + (f": {detail}" if detail else ""),
        )
