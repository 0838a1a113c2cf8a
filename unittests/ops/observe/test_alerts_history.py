"""Alert rules on recorded series, the history API and the snapshot task with its pruning."""

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from dojo.models import CeleryStatusSnapshot
from dojo.ops.fleet.alerts import compute_alerts, recent_history
from dojo.ops.fleet.status import CeleryStatus, QueueState


def status(workers: int = 2, ready: int = 10, active: int = 0, concurrency: int = 4) -> CeleryStatus:
    replies = {
        f"w{i}@host": {
            "stats": {"pool": {"max-concurrency": concurrency}},
            "active": [{"id": str(n)} for n in range(active)],
        }
        for i in range(workers)
    }
    return CeleryStatus(
        broker_status=True,
        queue="celery",
        queues={"celery": QueueState(ready=ready, consumers=workers)},
        worker_replies=replies,
    )


def record(minutes_ago: float, ready: int | None, workers: int = 2) -> None:
    row = CeleryStatusSnapshot.objects.create(
        broker_status=True,
        workers=workers,
        active_tasks=0,
        reserved_tasks=0,
        scheduled_tasks=0,
        queue_lengths={"celery": ready},
    )
    CeleryStatusSnapshot.objects.filter(pk=row.pk).update(created_at=timezone.now() - timedelta(minutes=minutes_ago))


def codes(alerts) -> list[str]:
    return [alert.code for alert in alerts]


@pytest.mark.django_db
def test_a_healthy_cluster_has_no_alerts():
    assert compute_alerts(status(), recent_history()) == []


def test_broker_unreachable_is_the_only_alert():
    down = CeleryStatus(broker_status=False, queue="celery", error="ConnectionError: refused")
    (alert,) = compute_alerts(down, [])
    assert (alert.code, alert.severity) == ("broker_unreachable", "critical")
    assert "refused" in alert.message


def test_worker_counts(settings):
    settings.CELERY_MIN_WORKERS = 3
    assert codes(compute_alerts(status(workers=0), [])) == ["no_workers"]
    assert codes(compute_alerts(status(workers=2), [])) == ["too_few_workers"]
    assert codes(compute_alerts(status(workers=3), [])) == []


def test_queue_too_long(settings):
    settings.CELERY_QUEUE_ALERT_LENGTH = 100
    assert codes(compute_alerts(status(ready=100), [])) == []
    assert codes(compute_alerts(status(ready=101), [])) == ["queue_too_long"]
    settings.CELERY_QUEUE_ALERT_LENGTH = 0
    assert codes(compute_alerts(status(ready=10**6), [])) == []


def test_saturated_workers():
    alerts = compute_alerts(status(workers=2, active=4, concurrency=4), [])
    assert codes(alerts) == ["worker_saturated", "worker_saturated"]
    assert codes(compute_alerts(status(active=3, concurrency=4), [])) == []


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("series", "now", "growing"),
    [
        ([10, 20, 30, 40, 50], 60, True),  # steady growth over ten minutes
        ([10, 20, 30, 30, 50], 60, True),  # a flat step is still steady
        ([10, 20, 15, 40, 50], 60, False),  # it shrank once
        ([10, 10, 10, 10, 10], 10, False),  # flat
        ([50, 40, 30, 20, 10], 0, False),  # draining
        ([10, None, 30, 40, 50], 60, False),  # a gap (broker down) proves nothing
    ],
)
def test_queue_growing_over_the_last_ten_minutes(series, now, growing):
    for minutes_ago, ready in zip([9.5, 7.5, 5.5, 3.5, 1.5], series, strict=True):
        record(minutes_ago, ready)
    record(30, 0)  # outside the window: ignored
    assert ("queue_growing" in codes(compute_alerts(status(ready=now), recent_history()))) is growing


@pytest.mark.django_db
def test_growth_needs_enough_history():
    for minutes_ago, ready in [(3, 10), (2, 20), (1, 30)]:
        record(minutes_ago, ready)
    assert codes(compute_alerts(status(ready=40), recent_history())) == []


@pytest.mark.django_db
def test_history_api(api):
    record(90, 5)
    record(30, 7, workers=3)
    record(5, 9, workers=1)
    url = reverse("celery_history")

    last_hour = api.get(url).json()["points"]
    assert [(p["workers"], p["queue_lengths"]) for p in last_hour] == [(3, {"celery": 7}), (1, {"celery": 9})]
    since = (timezone.now() - timedelta(hours=2)).isoformat()
    assert len(api.get(url, {"since": since}).json()["points"]) == 3
    bad = api.get(url, {"since": "yesterday-ish"})
    assert bad.status_code == 400 and "since" in bad.json()


@pytest.mark.django_db
def test_snapshot_task_records_and_prunes(filesystem_only, settings):
    from dojo.worker.tasks import record_celery_snapshot

    settings.CELERY_HISTORY_DAYS = 7
    record(60 * 24 * 8, 1)  # older than the kept days
    record(60 * 24 * 6, 2)
    record_celery_snapshot()
    rows = list(CeleryStatusSnapshot.objects.order_by("created_at"))
    assert len(rows) == 2
    assert rows[0].queue_lengths == {"celery": 2}
    latest = rows[-1]
    assert latest.broker_status is True and latest.workers == 0 and latest.queue_lengths == {"celery": 0}
