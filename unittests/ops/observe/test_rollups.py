"""Task analytics (dojo.ops.observe.rollups, dojo.ops.observe.task_tracker): the flush merging
deltas into stored rows, and real workers' task events through a real `manage.py celery_monitor`
(the Monitor helper of test_monitor.py) on a private Redis and the shared test database.
"""

import os
import signal
import time
from datetime import timedelta
from pathlib import Path
from unittest import mock

import pytest
from django.db import DatabaseError
from django.utils import timezone

from dojo.models import FailureRollup, LostTask, TaskRollup
from dojo.ops import histograms
from dojo.ops.observe import rollups
from dojo.ops.observe.rollups import Rollups, exception_type
from unittests.conftest import LiveBroker, wait_for
from unittests.ops.observe.test_monitor import monitors_on

MINUTE, HOUR, TOTAL = TaskRollup.Period.MINUTE, TaskRollup.Period.HOUR, TaskRollup.Period.TOTAL


def feed(state: Rollups, task_id: str, name: str, runtime: float, *, retries: int = 0, fail: bool = False) -> None:
    now = time.time()
    base = {"uuid": task_id, "hostname": "w1@h", "local_received": now}
    state.handle("task-sent", {**base, "name": name, "queue": "q1", "timestamp": now - 0.5, "hostname": "web@h"})
    state.handle("task-received", {**base, "name": name, "retries": retries, "timestamp": now - 0.2})
    state.handle("task-started", {**base, "timestamp": now})
    if fail:
        state.handle(
            "task-failed",
            {
                **base,
                "timestamp": now + runtime,
                "exception": "KeyError('password=hunter2')",
                "traceback": "Traceback (most recent call last):\nKeyError: 'x'\n",
            },
        )
    else:
        state.handle("task-succeeded", {**base, "timestamp": now + runtime, "runtime": runtime})


def test_exception_types_from_the_repr_and_the_traceback():
    assert exception_type("ValueError('x')") == "ValueError"
    assert exception_type("SMTPServerDisconnected('gone')", "Tb\nsmtplib.SMTPServerDisconnected: gone\n") == (
        "smtplib.SMTPServerDisconnected"
    )
    assert exception_type("") == "Exception"


@pytest.mark.django_db(transaction=True)
def test_the_flush_merges_deltas_across_flushes_and_keeps_them_after_a_failed_write():
    """Two flushes add up in all three tiers; a write that fails midway (the failure rows'
    write raises: injected with a mock, a database error we cannot produce on cue) commits
    nothing and the next flush writes those deltas once."""
    state = Rollups(by_worker=False)
    feed(state, "a", "t.one", 0.3)
    feed(state, "b", "t.one", 0.3, retries=1)  # recovered
    assert rollups.flush({"default": (state, state.take())}) == 3
    feed(state, "c", "t.one", 2.0, retries=2, fail=True)  # critical
    with (
        mock.patch.object(rollups, "_merge_failures", side_effect=DatabaseError("disk I/O error")),
        pytest.raises(DatabaseError),
    ):
        rollups.flush({"default": (state, state.take())})
    minute = TaskRollup.objects.get(period=MINUTE)
    assert (minute.succeeded, minute.failed) == (2, 0)  # the failed write left nothing
    feed(state, "d", "t.one", 0.3)
    rollups.flush({"default": (state, state.take())})
    for period in (MINUTE, HOUR, TOTAL):
        row = TaskRollup.objects.get(period=period, task_name="t.one")
        assert (row.received, row.started, row.succeeded, row.failed) == (4, 4, 3, 1), period
        assert (row.recovered, row.critical, row.queue) == (1, 1, "q1")
        assert row.runtime_buckets[histograms.bucket_of(0.3)] == 3
        assert row.runtime_buckets[histograms.bucket_of(2.0)] == 1
        assert sum(row.wait_buckets) == 4 and sum(row.publish_wait_buckets) == 4
        assert row.runtime_sum == pytest.approx(2.9) and row.runtime_max == pytest.approx(2.0)
    assert TaskRollup.objects.get(period=TOTAL).bucket_start == rollups.EPOCH
    failure = FailureRollup.objects.get(period=TOTAL)
    assert (failure.exception_type, failure.count, failure.latest_task_id) == ("KeyError", 1, "c")
    assert FailureRollup.objects.count() == 3


