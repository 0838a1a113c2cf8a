"""The controls on RabbitMQ (a private vhost per test) with real workers sharing the test database:
pause/resume across a worker restart, retry, revoke; purge by task name is refused there.

RabbitMQ's own count (`rabbitmqctl list_queues`) is the reference for the messages a paused queue
keeps. AMQP lists no bindings, so reading who is live waits the whole broker time bound: 1 s here.
"""

import time

import pytest
from django.urls import reverse

from dojo.models import CeleryAuditLog, QueuePause, TaskRevocation
from unittests.conftest import LiveBroker, wait_for
from unittests.ops.brokers.test_rabbitmq import rabbit_queues
from unittests.ops.controls.test_controls import QUEUES, STARTUP, append, consumed_queues, lines, stored_state

PAUSE = reverse("celery_queue_pause")
RESUME = reverse("celery_queue_resume")
RETRY = reverse("celery_task_retry")
REVOKE = reverse("celery_task_revoke")
PURGE = reverse("celery_queue_purge")
PURGE_TASK = reverse("celery_queue_purge_task")


@pytest.fixture
def rabbit_fleet(rabbitmq_broker: LiveBroker, shared_database: str, settings) -> LiveBroker:
    settings.CELERY_BROKER_TIMEOUT = 1.0
    settings.CELERY_QUEUE_NAMES = list(QUEUES)
    settings.CELERY_TASK_DEFAULT_QUEUE = "celery"
    settings.CELERY_TASK_QUEUES = {name: {"exchange": name, "routing_key": name} for name in QUEUES}
    rabbitmq_broker.worker_env = {
        "DD_DATABASE_URL": shared_database,
        "DD_CELERY_RESULT_BACKEND": "django-db",
        "DD_CELERY_QUEUES": ",".join(QUEUES),
    }
    return rabbitmq_broker


def ready_in_rabbitmq(broker: LiveBroker, queue: str) -> int:
    return rabbit_queues(broker).get(queue, {}).get("messages_ready", 0)


def consumers_in_rabbitmq(broker: LiveBroker, queue: str) -> int:
    return rabbit_queues(broker).get(queue, {}).get("consumers", 0)


def test_pause_survives_a_restart_and_resume_drains(rabbit_fleet, api, tmp_path):
    worker = rabbit_fleet.start_worker("both", queues="celery,reports", **rabbit_fleet.worker_env)
    reports_out, celery_out = tmp_path / "reports.txt", tmp_path / "celery.txt"
    reports_out.touch()
    celery_out.touch()

    paused = api.post(PAUSE, {"queue": "reports"}, format="json")
    assert paused.status_code == 200, paused.content
    assert paused.json()["workers"] == [worker]
    wait_for(lambda: consumers_in_rabbitmq(rabbit_fleet, "reports") == 0, 10, "RabbitMQ to drop the consumer")

    for i in range(3):
        append(rabbit_fleet, reports_out, f"r{i}", queue="reports")
    append(rabbit_fleet, celery_out, "c0")
    wait_for(lambda: lines(celery_out) == ["c0"], STARTUP, "the celery queue to be consumed")
    assert ready_in_rabbitmq(rabbit_fleet, "reports") == 3
    assert lines(reports_out) == []

    rabbit_fleet.stop_workers()
    worker = rabbit_fleet.start_worker("both", queues="celery,reports", **rabbit_fleet.worker_env)
    append(rabbit_fleet, celery_out, "c1")
    wait_for(lambda: lines(celery_out) == ["c0", "c1"], STARTUP, "the celery queue to be consumed after the restart")
    time.sleep(1)
    assert ready_in_rabbitmq(rabbit_fleet, "reports") == 3
    assert consumers_in_rabbitmq(rabbit_fleet, "reports") == 0
    assert lines(reports_out) == []

    resumed = api.post(RESUME, {"queue": "reports"}, format="json")
    assert resumed.status_code == 200, resumed.content
    assert resumed.json()["workers"] == [worker]
    wait_for(lambda: len(lines(reports_out)) == 3, STARTUP, "the resumed queue to drain")
    assert ready_in_rabbitmq(rabbit_fleet, "reports") == 0
    assert consumers_in_rabbitmq(rabbit_fleet, "reports") == 1
    assert "reports" in consumed_queues()[worker]
    assert not QueuePause.objects.exists()
    assert list(CeleryAuditLog.objects.order_by("created_at").values_list("action", "result")) == [
        ("pause_queue", "ok"),
        ("resume_queue", "ok"),
    ]


def test_retry_and_revoke(rabbit_fleet, api, tmp_path):
    worker = rabbit_fleet.start_worker("w1", queues="celery,reports", **rabbit_fleet.worker_env)
    out = tmp_path / "out.txt"
    failed = append(rabbit_fleet, out, "retried")
    wait_for(lambda: stored_state(failed) == "FAILURE", STARTUP, "the first run to fail")
    out.touch()

    retried = api.post(RETRY, {"task_id": failed}, format="json")
    assert retried.status_code == 200, retried.content
    assert retried.json()["queue"] == "celery"
    wait_for(lambda: stored_state(retried.json()["task_id"]) == "SUCCESS", STARTUP, "the retry to succeed")
    assert lines(out) == ["retried"]

    assert api.post(PAUSE, {"queue": "reports"}, format="json").status_code == 200
    doomed = append(rabbit_fleet, out, "must not run", queue="reports")
    revoked = api.post(REVOKE, {"task_id": doomed}, format="json")
    assert revoked.status_code == 200, revoked.content
    assert revoked.json()["workers"] == [worker]
    assert TaskRevocation.objects.filter(task_id=doomed).exists()
    follower = append(rabbit_fleet, out, "after", queue="reports")
    assert api.post(RESUME, {"queue": "reports"}, format="json").status_code == 200
    wait_for(lambda: stored_state(follower) == "SUCCESS", STARTUP, "the task after the revoked one")
    wait_for(lambda: stored_state(doomed) == "REVOKED", 10, "the revoked task to be discarded")
    assert lines(out) == ["retried", "after"]
    results = dict(CeleryAuditLog.objects.values_list("action", "result"))
    assert results["retry_task"] == results["revoke_task"] == "ok"


def test_purge_by_task_name_is_refused_but_the_whole_queue_purge_works(rabbit_fleet, api):
    response = api.post(PURGE_TASK, {"queue": "celery", "task_name": "dojo.tasks.add"}, format="json")
    assert response.status_code == 400
    assert "cannot remove selected messages without consuming them" in response.json()["backend"][0]
    whole = api.post(PURGE, {"queue": "celery"}, format="json")
    assert whole.status_code == 200
    assert list(CeleryAuditLog.objects.order_by("created_at").values_list("action", "result")) == [
        ("purge_task", "refused"),
        ("purge_queue", "ok"),
    ]
