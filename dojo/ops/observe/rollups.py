"""Task analytics from events: the event monitor's accumulator of per-minute deltas and its flush
into TaskRollup (minute, hour and totals tiers) and FailureRollup, lost tasks into LostTask, and
beat's pruning of the old tiers.

The receiver thread feeds `Rollups.handle` every event; it adds to an in-memory delta per
(minute, task name, queue[, worker]) and, for failures, per (minute, task name, exception type).
The writer thread calls `Rollups.take` and `write_rollups` every DD_ANALYTICS_FLUSH_SECONDS: one
transaction reads the rows of the touched keys, adds the deltas and writes them back
(bulk_update / bulk_create), so the rows touched per flush follow the keys, never the events. A
failed write gives the deltas back (`Rollups.give_back`) and the next flush writes them: nothing
is lost, and since a failed transaction commits nothing, nothing is counted twice.

What is counted, at the minute the monitor received the event: received, started, succeeded,
failed (terminal task-failed), retried, revoked, rejected; recovered = succeeded after one or more
retries, critical = failed after one or more retries (its last attempt), lost (see
dojo.ops.observe.task_tracker). Runtimes: task-succeeded's `runtime`, for task-failed and
task-retried the time since its task-started; every run that ended is in the runtime histogram.
Waits: received -> started, and published -> started where a task-sent event gave the publish
time (the project's publishers send task-sent: CELERY_TASK_SEND_SENT_EVENT); not for a task with
an ETA or countdown, whose start waits for its time by design. Events of ids the tracker does not
know (started before the monitor, or dropped by its LRU) have no name to count under and are
only counted in `Rollups.untracked`.
"""

import re
import threading
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from dojo.models import TASK_COUNT_FIELDS, FailureRollup, LostTask, TaskRollup
from dojo.ops.histograms import BOUNDS, SIZE
from dojo.ops.observe.task_tracker import LostCandidate, TaskTracker
from dojo.ops.redaction import redact

TEXT_LIMIT = 10_000  # the latest exception and traceback kept per failure group
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)  # the totals tier's bucket_start
CHUNK = 400  # task names per IN (...) read
# The count fields, in the order of Delta.counts.
COUNTS = TASK_COUNT_FIELDS
RECEIVED, STARTED, SUCCEEDED, FAILED, RETRIED, REVOKED, REJECTED, RECOVERED, CRITICAL, LOST = range(len(COUNTS))
ROLLUP_FIELDS = [
    *COUNTS,
    "runtime_sum",
    "runtime_max",
    "runtime_buckets",
    "wait_sum",
    "wait_buckets",
    "publish_wait_sum",
    "publish_wait_buckets",
]
FAILURE_FIELDS = ["count", "first_seen", "last_seen", "latest_task_id", "latest_exception", "latest_traceback"]
EXCEPTION_TYPE = re.compile(r"\s*([A-Za-z_][\w.]*)")


def _bucket(seconds: float) -> int:
    # bisect on the module's bounds, inlined for the hot path
    lo, hi = 0, len(BOUNDS)
    while lo < hi:
        mid = (lo + hi) // 2
        if BOUNDS[mid] < seconds:
            lo = mid + 1
        else:
            hi = mid
    return lo


class Delta:
    """What one key's events added since the last flush."""

    __slots__ = ("counts", "publish", "publish_sum", "runtime", "runtime_max", "runtime_sum", "wait", "wait_sum")

    def __init__(self) -> None:
        self.counts = [0] * len(COUNTS)
        self.runtime_sum = self.runtime_max = self.wait_sum = self.publish_sum = 0.0
        self.runtime = [0] * SIZE
        self.wait = [0] * SIZE
        self.publish = [0] * SIZE

    @property
    def empty(self) -> bool:
        return not (any(self.counts) or any(self.runtime) or any(self.wait) or any(self.publish))

    def add(self, other: "Delta") -> None:
        for index, value in enumerate(other.counts):
            self.counts[index] += value
        self.runtime_sum += other.runtime_sum
        self.runtime_max = max(self.runtime_max, other.runtime_max)
        self.wait_sum += other.wait_sum
        self.publish_sum += other.publish_sum
        for mine, theirs in ((self.runtime, other.runtime), (self.wait, other.wait), (self.publish, other.publish)):
            for index, value in enumerate(theirs):
                mine[index] += value

    def run(self, seconds: float) -> None:
        seconds = max(0.0, seconds)
        self.runtime_sum += seconds
        if seconds > self.runtime_max:
            self.runtime_max = seconds
        self.runtime[_bucket(seconds)] += 1

    def apply_to(self, row: TaskRollup) -> None:
        for name, value in zip(COUNTS, self.counts, strict=True):
            if value:
                setattr(row, name, getattr(row, name) + value)
        row.runtime_sum += self.runtime_sum
        row.runtime_max = max(row.runtime_max, self.runtime_max)
        row.wait_sum += self.wait_sum
        row.publish_wait_sum += self.publish_sum
        row.runtime_buckets = _added(row.runtime_buckets, self.runtime)
        row.wait_buckets = _added(row.wait_buckets, self.wait)
        row.publish_wait_buckets = _added(row.publish_wait_buckets, self.publish)


