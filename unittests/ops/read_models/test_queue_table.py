"""The queues table and a queue's break down, against a real Redis, the embedded filesystem
broker, a RabbitMQ vhost and real `celery -A dojo worker` processes.

References are independent of the code under test: the broker's own consumption
(`basic_get`, which takes messages the way a worker does), the worker's own results in the
database, and clocks read by the test when it publishes.
"""

import json
import time
from datetime import UTC, datetime, timedelta

import pytest
import redis
from django.urls import reverse
from django.utils import timezone
from kombu import Connection

from dojo.models import QueuePause
from dojo.ops.brokers.registry import get_broker
from dojo.ops.brokers.transport import PeekUnsupported
from dojo.ops.fleet.status_cache import forget_status
from dojo.ops.read_models.breakdown import breakdown
from dojo.ops.read_models.queue_table import queue_table
from dojo.ops.redaction import MASK, args_preview
from unittests.conftest import LiveBroker, make_user, wait_for

QUEUES = reverse("celery_queues")
BREAKDOWN = reverse("celery_queue_breakdown")
SECRET_KWARG = "hunter2-kwarg-secret"
BROKER_PASSWORD = "brokerpw-7f3a9"


def publish(
    broker: LiveBroker, count: int, queue: str = "celery", task: str = "dojo.tasks.add", **options
) -> list[str]:
    """Publish `count` tasks as the project does (the publish stamp comes from dojo.publishing's
    signal handler); returns their ids in publish order. `priorities` cycles through values."""
    priorities = options.pop("priorities", (None,))
    args = options.pop("args", None)
    client = broker.client()
    ids = []
    with client.connection_for_write() as conn:
        for i in range(count):
            result = client.send_task(
                task,
                args=args if args is not None else (i, i),
                queue=queue,
                priority=priorities[i % len(priorities)],
                connection=conn,
                **options,
            )
            ids.append(result.id)
    client.close()
    return ids


def consume_ids(broker: LiveBroker, queue: str, count: int) -> list[str]:
    """Take `count` messages off `queue` the way a worker does; their task ids in that order."""
    taken = []
    with Connection(broker.url, transport_options=broker.transport_options) as conn:
        channel = conn.default_channel
        for _ in range(count):
            message = channel.basic_get(queue, no_ack=True)
            if message is None:
                break
            taken.append(message.headers["id"])
    return taken


def row_of(table, name: str):
    return next(row for row in [*table.rows, *table.shared_rows] if row.name == name)


# --- ready, latency ----------------------------------------------------------------------


@pytest.mark.django_db
def test_ready_counts_every_priority_list_of_every_queue(redis_only, settings):
    settings.CELERY_TASK_QUEUES = {"celery": {}, "reports": {}}
    publish(redis_only, 12, priorities=(0, 3, 6, 9))
    publish(redis_only, 5, queue="reports", priorities=(9, None))
    assert redis.Redis.from_url(redis_only.url).llen("celery") < 12  # the lists really are several

    table = queue_table()

    assert table.broker_error is None
    assert [row.name for row in table.rows] == ["celery", "reports"]
    assert row_of(table, "celery").ready_count == 12
    assert row_of(table, "reports").ready_count == 5
    assert row_of(table, "celery").sources == ("configuration",)


@pytest.mark.django_db
def test_latency_is_the_age_of_the_oldest_ready_message_within_a_second(redis_only):
    """Published 5 s ago for real, at a low priority; a newer message at the highest priority
    (the next one to be consumed) must not hide it."""
    published_at = time.time()
    publish(redis_only, 1, priorities=(6,))
    time.sleep(5)
    publish(redis_only, 1, priorities=(0,))

    table = queue_table()
    true_age = time.time() - published_at

    latency = row_of(table, "celery").latency_seconds
    assert latency is not None
    assert abs(latency - true_age) < 1.0, (latency, true_age)


@pytest.mark.django_db
def test_latency_is_unknown_for_an_empty_queue_and_an_unstamped_message(redis_only, settings):
    settings.CELERY_TASK_QUEUES = {"celery": {}, "raw": {}}
    with Connection(redis_only.url) as conn:
        conn.SimpleQueue("raw").put({"not": "a celery task"})  # no publish stamp

    table = queue_table()

    assert row_of(table, "celery").ready_count == 0
    assert row_of(table, "celery").latency_seconds is None
    assert row_of(table, "raw").ready_count == 1
    assert row_of(table, "raw").latency_seconds is None


# --- workers: claimed, scheduled, live -----------------------------------------------------


