"""A worker of an older Celery minor (5.5, 5.6: a rolling upgrade, or a fleet nobody upgraded)
beside a project worker (this project's Celery) on Redis: the status document describes it fully,
from the built-in inspect commands, and it is never sent a command it does not know.

The older Celery lives in its own virtualenv (unittests/plain_fleet/conftest.py, made once and
cached under var/test-venvs/); the worker runs unittests/plain_fleet/plain_app.py. Real processes.
"""

import celery
import pytest

from dojo.ops.fleet.status import read_status
from unittests.conftest import LiveBroker, wait_for


@pytest.fixture
def fleet(redis_only: LiveBroker, settings) -> LiveBroker:
    settings.CELERY_TASK_QUEUES = {"celery": {}, "plain": {}}
    settings.CELERY_BROKER_TIMEOUT = 2.0
    return redis_only


@pytest.mark.django_db
@pytest.mark.parametrize("minor", ["5.5", "5.6"])
def test_a_worker_of_an_older_celery_is_described_fully(fleet, older_celery, minor):
    assert not celery.__version__.startswith(f"{minor}.")  # the project's own Celery is newer
    own = fleet.start_worker("own")
    old = fleet.start_plain_worker("old", queues="celery,plain", python=older_celery(minor), concurrency=1)
    client = fleet.client()
    running = client.send_task("plain.sleep", args=(30,), queue="plain")
    waiting = client.send_task("plain.sleep", args=(30,), queue="plain")

    def busy() -> bool:
        reply = read_status().worker_replies.get(old, {})
        return len(reply.get("active", [])) == 1 and len(reply.get("reserved", [])) == 1

    wait_for(busy, 20, "the older worker busy with one task and one prefetched")
    status = read_status()

    assert status.worker_names == sorted([own, old])
    reply = status.worker_replies[old]
    assert [task["id"] for task in reply["active"]] == [running.id]
    assert [task["id"] for task in reply["reserved"]] == [waiting.id]
    assert reply["active"][0]["name"] == "plain.sleep" and reply["active"][0]["args"] == [30]
    assert reply["active"][0]["worker_pid"] in reply["stats"]["pool"]["processes"]
    assert (status.active_tasks, status.reserved_tasks) == (1, 1)
    stats = status.worker_stats[old]
    assert stats["pool"]["max-concurrency"] == 1 and len(stats["pool"]["processes"]) == 1
    assert stats["pid"] == fleet.workers[1].pid  # `python -m celery` is the worker's main process
    assert stats["pool_implementation"].startswith("celery.concurrency.prefork")
    assert stats["prefetch_count"] == 4 and stats["rusage"]["maxrss"] > 0
    assert status.worker_stats[own]["pool"]["max-concurrency"] == 2
    assert set(reply["registered"]) == {"plain.add", "plain.fail", "plain.sleep"}
    assert sorted(reply["active_queues"]) == ["celery", "plain"]
    assert status.queues["celery"].consumers == 2 and status.queues["plain"].consumers == 1
    assert reply["unanswered"] == [] and status.worker_replies[own]["unanswered"] == []

    log = (fleet.tmp / "old.log").read_text()
    assert f"v{minor}." in log  # the banner: this worker really runs the older Celery
    assert "pidbox command error" not in log and "dojo_status" not in log, log[-3000:]
