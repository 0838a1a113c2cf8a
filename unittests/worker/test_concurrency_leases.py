"""A concurrency slot is never held by a run that is gone (dojo.worker.concurrency), on real
`celery -A dojo worker` processes, with `dojo.tasks.limited_sleep_one` (limit 1). The two kill tests
run on Redis (slots on the broker's Redis) and on the embedded filesystem broker (slots in the
database); the others on Redis.

Every test uses two workers: "holders" consumes the queue `hold`, where a long run takes the
slot of a key, and "waiters" consumes `celery`, where a second run of the same key waits for it.
Each test then does to the holder what an operator, the OOM killer or a crash does, and measures
when the waiting run starts.

Each fails on the code before leases, where a slot was held for the hard time limit (12 h by
default) unless its run's `finally` released it, and where a blocked run tried again about every
second until it expired (14 tries in 12 s, measured).
"""

import os
import re
import signal
import time

import pytest
from django.urls import reverse

from dojo.models import SemaphoreWaiter
from dojo.ops.fleet.status_cache import get_status
from dojo.ops.limits.semaphores import list_semaphores
from unittests.conftest import LiveBroker, filesystem_broker, use_broker, wait_for

LEASE = 3.0  # DD_CELERY_SLOT_LEASE_SECONDS of the workers, where the lease is what is tested
WAIT_MAX = 2.0  # DD_CELERY_SLOT_WAIT_MAX_SECONDS there: a waiter tries again at least this often
TERMINATE = reverse("celery_task_terminate")
STARTUP = 60
TASK = "dojo.tasks.limited_sleep_one"  # concurrency_limit=1, key "limited_sleep_one:{key}"


class Fleet:
    def __init__(self, broker: LiveBroker, holders: str, waiters: str) -> None:
        self.broker = broker
        self.holders = holders
        self.holders_process = broker.workers[0]
        self.waiters = waiters
        self.client = broker.client()

    def hold_the_slot(self, key: str, seconds: float = 60):
        run = self.client.send_task(TASK, args=(seconds, key), queue="hold")
        wait_for(lambda: free_slots(key) == 0, STARTUP, "the slot held")
        return run

    def wait_for_a_slot(self, key: str, **options):
        run = self.client.send_task(TASK, args=(0.2, key), queue="celery", **options)
        waiting = SemaphoreWaiter.objects.filter(key=f"limited_sleep_one:{key}", task_id=run.id)
        wait_for(waiting.exists, STARTUP, "the second run to wait for the slot")
        return run

    def pool_pid_of(self, task_id: str) -> int:
        active = self.client.control.inspect(destination=[self.holders], timeout=2).active() or {}
        return next(task["worker_pid"] for task in active.get(self.holders, []) if task["id"] == task_id)

    def waiter_log(self) -> str:
        return (self.broker.tmp / f"{self.waiters.split('@')[0]}.log").read_text()


def free_slots(key: str) -> int | None:
    state = next((state for state in list_semaphores() if state.key == f"limited_sleep_one:{key}"), None)
    return state.available_slots if state else None


def start_fleet(broker: LiveBroker, database: str, **env: str) -> Fleet:
    env = {"DD_DATABASE_URL": database, "DD_CELERY_QUEUES": "celery,hold", **env}
    holders = broker.start_worker("holders", queues="hold", **env)
    waiters = broker.start_worker("waiters", queues="celery", **env)
    return Fleet(broker, holders, waiters)


@pytest.fixture(params=["redis", "filesystem"])
def leased(request, shared_database: str, settings, tmp_path) -> Fleet:
    """Workers with a 3 s lease and waiters that try again at least every 2 s, on Redis or on
    the filesystem broker (whose slots are in the shared test database)."""
    if request.param == "redis":
        broker = request.getfixturevalue("redis_only")
    else:
        broker = use_broker(settings, filesystem_broker(tmp_path))
    try:
        fleet = start_fleet(
            broker,
            shared_database,
            DD_CELERY_SLOT_LEASE_SECONDS=str(LEASE),
            DD_CELERY_SLOT_WAIT_MAX_SECONDS=str(WAIT_MAX),
        )
        yield fleet
        fleet.client.close()
    finally:
        broker.stop_workers()


def test_a_sigkilled_pool_child_frees_its_slot_within_one_lease(leased):
    """The pool child running the holder is SIGKILLed (what the OOM killer or a crash does): no
    `finally` runs; the waiting run starts within lease + 5 s."""
    holder = leased.hold_the_slot("child")
    waiting = leased.wait_for_a_slot("child")

    os.kill(leased.pool_pid_of(holder.id), signal.SIGKILL)
    killed_at = time.time()

    run = waiting.get(timeout=LEASE + 30)
    assert run["started"] - killed_at <= LEASE + 5
    assert free_slots("child") == 1  # and the waiter gave it back when it ended