@pytest.mark.django_db
def test_pruning_keeps_the_totals_and_deletes_old_tiers_in_batches(settings):
    settings.ANALYTICS_MINUTE_HOURS, settings.ANALYTICS_HOUR_DAYS = 1, 2
    now = timezone.now()

    def row(period: int, age: timedelta, name: str) -> None:
        TaskRollup.objects.create(period=period, bucket_start=now - age, backend="default", task_name=name)

    for i in range(7):
        row(MINUTE, timedelta(hours=2), f"old{i}")
    row(MINUTE, timedelta(minutes=5), "fresh")
    row(HOUR, timedelta(days=3), "old")
    row(HOUR, timedelta(days=1), "kept")
    row(TOTAL, timedelta(days=9000), "total")
    deleted = rollups.prune(now, batch=3)
    assert deleted["TaskRollup.minute"] == 7 and deleted["TaskRollup.hour"] == 1
    assert set(TaskRollup.objects.values_list("task_name", flat=True)) == {"fresh", "kept", "total"}


# --- real workers, a real monitor ------------------------------------------------------------

FLUSH = {"DD_ANALYTICS_FLUSH_SECONDS": "1", "DD_ANALYTICS_LOST_GRACE_SECONDS": "2"}


@pytest.fixture
def monitored(redis_only: LiveBroker, shared_database: str):
    yield from monitors_on(redis_only, shared_database)


def rows(period: int, name: str) -> list[TaskRollup]:
    return list(TaskRollup.objects.filter(period=period, task_name=name))


def summed(period: int, name: str, field: str) -> int:
    return sum(getattr(row, field) for row in rows(period, name))


def test_real_runs_are_rolled_up_with_percentiles_outcomes_failures_and_lost_tasks(
    redis_only, shared_database, monitored, tmp_path: Path
):
    """A project worker runs sleeps of known times, a task that fails twice then succeeds
    (RECOVERED), one that exhausts its retries (CRITICAL), plain failures; a plain Celery app
    worker's tasks are rolled up too; SIGKILL of a worker mid-task makes a LostTask row.

    Fails without the rollups: no TaskRollup row is ever written."""
    monitored(**FLUSH)
    project = redis_only.start_worker("r1", DD_DATABASE_URL=shared_database)
    plain = redis_only.start_plain_worker("rp1", queues="plain")
    client = redis_only.client()
    client.conf.task_send_sent_event = True
    time.sleep(1.5)  # enable_events reached both (the monitor sends it every second)
    sleeps = [client.send_task("dojo.tasks.sleep", args=(0.3,)) for _ in range(6)]
    sleeps += [client.send_task("dojo.tasks.sleep", args=(1.2,)) for _ in range(2)]
    state = tmp_path / "flaky"
    state.write_text("")
    recovered = client.send_task("dojo.tasks.fail_times", args=(str(state), 2))
    critical = client.send_task("dojo.tasks.fail_times", args=(str(tmp_path / "never"), 99), kwargs={"max_retries": 1})
    failures = [client.send_task("plain.fail", args=("boom",), queue="plain") for _ in range(3)]
    plain_runs = [client.send_task("plain.sleep", args=(0.05,), queue="plain") for _ in range(4)]
    for result in [*sleeps, recovered, *plain_runs]:
        result.get(timeout=30)
    for result in [critical, *failures]:
        with pytest.raises(Exception):  # noqa: B017 - the task's own errors, re-raised by get
            result.get(timeout=30)

    def rolled_up() -> bool:
        return (
            summed(MINUTE, "dojo.tasks.sleep", "succeeded") == 8
            and summed(MINUTE, "plain.fail", "failed") == 3
            and summed(MINUTE, "dojo.tasks.fail_times", "critical") == 1
            and summed(MINUTE, "dojo.tasks.fail_times", "recovered") == 1
            and summed(MINUTE, "plain.sleep", "succeeded") == 4
        )

    wait_for(rolled_up, 20, "the runs rolled up")
    buckets = histograms.merged(row.runtime_buckets for row in rows(MINUTE, "dojo.tasks.sleep"))
    assert sum(buckets) == 8
    p50, p95 = histograms.percentile(buckets, 0.5), histograms.percentile(buckets, 0.95)
    assert 0.25 < p50 <= 0.5  # the 0.3 s runs' bucket
    assert 1.0 < p95 <= 2.5  # the 1.2 s runs' bucket
    assert sum(histograms.merged(row.wait_buckets for row in rows(MINUTE, "dojo.tasks.sleep"))) == 8
    assert sum(histograms.merged(row.publish_wait_buckets for row in rows(MINUTE, "dojo.tasks.sleep"))) == 8
    assert {row.queue for row in rows(MINUTE, "dojo.tasks.sleep")} == {"celery"}  # from task-sent
    flaky = rows(TOTAL, "dojo.tasks.fail_times")
    assert sum(r.retried for r in flaky) == 3 and sum(r.succeeded for r in flaky) == 1
    assert sum(r.failed for r in flaky) == 1
    for name in ("dojo.tasks.sleep", "dojo.tasks.fail_times", "plain.fail", "plain.sleep"):
        for field in ("received", "started", "succeeded", "failed", "retried", "recovered", "critical"):
            per_tier = {period: summed(period, name, field) for period in (MINUTE, HOUR, TOTAL)}
            assert len(set(per_tier.values())) == 1, (name, field, per_tier)
    group = FailureRollup.objects.get(period=TOTAL, task_name="plain.fail")
    assert group.exception_type == "ValueError" and group.count == 3 and "boom" in group.latest_exception
    assert FailureRollup.objects.get(period=TOTAL, task_name="dojo.tasks.fail_times").exception_type

    # SIGKILL a worker mid-task: no terminal event, its heartbeat expires, the grace passes.
    doomed = client.send_task("plain.sleep", args=(60,), queue="plain")
    plain_proc = next(proc for proc in redis_only.workers if plain in proc.args)
    wait_for(lambda: summed(MINUTE, "plain.sleep", "started") == 5, 15, "the long task started")
    os.killpg(plain_proc.pid, signal.SIGKILL)
    wait_for(lambda: LostTask.objects.filter(task_id=doomed.id).exists(), 20, "the lost task found")
    lost = LostTask.objects.get(task_id=doomed.id)
    assert (lost.worker, lost.task_name, lost.backend) == (plain, "plain.sleep", "default")
    assert lost.started_at < lost.worker_gone_at <= lost.detected_at
    wait_for(lambda: summed(TOTAL, "plain.sleep", "lost") == 1, 5, "lost counted")
    assert not LostTask.objects.exclude(task_id=doomed.id).exists()  # nothing that finished
    assert project  # the project worker kept running: its finished tasks are not lost
    client.close()


