"""The status document stays bounded: each worker's task lists are capped at
DD_CELERY_STATUS_MAX_TASKS_PER_WORKER with exact counts and how many were left out, and the
summary kept beside it in the cache gives readiness, /metrics and the queues table the same counts.
A real Redis and a real worker (concurrency 2, Celery's prefetch of 4 per process: 2 running, 6 prefetched)."""

import pickle
import time

import pytest
from django.core.cache import cache
from django.urls import reverse

from dojo.ops.brokers.registry import get_broker
from dojo.ops.fleet.status import CeleryStatus, StatusSummary
from dojo.ops.fleet.status_cache import _cache_key, _summary_key, get_status, get_summary
from dojo.ops.observe.metrics import exposition, status_metrics
from dojo.ops.observe.readiness import readiness
from dojo.ops.read_models.queue_table import queue_table


def _wait_for(predicate, timeout: float = 30) -> CeleryStatus:
    deadline = time.monotonic() + timeout
    while True:
        status = get_status(refresh=True)
        if predicate(status) or time.monotonic() > deadline:
            return status
        time.sleep(0.3)


@pytest.mark.django_db
def test_capped_lists_exact_counts_and_summary(redis_only, settings, api):
    settings.CELERY_STATUS_MAX_TASKS_PER_WORKER = 2
    settings.CELERY_STATUS_CACHE_SECONDS = 30
    worker = redis_only.start_worker("capped")
    client = redis_only.client()
    running = [client.send_task("dojo.tasks.sleep", args=(60,), kwargs={}) for _ in range(2)]
    waiting = [client.send_task("dojo.tasks.add", args=(i, 1)) for i in range(6)]
    try:
        status = _wait_for(lambda s: s.active_tasks == 2 and s.reserved_tasks == 6)
        assert (status.active_tasks, status.reserved_tasks) == (2, 6)
        reply = status.worker_replies[worker]
        assert len(reply["reserved"]) == 2 and reply["counts"]["reserved"] == 6
        assert reply["left_out"] == {"reserved": 4}  # the active list (2) is at the cap, not over it
        assert status.tasks_left_out["reserved"] == {worker: 4}
        assert {task["id"] for task in reply["reserved"]} <= {r.id for r in waiting}
        # The queues table counts every held task of the queue, not only the listed ones.
        assert status.queue_loads()["celery"].claimed_count == 8

        summary = cache.get(_summary_key(_cache_key(get_broker())))
        assert isinstance(summary, StatusSummary) and summary.read_at == status.read_at
        assert len(pickle.dumps(summary)) < len(pickle.dumps(status))
        assert get_summary() == summary
        assert (summary.workers, summary.active_tasks, summary.reserved_tasks) == (1, 2, 6)
        assert summary.counts[worker].concurrency == 2
        assert summary.loads["celery"].claimed_count == 8 and summary.loads["celery"].consumers == 1

        assert readiness(summary) == readiness(status)
        metrics = exposition().decode()
        assert "dojo_celery_reserved_tasks 6.0" in metrics and "dojo_celery_active_tasks 2.0" in metrics
        assert f'dojo_celery_worker_active_tasks{{worker="{worker}"}} 2.0' in metrics
        row = next(row for row in queue_table(status=status).rows if row.name == "celery")
        assert row.claimed_count == 8 and row.live_worker_count == 1

        body = api.get(reverse("celery_status")).json()  # the cached document, as the API gives it
        assert body["reserved_tasks"] == 6 and len(body["queue_details"]["reserved"][worker]) == 2
        assert body["tasks_left_out"] == {"active": {}, "reserved": {worker: 4}, "scheduled": {}}
    finally:
        for result in running + waiting:
            result.revoke(terminate=True)

        for result in running + waiting:
            result.revoke(terminate=True)


@pytest.mark.django_db
def test_readers_use_the_summary_not_the_document(redis_only, settings, monkeypatch):
    """The status families of /metrics and readiness read the small summary when it is cached:
    the whole document is never fetched (a spy on the cache records the keys asked)."""
    settings.CELERY_STATUS_CACHE_SECONDS = 30
    worker = redis_only.start_worker("summary")
    status = get_status(refresh=True)
    assert status.workers == 1
    key = _cache_key(get_broker())
    real_get = cache.get
    asked = []

    def get(name, *args, **kwargs):
        asked.append(name)
        return real_get(name, *args, **kwargs)

    monkeypatch.setattr(cache, "get", get)
    metrics = "".join(family.text() for family in status_metrics(get_summary()))
    assert f'dojo_celery_worker_up{{worker="{worker}"}} 1.0' in metrics
    assert readiness(get_summary()).ready
    assert key not in asked and _summary_key(key) in asked
