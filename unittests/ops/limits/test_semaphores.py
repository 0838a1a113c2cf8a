"""Concurrency limits: real `celery -A dojo worker` processes on a real Redis run ten
`limited_sleep` tasks limited to 2 at once (checked from the start/end times the runs record
themselves), while the dashboard's readers see the full key and the blocked waiters; both slot
stores (Redis, database) hold the limit under racing threads and free a slot whose holder never
released it once it expires; the API's shape, permissions and errors."""

import threading
import time
from datetime import timedelta

import pytest
from celery.exceptions import SoftTimeLimitExceeded
from django.db import connection
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from dojo.models import SemaphoreWaiter
from dojo.ops.brokers.registry import Broker, get_broker
from dojo.ops.limits.semaphores import Slot, acquire_slot, blocked_by_queue, list_semaphores, release_slot
from dojo.worker.tasks import limited_sleep
from unittests.conftest import LiveBroker, free_port, make_user, wait_for

SEMAPHORES = reverse("celery_semaphores")
DEMO_KEY = "limited_sleep:demo"


def most_at_once(runs: list[dict]) -> int:
    """The largest number of runs whose [started, ended] intervals overlap."""
    edges = sorted([(run["started"], 1) for run in runs] + [(run["ended"], -1) for run in runs])
    running = peak = 0
    for _at, step in edges:  # at equal times an end (-1) sorts before a start
        running += step
        peak = max(peak, running)
    return peak


def state_of(key: str, backend: Broker | None = None):
    return next((state for state in list_semaphores(backend) if state.key == key), None)


@pytest.fixture(params=["redis", "database"])
def store_backend(request, redis_only, transactional_db) -> Broker:
    """A backend whose slots live on Redis, or one (a broker without a server-side store) in the database."""
    if request.param == "redis":
        return get_broker()
    return Broker("default", "filesystem://", {})


# --- real workers ---------------------------------------------------------------------------


def test_ten_runs_limited_to_two_never_overlap_beyond_two_and_all_finish(redis_only: LiveBroker, shared_database):
    for name in ("sem1", "sem2"):  # 2 workers x 2 pool processes: 4 could run at once without the limit
        redis_only.start_worker(name, DD_DATABASE_URL=shared_database)
    client = redis_only.client()
    results = [client.send_task("dojo.tasks.limited_sleep", args=(1.0,)) for _ in range(10)]

    seen = {"full_with_waiters": False, "blocked_on_celery": 0}

    def saw_full_key_with_waiters() -> bool:
        state = state_of(DEMO_KEY)
        if state and (state.limit, state.available_slots) == (2, 0) and state.blocked_waiters > 0:
            seen["full_with_waiters"] = True
            seen["blocked_on_celery"] = max(seen["blocked_on_celery"], blocked_by_queue("default")["celery"].count)
        return seen["full_with_waiters"]

    wait_for(saw_full_key_with_waiters, 30, "the key full with blocked waiters")
    runs = [result.get(timeout=120) for result in results]

    assert len(runs) == 10
    assert most_at_once(runs) == 2  # never more than the limit, and the limit was used
    assert seen["blocked_on_celery"] > 0  # 4 pool processes wanted to run; the limit held 2 back
    # Every waiter row went away when its run got a slot; both slots are free again.
    assert not SemaphoreWaiter.objects.filter(key=DEMO_KEY).exists()
    assert (state_of(DEMO_KEY).available_slots, state_of(DEMO_KEY).expires_at) == (2, None)

    # A run that fails, and one stopped by its soft time limit, give their slot back too.
    failed = client.send_task("dojo.tasks.limited_sleep", args=("not a number",), kwargs={"key": "fails"})
    with pytest.raises(TypeError):
        failed.get(timeout=60)
    interrupted = client.send_task("dojo.tasks.limited_sleep", args=(30,), kwargs={"key": "soft"}, soft_time_limit=1)
    wait_for(lambda: state_of("limited_sleep:soft") is not None, 30, "the soft-limited run holds a slot")
    with pytest.raises(SoftTimeLimitExceeded):
        interrupted.get(timeout=60)
    assert state_of("limited_sleep:fails").available_slots == 2
    assert state_of("limited_sleep:soft").available_slots == 2
    client.close()


# --- the stores -----------------------------------------------------------------------------


def test_racing_threads_never_hold_more_slots_than_the_limit(store_backend):
    limit, threads_count, runs_each = 2, 6, 3
    guard = threading.Lock()
    holding = {"now": 0, "peak": 0, "runs": 0}

    def run(index: int) -> None:
        try:
            for round_number in range(runs_each):
                slot = Slot(store_backend, "race", f"thread-{index}-{round_number}", limit, expires=60)
                while not acquire_slot(slot):
                    time.sleep(0.01)
                with guard:  # counted after the acquire and before the release: never above the true holders
                    holding["now"] += 1
                    holding["peak"] = max(holding["peak"], holding["now"])
                time.sleep(0.05)
                with guard:
                    holding["now"] -= 1
                    holding["runs"] += 1
                release_slot(slot)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(index,)) for index in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)

    assert holding["runs"] == threads_count * runs_each
    assert holding["peak"] == limit  # reached, never passed
    assert state_of("race", store_backend).available_slots == limit


