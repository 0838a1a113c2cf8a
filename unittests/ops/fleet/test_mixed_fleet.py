"""The status document describes every worker, whatever it runs: a project worker (`celery -A dojo
worker`) beside a worker of unittests/plain_fleet/plain_app.py, which imports nothing of the
project, on Redis and on RabbitMQ. Real processes, no mocks.

The plain worker runs one task with one more prefetched (concurrency 1): the document must say
active 1 / reserved 1 for it, with its pool, pid and registered tasks, and the plain worker must
never be sent a command it does not know (its log shows no pidbox error).
"""

import time

import pytest
from django.core.cache import cache

from dojo.ops.brokers.connection import broker_connection
from dojo.ops.fleet.mailbox import SPEAKERS_CACHE_KEY
from dojo.ops.fleet.status import read_status
from unittests.conftest import LiveBroker, wait_for


@pytest.fixture(params=["redis_only", "rabbitmq_broker"])
def fleet_broker(request, settings) -> LiveBroker:
    settings.CELERY_TASK_QUEUES = {"celery": {}, "plain": {}}
    settings.CELERY_BROKER_TIMEOUT = 2.0
    return request.getfixturevalue(request.param)


def _speakers() -> set[str]:
    with broker_connection() as conn:
        return cache.get(f"{SPEAKERS_CACHE_KEY}:{conn.as_uri()}", set())


@pytest.mark.django_db
def test_a_plain_worker_is_described_like_a_project_worker(fleet_broker):
    own = fleet_broker.start_worker("own")
    plain = fleet_broker.start_plain_worker("plain", queues="celery,plain", concurrency=1)
    client = fleet_broker.client()
    running = client.send_task("plain.sleep", args=(30,), queue="plain")
    waiting = client.send_task("plain.sleep", args=(30,), queue="plain")

    def busy() -> bool:
        reply = read_status().worker_replies.get(plain, {})
        return len(reply.get("active", [])) == 1 and len(reply.get("reserved", [])) == 1

    wait_for(busy, 20, "the plain worker busy with one task and one prefetched")
    status = read_status()

    assert status.worker_names == sorted([own, plain])
    plain_reply, own_reply = status.worker_replies[plain], status.worker_replies[own]
    assert [task["id"] for task in plain_reply["active"]] == [running.id]
    assert [task["id"] for task in plain_reply["reserved"]] == [waiting.id]
    assert plain_reply["active"][0]["name"] == "plain.sleep" and plain_reply["active"][0]["args"] == [30]
    assert (status.active_tasks, status.reserved_tasks, status.scheduled_tasks) == (1, 1, 0)
    for name, concurrency in ((plain, 1), (own, 2)):
        stats = status.worker_stats[name]
        assert stats["pool"]["max-concurrency"] == concurrency
        assert len(stats["pool"]["processes"]) == concurrency and stats["pid"] > 0
        assert stats["pool_implementation"] and stats["rusage"]["utime"] >= 0
    assert {"plain.add", "plain.fail", "plain.sleep"} <= set(plain_reply["registered"])
    assert "dojo.tasks.add" in own_reply["registered"] and "plain.add" not in own_reply["registered"]
    assert sorted(plain_reply["active_queues"]) == ["celery", "plain"]
    assert status.queues["celery"].consumers == 2 and status.queues["plain"].consumers == 1
    assert plain_reply["unanswered"] == own_reply["unanswered"] == []
    # Only the project's worker announced dojo_status in its stats; it answers it from now on.
    assert _speakers() == {own}
    again = read_status()
    assert again.worker_replies[own]["consumer"]["broker"].startswith(fleet_broker.kind.replace("rabbitmq", "amqp"))
    assert again.worker_stats.keys() == {own, plain}

    log = (fleet_broker.tmp / "plain.log").read_text()
    assert "pidbox command error" not in log and "dojo_status" not in log, log[-3000:]


@pytest.mark.django_db
def test_a_round_costs_about_one_round_trip_on_a_mixed_fleet(redis_only, settings):
    """Six built-in commands and dojo_status go out at once and come back in one drain: a read of a
    mixed fleet of four stays far under the six round trips a command-by-command inspect costs."""
    settings.CELERY_BROKER_TIMEOUT = 2.0
    workers = [redis_only.start_worker("own1"), redis_only.start_worker("own2")]
    workers += [redis_only.start_plain_worker("plain1"), redis_only.start_plain_worker("plain2")]
    read_status()  # learns which workers speak dojo_status
    timings = []
    for _ in range(5):
        started = time.monotonic()
        status = read_status()
        timings.append(time.monotonic() - started)
        assert status.worker_names == sorted(workers)
        assert all(not reply["unanswered"] for reply in status.worker_replies.values())
    assert sorted(timings)[2] < 0.5, timings  # the broker bound is 2 s: no command waited for it