def test_lost_tasks_follow_the_workers_life_without_false_positives():
    """Lost only when the process a task started in is gone for the grace: not a task that ended
    after its worker said goodbye, not a worker that missed beats and came back with the same
    pid; yes a worker whose heartbeat expired, and one restarted under another pid."""
    state = Rollups()
    t0 = 1_000_000.0

    def beat(worker: str, pid: int, at: float, kind: str = "worker-heartbeat") -> None:
        state.handle(kind, {"hostname": worker, "pid": pid, "freq": 2.0, "local_received": at})

    def start(task_id: str, worker: str, at: float) -> None:
        event = {"uuid": task_id, "hostname": worker, "local_received": at, "timestamp": at}
        state.handle("task-received", {**event, "name": "t.long"})
        state.handle("task-started", event)

    for worker, pid in (("ended@h", 1), ("blip@h", 2), ("expired@h", 3), ("restarted@h", 4)):
        beat(worker, pid, t0)
        start(f"task-{worker}", worker, t0 + 0.5)
    beat("ended@h", 1, t0 + 1, kind="worker-offline")
    state.handle(
        "task-succeeded", {"uuid": "task-ended@h", "hostname": "ended@h", "runtime": 1.0, "local_received": t0 + 2}
    )
    beat("blip@h", 2, t0 + 9)  # 9 s without a beat (expired at t0 + 5), back before the grace ended
    beat("restarted@h", 40, t0 + 3)  # a new process under the same name
    for late in (t0 + 9, t0 + 10, t0 + 11):
        beat("blip@h", 2, late)
        beat("restarted@h", 40, late)
    assert state.check_lost(t0 + 8, grace=10) == []  # nothing before the grace
    lost = {task.worker: task for task in state.check_lost(t0 + 16, grace=10)}
    assert set(lost) == {"expired@h", "restarted@h"}
    assert lost["expired@h"].gone_at == t0 + 4  # its last beat + 2 x freq
    assert lost["restarted@h"].gone_at == t0 + 3  # the new process's first beat
    assert state.check_lost(t0 + 17, grace=10) == []  # found once (blip@h went quiet at t0 + 11: in its grace)
    assert sum(delta.counts[rollups.LOST] for delta in state.take().minutes.values()) == 2


def test_a_task_sent_event_that_comes_after_task_received_still_gives_the_queue():
    """The publisher's task-sent and the worker's task-received travel separately: when the
    worker's arrives first, its count moves to the queue the task-sent names."""
    state = Rollups()
    now = time.time()
    base = {"uuid": "x", "hostname": "w1@h", "local_received": now, "timestamp": now}
    state.handle("task-received", {**base, "name": "t.one"})
    state.handle("task-sent", {**base, "name": "t.one", "queue": "q1", "hostname": "web@h"})
    state.handle("task-started", base)
    state.handle("task-succeeded", {**base, "runtime": 0.1})
    kept = {key[2]: delta.counts[:3] for key, delta in state.take().minutes.items() if any(delta.counts)}
    assert kept == {"q1": [1, 1, 1]}
