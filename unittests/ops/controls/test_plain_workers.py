"""Pause, resume and revoke reach every worker, also one of unittests/plain_fleet/plain_app.py that
runs none of the project's code, and no worker is sent a command it does not know. Real
processes: a `celery -A dojo worker`, plain workers, and `manage.py celery_monitor` sharing the
test's SQLite file, on a private Redis (and RabbitMQ for pause and resume). No mocks.

A plain worker that starts after a pause or a revoke learns them from the monitor
(dojo.ops.controls.late_workers): the windows between its start and the cancel, and between its
start and the revoked id in its revoked set, are measured and printed (run with -s to see them).
"""

import re
import socket
import subprocess
import sys
import threading
import time
import uuid
from datetime import datetime

import pytest
from celery.exceptions import NotRegistered

from dojo.models import QueuePause
from dojo.ops.brokers.connection import BrokerUnavailable, broker_connection
from dojo.ops.controls.pauses import pause_queue, resume_queue
from dojo.ops.controls.revocations import revoke_task
from dojo.ops.fleet.processes import monitor_state
from unittests.conftest import ROOT, LiveBroker, stop_process, wait_for


@pytest.fixture(params=["redis_only", "rabbitmq_broker"])
def fleet_broker(request, settings) -> LiveBroker:
    settings.CELERY_TASK_QUEUES = {"celery": {}}
    settings.CELERY_BROKER_TIMEOUT = 2.0
    return request.getfixturevalue(request.param)


def consumed(broker: LiveBroker, worker: str) -> set[str] | None:
    """The queues `worker` consumes, as the built-in active_queues says; None if it did not answer."""
    client = broker.client()
    try:
        replies = client.control.inspect(destination=[worker], timeout=1.0).active_queues() or {}
    finally:
        client.close()
    return {queue["name"] for queue in replies[worker]} if worker in replies else None


def revoked_ids(broker: LiveBroker, worker: str) -> set[str] | None:
    client = broker.client()
    try:
        replies = client.control.inspect(destination=[worker], timeout=1.0).revoked() or {}
    finally:
        client.close()
    return set(replies[worker]) if worker in replies else None


def depth(queue: str) -> int:
    """Messages ready in `queue` (an empty queue does not exist on Redis: 0)."""
    try:
        with broker_connection() as conn:
            return conn.default_channel.queue_declare(queue=queue, passive=True).message_count
    except BrokerUnavailable as exc:
        if "NOT_FOUND" in str(exc):
            return 0
        raise


def assert_no_pidbox_error(broker: LiveBroker, name: str) -> None:
    log = (broker.tmp / f"{name}.log").read_text()
    assert "pidbox command error" not in log and "dojo_" not in log, log[-3000:]


@pytest.mark.django_db
def test_pause_and_resume_reach_a_plain_worker(fleet_broker):
    """Pause stops both workers (a task published meanwhile stays in the queue); resume makes both
    consume again: dojo_resume_queue to the project's worker, add_consumer to the plain one only
    (which the pause recorded), so the plain worker never logs a pidbox error."""
    own = fleet_broker.start_worker("own")
    plain = fleet_broker.start_plain_worker("plain", concurrency=1)

    paused = pause_queue("celery")
    assert paused.workers == sorted([own, plain])
    assert QueuePause.objects.get(queue="celery").stopped_workers == sorted([own, plain])
    wait_for(lambda: consumed(fleet_broker, plain) == set() and consumed(fleet_broker, own) == set(), 10, "cancel")
    client = fleet_broker.client()
    held = client.send_task("plain.add", args=(2, 3), queue="celery")
    time.sleep(1.0)
    assert depth("celery") == 1 and not held.ready()

    resumed = resume_queue("celery")
    assert resumed.workers == sorted([own, plain])
    assert consumed(fleet_broker, own) == {"celery"} and consumed(fleet_broker, plain) == {"celery"}
    wait_for(lambda: depth("celery") == 0, 10, "the held task taken")
    # Either worker may take a task of `celery`; the plain one (the only one knowing plain.add) runs one.
    deadline = time.monotonic() + 15
    while True:
        try:
            assert client.send_task("plain.add", args=(4, 5), queue="celery").get(timeout=1.0) == 9
            break
        except (TimeoutError, NotRegistered):  # the project's worker took it (it stores NotRegistered)
            assert time.monotonic() < deadline, "no plain.add ran after the resume"
    client.close()
    assert_no_pidbox_error(fleet_broker, "plain")