@pytest.mark.django_db
def test_claimed_and_scheduled_come_from_the_live_workers(redis_only, settings):
    settings.CELERY_TASK_QUEUES = {"celery": {}, "reports": {}}
    redis_only.start_worker("held", queues="celery", DD_CELERY_QUEUES="celery,reports")
    publish(redis_only, 3, task="dojo.tasks.sleep", args=(12,))  # 2 run (-c 2), 1 waits prefetched
    eta_first = datetime.now(UTC) + timedelta(seconds=600)
    publish(redis_only, 1, eta=eta_first)
    publish(redis_only, 1, eta=eta_first + timedelta(seconds=300))
    publish(redis_only, 4, queue="reports")  # nobody consumes it

    def settled() -> bool:
        forget_status()
        row = row_of(queue_table(), "celery")
        return row.claimed_count == 3 and row.scheduled_count == 2

    wait_for(settled, 10, "the worker to hold 3 claimed and 2 scheduled tasks")
    table = queue_table()
    celery, reports = row_of(table, "celery"), row_of(table, "reports")

    assert celery.ready_count == 0
    assert celery.live_worker_count == 1
    assert celery.sources == ("configuration", "worker")
    assert abs((celery.oldest_scheduled_at - eta_first).total_seconds()) < 1
    assert (reports.ready_count, reports.claimed_count, reports.live_worker_count) == (4, 0, 0)
    assert reports.latency_seconds is not None


# --- pauses, periodic entries, shared rows ----------------------------------------------


@pytest.mark.django_db
def test_pauses_and_periodic_entries(redis_only, settings):
    from django_celery_beat.models import IntervalSchedule, PeriodicTask

    settings.CELERY_TASK_QUEUES = {"celery": {}, "reports": {}}
    settings.CELERY_BEAT_SCHEDULE = {"static": {"task": "dojo.tasks.add", "schedule": 60, "options": {"queue": "beat"}}}
    QueuePause.objects.create(queue="reports", paused_by="ops")
    QueuePause.objects.create(queue="legacy", paused_by="ops")
    QueuePause.objects.create(backend="other", queue="elsewhere")  # another backend's pause
    every = IntervalSchedule.objects.create(every=5, period=IntervalSchedule.MINUTES)
    PeriodicTask.objects.create(name="nightly", task="dojo.tasks.add", interval=every, queue="nightly")
    publish(redis_only, 2, queue="legacy")

    table = queue_table()

    assert [row.name for row in table.rows] == ["celery", "reports"]
    assert row_of(table, "reports").paused is True
    assert row_of(table, "reports").sources == ("configuration", "pause")
    assert row_of(table, "celery").paused is False
    shared = {row.name: row for row in table.shared_rows}
    assert set(shared) == {"beat", "legacy", "nightly"}
    assert shared["legacy"].sources == ("pause",)
    assert shared["legacy"].paused is True
    assert shared["legacy"].ready_count == 2
    assert shared["nightly"].sources == ("periodic",)
    assert shared["beat"].sources == ("periodic",)


# --- blocked -------------------------------------------------------------------------------


@pytest.mark.django_db
def test_blocked_counts_come_from_the_semaphore_waiters(redis_only):
    from dojo.models import SemaphoreWaiter

    oldest = timezone.now() - timedelta(minutes=7)
    for i, since in enumerate([oldest, oldest + timedelta(minutes=2), oldest + timedelta(minutes=3)]):
        SemaphoreWaiter.objects.create(
            key="reports-export",
            task_id=f"t{i}",
            task_name="dojo.tasks.sleep",
            queue="celery",
            blocked_since=since,
            retry_at=timezone.now() + timedelta(seconds=30),
        )

    row = row_of(queue_table(), "celery")

    assert row.blocked_count == 3
    assert abs((row.oldest_blocked_at - oldest).total_seconds()) < 1


# --- failed / finished from the result backend ------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_failed_and_finished_in_the_last_day_from_stored_results(redis_only, shared_database, settings):
    from django_celery_results.models import TaskResult

    settings.CELERY_TASK_QUEUES = {"celery": {}, "reports": {}}
    redis_only.start_worker(
        "results",
        queues="celery,reports",
        DD_DATABASE_URL=shared_database,
        DD_CELERY_RESULT_BACKEND="django-db",
        DD_CELERY_QUEUES="celery,reports",
    )
    publish(redis_only, 3)  # add(i, i): SUCCESS
    publish(redis_only, 2, args=("a", 1))  # "a" + 1: FAILURE
    publish(redis_only, 1, queue="reports")
    wait_for(lambda: TaskResult.objects.filter(status__in=("SUCCESS", "FAILURE")).count() == 6, 30, "6 results")
    # A failure from two days ago is outside the window.
    old = TaskResult.objects.create(task_id="old", status="FAILURE", meta=json.dumps({"queue": "celery"}))
    TaskResult.objects.filter(pk=old.pk).update(date_done=timezone.now() - timedelta(days=2))

    table = queue_table()

    assert table.results_error is None
    assert (row_of(table, "celery").finished_count, row_of(table, "celery").failed_count) == (3, 2)
    assert (row_of(table, "reports").finished_count, row_of(table, "reports").failed_count) == (1, 0)


