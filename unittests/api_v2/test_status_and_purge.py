"""Status and purge through the API against a real broker (Redis, then the embedded
filesystem broker) and real `celery -A dojo worker` processes."""

import time

import pytest
from django.urls import reverse

STATUS = reverse("celery_status")
PURGE = reverse("celery_queue_purge")


def publish(broker, count: int, queue: str = "celery", priorities=(None,)) -> None:
    """Publish `count` dojo.tasks.add messages, spreading them over `priorities`."""
    client = broker.client()
    with client.connection_for_write() as conn:
        for i in range(count):
            priority = priorities[i % len(priorities)]
            client.send_task("dojo.tasks.add", args=(i, i), queue=queue, priority=priority, connection=conn)


@pytest.mark.django_db
@pytest.mark.parametrize("count", [0, 1, 2])
def test_status_counts_workers(broker, api, count):
    names = [broker.start_worker(f"w{i}") for i in range(count)]
    started = time.monotonic()
    body = api.get(STATUS).json()
    elapsed = time.monotonic() - started

    assert body["broker_status"] is body["connected"] is True
    assert body["workers"] == count
    assert body["worker_names"] == sorted(names)
    assert body["worker_status"] is (count > 0)
    assert body["enabled"] is True
    assert body["queue"] == "celery"
    assert body["queue_length"] == 0
    assert body["error"] is None
    # Every live worker answered, so the ping stopped early instead of waiting the bound.
    assert elapsed < 1.0, elapsed


@pytest.mark.django_db
def test_queue_length_counts_every_priority(broker, api):
    publish(broker, 11, priorities=(0, 3, 5, 6, 9, None))
    assert api.get(STATUS).json()["queue_length"] == 11


@pytest.mark.django_db
def test_redis_priority_sub_queues_are_counted(redis_only, api):
    """On Redis the messages really sit in several lists; a plain LLEN would undercount."""
    import redis

    publish(redis_only, 12, priorities=(0, 3, 6, 9))
    client = redis.Redis.from_url(redis_only.url)
    assert client.llen("celery") < 12
    assert api.get(STATUS).json()["queue_length"] == 12


@pytest.mark.django_db
def test_purge_removes_exactly_the_named_queue(broker, api, settings):
    settings.CELERY_TASK_QUEUES = {"celery": {}, "reports": {}}
    publish(broker, 7, priorities=(0, 9, None))
    publish(broker, 4, queue="reports")

    response = api.post(PURGE, {}, format="json")
    assert response.status_code == 200
    assert response.json() == {"queue": "celery", "purged": 7, "backend": "default"}
    assert api.get(STATUS).json()["queue_length"] == 0

    response = api.post(PURGE, {"queue": "reports"}, format="json")
    assert response.json() == {"queue": "reports", "purged": 4, "backend": "default"}
    assert api.post(PURGE, {"queue": "reports"}, format="json").json() == {
        "queue": "reports",
        "purged": 0,
        "backend": "default",
    }


@pytest.mark.django_db
def test_purge_unknown_queue_is_refused_and_purges_nothing(broker, api):
    publish(broker, 3)
    response = api.post(PURGE, {"queue": "no-such-queue"}, format="json")
    assert response.status_code == 400
    assert "queue" in response.json()
    assert api.get(STATUS).json()["queue_length"] == 3


@pytest.mark.django_db
def test_purge_with_a_worker_running_purges_only_ready_messages(broker, api):
    """The worker consumes the queue and answers; purge still reports a count, not an error."""
    broker.start_worker("w0")
    response = api.post(PURGE, {"queue": "celery"}, format="json")
    assert response.status_code == 200
    assert response.json()["purged"] >= 0


@pytest.mark.django_db
def test_purge_refused_when_disabled_in_system_settings(broker, api):
    from dojo.models import SystemSettings

    publish(broker, 2)
    row = SystemSettings.load()
    row.allow_queue_purge = False
    row.save()
    response = api.post(PURGE, {}, format="json")
    assert response.status_code == 403
    assert "disabled" in response.json()["detail"]
    assert api.get(STATUS).json()["queue_length"] == 2


@pytest.mark.django_db
def test_status_looks_without_creating_queues(redis_only, api):
    import redis

    client = redis.Redis.from_url(redis_only.url)
    before = set(client.keys("*"))
    api.get(STATUS)
    assert set(client.keys("*")) == before


@pytest.mark.django_db
def test_a_killed_worker_costs_one_slow_ping_not_every_ping(redis_only, api, settings):
    """SIGKILL leaves the worker's binding behind; after one ping that waits the bound,
    the status answers fast again with the live worker only."""
    import os
    import signal

    settings.CELERY_BROKER_TIMEOUT = 1.0
    alive = redis_only.start_worker("alive")
    redis_only.start_worker("doomed")
    doomed = redis_only.workers[-1]
    os.killpg(doomed.pid, signal.SIGKILL)
    doomed.wait()

    timings = []
    for _ in range(3):
        started = time.monotonic()
        body = api.get(STATUS).json()
        timings.append(time.monotonic() - started)
        assert body["worker_names"] == [alive]
    assert 0.9 < timings[0] < 1.5, timings
    assert max(timings[1:]) < 0.5, timings
