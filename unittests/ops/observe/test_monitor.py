"""The event monitor (`manage.py celery_monitor`, dojo.ops.observe.monitor): real processes on a
private Redis sharing the test's SQLite file: the monitor, a `celery -A dojo worker` and a worker
of unittests/plain_fleet/plain_app.py, which imports nothing of the project and writes no
heartbeat row, so only the events describe it. Plus the bounded state fed directly, the merge
of heartbeat and event rows, and the monitor's back-off on a broker that is not there yet.
"""

import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import pytest
from django.urls import reverse
from django.utils import timezone

from dojo.models import CeleryProcess, MonitoredWorker, MonitorHeartbeat
from dojo.ops.brokers.registry import Broker
from dojo.ops.fleet.event_state import EventState
from dojo.ops.fleet.processes import ProcessRow, list_processes, monitor_state
from dojo.ops.fleet.status_cache import get_status
from dojo.ops.observe.monitor import BackendMonitor
from unittests.conftest import ROOT, LiveBroker, free_port, make_user, require, stop_process, wait_for

ENABLE_EVENTS_SECONDS = "1"  # the tests' monitors ask for task events every second


class Monitor:
    """A `python manage.py celery_monitor` process."""

    def __init__(self, broker: LiveBroker, database: str, **env: str) -> None:
        self.log = broker.tmp / "monitor.log"
        environment = broker.env(
            DD_DATABASE_URL=database, DD_CELERY_MONITOR_ENABLE_EVENTS_SECONDS=ENABLE_EVENTS_SECONDS, **env
        )
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "manage.py", "celery_monitor"],
                cwd=ROOT,
                env=environment,
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


def monitors_on(broker: LiveBroker, database: str):
    started: list[Monitor] = []

    def start(**env: str) -> Monitor:
        started.append(Monitor(broker, database, **env))
        return started[-1]

    yield start
    for monitor in started:
        monitor.stop()


@pytest.fixture
def monitored(redis_only: LiveBroker, shared_database: str):
    """Start monitors on the private Redis and the shared test database; all stopped afterwards."""
    yield from monitors_on(redis_only, shared_database)


@pytest.fixture
def monitored_filesystem(filesystem_only: LiveBroker, shared_database: str):
    """The same on the embedded filesystem broker (scripts/run.sh's default)."""
    yield from monitors_on(filesystem_only, shared_database)


def rows(backend: str = "default") -> dict[str, ProcessRow]:
    return {row.name: row for row in list_processes(backend) if row.parent_name is None}


def task_counts() -> dict[str, int]:
    return MonitorHeartbeat.objects.get(backend="default").task_event_counts


def run_plain(broker: LiveBroker, name: str, *args: object) -> None:
    """Run a task on the plain worker (queue "plain": the project worker does not know plain.*)."""
    client = broker.client()
    try:
        client.send_task(name, args=args, queue="plain").get(timeout=20)
    finally:
        client.close()


