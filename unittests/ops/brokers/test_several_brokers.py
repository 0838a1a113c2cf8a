"""Several Celery backends (DD_CELERY_BACKENDS): the main Redis and a RabbitMQ vhost, each with a
real worker; every endpoint reads or acts on the backend it is asked for, the main one by default."""

import json
import time

import pytest
from django.urls import reverse

from dojo.ops.brokers.amqp import AmqpTransport
from dojo.ops.brokers.registry import DEFAULT_ALIAS, broker_alias_of, configured_brokers, get_broker
from unittests.conftest import LiveBroker, wait_for
from unittests.ops.brokers.test_rabbitmq import SECRET, publish, rabbit_queues

STATUS = reverse("celery_status")
PURGE = reverse("celery_queue_purge")


@pytest.fixture
def two_backends(rabbitmq_broker: LiveBroker, redis_only: LiveBroker, settings) -> tuple[LiveBroker, LiveBroker]:
    """Main backend: the private Redis (redis_only comes last, so it is the main broker); "rabbit": the vhost."""
    settings.CELERY_BROKER_TIMEOUT = 1.0
    settings.CELERY_BACKENDS = {"rabbit": {"broker_url": rabbitmq_broker.url}}
    return redis_only, rabbitmq_broker


def test_backends_come_from_the_setting_main_first(settings) -> None:
    settings.CELERY_BACKENDS = {"rabbit": {"broker_url": "amqp://guest:guest@127.0.0.1:5672//"}}
    assert list(configured_brokers()) == [DEFAULT_ALIAS, "rabbit"]
    assert get_broker(None).alias == get_broker("").alias == DEFAULT_ALIAS
    assert isinstance(get_broker("rabbit").transport, AmqpTransport)
    assert broker_alias_of("amqp://guest:guest@127.0.0.1:5672//") == "rabbit"
    assert broker_alias_of("redis://elsewhere:6379/0") == DEFAULT_ALIAS


def test_the_environment_variable_takes_urls_or_objects(tmp_path) -> None:
    """DD_CELERY_BACKENDS as the settings module reads it, in a fresh interpreter."""
    import subprocess
    import sys

    spec = {"rabbit": "amqp://guest:guest@h:5672//", "other": {"broker_url": "redis://h:6379/2"}}
    code = "from django.conf import settings; import json; print(json.dumps(settings.CELERY_BACKENDS))"
    done = subprocess.run(
        [sys.executable, "-c", f"import django; django.setup(); {code}"],
        env={
            **LiveBroker(kind="none", url="memory://").env(),
            "DJANGO_SETTINGS_MODULE": "dojo.settings.settings",
            "DD_CELERY_BACKENDS": json.dumps(spec),
        },
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {
        "rabbit": {"broker_url": "amqp://guest:guest@h:5672//"},
        "other": {"broker_url": "redis://h:6379/2"},
    }


@pytest.mark.django_db
def test_status_and_purge_go_to_the_backend_asked_for(two_backends, api) -> None:
    redis_broker, rabbit = two_backends
    main_worker = redis_broker.start_worker("main1")
    rabbit_worker = rabbit.start_worker("rabbit1", queues="reports", DD_CELERY_QUEUES="celery,reports")
    publish(rabbit, 3, queue="celery")

    main = api.get(STATUS, {"refresh": "1"}).json()
    assert main["backend"] == DEFAULT_ALIAS
    assert main["worker_names"] == [main_worker]
    assert main["broker_url"].startswith("redis://")

    other = api.get(STATUS, {"refresh": "1", "backend": "rabbit"}).json()
    assert other["backend"] == "rabbit"
    assert other["worker_names"] == [rabbit_worker]
    assert other["queues"]["celery"]["ready"] == 3
    assert SECRET not in json.dumps(other) and "guest:****@" in other["broker_url"]

    purged = api.post(PURGE, {"queue": "celery", "backend": "rabbit"}, format="json")
    assert purged.status_code == 200, purged.content
    assert purged.json() == {"queue": "celery", "purged": 3, "backend": "rabbit"}
    assert rabbit_queues(rabbit)["celery"]["messages_ready"] == 0


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("method", "name", "data"),
    [
        ("get", "celery_status", {}),
        ("get", "celery_tasks", {}),
        ("get", "celery_history", {}),
        ("get", "celery_health_ready", {}),
        ("post", "celery_queue_purge", {}),
    ],
)
def test_an_unknown_backend_is_a_400_naming_the_field(api, method, name, data) -> None:
    response = getattr(api, method)(
        reverse(name), {**data, "backend": "nope"}, **({"format": "json"} if method == "post" else {})
    )
    assert response.status_code == 400, response.content
    assert "Unknown Celery backend 'nope'" in response.json()["backend"][0]


