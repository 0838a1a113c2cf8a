"""Slots are short leases (dojo.ops.limits.semaphores): on both stores (the broker's Redis, the
database) a renewed lease outlives its length and one that is not renewed frees its slot, a
renewal never takes a slot it lost, the listing shows the lease's end, and a run's slot can be
released knowing only the run's id (what the worker's main process knows of a terminated run).

Each test fails on the code before leases: it had no `renew_slot` nor `release_run`."""

import time
from datetime import timedelta

import pytest
from django.utils import timezone

from dojo.models import SemaphoreWaiter
from dojo.ops.brokers.registry import Broker, get_broker
from dojo.ops.limits.semaphores import Slot, acquire_slot, list_semaphores, release_run, release_slot, renew_slot
from unittests.conftest import wait_for


@pytest.fixture(params=["redis", "database"])
def store_backend(request, redis_only, transactional_db) -> Broker:
    """A backend whose slots live on Redis, or one (a broker without a server-side store) in the database."""
    if request.param == "redis":
        return get_broker()
    return Broker("default", "filesystem://", {})


def state_of(key: str, backend: Broker):
    return next((state for state in list_semaphores(backend) if state.key == key), None)


def test_a_renewed_lease_keeps_its_slot_and_one_not_renewed_frees_it(store_backend):
    held = Slot(store_backend, "lease", "the-live-run", limit=1, expires=1.0)
    other = Slot(store_backend, "lease", "the-next-run", limit=1, expires=30)
    assert acquire_slot(held)

    first_end = state_of("lease", store_backend).expires_at
    assert 0 < (first_end - timezone.now()).total_seconds() <= 1.0  # the listing shows the lease's end
    renewed_until = time.monotonic() + 2.5  # more than twice the lease
    while time.monotonic() < renewed_until:
        time.sleep(0.3)
        assert renew_slot(held)
        assert not acquire_slot(other)
    assert state_of("lease", store_backend).expires_at > first_end + timedelta(seconds=1.5)

    # No more renewals (its process died): the slot frees within one lease.
    stopped = time.monotonic()
    wait_for(lambda: acquire_slot(other), 5, "the next run to take the slot")
    assert time.monotonic() - stopped <= 1.0 + 0.5
    assert not renew_slot(held)  # it lost its slot: a renewal does not take it back
    assert not acquire_slot(held)
    assert state_of("lease", store_backend).available_slots == 0


def test_a_released_slot_is_not_renewed(store_backend):
    slot = Slot(store_backend, "released", "run-1", limit=2, expires=30)
    assert acquire_slot(slot)
    release_slot(slot)
    assert not renew_slot(slot)
    assert state_of("released", store_backend).available_slots == 2


def test_release_run_frees_a_slot_and_forgets_a_waiter_by_the_run_id_alone(store_backend):
    assert acquire_slot(Slot(store_backend, "by-id", "terminated-run", limit=1, expires=30))
    assert acquire_slot(Slot(store_backend, "by-id:other", "another-run", limit=1, expires=30))
    SemaphoreWaiter.objects.create(
        key="by-id",
        task_id="revoked-waiter",
        task_name="dojo.tasks.limited_sleep",
        queue="celery",
        blocked_since=timezone.now(),
        retry_at=timezone.now(),
    )
    assert state_of("by-id", store_backend).blocked_waiters == 1

    release_run(store_backend, "terminated-run")
    release_run(store_backend, "revoked-waiter")
    release_run(store_backend, "never-held-anything")

    assert state_of("by-id", store_backend).available_slots == 1
    assert state_of("by-id", store_backend).blocked_waiters == 0
    assert state_of("by-id:other", store_backend).available_slots == 0  # another run's slot stays
    assert acquire_slot(Slot(store_backend, "by-id", "the-next-run", limit=1, expires=30))
