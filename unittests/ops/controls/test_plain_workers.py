"""Pause, resume and revoke reach every worker, also one of unittests/plain_fleet/plain_app.py that
runs none of the project's code, and no worker is sent a command it does not know. Real
processes: a `celery -A dojo worker`, plain workers, and `manage.py celery_monitor` sharing the
test's SQLite file, on a private Redis and a private RabbitMQ vhost (revoke and terminate on
Redis only). No mocks.

A plain worker that starts after a pause or a revoke learns them from the monitor
(dojo.ops.controls.late_workers): the windows between its start and the cancel, and between its
start and the revoked id in its revoked set, are measured and printed (run with -s to see them).
"""

import re
import socket
import threading
import time
import uuid
from datetime import datetime

import pytest
from celery import Celery
from celery.exceptions import NotRegistered
from celery.result import AsyncResult

from dojo.models import QueuePause
from dojo.ops.brokers.connection import BrokerUnavailable, broker_connection
from dojo.ops.brokers.registry import Broker
from dojo.ops.controls.pauses import pause_queue, resume_queue
from dojo.ops.controls.revocations import revoke_task, terminate_task
from dojo.ops.fleet.event_state import EventState
from dojo.ops.fleet.processes import list_processes
from dojo.ops.observe.monitor import BackendMonitor
from unittests.conftest import LiveBroker, wait_for
from unittests.ops.observe.test_monitor import Monitor


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


def forget_results(client: Celery, *results: AsyncResult) -> None:
    """Stop waiting for `results` while the result backend is up, then close `client` (else the
    results unsubscribe when collected, after the test's Redis has stopped)."""
    for result in results:
        client.backend.remove_pending_result(result)
    client.close()


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
            ran = client.send_task("plain.add", args=(4, 5), queue="celery")
            assert ran.get(timeout=1.0) == 9
            break
        except (TimeoutError, NotRegistered):  # the project's worker took it (it stores NotRegistered)
            assert time.monotonic() < deadline, "no plain.add ran after the resume"
    forget_results(client, held, ran)
    assert_no_pidbox_error(fleet_broker, "plain")


@pytest.fixture
def monitor(fleet_broker: LiveBroker, shared_database: str):
    started = Monitor(fleet_broker, shared_database)
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


def test_a_plain_worker_started_late_gets_the_pause_and_the_revokes(fleet_broker, monitor, capsys):
    """Paused and revoked with no worker live, BACKLOG tasks waiting in the paused queue; a plain
    worker started then is cancelled and given the revoked id by the monitor (seen in its
    active_queues and revoked set), and resume gives it its queue back. Printed: its window
    between starting to consume and the cancel, and to the revoked id (from its own log), and how
    many waiting tasks it took in that window (prefetch takes several at once)."""
    pause_queue("celery")
    revoked = str(uuid.uuid4())
    revoke_task(revoked)
    client = fleet_broker.client()
    # The revoked id waits first in the backlog: whether the late worker ran it is printed.
    backlog = [client.send_task("plain.add", args=(0, 0), queue="celery", task_id=revoked)]
    backlog += [client.send_task("plain.add", args=(number, 0), queue="celery") for number in range(1, BACKLOG)]
    name = "late"
    worker = f"{name}@{socket.gethostname()}"
    seen: dict[str, float] = {}
    spawned = time.time()
    starting = threading.Thread(target=fleet_broker.start_plain_worker, args=(name,), kwargs={"concurrency": 1})
    starting.start()
    deadline = time.monotonic() + 30
    while not {"cancelled", "revoked"} <= seen.keys() and time.monotonic() < deadline:
        queues = consumed(fleet_broker, worker)
        if queues is not None:
            seen.setdefault("consuming" if "celery" in queues else "cancelled", time.time() - spawned)
        ids = revoked_ids(fleet_broker, worker)
        if ids is not None and revoked in ids:
            seen.setdefault("revoked", time.time() - spawned)
    starting.join(60)
    assert {"cancelled", "revoked"} <= seen.keys(), seen
    wait_for(lambda: worker in QueuePause.objects.get(queue="celery").stopped_workers, 5, "the late worker recorded")
    assert consumed(fleet_broker, worker) == set()
    # The processes table knows it from the monitor's events alone, on both brokers.
    wait_for(lambda: any(row.name == worker and row.is_live for row in list_processes("default")), 5, "listed")
    assert next(row for row in list_processes("default") if row.name == worker).source == "events"
    taken = BACKLOG - depth("celery")
    wait_for(lambda: sum(result.ready() for result in backlog) == taken, 10, "the tasks it took done")
    revoked_state = backlog[0].state
    forget_results(client, *backlog)

    log = (fleet_broker.tmp / f"{name}.log").read_text()
    connected, ready = logged_at(log, "Connected to"), logged_at(log, f"{worker} ready.")
    cancel, flagged = logged_at(log, "Canceling queue celery"), logged_at(log, f"Tasks flagged as revoked: {revoked}")
    with capsys.disabled():
        print(
            f"\nlate plain worker on {fleet_broker.kind} (from its own log): "
            f"connected {connected - spawned:.2f} s after its spawn, "
            f"ready {ready - spawned:.2f} s; pause window (connected -> 'Canceling queue') {cancel - connected:.3f} s "
            f"(ready -> cancel {cancel - ready:.3f} s); revoke window (connected -> revoked id flagged) "
            f"{flagged - connected:.3f} s (ready -> {flagged - ready:.3f} s); took {taken} of {BACKLOG} tasks "
            f"waiting in the paused queue (the revoked one first: {revoked_state}); "
            f"the test saw it cancelled {seen['cancelled']:.2f} s "
            f"and the id revoked {seen['revoked']:.2f} s after the spawn"
        )
    assert cancel - connected < 5 and flagged - connected < 5

    resumed = resume_queue("celery")
    # On RabbitMQ too: no consumer count changed, but the monitor's events know the new worker.
    assert resumed.workers == [worker]
    wait_for(lambda: consumed(fleet_broker, worker) == {"celery"}, 5, "the late worker consuming again")
    wait_for(lambda: depth("celery") == 0, 10, "the rest of the backlog taken after the resume")
    assert_no_pidbox_error(fleet_broker, name)