def _added(stored: list | None, counts: list[int]) -> list[int]:
    total = [int(value) for value in (stored or [])[:SIZE]]
    total.extend([0] * (SIZE - len(total)))
    for index, value in enumerate(counts):
        total[index] += value
    return total


class FailureDelta:
    __slots__ = ("count", "exception", "first", "last", "task_id", "traceback")

    def __init__(self, at: float) -> None:
        self.count, self.first, self.last = 0, at, at
        self.task_id = self.exception = self.traceback = ""

    def add(self, other: "FailureDelta") -> None:
        self.count += other.count
        self.first = min(self.first, other.first)
        if other.last >= self.last:
            self.last, self.task_id = other.last, other.task_id
            self.exception, self.traceback = other.exception, other.traceback


def exception_type(exception: str, traceback: str = "") -> str:
    """The type name in a task-failed event's `exception` repr ("ValueError('x')" -> "ValueError"),
    qualified by the traceback's last line when it names the module ("smtplib.SMTPServerDisconnected")."""
    match = EXCEPTION_TYPE.match(exception or "")
    name = match.group(1) if match else "Exception"
    if traceback and "." not in name:
        last = traceback.rstrip().rpartition("\n")[2]
        qualified = last.partition(":")[0].strip()
        if qualified.endswith("." + name) and " " not in qualified:
            name = qualified
    return name[:255]


class Taken:
    """One flush's worth of deltas of one backend."""

    def __init__(self) -> None:
        self.minutes: dict[tuple, Delta] = {}  # (minute epoch, task name, queue, worker) -> Delta
        self.failures: dict[tuple, FailureDelta] = {}  # (minute epoch, task name, exception type)
        self.lost: list[LostCandidate] = []

    def __bool__(self) -> bool:
        return bool(self.minutes or self.failures or self.lost)

    def merge(self, other: "Taken") -> None:
        for key, delta in other.minutes.items():
            mine = self.minutes.get(key)
            if mine is None:
                self.minutes[key] = delta
            else:
                mine.add(delta)
        for key, failure in other.failures.items():
            mine_failure = self.failures.get(key)
            if mine_failure is None:
                self.failures[key] = failure
            else:
                mine_failure.add(failure)
        self.lost.extend(other.lost)