def test_every_worker_is_listed_from_events_and_a_killed_one_turns_stale(redis_only, shared_database, monitored):
    """Both workers appear from events within seconds, the plain one only from events; a task on
    the plain worker (started without -E) produces task events the monitor counts, so it sent
    enable_events; SIGKILL turns the plain worker stale within 5 s; a stopped monitor says down
    since then. The API and the dashboard say the same.

    Fails before the monitor: the plain worker writes no CeleryProcess row, so it was not listed."""
    monitor = monitored()
    with ThreadPoolExecutor(2) as pool:  # both start at once: a start is seconds of imports
        started_project = pool.submit(redis_only.start_worker, "w1", DD_DATABASE_URL=shared_database)
        started_plain = pool.submit(redis_only.start_plain_worker, "p1", queues="plain")
        project, plain = started_project.result(), started_plain.result()
    plain_proc = next(proc for proc in redis_only.workers if plain in proc.args)

    def both_listed() -> bool:
        listed = rows()
        return (
            plain in listed
            and listed[plain].is_live
            and project in listed
            and listed[project].source == "both"
            and listed[project].is_live
        )

    wait_for(both_listed, 10, "both workers listed from events")
    listed = rows()
    assert listed[plain].source == "events" and listed[plain].kind == "worker"
    assert listed[plain].pid == plain_proc.pid and listed[plain].hostname == plain.partition("@")[2]
    assert not CeleryProcess.objects.filter(name=plain).exists()  # only the events know it
    seen = MonitoredWorker.objects.get(hostname=plain)
    assert seen.sw_ident == "py-celery" and seen.online and seen.freq == pytest.approx(2.0)

    # The plain worker runs without -E: task events come only once the monitor sent enable_events.
    deadline = time.monotonic() + 15
    while task_counts().get("succeeded", 0) == 0:
        assert time.monotonic() < deadline, f"no task events counted: {task_counts()}"
        run_plain(redis_only, "plain.add", 2, 3)
        time.sleep(1.2)  # one flush
    counts = task_counts()
    assert counts["received"] >= 1 and counts["started"] >= 1 and counts["succeeded"] >= 1

    client = redis_only.client()
    staff = make_user("staff", staff=True)
    from rest_framework.test import APIClient

    api = APIClient()
    api.force_authenticate(staff)
    get_status(refresh=True)  # the cached document gives the plain worker's pool children (stats)
    body = api.get(reverse("celery_processes")).json()
    by_name = {row["name"]: row for row in body["processes"]}
    assert by_name[plain]["source"] == "events" and by_name[plain]["is_live"]
    children = [row for row in body["processes"] if row["parent_name"] == plain]
    assert len(children) == 2 and all(row["kind"] == "pool" and row["is_live"] for row in children)
    assert {row["pid"] for row in children} == set(get_status().worker_stats[plain]["pool"]["processes"])
    assert by_name[project]["source"] == "both"
    assert body["monitor"]["state"] == "live" and body["monitor"]["task_event_counts"]["succeeded"] >= 1
    client.close()

    os.killpg(plain_proc.pid, signal.SIGKILL)
    killed_at = time.monotonic()
    wait_for(lambda: not rows()[plain].is_live, 6, "the killed worker turns stale")
    assert time.monotonic() - killed_at < 5
    assert rows()[project].is_live

    monitor.stop()
    stopped_at = timezone.now()
    state = monitor_state("default")
    assert state.state == "down" and abs((state.since - stopped_at).total_seconds()) < 3
    body = api.get(reverse("celery_processes")).json()
    assert body["monitor"]["state"] == "down"
    from django.test import Client

    page = Client()
    page.force_login(staff)
    html = page.get(reverse("celery_panel:dashboard")).content.decode()
    assert 'data-monitor="down"' in html and "down since" in html


def test_read_only_sends_no_enable_events(redis_only, monitored):
    """With DD_CELERY_READ_ONLY the monitor sends no enable_events: the plain worker (no -E) runs
    tasks and emits no task events, while its worker events still list it.

    Fails when the monitor ignores read-only: at one enable_events a second, the tasks run 2.5 s
    after the worker appeared send task events."""
    monitored(DD_CELERY_READ_ONLY="true")
    plain = redis_only.start_plain_worker("p2", queues="plain")
    wait_for(lambda: plain in rows() and rows()[plain].is_live, 10, "the plain worker from events")
    time.sleep(2.5)  # more than two enable_events intervals
    for _ in range(3):
        run_plain(redis_only, "plain.add", 1, 1)
    time.sleep(1.5)  # one flush
    assert task_counts() == {}
    assert MonitorHeartbeat.objects.get(backend="default").events_seen > 0


def test_the_embedded_broker_lists_a_plain_worker_from_events(filesystem_only, monitored_filesystem):
    """On the filesystem broker (no server, as scripts/run.sh runs) the plain worker appears from
    its events and its tasks are counted after enable_events."""
    monitored_filesystem()
    plain = filesystem_only.start_plain_worker("p3", queues="plain")
    wait_for(lambda: plain in rows() and rows()[plain].is_live, 10, "the plain worker from events")
    assert rows()[plain].source == "events"
    deadline = time.monotonic() + 15
    while task_counts().get("succeeded", 0) == 0:
        assert time.monotonic() < deadline, f"no task events counted: {task_counts()}"
        run_plain(filesystem_only, "plain.add", 2, 3)
        time.sleep(1.2)
    # Its warm shutdown on this broker takes seconds; this test has nothing left to see of it.
    os.killpg(filesystem_only.workers[-1].pid, signal.SIGKILL)


