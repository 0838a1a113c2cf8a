"""The queued-message side of bulk operations: revoke or purge the messages of one queue that a
filter matches (dojo.ops.controls.bulk previews, starts and runs them).

A message filter names one configured queue and may narrow it by task name (exact or prefix)
and by text in the message's argsrepr or kwargsrepr headers (the same text a stored result's
args hold); the stored-result fields (state, exception type, done window, worker) mean nothing
for a message that has not run, so they are refused, naming the field. Reading messages by a
filter without consuming them needs Redis (SelectUnsupported elsewhere).

Messages are read from the head of each priority list (the newest end) by offset: a message
pushed meanwhile only makes the next window read again what was read already, and one a worker
took is simply gone, so nothing present is skipped. The preview therefore counts each task id
once; a revoke skips ids already revoked (stored revocations, so a read again or a resumed
operation never counts one twice); a purge's removals are counted on Redis in the same atomic
step (PURGE_SCRIPT), never above the cap the start confirmed.

Prefetched messages (held by workers, not in the queue) are not seen: revoke those from the
worker's page. A revoke does not remove the message: the worker that takes it discards it.
"""

import time
from dataclasses import dataclass

from django.conf import settings
from django.utils import timezone

from dojo.models import SystemSettings, TaskRevocation
from dojo.ops.brokers import messages
from dojo.ops.brokers.connection import broker_connection
from dojo.ops.brokers.queues import configured_queues
from dojo.ops.brokers.registry import Broker, get_broker
from dojo.ops.brokers.transport import Position, PurgeStep
from dojo.ops.controls.revocations import revocation_window
from dojo.ops.read_models.task_filter import FILTER_FIELDS, FilterError, TaskFilter

MESSAGE_FIELDS = ("task_name", "task_name_prefix", "queue", "backend", "args_contain")
WINDOW = 1000  # messages one read takes
WINDOWS_PER_STEP = 20  # reads (or purge calls) one runner batch makes at most, matches or not
QUEUED = "QUEUED"


class ScanTooLong(Exception):
    """The queue could not be read to its end within DD_BULK_SCAN_SECONDS."""


class PurgeDisabled(PermissionError):
    """System Settings turn queue purge off."""


def check_filter(task_filter: TaskFilter) -> None:
    """Raises FilterError naming the first field a message filter cannot use, or a missing or
    unconfigured queue."""
    for name in FILTER_FIELDS:
        if name not in MESSAGE_FIELDS and getattr(task_filter, name):
            raise FilterError(name, "applies to stored results, not to queued messages: leave it out.")
    if not task_filter.queue:
        raise FilterError("queue", "revoke and purge act on one queue's messages: name a configured queue.")
    if task_filter.queue not in configured_queues():
        raise FilterError("queue", f"{task_filter.queue!r} is not a configured queue (DD_CELERY_QUEUES).")


def check_purge_allowed() -> None:
    if not SystemSettings.load().allow_queue_purge:
        raise PurgeDisabled("Queue purge is disabled in System Settings.")


def match_of(task_filter: TaskFilter) -> messages.MessageMatch:
    return messages.MessageMatch(task_filter.task_name, task_filter.task_name_prefix, task_filter.args_contain)


def _already_revoked(backend: str, ids: list[str]) -> set[str]:
    since = timezone.now() - revocation_window()
    rows = TaskRevocation.objects.filter(backend=backend, task_id__in=ids, revoked_at__gte=since)
    return set(rows.values_list("task_id", flat=True))


@dataclass
class Scan:
    count: int
    sample: list[dict]


def scan(task_filter: TaskFilter, revoke: bool, sample_size: int, seconds: float | None = None) -> Scan:
    """Count the messages of the filter's queue it matches (each task id once; for a revoke, only
    those with a task id not revoked yet) and keep the first `sample_size`, newest first.

    Raises ScanTooLong past `seconds` (DD_BULK_SCAN_SECONDS if None), SelectUnsupported,
    BrokerUnavailable."""
    broker = get_broker(task_filter.backend_alias)
    deadline = time.monotonic() + (settings.BULK_SCAN_SECONDS if seconds is None else seconds)
    match = match_of(task_filter)
    seen: set[str] = set()
    count, sample = 0, []
    with broker_connection(broker=broker) as conn:
        position: Position | None = (0, 0)
        while position is not None:
            chunk = broker.transport.message_window(conn, task_filter.queue, position, WINDOW)
            position = _after(position, chunk)
            found = [messages.decode(raw) for raw in chunk or () if match.matches(raw)]
            ids = [messages.task_id(envelope) for envelope in found]
            skip = _already_revoked(broker.alias, [i for i in ids if i]) if revoke else set()
            for envelope, task_id in zip(found, ids, strict=True):
                if task_id in seen or task_id in skip or (revoke and task_id is None):
                    continue
                if task_id is not None:
                    seen.add(task_id)
                count += 1
                if len(sample) < sample_size:
                    name = messages.headers_of(envelope).get("task")
                    sample.append({"task_id": task_id or "", "task_name": name, "state": QUEUED, "date_done": None})
            if position is not None and time.monotonic() > deadline:
                raise ScanTooLong(
                    f"The queue {task_filter.queue!r} could not be read to its end within DD_BULK_SCAN_SECONDS="
                    f"{settings.BULK_SCAN_SECONDS:g} s ({count} matches so far): narrow the filter or raise it."
                )
    return Scan(count, sample)


def _after(position: Position, chunk: list[bytes] | None, taken: int | None = None) -> Position | None:
    """The position after `taken` messages of `chunk` (all of it if None) read at `position`."""
    if chunk is None:
        return None
    index, offset = position
    if taken is None and len(chunk) < WINDOW:
        return (index + 1, 0)
    return (index, offset + (len(chunk) if taken is None else taken))


def revoke_ids(
    broker: Broker, task_filter: TaskFilter, position: Position, most: int
) -> tuple[list[str], Position | None]:
    """The next task ids (at most `most`) of messages the filter matches that are not revoked yet,
    read from `position` for at most WINDOWS_PER_STEP windows, and the position after the last
    message looked at (None: the queue's end)."""
    match = match_of(task_filter)
    ids: dict[str, None] = {}
    with broker_connection(broker=broker) as conn:
        for _window in range(WINDOWS_PER_STEP):
            chunk = broker.transport.message_window(conn, task_filter.queue, position, WINDOW)
            if chunk is None:
                return list(ids), None
            matched = [
                (offset, messages.task_id(messages.decode(raw)))
                for offset, raw in enumerate(chunk)
                if match.matches(raw)
            ]
            found = [(offset, task_id) for offset, task_id in matched if task_id]
            skip = _already_revoked(broker.alias, [task_id for _offset, task_id in found])
            for offset, task_id in found:
                if task_id not in skip:
                    ids[task_id] = None
                if len(ids) == most:
                    return list(ids), _after(position, chunk, offset + 1)
            position = _after(position, chunk)
            if position is None:
                break
    return list(ids), position


def purge_step(
    broker: Broker, task_filter: TaskFilter, operation_id: int, position: Position, most: int, cap: int, done: int
) -> PurgeStep:
    """Remove up to `most` more messages the filter matches, from `position`, never more than
    `cap` over the whole operation (counted on Redis); the step says where to go on and the
    total removed so far (`done` until the broker counts)."""
    step = PurgeStep(position=position, most=most, windows=WINDOWS_PER_STEP, total=done)
    with broker_connection(broker=broker) as conn:
        counter = f"dojo-bulk-purge:{operation_id}"
        broker.transport.purge_matching(conn, task_filter.queue, match_of(task_filter), step, counter, cap)
    return step