@pytest.mark.django_db
def test_metrics_take_the_backend_too(api) -> None:
    assert api.get(reverse("metrics"), {"backend": "nope"}).status_code == 400
    assert api.get(reverse("metrics")).status_code == 200


@pytest.mark.django_db(transaction=True)
def test_a_pause_on_the_second_backend_holds_there_only(two_backends, api, shared_database, settings) -> None:
    """The RabbitMQ worker runs as a worker of "rabbit" (its own broker URL plus the same
    DD_CELERY_BACKENDS): it writes its heartbeat and honours pauses under that alias, across a
    restart, while the main backend's worker goes on consuming the queue of the same name."""
    from dojo.models import CeleryProcess
    from unittests.ops.controls.test_controls_rabbitmq import consumers_in_rabbitmq, ready_in_rabbitmq

    redis_broker, rabbit = two_backends
    settings.CELERY_QUEUE_NAMES = ["celery", "reports"]
    settings.CELERY_TASK_QUEUES = {name: {"exchange": name, "routing_key": name} for name in ("celery", "reports")}
    worker_env = {
        "DD_DATABASE_URL": shared_database,
        "DD_CELERY_QUEUES": "celery,reports",
        "DD_CELERY_BACKENDS": json.dumps({"rabbit": rabbit.url}),
    }
    main_worker = redis_broker.start_worker("main2", queues="celery,reports", **worker_env)
    rabbit_worker = rabbit.start_worker("rabbit2", queues="celery,reports", **worker_env)
    wait_for(
        lambda: (
            CeleryProcess.objects.filter(backend="rabbit", name=rabbit_worker).exists()
            and CeleryProcess.objects.filter(backend=DEFAULT_ALIAS, name=main_worker).exists()
        ),
        20,
        "both workers' heartbeats under their own backend",
    )

    paused = api.post(reverse("celery_queue_pause"), {"queue": "reports", "backend": "rabbit"}, format="json")
    assert paused.status_code == 200, paused.content
    assert paused.json()["workers"] == [rabbit_worker]
    wait_for(lambda: consumers_in_rabbitmq(rabbit, "reports") == 0, 10, "RabbitMQ to drop the consumer")

    rabbit.stop_workers()
    rabbit.start_worker("rabbit2", queues="celery,reports", **worker_env)
    publish(rabbit, 2, queue="reports")
    time.sleep(1)
    assert consumers_in_rabbitmq(rabbit, "celery") == 1
    assert (consumers_in_rabbitmq(rabbit, "reports"), ready_in_rabbitmq(rabbit, "reports")) == (0, 2)

    client = redis_broker.client()
    assert client.send_task("dojo.tasks.add", args=(2, 3), queue="reports").get(timeout=30) == 5
    client.close()


@pytest.mark.django_db(transaction=True)
def test_failed_and_finished_count_the_results_of_each_backend_apart(two_backends, shared_database, settings) -> None:
    """Both workers store results in the same django-db table; each result counts for the backend
    whose worker ran it, in the queues table (24 h) and the dashboard's cards (1 h)."""
    from django_celery_results.models import TaskResult

    from dojo.ops.read_models.queue_table import queue_table
    from dojo.ops.read_models.stored_results import recent_activity

    redis_broker, rabbit = two_backends
    settings.CELERY_RESULT_BACKEND = "django-db"
    worker_env = {
        "DD_DATABASE_URL": shared_database,
        "DD_CELERY_RESULT_BACKEND": "django-db",
        "DD_CELERY_BACKENDS": json.dumps({"rabbit": rabbit.url}),
    }
    redis_broker.start_worker("main3", **worker_env)
    rabbit.start_worker("rabbit3", **worker_env)
    for broker, calls in ((redis_broker, [(1, 2), (3, 4)]), (rabbit, [(5, 6), ("x", 1)])):  # "x" + 1 fails
        client = broker.client()
        for args in calls:
            client.send_task("dojo.tasks.add", args=args, queue="celery")
        client.close()
    wait_for(lambda: TaskResult.objects.filter(status__in=("SUCCESS", "FAILURE")).count() == 4, 30, "four results")

    def counts(alias: str) -> tuple[int, int]:
        (row,) = [row for row in queue_table(get_broker(alias)).rows if row.name == "celery"]
        return row.finished_count, row.failed_count

    assert counts(DEFAULT_ALIAS) == (2, 0)
    assert counts("rabbit") == (1, 1)
    assert recent_activity(DEFAULT_ALIAS) == {"SUCCESS": 2}
    assert recent_activity("rabbit") == {"SUCCESS": 1, "FAILURE": 1}
    assert recent_activity() == {"SUCCESS": 3, "FAILURE": 1}