def test_a_worker_killed_whole_frees_its_slots_by_lease_and_a_live_run_renews_its_own(leased):
    """The holder's worker is SIGKILLed with its pool children, so nothing is left to release
    the slot: only the lease ends it. Before that, the holder keeps its slot for longer than a
    lease because it renews it."""
    leased.hold_the_slot("whole")
    waiting = leased.wait_for_a_slot("whole")

    time.sleep(2 * LEASE)  # two leases: held only because the running holder renews it
    assert free_slots("whole") == 0
    assert waiting.state in ("RETRY", "STARTED")  # still waiting (STARTED: in the middle of a try)

    os.killpg(leased.holders_process.pid, signal.SIGKILL)
    leased.holders_process.wait()
    killed_at = time.time()

    run = waiting.get(timeout=LEASE + 30)
    assert run["started"] - killed_at <= LEASE + 5
    wait_for(lambda: free_slots("whole") == 1, 10, "the slot free again")


def test_terminate_from_the_api_frees_the_slot_at_once(redis_only, shared_database, api):
    """Terminate (SIGKILL) from the API: the worker's main process releases the slot on
    `task_revoked`, so the waiting run starts at once, not after the 30 s default lease."""
    fleet = start_fleet(redis_only, shared_database, DD_CELERY_SLOT_WAIT_MAX_SECONDS=str(WAIT_MAX))
    holder = fleet.hold_the_slot("terminated")
    waiting = fleet.wait_for_a_slot("terminated")

    def is_running() -> bool:
        active = get_status(refresh=True).worker_replies.get(fleet.holders, {}).get("active", [])
        return any(task["id"] == holder.id for task in active)

    wait_for(is_running, STARTUP, "the holder to be seen running")
    response = api.post(TERMINATE, {"task_id": holder.id, "signal": "SIGKILL"}, format="json")
    assert response.status_code == 200, response.content
    terminated_at = time.time()

    run = waiting.get(timeout=30)
    assert run["started"] - terminated_at < WAIT_MAX + 3  # its next try; the lease is 30 s
    fleet.client.close()


WAIT_LINE = r"\[{id}\] waits for a slot of .*: wait (\d+), tries again in ([\d.]+) s"


def test_a_waiting_run_backs_off_and_keeps_its_deadline(redis_only, shared_database, settings):
    """A run blocked for 12 s (its `expires`) tries again after about 1, 2, 4, 8 s (at random
    between half and all of it), not every second: at most 6 tries where the old code made 14.
    Its last try lands before its deadline, and it ends REVOKED at that deadline. A run whose
    deadline is the default expiry (10 s here) keeps it too, although each re-send of it is a
    new publish that gets a fresh default expiry (dojo/publishing.py)."""
    settings.CELERY_TASK_DEFAULT_EXPIRES = 10  # what this process stamps on the runs it sends
    fleet = start_fleet(
        redis_only, shared_database, DD_CELERY_SLOT_LEASE_SECONDS=str(LEASE), DD_CELERY_TASK_DEFAULT_EXPIRES="10"
    )
    fleet.hold_the_slot("patient", seconds=30)
    deadline = 12
    waiting = fleet.wait_for_a_slot("patient", expires=deadline)
    sent_at = time.time()
    by_default = fleet.wait_for_a_slot("patient")
    default_sent_at = time.time()

    wait_for(lambda: by_default.state == "REVOKED", 10 + 10, "the run with the default expiry to expire")
    assert time.time() - default_sent_at < 10 + 3
    wait_for(lambda: waiting.state == "REVOKED", deadline + 10, "the waiting run to expire")
    ended_at = time.time()
    log = fleet.waiter_log()
    waits = log.count(f"[{waiting.id}] waits for a slot")
    tries = re.findall(WAIT_LINE.format(id=waiting.id), log)

    assert 3 <= waits <= 6, waits
    assert len(tries) == waits
    countdowns = [float(countdown) for _wait, countdown in tries]
    assert [int(wait) for wait, _countdown in tries] == list(range(1, len(tries) + 1))
    for index, countdown in enumerate(countdowns[:3]):  # 1, 2, 4 s nominal, none near the deadline yet
        assert 2**index / 2 <= countdown <= 2**index, countdowns
    assert sum(countdowns) < deadline  # every try before the deadline
    assert ended_at - sent_at < deadline + 3  # not extended by waiting
    fleet.client.close()
