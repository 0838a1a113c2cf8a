"""A revoke lasts one window, DD_CELERY_REVOKE_WINDOW: for a worker that starts after it (the
stored revocations it loads), for a worker that was running when it was broadcast (its own
revoked set, whose expiry Celery fixes at 3 h), and for the stored rows (refreshed by a second
revoke, pruned past the window by the snapshot task). Real `celery -A dojo worker` processes on
Redis that share the test database.

The task is `dojo.tasks.append_line(path, line)`: a run leaves its line in the file, a refused
one none. Each revoked task has an ETA and an explicit `expires` far beyond it, so nothing but
the revoke can stop it; a follower due just after it tells when the worker is past its ETA.
"""

import time
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
import redis
from django.urls import reverse
from django.utils import timezone

from dojo.models import TaskRevocation
from dojo.ops.observe.history import record_snapshot
from unittests.conftest import LiveBroker, wait_for

REVOKE = reverse("celery_task_revoke")
STARTUP = 60  # a worker start needs seconds on a loaded two-core machine
WINDOW = 1800  # seconds: DD_CELERY_REVOKE_WINDOW of the tests' workers and web process


@pytest.fixture
def fleet(redis_only: LiveBroker, shared_database: str, settings) -> LiveBroker:
    settings.CELERY_REVOKE_WINDOW = WINDOW
    redis_only.worker_env = {"DD_DATABASE_URL": shared_database, "DD_CELERY_REVOKE_WINDOW": str(WINDOW)}
    return redis_only


def append(broker: LiveBroker, path: Path, line: str, countdown: float, queue: str = "celery") -> str:
    """Publish append_line(path, line) due in `countdown` s, expiring only in ten minutes; its id."""
    client = broker.client()
    try:
        options = {"countdown": countdown, "expires": 600, "queue": queue}
        return client.send_task("dojo.tasks.append_line", args=(str(path), line), **options).id
    finally:
        client.close()


def ran(broker: LiveBroker, task_id: str, timeout: float) -> None:
    """Wait until `task_id` has run (its result is stored in the broker's result backend)."""
    client = broker.client()
    try:
        client.AsyncResult(task_id).get(timeout=timeout)
    finally:
        client.close()


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def revoke(api, task_id: str) -> list[str]:
    response = api.post(REVOKE, {"task_id": task_id}, format="json")
    assert response.status_code == 200, response.content
    return response.json()["workers"]


def age(task_id: str, seconds: float) -> None:
    """Make the stored revocation of `task_id` as old as `seconds`, as time passing would."""
    TaskRevocation.objects.filter(task_id=task_id).update(revoked_at=timezone.now() - timedelta(seconds=seconds))


def test_a_worker_started_after_the_revoke_refuses_the_task_within_the_window(fleet, api, tmp_path):
    """A task revoked 10 minutes ago (within the 30 min window, past the worker's 5 min default
    expiry) is refused by a worker that starts now; one revoked an hour ago (past the window)
    runs, so the window is the setting's, not some longer default.

    Fails before this change: a starting worker loaded only the revocations younger than the
    default expiry (5 min here, 12 h by default), so the task revoked 10 minutes ago ran."""
    out = tmp_path / "out.txt"
    out.touch()
    doomed = append(fleet, out, "revoked 10 min ago", countdown=8)
    stale = append(fleet, out, "revoked an hour ago", countdown=8)
    follower = append(fleet, out, "follower", countdown=9)
    assert revoke(api, doomed) == revoke(api, stale) == []  # no worker is live
    age(doomed, 600)
    age(stale, 3600)

    fleet.start_worker("late", DD_CELERY_TASK_DEFAULT_EXPIRES="300", **fleet.worker_env)
    ran(fleet, follower, STARTUP)
    ran(fleet, stale, 5)
    assert sorted(lines(out)) == ["follower", "revoked an hour ago"]


def held(broker: LiveBroker, task_id: str) -> bool:
    """Whether a worker holds `task_id` (an ETA message waits unacknowledged in `unacked`)."""
    return any(task_id.encode() in value for value in redis.Redis.from_url(broker.url).hvals("unacked"))


def test_a_worker_running_since_before_the_revoke_keeps_it_for_the_window(fleet, api, tmp_path):
    """A worker that got the revoke while holding the task for its ETA still refuses it when it
    falls due, although its revoked set purged everything older than Celery's revoke expiry
    meanwhile. Celery's own limits are scaled down with its environment variables so that this
    happens within seconds: CELERY_WORKER_REVOKE_EXPIRES=1 (3 h by default) and
    CELERY_WORKER_REVOKES_MAX=4 (50,000: the set purges when it fills up). A second worker whose
    window is 1 s forgets the same way and runs its revoked task: the window is the setting's.

    Fails before this change: the worker kept revoked ids for Celery's expiry only, so the purge
    on the fourth revoke dropped the task's id and it ran at its ETA."""
    celery_limits = {"CELERY_WORKER_REVOKE_EXPIRES": "1", "CELERY_WORKER_REVOKES_MAX": "4"}
    worker = fleet.start_worker("early", **celery_limits, **fleet.worker_env)
    short = fleet.start_worker(
        "short", queues="short", **celery_limits, **{**fleet.worker_env, "DD_CELERY_REVOKE_WINDOW": "1"}
    )
    out = tmp_path / "out.txt"
    out.touch()
    doomed = append(fleet, out, "must not run", countdown=6)
    forgotten = append(fleet, out, "revoked for 1 s", countdown=6, queue="short")
    follower = append(fleet, out, "follower", countdown=7)
    wait_for(lambda: held(fleet, doomed) and held(fleet, forgotten), 5, "the workers to hold the tasks for their ETA")
    assert revoke(api, doomed) == revoke(api, forgotten) == sorted([worker, short])
    time.sleep(1.5)  # older than CELERY_WORKER_REVOKE_EXPIRES and the short window
    revoke(api, str(uuid.uuid4()))
    revoke(api, str(uuid.uuid4()))  # the sets are full: they purge

    ran(fleet, follower, 30)
    ran(fleet, forgotten, 5)
    assert sorted(lines(out)) == ["follower", "revoked for 1 s"]


def test_revoking_again_refreshes_the_stored_time(fleet, api):
    """A second revoke of the same id starts its window again.

    Fails before this change: the row kept the time of the first revoke."""
    revoke(api, "twice-revoked")
    age("twice-revoked", 3600)
    before = timezone.now()
    revoke(api, "twice-revoked")
    assert TaskRevocation.objects.get(task_id="twice-revoked").revoked_at >= before


def test_the_snapshot_task_prunes_revocations_past_the_window(fleet, api):
    """record_snapshot (beat runs it every minute) deletes the rows older than the window and
    keeps the others.

    Fails before this change: stored revocations were never deleted."""
    for task_id in ("recent", "old"):
        revoke(api, task_id)
    age("recent", WINDOW - 60)
    age("old", WINDOW + 60)
    record_snapshot()
    assert list(TaskRevocation.objects.values_list("task_id", flat=True)) == ["recent"]
