"""Processes and heartbeats: real `celery -A dojo worker` and `celery -A dojo beat` processes write
their rows to the test database (shared_database); a worker shows its real pool children, a
replaced child is replaced in the table, SIGKILL turns the rows stale within 5 s, a warm shutdown
removes them; old stale rows are pruned; the API's shape and permissions."""

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from unittest import mock

import pytest
from django.db import OperationalError
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from dojo.models import CeleryProcess
from dojo.ops.fleet.processes import STALE_AFTER_SECONDS, list_processes, prune_processes
from dojo.worker.heartbeat import Heartbeat, identity
from unittests.conftest import ROOT, LiveBroker, make_user, stop_process, wait_for

PROCESSES = reverse("celery_processes")
HOST = socket.gethostname()


def child_pids(pid: int) -> set[int]:
    """The real children of `pid`, from /proc (field 4 of /proc/N/stat is the parent pid)."""
    children = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # exited meanwhile
        if int(fields[1]) == pid:
            children.add(int(stat.parent.name))
    return children


def rows_of(worker_name: str) -> list:
    return [row for row in list_processes("default") if worker_name in (row.name, row.parent_name)]


def live_with_children(worker_name: str, count: int = 2) -> bool:
    rows = rows_of(worker_name)
    return len(rows) == 1 + count and all(row.is_live for row in rows)


def start_worker(broker: LiveBroker, name: str, database_url: str) -> tuple[str, subprocess.Popen]:
    worker_name = broker.start_worker(name, DD_DATABASE_URL=database_url)
    wait_for(lambda: live_with_children(worker_name), 30, f"{worker_name} and 2 pool children live")
    return worker_name, broker.workers[-1]


# --- real workers --------------------------------------------------------------------------


def test_a_worker_is_listed_with_its_real_pool_children(shared_database, redis_only):
    worker_name, proc = start_worker(redis_only, "w1", shared_database)

    worker, *children = rows_of(worker_name)

    assert (worker.name, worker.kind, worker.parent_name, worker.pid) == (worker_name, "worker", None, proc.pid)
    assert worker.hostname == HOST and worker.heartbeat_age_seconds <= STALE_AFTER_SECONDS
    assert {child.pid for child in children} == child_pids(proc.pid)
    assert all(child.kind == "pool" and child.parent_name == worker_name for child in children)
    assert all(child.name.startswith(f"{worker_name}/ForkPoolWorker-") for child in children)

    # A child that dies is replaced by the pool, and its row by its successor's.
    killed = children[0].pid
    os.kill(killed, signal.SIGKILL)

    def replaced() -> bool:
        pids = {row.pid for row in rows_of(worker_name) if row.kind == "pool"}
        return killed not in pids and len(pids) == 2 and pids == child_pids(proc.pid)

    wait_for(replaced, 30, "the killed child's row replaced by its successor's")
    assert CeleryProcess.objects.filter(kind="pool").count() == 2


def test_a_sigkilled_worker_turns_stale_within_5_seconds(shared_database, redis_only):
    worker_name, proc = start_worker(redis_only, "w1", shared_database)
    assert live_with_children(worker_name)

    os.killpg(proc.pid, signal.SIGKILL)  # the worker and its children, without a word
    killed_at = time.monotonic()
    wait_for(lambda: not any(row.is_live for row in rows_of(worker_name)), 15, "stale rows")
    stale_after = time.monotonic() - killed_at

    assert stale_after < 5, f"turned stale after {stale_after:.1f} s"
    rows = rows_of(worker_name)
    assert len(rows) == 3, "a worker that died without saying so stays listed, as stale"
    assert rows[0].heartbeat_age_seconds > STALE_AFTER_SECONDS


def test_a_warm_shutdown_removes_the_rows(shared_database, redis_only):
    worker_name, proc = start_worker(redis_only, "w1", shared_database)
    redis_only.start_worker("w2", DD_DATABASE_URL=shared_database)
    wait_for(lambda: live_with_children(f"w2@{HOST}"), 30, "w2 live")

    os.kill(proc.pid, signal.SIGTERM)  # warm shutdown of the main process
    proc.wait(60)

    assert proc.returncode == 0
    assert rows_of(worker_name) == []
    assert live_with_children(f"w2@{HOST}"), "another worker's rows are left alone"


def test_beat_writes_a_live_row_and_removes_it_on_exit(shared_database, redis_only, tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "dojo", "beat", "-l", "info", "-s", str(tmp_path / "schedule")],
        cwd=ROOT,
        env=redis_only.env(DD_DATABASE_URL=shared_database),
        stdout=(tmp_path / "beat.log").open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:

        def beat_live() -> bool:
            if proc.poll() is not None:
                raise RuntimeError((tmp_path / "beat.log").read_text()[-2000:])
            return any(row.kind == "beat" and row.is_live for row in list_processes("default"))

        wait_for(beat_live, 60, "a live beat row")
        (beat,) = list_processes("default")
        assert (beat.name, beat.pid, beat.hostname, beat.parent_name) == (f"celerybeat@{HOST}", proc.pid, HOST, None)
        assert "DatabaseScheduler" in (tmp_path / "beat.log").read_text()

        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(30)
        assert list_processes("default") == []
    finally:
        stop_process(proc)


