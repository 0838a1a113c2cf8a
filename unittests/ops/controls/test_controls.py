"""The controls on Redis with real `celery -A dojo worker` processes that share the test database
(pauses, revocations and django-db results): pause/resume, retry, revoke, terminate and purge by
task name, each through the API and each leaving its audit row.

The task used is `dojo.tasks.append_line(path, line)`: it fails while `path` does not exist and
otherwise leaves its line in the file, so a run (or its absence) can be seen from here.
"""

import json
import time
from pathlib import Path

import pytest
import redis
from django.urls import reverse
from django_celery_results.models import TaskResult

from dojo.models import CeleryAuditLog, QueuePause, TaskRevocation
from dojo.ops.brokers.connection import broker_connection
from dojo.ops.brokers.messages import decode
from dojo.ops.brokers.redis import priority_lists
from dojo.ops.brokers.registry import get_broker
from dojo.ops.fleet.status_cache import get_status
from unittests.conftest import LiveBroker, wait_for

PAUSE = reverse("celery_queue_pause")
RESUME = reverse("celery_queue_resume")
RETRY = reverse("celery_task_retry")
REVOKE = reverse("celery_task_revoke")
TERMINATE = reverse("celery_task_terminate")
PURGE_TASK = reverse("celery_queue_purge_task")
QUEUES = ("celery", "reports")
STARTUP = 60  # a worker run needs seconds on a loaded two-core machine


@pytest.fixture
def fleet(redis_only: LiveBroker, shared_database: str, settings) -> LiveBroker:
    """Redis, the queues `celery` and `reports` in the web process, and worker settings that share
    the test database (start workers with **fleet.worker_env)."""
    settings.CELERY_QUEUE_NAMES = list(QUEUES)
    settings.CELERY_TASK_DEFAULT_QUEUE = "celery"
    settings.CELERY_TASK_QUEUES = {name: {"exchange": name, "routing_key": name} for name in QUEUES}
    redis_only.worker_env = {
        "DD_DATABASE_URL": shared_database,
        "DD_CELERY_RESULT_BACKEND": "django-db",
        "DD_CELERY_QUEUES": ",".join(QUEUES),
    }
    return redis_only


def append(broker: LiveBroker, path: Path, line: str, queue: str = "celery", **options) -> str:
    """Publish dojo.tasks.append_line(path, line) to `queue`; its task id."""
    client = broker.client()
    try:
        return client.send_task("dojo.tasks.append_line", args=(str(path), line), queue=queue, **options).id
    finally:
        client.close()


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def ready(queue: str) -> int:
    with broker_connection() as conn:
        return get_broker().transport.depths(conn, [queue])[queue].ready


def stored_state(task_id: str) -> str | None:
    row = TaskResult.objects.filter(task_id=task_id).first()
    return row.status if row else None


def audit_rows(action: str) -> list[CeleryAuditLog]:
    return list(CeleryAuditLog.objects.filter(action=action).order_by("created_at"))


def consumed_queues() -> dict[str, list[str]]:
    """Each live worker's queues, as it answers now."""
    return {name: reply["active_queues"] for name, reply in get_status(refresh=True).worker_replies.items()}