# --- broker down ---------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("which", ["port closed", "accepts, never answers"])
def test_broker_down_gives_rows_and_the_reason_within_the_bound(settings, silent_port, which):
    from unittests.conftest import free_port

    port = free_port() if which == "port closed" else silent_port
    settings.CELERY_BROKER_URL = f"redis://:{BROKER_PASSWORD}@127.0.0.1:{port}/0"
    settings.CELERY_BROKER_TIMEOUT = 1.0
    QueuePause.objects.create(queue="celery")

    started = time.monotonic()
    table = queue_table()
    elapsed = time.monotonic() - started

    assert elapsed < settings.CELERY_BROKER_TIMEOUT + 1.5, elapsed
    assert table.broker_error
    assert BROKER_PASSWORD not in table.broker_error
    celery = row_of(table, "celery")
    assert celery.ready_count is None
    assert celery.latency_seconds is None
    assert celery.paused is True


# --- break down ----------------------------------------------------------------------------


@pytest.mark.django_db
def test_breakdown_counts_by_name_and_lists_the_first_100_in_consumption_order(redis_only):
    publish(redis_only, 40, task="dojo.tasks.sleep", args=(0,), priorities=(0, 6))
    publish(redis_only, 90, priorities=(None, 9))
    publish(redis_only, 5, queue="other")

    found = breakdown("celery")

    assert found.total == 130
    assert found.by_task == {"dojo.tasks.add": 90, "dojo.tasks.sleep": 40}
    assert len(found.messages) == 100
    assert [m.id for m in found.messages] == consume_ids(redis_only, "celery", 100)
    first = found.messages[0]
    assert first.task == "dojo.tasks.sleep" and first.priority == 0 and first.args_preview == "(0,)"
    assert 0 <= first.age_seconds < 60


@pytest.mark.django_db
def test_breakdown_stops_at_its_time_budget_and_says_so(redis_only, settings, api):
    publish(redis_only, 5, queue="adhoc")  # a queue nothing names: a cut-short scan is not a 404

    whole = breakdown("adhoc")
    cut = breakdown("adhoc", seconds=0)
    settings.CELERY_BREAKDOWN_SECONDS = 0
    answer = api.get(BREAKDOWN, {"queue": "adhoc"})

    assert (whole.complete, whole.total) == (True, 5)
    assert (cut.complete, cut.total, cut.by_task) == (False, 0, {})
    assert answer.status_code == 200 and answer.json()["complete"] is False


@pytest.mark.django_db
def test_breakdown_previews_never_show_a_secret(redis_only, settings):
    settings.CELERY_BACKENDS = {"rabbit": {"broker_url": f"amqp://guest:{BROKER_PASSWORD}@127.0.0.1:1//"}}
    publish(redis_only, 1, args=("plain", BROKER_PASSWORD), kwargs={"password": SECRET_KWARG, "n": 7})
    publish(redis_only, 1, args=(), kwargs={"auth": {"api_token": SECRET_KWARG}, "note": "x" * 300})
    # A repr Celery cut short (saferepr) does not parse: the pattern still masks it.
    publish(redis_only, 1, args=(), kwargs={}, kwargsrepr="{'user': 'bob', 'secret_key': '" + SECRET_KWARG[:9])

    previews = [m.args_preview for m in breakdown("celery").messages]

    assert len(previews) == 3
    for preview in previews:
        assert SECRET_KWARG[:9] not in preview
        assert BROKER_PASSWORD not in preview
        assert len(preview) <= 100
    assert previews[0] == f"('plain', '{MASK}') {{'password': '{MASK}', 'n': 7}}"
    assert previews[1].startswith(f"{{'auth': '{MASK}', 'note': 'xxx")
    assert "'user': 'bob'" in previews[2]


def test_args_preview_masks_keyword_reprs_that_are_not_literals():
    kwargsrepr = "{'ok': 1, 'api_key': 998877, 'n': 2, 'password': <Secret 'abc'>, 'x': 3}"
    preview = args_preview("(<object at 0x1>,)", kwargsrepr)
    assert "998877" not in preview and "abc" not in preview
    assert preview.startswith(f"(<object at 0x1>,) {{'ok': 1, 'api_key': '{MASK}', 'n': 2, 'password': '{MASK}'")