def test_a_slot_whose_holder_never_released_it_frees_after_its_expiry(store_backend):
    dead = Slot(store_backend, "dead-worker", "held-by-a-dead-worker", limit=1, expires=1.5)
    assert acquire_slot(dead)  # and never released, as by a worker killed mid-run
    other = Slot(store_backend, "dead-worker", "next-run", limit=1, expires=60)

    assert not acquire_slot(other)
    state = state_of("dead-worker", store_backend)
    assert (state.limit, state.available_slots) == (1, 0)
    assert 0 < (state.expires_at - timezone.now()).total_seconds() <= 1.5

    wait_for(lambda: state_of("dead-worker", store_backend).available_slots == 1, 10, "the dead holder's slot")
    assert acquire_slot(other)
    assert acquire_slot(other)  # the holder renews its own slot rather than taking a second
    assert state_of("dead-worker", store_backend).available_slots == 0


# --- keys and waiters -----------------------------------------------------------------------


def test_the_key_is_formatted_from_the_arguments_with_their_defaults():
    assert limited_sleep.concurrency_key_for((1.0,), {}) == DEMO_KEY
    assert limited_sleep.concurrency_key_for((1.0, "reports"), {}) == "limited_sleep:reports"
    assert limited_sleep.concurrency_key_for((), {"seconds": 1, "key": "x"}) == "limited_sleep:x"


@pytest.mark.django_db
def test_blocked_waiters_count_by_queue_and_overdue_ones_do_not():
    now = timezone.now()
    rows = [("a", "celery", 3, 1), ("b", "celery", 1, 1), ("c", "reports", 2, 1), ("d", "celery", 60, -30)]
    for task_id, queue, minutes_ago, retry_in_minutes in rows:
        SemaphoreWaiter.objects.create(
            key="k",
            task_id=task_id,
            task_name="dojo.tasks.limited_sleep",
            queue=queue,
            blocked_since=now - timedelta(minutes=minutes_ago),
            retry_at=now + timedelta(minutes=retry_in_minutes),
        )
    SemaphoreWaiter.objects.create(
        backend="other", key="k", task_id="e", queue="celery", blocked_since=now, retry_at=now, task_name="t"
    )

    blocked = blocked_by_queue("default")

    assert set(blocked) == {"celery", "reports"}
    assert blocked["celery"].count == 2  # "d" stopped retrying half an hour ago; "e" is another backend's
    assert blocked["celery"].oldest_blocked_at == now - timedelta(minutes=3)
    assert blocked["reports"].count == 1


# --- API ------------------------------------------------------------------------------------


def test_api_lists_each_key_for_staff(redis_only, db):
    backend = get_broker()
    assert acquire_slot(Slot(backend, "exports", "run-1", limit=3, expires=60))
    SemaphoreWaiter.objects.create(
        key="exports",
        task_id="run-9",
        task_name="t",
        queue="celery",
        blocked_since=timezone.now(),
        retry_at=timezone.now() + timedelta(seconds=5),
    )
    staff = APIClient()
    staff.force_authenticate(make_user("staff", staff=True))

    answer = staff.get(SEMAPHORES)

    assert answer.status_code == 200
    assert (answer.data["backend"], answer.data["store"]) == ("default", "redis")
    (exports,) = answer.data["semaphores"]
    assert (exports["key"], exports["limit"], exports["available_slots"], exports["blocked_waiters"]) == (
        "exports",
        3,
        2,
        1,
    )
    assert exports["expires_at"] is not None


def test_api_refuses_anonymous_and_non_staff_and_names_a_bad_backend(db):
    assert APIClient().get(SEMAPHORES).status_code in (401, 403)
    user = APIClient()
    user.force_authenticate(make_user("plain"))
    assert user.get(SEMAPHORES).status_code == 403

    staff = APIClient()
    staff.force_authenticate(make_user("staff", staff=True))
    answer = staff.get(SEMAPHORES, {"backend": "nope"})
    assert answer.status_code == 400
    assert "backend" in answer.data


def test_api_answers_503_without_the_password_when_redis_is_down(db, settings):
    settings.CELERY_BROKER_URL = f"redis://:s3cret-pw@127.0.0.1:{free_port()}/0"
    staff = APIClient()
    staff.force_authenticate(make_user("staff", staff=True))

    answer = staff.get(SEMAPHORES)

    assert answer.status_code == 503
    assert "s3cret-pw" not in answer.content.decode()
    assert "unreachable" in answer.data["detail"]
