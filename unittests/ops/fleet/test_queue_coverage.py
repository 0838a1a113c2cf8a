"""Status, alerts and /metrics cover every queue the dashboard knows, not only DD_CELERY_QUEUES:
a queue only a worker consumes (a real worker started with `-Q special`) and a paused queue
(a QueuePause row). Real Redis, real worker, real messages."""

from datetime import timedelta

import pytest
from django.utils import timezone

from dojo.models import CeleryStatusSnapshot, QueuePause
from dojo.ops.fleet.alerts import GROWTH_MIN_POINTS
from dojo.ops.fleet.status_cache import get_status
from dojo.ops.observe.metrics import exposition
from unittests.conftest import wait_for

HELD = 20  # sleeping tasks published to `special`: 2 run, 6 are prefetched, the rest wait


@pytest.fixture
def special_worker(redis_only, settings):
    settings.CELERY_TASK_QUEUES = {"celery": {}}
    settings.CELERY_QUEUE_ALERT_LENGTH = 5
    worker = redis_only.start_worker("special", queues="special")
    client = redis_only.client()
    sent = [client.send_task("dojo.tasks.sleep", args=(60,), kwargs={}, queue="special") for _ in range(HELD)]
    yield worker
    for result in sent:
        result.revoke(terminate=True)


@pytest.mark.django_db
def test_a_queue_only_a_worker_consumes(special_worker, settings):
    settings.CELERY_STATUS_CACHE_SECONDS = 0
    wait_for(lambda: get_status().active_tasks == 2, 30, "two running tasks")
    # History: `special` grew steadily over the last ten minutes.
    now = timezone.now()
    for step in range(GROWTH_MIN_POINTS):
        row = CeleryStatusSnapshot.objects.create(
            backend="default",
            broker_status=True,
            workers=1,
            active_tasks=0,
            reserved_tasks=0,
            scheduled_tasks=0,
            queue_lengths={"special": step},
        )
        CeleryStatusSnapshot.objects.filter(pk=row.pk).update(created_at=now - timedelta(minutes=9 - 2 * step))

    status = get_status()
    assert "special" in status.queues and status.queues["special"].ready > 5
    assert status.queues["special"].consumers == 1
    codes = {(alert.code, alert.message.split("'")[1]) for alert in status.alerts if "'" in alert.message}
    assert ("queue_too_long", "special") in codes and ("queue_growing", "special") in codes

    metrics = exposition().decode()
    ready = status.queues["special"].ready
    assert f'dojo_celery_queue_ready_messages{{queue="special"}} {float(ready)}' in metrics
    assert 'dojo_celery_queue_consumers{queue="special"} 1.0' in metrics


@pytest.mark.django_db
def test_a_paused_queue_is_read(redis_only, settings):
    settings.CELERY_TASK_QUEUES = {"celery": {}}
    settings.CELERY_STATUS_CACHE_SECONDS = 0
    redis_only.start_worker("plain-celery")
    client = redis_only.client()
    for i in range(3):
        client.send_task("dojo.tasks.add", args=(i, i), queue="held")
    QueuePause.objects.create(backend="default", queue="held")
    status = get_status()
    assert status.queues["held"].ready == 3 and status.queues["held"].consumers == 0
    assert 'dojo_celery_queue_ready_messages{queue="held"} 3.0' in exposition().decode()
    QueuePause.objects.all().delete()
    assert "held" not in get_status().queues  # no longer known: neither configured, paused nor consumed