@pytest.mark.django_db
def test_filesystem_broker_latency_and_breakdown(filesystem_only):
    published_at = time.time()
    old_ids = publish(filesystem_only, 3)
    time.sleep(2.5)
    publish(filesystem_only, 2, task="dojo.tasks.sleep", args=(0,), kwargs={"token": SECRET_KWARG})

    table = queue_table()
    true_age = time.time() - published_at
    found = breakdown("celery", first=4)

    celery = row_of(table, "celery")
    assert celery.ready_count == 5
    assert abs(celery.latency_seconds - true_age) < 1.0
    assert found.total == 5 and found.complete
    assert found.by_task == {"dojo.tasks.add": 3, "dojo.tasks.sleep": 2}
    assert (breakdown("celery", seconds=0).complete, breakdown("celery", seconds=0).total) == (False, 0)
    assert {m.id for m in found.messages[:3]} == set(old_ids)  # same millisecond: kombu orders by uuid
    assert SECRET_KWARG not in found.messages[3].args_preview
    assert [m.id for m in found.messages] == consume_ids(filesystem_only, "celery", 4)


@pytest.mark.django_db
def test_rabbitmq_breakdown_is_refused_and_latency_unknown(rabbitmq_broker, settings, api):
    settings.CELERY_BROKER_TIMEOUT = 1.0
    client = rabbitmq_broker.client()
    with Connection(rabbitmq_broker.url, transport_options={"confirm_publish": True}) as conn:
        for i in range(3):
            client.send_task("dojo.tasks.add", args=(i, i), queue="celery", connection=conn)
    client.close()

    celery = row_of(queue_table(), "celery")
    response = api.get(BREAKDOWN, {"queue": "celery"})

    assert celery.ready_count == 3
    assert celery.latency_seconds is None
    assert response.status_code == 400
    assert "cannot show" in response.json()["detail"]
    with pytest.raises(PeekUnsupported):
        breakdown("celery", get_broker())


# --- API -----------------------------------------------------------------------------------


@pytest.mark.django_db
def test_api_serves_staff_and_refuses_others(redis_only, client):
    publish(redis_only, 2, kwargs={"password": SECRET_KWARG}, args=())
    staff, plain = make_user("staff", staff=True), make_user("plain")

    assert client.get(QUEUES).status_code in (401, 403)
    assert client.get(BREAKDOWN, {"queue": "celery"}).status_code in (401, 403)
    client.force_login(plain)
    assert client.get(QUEUES).status_code == 403
    assert client.get(BREAKDOWN, {"queue": "celery"}).status_code == 403
    client.force_login(staff)
    table = client.get(QUEUES)
    down = client.get(BREAKDOWN, {"queue": "celery", "backend": "default"})

    assert table.status_code == 200
    body = table.json()
    assert body["backend"] == "default"
    assert body["rows"][0]["name"] == "celery" and body["rows"][0]["ready_count"] == 2
    assert body["rows"][0]["latency_seconds"] >= 0
    assert down.status_code == 200
    assert down.json()["by_task"] == {"dojo.tasks.add": 2}
    assert SECRET_KWARG not in down.content.decode()


@pytest.mark.django_db
def test_api_bad_input_is_a_400_naming_the_field(redis_only, api):
    missing = api.get(BREAKDOWN)
    unknown_table = api.get(QUEUES, {"backend": "nope"})
    unknown_breakdown = api.get(BREAKDOWN, {"queue": "celery", "backend": "nope"})
    too_many = api.get(BREAKDOWN, {"queue": "celery", "first": "100000"})

    assert missing.status_code == 400 and "queue" in missing.json()
    assert unknown_table.status_code == 400 and "backend" in unknown_table.json()
    assert unknown_breakdown.status_code == 400 and "backend" in unknown_breakdown.json()
    assert too_many.status_code == 400 and "first" in too_many.json()


@pytest.mark.django_db
def test_api_breakdown_of_an_empty_queue_nothing_names_is_a_404(redis_only, api):
    empty_known = api.get(BREAKDOWN, {"queue": "celery"})
    mistyped = api.get(BREAKDOWN, {"queue": "celry"})
    publish(redis_only, 1, queue="adhoc")  # a queue only a producer knows, holding a message
    unnamed_with_message = api.get(BREAKDOWN, {"queue": "adhoc"})

    assert empty_known.status_code == 200 and empty_known.json()["total"] == 0
    assert mistyped.status_code == 404 and "celry" in mistyped.json()["detail"]
    assert unnamed_with_message.status_code == 200 and unnamed_with_message.json()["total"] == 1


@pytest.mark.django_db
def test_api_breakdown_is_503_when_the_broker_is_down(api, settings):
    from unittests.conftest import free_port

    settings.CELERY_BROKER_URL = f"redis://:{BROKER_PASSWORD}@127.0.0.1:{free_port()}/0"
    settings.CELERY_BROKER_TIMEOUT = 1.0

    response = api.get(BREAKDOWN, {"queue": "celery"})

    assert response.status_code == 503
    assert BROKER_PASSWORD not in response.content.decode()