class Rollups:
    """One backend's tracker and deltas, fed by the receiver thread, taken by the writer thread."""

    def __init__(self, max_tasks: int = 100_000, max_workers: int = 2000, by_worker: bool = False) -> None:
        self.tracker = TaskTracker(max_tasks, max_workers)
        self.by_worker = by_worker
        self.untracked = 0  # task events of ids the tracker did not know (no name to count under)
        self._pending = Taken()
        self._lock = threading.Lock()
        self._handlers = {
            "task-sent": self._sent,
            "task-received": self._received,
            "task-started": self._started,
            "task-succeeded": self._succeeded,
            "task-failed": self._failed,
            "task-retried": self._retried,
            "task-revoked": self._revoked,
            "task-rejected": self._rejected,
        }

    def __len__(self) -> int:
        return len(self.tracker)

    def handle(self, kind: str, event: dict) -> None:
        """One event as celery.events.EventReceiver hands it over (with `local_received`)."""
        handler = self._handlers.get(kind)
        if handler is not None:
            task_id = event.get("uuid")
            if task_id:
                with self._lock:
                    handler(str(task_id), event)
        elif kind.startswith("worker-"):
            hostname = event.get("hostname")
            if hostname:
                pid, freq = event.get("pid"), event.get("freq")
                with self._lock:
                    self.tracker.worker_event(
                        kind,
                        str(hostname),
                        pid if isinstance(pid, int) else 0,
                        float(freq) if isinstance(freq, int | float) else 0.0,
                        float(event.get("local_received") or 0.0),
                    )

    def _key(self, event: dict, name: str, queue: str, worker: str) -> tuple:
        minute = int(event.get("local_received") or event.get("timestamp") or 0) // 60 * 60
        return (minute, name, queue, worker if self.by_worker else "")

    def _pending_at(self, key: tuple) -> Delta:
        delta = self._pending.minutes.get(key)
        if delta is None:
            delta = self._pending.minutes[key] = Delta()
        return delta

    def _delta(self, event: dict, name: str, queue: str, worker: str) -> Delta:
        return self._pending_at(self._key(event, name, queue, worker))

    def _sent(self, task_id: str, event: dict) -> None:
        task = self.tracker.task(task_id)
        task.name = str(event.get("name") or task.name)
        queue = str(event.get("queue") or event.get("routing_key") or task.queue)
        if queue != task.queue and task.counted is not None:
            # The worker's task-received came first (the publisher's event raced it): move its
            # count to the queue, if it is not written yet.
            counted = self._pending.minutes.get(task.counted)
            if counted is not None and counted.counts[RECEIVED] > 0:
                counted.counts[RECEIVED] -= 1
                minute, name, _, worker = task.counted
                self._pending_at((minute, name, queue, worker)).counts[RECEIVED] += 1
            task.counted = None
        task.queue = queue
        task.sent = float(event.get("timestamp") or 0.0)

    def _received(self, task_id: str, event: dict) -> None:
        task = self.tracker.task(task_id)
        task.name = str(event.get("name") or task.name)
        retries = event.get("retries")
        if isinstance(retries, int) and retries > task.retries:
            task.retries = retries
        task.received = float(event.get("timestamp") or 0.0)
        if event.get("eta"):
            # A countdown or ETA: the time until it is due is no queue wait; its waits are not counted.
            task.received = task.sent = 0.0
        if task.started:
            self.tracker.stop(task_id, task)  # redelivered
        worker = str(event.get("hostname") or "")
        task.worker = worker
        key = self._key(event, task.name, task.queue, worker)
        self._pending_at(key).counts[RECEIVED] += 1
        task.counted = key if not task.queue else None  # task-sent may still name the queue

    def _started(self, task_id: str, event: dict) -> None:
        task = self.tracker.get(task_id)
        if task is None or not task.name:
            self.untracked += 1
            return
        self.tracker.tasks.move_to_end(task_id)
        at = float(event.get("timestamp") or 0.0)
        worker = str(event.get("hostname") or "")
        self.tracker.start(task_id, task, worker, at)
        delta = self._delta(event, task.name, task.queue, worker)
        delta.counts[STARTED] += 1
        if task.received and at:
            wait = max(0.0, at - task.received)
            delta.wait_sum += wait
            delta.wait[_bucket(wait)] += 1
        if task.sent and at:
            wait = max(0.0, at - task.sent)
            delta.publish_sum += wait
            delta.publish[_bucket(wait)] += 1
        task.sent = 0.0  # a retry's wait counts from its own publish

    def _ended(self, task_id: str, event: dict, forget: bool):
        task = self.tracker.forget(task_id) if forget else self.tracker.get(task_id)
        if task is None or not task.name:
            self.untracked += 1
            return None, None
        worker = str(event.get("hostname") or task.worker)
        return task, self._delta(event, task.name, task.queue, worker)

    def _succeeded(self, task_id: str, event: dict) -> None:
        task, delta = self._ended(task_id, event, forget=True)
        if task is None:
            return
        delta.counts[SUCCEEDED] += 1
        if task.retries:
            delta.counts[RECOVERED] += 1
        runtime = event.get("runtime")
        if isinstance(runtime, int | float):
            delta.run(float(runtime))
        elif task.started:
            delta.run(float(event.get("timestamp") or 0.0) - task.started)

    def _failed(self, task_id: str, event: dict) -> None:
        task, delta = self._ended(task_id, event, forget=True)
        if task is None:
            return
        delta.counts[FAILED] += 1
        if task.retries:
            delta.counts[CRITICAL] += 1
        at = float(event.get("timestamp") or 0.0)
        if task.started and at:
            delta.run(at - task.started)
        exception, traceback = str(event.get("exception") or ""), str(event.get("traceback") or "")
        minute = int(event.get("local_received") or at) // 60 * 60
        key = (minute, task.name, exception_type(exception, traceback))
        received = float(event.get("local_received") or at)
        failure = self._pending.failures.get(key)
        if failure is None:
            failure = self._pending.failures[key] = FailureDelta(received)
        failure.count += 1
        failure.last = max(failure.last, received)
        failure.task_id, failure.exception, failure.traceback = task_id, exception, traceback

    def _retried(self, task_id: str, event: dict) -> None:
        task, delta = self._ended(task_id, event, forget=False)
        if task is None:
            return
        delta.counts[RETRIED] += 1
        at = float(event.get("timestamp") or 0.0)
        if task.started and at:
            delta.run(at - task.started)
        self.tracker.stop(task_id, task)

    def _revoked(self, task_id: str, event: dict) -> None:
        task, delta = self._ended(task_id, event, forget=True)
        if task is not None:
            delta.counts[REVOKED] += 1

    def _rejected(self, task_id: str, event: dict) -> None:
        task, delta = self._ended(task_id, event, forget=True)
        if task is not None:
            delta.counts[REJECTED] += 1

    def check_lost(self, now: float, grace: float) -> list[LostCandidate]:
        """Find the lost tasks (task_tracker) and count them in the deltas, at the minute of `now`."""
        with self._lock:
            lost = self.tracker.find_lost(now, grace)
            minute = int(now) // 60 * 60
            for task in lost:
                key = (minute, task.name, task.queue, task.worker if self.by_worker else "")
                delta = self._pending.minutes.get(key)
                if delta is None:
                    delta = self._pending.minutes[key] = Delta()
                delta.counts[LOST] += 1
            self._pending.lost.extend(lost)
        return lost

    def take(self) -> Taken:
        with self._lock:
            taken, self._pending = self._pending, Taken()
        return taken

    def give_back(self, taken: Taken) -> None:
        """A write failed: these deltas go with the next flush."""
        with self._lock:
            taken.merge(self._pending)
            self._pending = taken