class Monitor:
    """A `python manage.py celery_monitor` process on the test's broker and database."""

    def __init__(self, broker: LiveBroker, database: str) -> None:
        self.log = broker.tmp / "monitor.log"
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "manage.py", "celery_monitor"],
                cwd=ROOT,
                env=broker.env(DD_DATABASE_URL=database),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

        def connected() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the monitor exited: {self.log.read_text()[-2000:]}")
            state = monitor_state("default")
            return state.state == "live" and state.broker_connected

        wait_for(connected, 30, "the monitor's heartbeat")

    def stop(self) -> None:
        stop_process(self.proc)


@pytest.fixture
def monitor(redis_only: LiveBroker, shared_database: str, settings):
    settings.CELERY_TASK_QUEUES = {"celery": {}}
    settings.CELERY_BROKER_TIMEOUT = 2.0
    started = Monitor(redis_only, shared_database)
    yield started
    started.stop()


LOG_LINE = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}): \w+/MainProcess\] (.*)$", re.MULTILINE)
BACKLOG = 10  # tasks waiting in the paused queue when the late worker starts


def logged_at(log: str, text: str) -> float:
    """The epoch time of the worker's first log line containing `text` (its clock is this machine's)."""
    for stamp, message in LOG_LINE.findall(log):
        if text in message:
            return datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()
    raise AssertionError(f"{text!r} not in the worker's log: {log[-2000:]}")


def test_a_plain_worker_started_late_gets_the_pause_and_the_revokes(redis_only, monitor, capsys):
    """Paused and revoked with no worker live, BACKLOG tasks waiting in the paused queue; a plain
    worker started then is cancelled and given the revoked id by the monitor (seen in its
    active_queues and revoked set), and resume gives it its queue back. Printed: its window
    between starting to consume and the cancel, and to the revoked id (from its own log), and how
    many waiting tasks it took in that window (prefetch takes several at once)."""
    pause_queue("celery")
    revoked = str(uuid.uuid4())
    revoke_task(revoked)
    client = redis_only.client()
    for number in range(BACKLOG):
        client.send_task("plain.add", args=(number, 0), queue="celery")
    client.close()
    name = "late"
    worker = f"{name}@{socket.gethostname()}"
    seen: dict[str, float] = {}
    spawned = time.time()
    starting = threading.Thread(target=redis_only.start_plain_worker, args=(name,), kwargs={"concurrency": 1})
    starting.start()
    deadline = time.monotonic() + 30
    while not {"cancelled", "revoked"} <= seen.keys() and time.monotonic() < deadline:
        queues = consumed(redis_only, worker)
        if queues is not None:
            seen.setdefault("consuming" if "celery" in queues else "cancelled", time.time() - spawned)
        ids = revoked_ids(redis_only, worker)
        if ids is not None and revoked in ids:
            seen.setdefault("revoked", time.time() - spawned)
    starting.join(60)
    assert {"cancelled", "revoked"} <= seen.keys(), seen
    wait_for(lambda: worker in QueuePause.objects.get(queue="celery").stopped_workers, 5, "the late worker recorded")
    assert consumed(redis_only, worker) == set()
    taken = BACKLOG - depth("celery")

    log = (redis_only.tmp / f"{name}.log").read_text()
    connected, ready = logged_at(log, "Connected to"), logged_at(log, f"{worker} ready.")
    cancel, flagged = logged_at(log, "Canceling queue celery"), logged_at(log, f"Tasks flagged as revoked: {revoked}")
    with capsys.disabled():
        print(
            f"\nlate plain worker (from its own log): connected {connected - spawned:.2f} s after its spawn, "
            f"ready {ready - spawned:.2f} s; pause window (connected -> 'Canceling queue') {cancel - connected:.3f} s "
            f"(ready -> cancel {cancel - ready:.3f} s); revoke window (connected -> revoked id flagged) "
            f"{flagged - connected:.3f} s (ready -> {flagged - ready:.3f} s); took {taken} of {BACKLOG} tasks "
            f"waiting in the paused queue; the test saw it cancelled {seen['cancelled']:.2f} s "
            f"and the id revoked {seen['revoked']:.2f} s after the spawn"
        )
    assert cancel - connected < 5 and flagged - connected < 5

    assert resume_queue("celery").workers == [worker]
    assert consumed(redis_only, worker) == {"celery"}
    wait_for(lambda: depth("celery") == 0, 10, "the rest of the backlog taken after the resume")
    assert_no_pidbox_error(redis_only, name)