@pytest.mark.django_db
def test_revoke_and_terminate_reach_a_plain_worker(redis_only, settings):
    """Revoke and terminate are the built-in `revoke`: a plain worker discards a revoked task it has
    prefetched and ends the one it runs, and logs no pidbox error."""
    settings.CELERY_BROKER_TIMEOUT = 2.0
    plain = redis_only.start_plain_worker("plain", concurrency=1)
    client = redis_only.client()
    running = client.send_task("plain.sleep", args=(30,), queue="celery")
    waiting = client.send_task("plain.add", args=(1, 2), queue="celery")
    wait_for(
        lambda: running.state == "STARTED" or (consumed(redis_only, plain) is not None and _busy(redis_only, plain)),
        15,
        "busy",
    )

    assert revoke_task(waiting.id).workers == [plain]
    assert terminate_task(running.id).workers == [plain]
    wait_for(lambda: running.state == "REVOKED" and waiting.state == "REVOKED", 15, "both stored as revoked")
    after = client.send_task("plain.add", args=(2, 2), queue="celery")
    assert after.get(timeout=10) == 4
    forget_results(client, running, waiting, after)
    assert_no_pidbox_error(redis_only, "plain")


def _busy(broker: LiveBroker, worker: str) -> bool:
    client = broker.client()
    try:
        replies = client.control.inspect(destination=[worker], timeout=1.0).active() or {}
    finally:
        client.close()
    return bool(replies.get(worker))


def test_the_monitor_hands_over_each_worker_once_as_it_comes_online():
    """worker-online, or the first heartbeat of a worker the monitor had not heard of (it started
    while the monitor was down), goes to on_worker_online; later heartbeats and task events do not."""
    handed: list[str] = []
    broker = Broker("default", "redis://127.0.0.1:1/0", {})
    watcher = BackendMonitor(
        broker, EventState(), threading.Event(), on_worker_online=lambda _broker, name: handed.append(name)
    )
    now = time.time()
    for kind, hostname in [
        ("worker-online", "a@h"),
        ("worker-heartbeat", "a@h"),
        ("worker-heartbeat", "b@h"),
        ("worker-heartbeat", "b@h"),
        ("task-succeeded", "b@h"),
        ("worker-offline", "c@h"),
        ("worker-online", "a@h"),  # a restart under the same name
    ]:
        watcher.handle(
            {"type": kind, "hostname": hostname, "timestamp": now, "local_received": now, "uuid": "x", "clock": 1}
        )
    assert handed == ["a@h", "b@h", "a@h"]