# --- the heartbeat thread in this process ---------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_the_heartbeat_thread_beats_every_second_and_cleans_up():
    heartbeat = Heartbeat(identity("default", "inproc@test", "worker"))
    heartbeat.start()
    try:
        wait_for(lambda: CeleryProcess.objects.filter(name="inproc@test").exists(), 10, "the first heartbeat")
        first = CeleryProcess.objects.get(name="inproc@test").last_heartbeat_at
        wait_for(
            lambda: CeleryProcess.objects.get(name="inproc@test").last_heartbeat_at > first, 5, "a second heartbeat"
        )
    finally:
        heartbeat.stop(remove_rows=True)

    assert not heartbeat._thread.is_alive()
    assert not CeleryProcess.objects.filter(name="inproc@test").exists()


@pytest.mark.django_db(transaction=True)
def test_a_database_error_is_logged_once_and_never_raised(caplog):
    """Mocked: the database failing (locked, unreachable) for two beats is a fault we inject."""
    heartbeat = Heartbeat(identity("default", "flaky@test", "worker"))
    failure = OperationalError("database is locked")
    with (
        caplog.at_level(logging.WARNING, logger="dojo.worker.heartbeat"),
        mock.patch.object(CeleryProcess.objects, "update_or_create", side_effect=failure),
    ):
        heartbeat._guarded(heartbeat.tick)
        heartbeat._guarded(heartbeat.tick)
    heartbeat._guarded(heartbeat.tick)

    messages = [record.getMessage() for record in caplog.records]
    assert messages == [
        "Heartbeat of flaky@test not written: OperationalError: database is locked",
        "Heartbeat of flaky@test written again.",
    ]
    assert CeleryProcess.objects.filter(name="flaky@test").exists()


# --- the listing, pruning and the API ------------------------------------------------------


def make_process(name: str, kind: str, age_seconds: float, parent: CeleryProcess | None = None) -> CeleryProcess:
    beat_at = timezone.now() - timedelta(seconds=age_seconds)
    return CeleryProcess.objects.create(
        name=name, kind=kind, parent=parent, hostname="h1", pid=100, started_at=beat_at, last_heartbeat_at=beat_at
    )


@pytest.fixture
def fleet(db) -> None:
    """A live worker with two children, a stale one whose child beat recently, and beat."""
    live = make_process("w1@h1", "worker", 0.5)
    make_process("w1@h1/ForkPoolWorker-10", "pool", 0.5, live)
    make_process("w1@h1/ForkPoolWorker-2", "pool", 0.5, live)
    stale = make_process("w0@h1", "worker", 10)
    make_process("w0@h1/ForkPoolWorker-1", "pool", 0.5, stale)
    make_process("celerybeat@h1", "beat", 1)
    CeleryProcess.objects.create(
        backend="other", name="w9@h1", kind="worker", hostname="h1", pid=1, started_at=timezone.now(),
        last_heartbeat_at=timezone.now(),
    )  # fmt: skip


def test_workers_are_followed_by_their_children_and_stale_parents_make_stale_children(fleet):
    listed = [(row.name, row.kind, row.is_live) for row in list_processes("default")]

    assert listed == [
        ("w0@h1", "worker", False),
        ("w0@h1/ForkPoolWorker-1", "pool", False),
        ("w1@h1", "worker", True),
        ("w1@h1/ForkPoolWorker-2", "pool", True),
        ("w1@h1/ForkPoolWorker-10", "pool", True),
        ("celerybeat@h1", "beat", True),
    ]


@pytest.mark.django_db
def test_rows_stale_for_longer_than_the_offline_hours_are_pruned(settings):
    settings.CELERY_WORKER_OFFLINE_HOURS = 2
    gone = make_process("gone@h1", "worker", 3 * 3600)
    make_process("gone@h1/ForkPoolWorker-1", "pool", 3 * 3600, gone)
    make_process("recent@h1", "worker", 3600)

    assert prune_processes() == 2
    assert list(CeleryProcess.objects.values_list("name", flat=True)) == ["recent@h1"]


def test_the_snapshot_task_prunes_processes(redis_only, db, settings):
    from dojo.ops.observe.history import record_snapshot

    settings.CELERY_WORKER_OFFLINE_HOURS = 1
    make_process("gone@h1", "worker", 2 * 3600)

    record_snapshot()

    assert not CeleryProcess.objects.exists()


def test_api_lists_processes_for_staff(fleet):
    client = APIClient()
    client.force_authenticate(make_user("staff", staff=True))

    response = client.get(PROCESSES)

    assert response.status_code == 200
    body = response.json()
    assert (body["backend"], body["stale_after_seconds"]) == ("default", STALE_AFTER_SECONDS)
    assert body["processes"][1] == {
        "name": "w0@h1/ForkPoolWorker-1",
        "kind": "pool",
        "parent_name": "w0@h1",
        "is_live": False,
        "last_heartbeat_at": body["processes"][1]["last_heartbeat_at"],
        "heartbeat_age_seconds": pytest.approx(0.5, abs=2),
        "hostname": "h1",
        "pid": 100,
        "source": "heartbeat",
    }
    other = client.get(PROCESSES, {"backend": "other"})
    assert other.status_code == 400 and "backend" in other.json()


def test_api_other_backend(fleet, settings):
    settings.CELERY_BACKENDS = {"other": {"broker_url": "redis://127.0.0.1:1/0"}}
    client = APIClient()
    client.force_authenticate(make_user("staff", staff=True))

    body = client.get(PROCESSES, {"backend": "other"}).json()

    assert [row["name"] for row in body["processes"]] == ["w9@h1"] and body["backend"] == "other"


def test_api_refuses_anonymous_and_non_staff(db):
    assert APIClient().get(PROCESSES).status_code in (401, 403)
    client = APIClient()
    client.force_authenticate(make_user("plain"))
    assert client.get(PROCESSES).status_code == 403