def _at(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def _chunks(names: Iterable[str]) -> list[list[str]]:
    names = sorted(set(names))
    return [names[i : i + CHUNK] for i in range(0, len(names), CHUNK)]


def tier_deltas(taken: Taken, by_worker: bool) -> dict[tuple, Delta]:
    """The minute deltas summed into the three tiers: (period, bucket_start, task, queue, worker)."""
    tiers: dict[tuple, Delta] = {}

    def into(key: tuple, delta: Delta) -> None:
        mine = tiers.get(key)
        if mine is None:
            mine = tiers[key] = Delta()
        mine.add(delta)

    for (minute, name, queue, worker), delta in taken.minutes.items():
        if delta.empty:
            continue  # a count moved to another key (Rollups._sent)
        name, queue, worker = name[:255], queue[:255], worker[:255]
        into((TaskRollup.Period.MINUTE, _at(minute), name, queue, ""), delta)
        into((TaskRollup.Period.HOUR, _at(minute // 3600 * 3600), name, queue, ""), delta)
        into((TaskRollup.Period.TOTAL, EPOCH, name, queue, worker if by_worker else ""), delta)
    return tiers


def write_rollups(backend: str, taken: Taken, by_worker: bool = False) -> int:
    """Add one backend's deltas to the stored rows; the caller holds the transaction. Returns
    the rows written (updated or created)."""
    written = 0
    tiers = tier_deltas(taken, by_worker)
    if tiers:
        written += _merge_task_rollups(backend, tiers)
    if taken.failures:
        written += _merge_failures(backend, taken.failures)
    if taken.lost:
        now = timezone.now()
        LostTask.objects.bulk_create(
            [
                LostTask(
                    backend=backend,
                    task_id=lost.task_id[:255],
                    task_name=lost.name[:255],
                    queue=lost.queue[:255],
                    worker=lost.worker[:255],
                    started_at=_at(lost.started),
                    worker_gone_at=_at(lost.gone_at),
                    detected_at=now,
                )
                for lost in taken.lost
            ],
            ignore_conflicts=True,
        )
        written += len(taken.lost)
    return written


def _merge_task_rollups(backend: str, tiers: dict[tuple, Delta]) -> int:
    existing: dict[tuple, TaskRollup] = {}
    by_period: dict[int, set[datetime]] = {}
    for period, start, *_ in tiers:
        by_period.setdefault(period, set()).add(start)
    names = {key[2] for key in tiers}
    for period, starts in by_period.items():
        for chunk in _chunks(names):
            rows = TaskRollup.objects.select_for_update().filter(
                backend=backend, period=period, bucket_start__in=sorted(starts), task_name__in=chunk
            )
            for row in rows:
                existing[(row.period, row.bucket_start, row.task_name, row.queue, row.worker)] = row
    updated, created = [], []
    for key, delta in tiers.items():
        row = existing.get(key)
        if row is None:
            period, start, name, queue, worker = key
            row = TaskRollup(
                period=period,
                bucket_start=start,
                backend=backend,
                task_name=name,
                queue=queue,
                worker=worker,
                runtime_buckets=[],
                wait_buckets=[],
                publish_wait_buckets=[],
            )
            delta.apply_to(row)
            created.append(row)
        else:
            delta.apply_to(row)
            updated.append(row)
    if updated:
        TaskRollup.objects.bulk_update(updated, ROLLUP_FIELDS, batch_size=200)
    if created:
        TaskRollup.objects.bulk_create(created, batch_size=200)
    return len(updated) + len(created)


def _merge_failures(backend: str, failures: dict[tuple, FailureDelta]) -> int:
    tiers: dict[tuple, FailureDelta] = {}
    for (minute, name, kind), failure in failures.items():
        name = name[:255]
        for key in (
            (TaskRollup.Period.MINUTE, _at(minute), name, kind),
            (TaskRollup.Period.HOUR, _at(minute // 3600 * 3600), name, kind),
            (TaskRollup.Period.TOTAL, EPOCH, name, kind),
        ):
            mine = tiers.get(key)
            if mine is None:
                mine = tiers[key] = FailureDelta(failure.first)
                mine.last = failure.last
            mine.add(failure)
    existing: dict[tuple, FailureRollup] = {}
    by_period: dict[int, set[datetime]] = {}
    for period, start, *_ in tiers:
        by_period.setdefault(period, set()).add(start)
    for period, starts in by_period.items():
        for chunk in _chunks(key[2] for key in tiers):
            rows = FailureRollup.objects.select_for_update().filter(
                backend=backend, period=period, bucket_start__in=sorted(starts), task_name__in=chunk
            )
            for row in rows:
                existing[(row.period, row.bucket_start, row.task_name, row.exception_type)] = row
    updated, created = [], []
    for key, failure in tiers.items():
        first, last = _at(failure.first), _at(failure.last)
        row = existing.get(key)
        new = row is None
        if row is None:
            period, start, name, kind = key
            row = FailureRollup(
                period=period,
                bucket_start=start,
                backend=backend,
                task_name=name,
                exception_type=kind,
                first_seen=first,
                last_seen=last,
            )
            created.append(row)
        else:
            updated.append(row)
            row.first_seen = min(row.first_seen, first)
        row.count += failure.count
        if new or last >= row.last_seen:
            row.last_seen = last
            row.latest_task_id = failure.task_id[:255]
            row.latest_exception = redact(failure.exception)[:TEXT_LIMIT]
            row.latest_traceback = redact(failure.traceback)[:TEXT_LIMIT]
    if updated:
        FailureRollup.objects.bulk_update(updated, FAILURE_FIELDS, batch_size=200)
    if created:
        FailureRollup.objects.bulk_create(created, batch_size=200)
    return len(updated) + len(created)


def flush(taken: dict[str, tuple["Rollups", Taken]]) -> int:
    """Write every backend's taken deltas in one transaction; on any failure give them all back
    (and re-raise), so the next flush writes them. Returns the rows written."""
    written = 0
    try:
        with transaction.atomic():
            for backend, (rollups, deltas) in taken.items():
                if deltas:
                    written += write_rollups(backend, deltas, rollups.by_worker)
    except BaseException:
        for rollups, deltas in taken.values():
            rollups.give_back(deltas)
        raise
    return written


PRUNE_BATCH = 5000  # rows per DELETE statement


def _delete_batched(queryset, batch: int = PRUNE_BATCH) -> int:
    deleted = 0
    model = queryset.model
    while True:
        ids = list(queryset.values_list("pk", flat=True)[:batch])
        if not ids:
            return deleted
        deleted += model.objects.filter(pk__in=ids).delete()[0]


def prune(now: datetime | None = None, batch: int = PRUNE_BATCH) -> dict[str, int]:
    """Delete minute rows older than DD_ANALYTICS_MINUTE_HOURS, hour rows older than
    DD_ANALYTICS_HOUR_DAYS (TaskRollup and FailureRollup) and LostTask rows older than the hour
    tier, at most `batch` rows per statement; never the totals tier. Rows deleted by kind."""
    now = now or timezone.now()
    minute_cutoff = now - timedelta(hours=settings.ANALYTICS_MINUTE_HOURS)
    hour_cutoff = now - timedelta(days=settings.ANALYTICS_HOUR_DAYS)
    deleted: dict[str, int] = {}
    for model in (TaskRollup, FailureRollup):
        label = model.__name__
        deleted[f"{label}.minute"] = _delete_batched(
            model.objects.filter(period=TaskRollup.Period.MINUTE, bucket_start__lt=minute_cutoff), batch
        )
        deleted[f"{label}.hour"] = _delete_batched(
            model.objects.filter(period=TaskRollup.Period.HOUR, bucket_start__lt=hour_cutoff), batch
        )
    deleted["LostTask"] = _delete_batched(LostTask.objects.filter(detected_at__lt=hour_cutoff), batch)
    return deleted