def test_paused_queue_keeps_its_messages_across_a_restart_and_resume_drains_it(fleet, api, tmp_path):
    both = fleet.start_worker("both", queues="celery,reports", **fleet.worker_env)
    celery_only = fleet.start_worker("celeryonly", queues="celery", **fleet.worker_env)
    reports_out, celery_out = tmp_path / "reports.txt", tmp_path / "celery.txt"
    reports_out.touch()
    celery_out.touch()

    paused = api.post(PAUSE, {"queue": "reports"}, format="json")
    assert paused.status_code == 200, paused.content
    # Only the worker that consumed `reports` stopped; the other never had it.
    assert paused.json() == {"backend": "default", "queue": "reports", "paused": True, "workers": [both]}
    assert QueuePause.objects.filter(backend="default", queue="reports", paused_by="admin").exists()
    assert "reports" not in consumed_queues()[both]

    for i in range(3):
        append(fleet, reports_out, f"r{i}", queue="reports")
    append(fleet, celery_out, "c0")
    wait_for(lambda: lines(celery_out) == ["c0"], STARTUP, "the celery queue to be consumed")
    time.sleep(1)  # time enough for a consumer of `reports` to take its messages, if there were one
    assert ready("reports") == 3
    assert lines(reports_out) == []

    # A restarted worker reads the pause before it consumes anything.
    fleet.stop_workers()
    both = fleet.start_worker("both", queues="celery,reports", **fleet.worker_env)
    celery_only = fleet.start_worker("celeryonly", queues="celery", **fleet.worker_env)
    append(fleet, reports_out, "r3", queue="reports")
    append(fleet, celery_out, "c1")
    wait_for(lambda: lines(celery_out) == ["c0", "c1"], STARTUP, "the celery queue to be consumed after the restart")
    time.sleep(1)
    assert ready("reports") == 4
    assert lines(reports_out) == []
    assert "reports" not in consumed_queues()[both]

    resumed = api.post(RESUME, {"queue": "reports"}, format="json")
    assert resumed.status_code == 200, resumed.content
    assert resumed.json() == {"backend": "default", "queue": "reports", "paused": False, "workers": [both]}
    assert not QueuePause.objects.exists()
    wait_for(lambda: len(lines(reports_out)) == 4, STARTUP, "the resumed queue to drain")
    assert sorted(lines(reports_out)) == ["r0", "r1", "r2", "r3"]
    assert ready("reports") == 0
    # Resume restarted `reports` only where the worker's own -Q has it.
    queues = consumed_queues()
    assert "reports" in queues[both]
    assert queues[celery_only] == ["celery"]

    pause_row, resume_row = audit_rows("pause_queue")[0], audit_rows("resume_queue")[0]
    assert (pause_row.result, pause_row.target, pause_row.username, pause_row.backend) == (
        "ok",
        "reports",
        "admin",
        "default",
    )
    assert pause_row.counts == {"workers": 1}
    assert (resume_row.result, resume_row.target, resume_row.counts) == ("ok", "reports", {"workers": 1})


def test_a_queue_nobody_consumes_can_be_paused_ahead_of_time(fleet, api):
    response = api.post(PAUSE, {"queue": "not-consumed-yet"}, format="json")
    assert response.status_code == 200, response.content
    assert response.json() == {"backend": "default", "queue": "not-consumed-yet", "paused": True, "workers": []}
    assert QueuePause.objects.filter(queue="not-consumed-yet").count() == 1
    again = api.post(PAUSE, {"queue": "not-consumed-yet"}, format="json")
    assert again.status_code == 200
    assert QueuePause.objects.filter(queue="not-consumed-yet").count() == 1  # pausing twice keeps one pause


def test_retry_runs_the_original_arguments_and_options_again(fleet, api, tmp_path):
    fleet.start_worker("w1", queues="celery,reports", **fleet.worker_env)
    out = tmp_path / "retry.txt"
    options = {"priority": 7, "time_limit": 600, "soft_time_limit": 500}
    failed_id = append(fleet, out, "second chance", queue="reports", **options)
    wait_for(lambda: stored_state(failed_id) == "FAILURE", STARTUP, "the first run to fail")

    out.touch()  # the condition of the failure is gone
    response = api.post(RETRY, {"task_id": failed_id}, format="json")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["original_task_id"] == failed_id
    assert body["task_id"] != failed_id
    assert (body["backend"], body["task_name"], body["queue"]) == ("default", "dojo.tasks.append_line", "reports")
    wait_for(lambda: stored_state(body["task_id"]) == "SUCCESS", STARTUP, "the retry to succeed")
    assert lines(out) == ["second chance"]
    retried = json.loads(TaskResult.objects.get(task_id=body["task_id"]).meta)
    assert (retried["queue"], retried["options"]) == ("reports", options), "the worker got the original options"

    row = audit_rows("retry_task")[0]
    assert (row.result, row.target, row.username) == ("ok", failed_id, "admin")
    assert body["task_id"] in row.detail