def test_the_bounded_state_keeps_at_most_its_caps():
    """50,000 task events for 50,000 tasks keep 1,000 tasks (the cap); 5,000 workers keep 100."""
    state = EventState(max_workers=100, max_tasks=1000)
    now = time.time()
    for i in range(50_000):
        state.handle(
            {
                "type": "task-succeeded" if i % 2 else "task-received",
                "uuid": f"task-{i}",
                "hostname": f"w{i % 10}@h",
                "timestamp": now,
                "local_received": now,
                "clock": i,
                "name": "plain.add",
            }
        )
    assert state.tasks_kept == 1000
    assert state.counts() == (50_000, {"received": 25_000, "succeeded": 25_000})
    for i in range(5000):
        state.handle({"type": "worker-heartbeat", "hostname": f"n{i}@h", "local_received": now, "freq": 2.0})
    assert len(state.workers) == 100 and len(state.take_dirty()) == 100
    assert list(state.workers)[-1] == "n4999@h"  # the most recently heard are kept
    assert state.take_dirty() == []


@pytest.mark.django_db
def test_event_rows_merge_with_heartbeat_rows_and_go_stale_by_celerys_rule():
    now = timezone.now()

    def seen(name: str, age: float, online: bool = True, freq: float = 2.0) -> None:
        at = now - timedelta(seconds=age)
        MonitoredWorker.objects.create(
            hostname=name, first_seen=at, last_heartbeat_at=at, online=online, freq=freq, pid=7
        )

    seen("fresh@h", 1)
    seen("old@h", 5)  # two 2 s heartbeats missed: stale
    seen("slow@h", 5, freq=5)  # a 5 s heartbeat: alive for 10 s
    seen("gone@h", 0, online=False)
    seen("both@h", 30)
    CeleryProcess.objects.create(
        name="both@h", kind="worker", hostname="h", pid=8, started_at=now, last_heartbeat_at=now
    )

    listed = rows()

    assert {name: row.is_live for name, row in listed.items()} == {
        "both@h": True,
        "fresh@h": True,
        "gone@h": False,
        "old@h": False,
        "slow@h": True,
    }
    assert listed["both@h"].source == "both" and listed["both@h"].pid == 8
    assert listed["fresh@h"].source == "events" and listed["fresh@h"].hostname == "h"


@pytest.mark.django_db
def test_monitor_state_never_live_down():
    assert monitor_state("default").state == "never"
    now = timezone.now()
    beat = MonitorHeartbeat.objects.create(
        backend="default", hostname="h", pid=1, started_at=now - timedelta(minutes=5), last_beat_at=now
    )
    assert monitor_state("default").state == "live"
    assert monitor_state("default").since == beat.started_at
    MonitorHeartbeat.objects.filter(pk=beat.pk).update(last_beat_at=now - timedelta(seconds=10))
    down = monitor_state("default")
    assert down.state == "down" and down.since == now - timedelta(seconds=10)


def test_a_broker_that_is_not_there_or_goes_away_is_retried_with_a_back_off(tmp_path: Path):
    """The receiver backs off (1 s doubling, jitter) while nothing listens, never in a hot loop,
    and connects once a Redis starts on that port; when that Redis stops it says so (connected
    false, the error) and reconnects once it is back."""
    port = free_port()
    broker = Broker("default", f"redis://127.0.0.1:{port}/0")
    stop = threading.Event()
    monitor = BackendMonitor(broker, EventState(), stop, enable_events_seconds=0)
    attempts: list[float] = []
    receive = monitor._receive

    def counted() -> None:
        attempts.append(time.monotonic())
        receive()

    monitor._receive = counted

    def start_redis() -> subprocess.Popen:
        return subprocess.Popen(
            [require("redis-server"), "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", str(tmp_path)],
            stdout=subprocess.DEVNULL,
            start_new_session=True,
        )

    monitor.start()
    redis_proc = None
    try:
        time.sleep(2.5)
        assert 2 <= len(attempts) <= 3, attempts  # at 0, 0.5-1 and 1.5-3 s: no hot loop
        assert not monitor.connected and "Error" in monitor.last_error
        redis_proc = start_redis()
        wait_for(lambda: monitor.connected, 10, "the monitor connects once Redis is up")
        assert monitor.last_error == ""

        stop_process(redis_proc)  # the broker goes away under a connected receiver
        wait_for(lambda: not monitor.connected, 5, "the monitor notices the lost broker")
        assert monitor.last_error
        lost = len(attempts)
        redis_proc = start_redis()
        wait_for(lambda: monitor.connected, 10, "the monitor reconnects")
        assert len(attempts) - lost <= 3  # from 1 s again, since it had been connected
    finally:
        stop.set()
        monitor.join(5)
        if redis_proc is not None:
            stop_process(redis_proc)
    assert not monitor._thread.is_alive()