def test_revoke_stops_a_queued_task_even_after_a_worker_restart(fleet, api, tmp_path):
    worker = fleet.start_worker("w1", queues="celery,reports", **fleet.worker_env)
    out = tmp_path / "revoked.txt"
    out.touch()
    assert api.post(PAUSE, {"queue": "reports"}, format="json").status_code == 200
    doomed = append(fleet, out, "must not run", queue="reports")

    response = api.post(REVOKE, {"task_id": doomed}, format="json")
    assert response.status_code == 200, response.content
    assert response.json() == {
        "backend": "default",
        "task_id": doomed,
        "terminate": False,
        "signal": None,
        "workers": [worker],
    }
    assert TaskRevocation.objects.filter(backend="default", task_id=doomed, terminate=False).exists()

    # The revoke the live worker holds in memory dies with it: the new one loads the stored revocation.
    fleet.stop_workers()
    fleet.start_worker("w1", queues="celery,reports", **fleet.worker_env)
    follower = append(fleet, out, "runs", queue="reports")
    assert api.post(RESUME, {"queue": "reports"}, format="json").status_code == 200
    wait_for(lambda: stored_state(follower) == "SUCCESS", STARTUP, "the task after the revoked one")
    wait_for(lambda: stored_state(doomed) == "REVOKED", 10, "the revoked task to be discarded")
    assert lines(out) == ["runs"]

    row = audit_rows("revoke_task")[0]
    assert (row.result, row.target, row.counts) == ("ok", doomed, {"workers": 1})


def test_terminate_ends_a_running_task(fleet, api):
    worker = fleet.start_worker("w1", **fleet.worker_env)
    client = fleet.client()
    running = client.send_task("dojo.tasks.sleep", args=(60,), queue="celery").id
    client.close()

    def is_running() -> bool:
        active = get_status(refresh=True).worker_replies.get(worker, {}).get("active", [])
        return any(task["id"] == running for task in active)

    wait_for(is_running, STARTUP, "the sleep to start")
    started = time.monotonic()
    response = api.post(TERMINATE, {"task_id": running, "signal": "SIGKILL"}, format="json")
    assert response.status_code == 200, response.content
    assert response.json() == {
        "backend": "default",
        "task_id": running,
        "terminate": True,
        "signal": "SIGKILL",
        "workers": [worker],
    }
    wait_for(lambda: stored_state(running) == "REVOKED", 20, "the terminated task to be stored as revoked")
    assert time.monotonic() - started < 30  # killed, not slept out
    assert not is_running()
    assert TaskRevocation.objects.get(task_id=running).terminate is True

    not_running = api.post(TERMINATE, {"task_id": running}, format="json")
    assert not_running.status_code == 404
    assert "not running on any live worker" in not_running.json()["detail"]
    results = [row.result for row in audit_rows("terminate_task")]
    assert results == ["ok", "refused"]


def test_purge_by_task_name_removes_only_that_name_in_every_priority(fleet, api, tmp_path):
    client = fleet.client()
    priorities = (None, 0, 3, 6, 9)
    for i, priority in enumerate(priorities * 2):
        client.send_task("dojo.tasks.add", args=(i, i), queue="celery", priority=priority)
    for priority in priorities:
        client.send_task("dojo.tasks.sleep", args=(1,), queue="celery", priority=priority)
    client.send_task("dojo.tasks.add", args=(0, 0), queue="reports")
    client.close()

    def names_by_list(queue: str) -> dict[str, list[str]]:
        with broker_connection() as conn:
            channel = conn.default_channel
            plain = redis.Redis.from_url(fleet.url)
            return {
                key: sorted(decode(raw)["headers"]["task"] for raw in plain.lrange(key, 0, -1))
                for key in priority_lists(channel, queue)
            }

    before = names_by_list("celery")
    assert sum(len(names) for names in before.values()) == 15
    assert sum(bool(names) for names in before.values()) > 1  # the priority sub-queues are in play

    response = api.post(PURGE_TASK, {"queue": "celery", "task_name": "dojo.tasks.add"}, format="json")
    assert response.status_code == 200, response.content
    assert response.json() == {
        "backend": "default",
        "queue": "celery",
        "task_name": "dojo.tasks.add",
        "purged": 10,
        "complete": True,
    }
    after = names_by_list("celery")
    for key, names in before.items():
        assert after[key] == [name for name in names if name != "dojo.tasks.add"], key
    assert ready("celery") == 5
    assert ready("reports") == 1  # another queue is not touched

    nothing = api.post(PURGE_TASK, {"queue": "celery", "task_name": "dojo.tasks.add"}, format="json")
    assert nothing.json()["purged"] == 0
    rows = audit_rows("purge_task")
    assert [(row.result, row.target, row.counts) for row in rows] == [
        ("ok", "celery dojo.tasks.add", {"purged": 10}),
        ("ok", "celery dojo.tasks.add", {"purged": 0}),
    ]
