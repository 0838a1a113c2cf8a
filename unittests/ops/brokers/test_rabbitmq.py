"""Status and purge through the API on RabbitMQ: a private vhost per test on the machine's
RabbitMQ and real `celery -A dojo worker` processes.

RabbitMQ's own view (`rabbitmqctl list_queues`) is the reference for queue depth, consumers
and which queues exist. AMQP lists no bindings, so the first read waits the whole broker time
bound for worker replies: the tests set it to 1 s.
"""

import json
import time
from urllib.parse import urlsplit

import pytest
from django.urls import reverse
from kombu import Connection, Exchange, Producer, Queue

from unittests.conftest import LiveBroker, free_port, rabbitmqctl

STATUS = reverse("celery_status")
PURGE = reverse("celery_queue_purge")
SECRET = "s3cret-rabbit-pw"
REPLY_QUEUE_SUFFIX = ".reply.celery.pidbox"  # the broadcast's reply queue, auto-deleted by RabbitMQ


@pytest.fixture
def rabbit(rabbitmq_broker: LiveBroker, settings) -> LiveBroker:
    settings.CELERY_BROKER_TIMEOUT = 1.0
    return rabbitmq_broker


def vhost(broker: LiveBroker) -> str:
    return urlsplit(broker.url).path.lstrip("/")


def rabbit_queues(broker: LiveBroker) -> dict[str, dict]:
    """The queues of the broker's vhost as RabbitMQ lists them, by name."""
    rows = json.loads(
        rabbitmqctl(
            "list_queues", "-s", "-p", vhost(broker), "--formatter", "json", "name", "messages_ready", "consumers"
        )
        or "[]"
    )
    return {row["name"]: row for row in rows}


def publish(broker: LiveBroker, count: int, queue: str = "celery", priorities=(None,)) -> None:
    """Publish `count` dojo.tasks.add messages as Celery does (declaring `queue`), with publisher
    confirms so that RabbitMQ holds every one of them before this returns."""
    client = broker.client()
    with Connection(broker.url, transport_options={"confirm_publish": True}) as conn:
        for i in range(count):
            priority = priorities[i % len(priorities)]
            client.send_task("dojo.tasks.add", args=(i, i), queue=queue, priority=priority, connection=conn)
    client.close()


def status(api) -> dict:
    response = api.get(STATUS, {"refresh": "1"})
    assert response.status_code == 200
    return response.json()


@pytest.mark.django_db
@pytest.mark.parametrize("count", [0, 1, 2])
def test_status_counts_workers_and_consumers(rabbit, api, count):
    names = [rabbit.start_worker(f"w{i}") for i in range(count)]
    body = status(api)

    assert body["broker_status"] is body["connected"] is True
    assert body["error"] is None
    assert body["workers"] == count
    assert body["worker_names"] == sorted(names)
    assert body["worker_status"] is (count > 0)
    assert body["queue"] == "celery"
    assert body["queue_length"] == 0
    # One consumer per worker on the queue it consumes, as RabbitMQ counts it.
    seen_by_rabbitmq = rabbit_queues(rabbit).get("celery", {}).get("consumers", 0)
    assert body["queues"]["celery"] == {"ready": 0, "consumers": count}
    assert seen_by_rabbitmq == count


@pytest.mark.django_db
def test_queue_length_counts_every_ready_message(rabbit, api):
    publish(rabbit, 11, priorities=(0, 3, 5, 6, 9, None))
    body = status(api)
    assert body["queue_length"] == 11
    assert body["queues"]["celery"] == {"ready": 11, "consumers": 0}
    assert rabbit_queues(rabbit)["celery"]["messages_ready"] == 11


@pytest.mark.django_db
def test_ready_messages_of_a_queue_no_worker_consumes(rabbit, api, settings):
    settings.CELERY_TASK_QUEUES = {"celery": {}, "reports": {}}
    worker = rabbit.start_worker("w0")  # consumes "celery" only
    publish(rabbit, 9, queue="reports", priorities=(0, 3, 6, 9, None))

    body = status(api)
    assert body["worker_names"] == [worker]
    assert body["queue_length"] == 0
    assert body["queues"] == {"celery": {"ready": 0, "consumers": 1}, "reports": {"ready": 9, "consumers": 0}}
    listed = rabbit_queues(rabbit)
    assert (listed["reports"]["messages_ready"], listed["reports"]["consumers"]) == (9, 0)
    assert listed["celery"]["consumers"] == 1


@pytest.mark.django_db
def test_purge_removes_exactly_the_named_queue(rabbit, api, settings):
    settings.CELERY_TASK_QUEUES = {"celery": {}, "reports": {}}
    publish(rabbit, 7, queue="reports", priorities=(0, 9, None))
    publish(rabbit, 4)

    response = api.post(PURGE, {"queue": "reports"}, format="json")
    assert response.status_code == 200
    assert response.json() == {"queue": "reports", "purged": 7, "backend": "default"}
    body = status(api)
    assert body["queues"]["reports"]["ready"] == 0
    assert body["queue_length"] == 4
    listed = rabbit_queues(rabbit)
    assert (listed["reports"]["messages_ready"], listed["celery"]["messages_ready"]) == (0, 4)

    assert api.post(PURGE, {"queue": "reports"}, format="json").json() == {
        "queue": "reports",
        "purged": 0,
        "backend": "default",
    }
    assert api.post(PURGE, {}, format="json").json() == {"queue": "celery", "purged": 4, "backend": "default"}
    assert rabbit_queues(rabbit)["celery"]["messages_ready"] == 0


@pytest.mark.django_db
def test_purge_unknown_queue_is_refused_and_touches_nothing(rabbit, api):
    publish(rabbit, 3)
    response = api.post(PURGE, {"queue": "no-such-queue"}, format="json")
    assert response.status_code == 400
    assert "queue" in response.json()
    assert status(api)["queue_length"] == 3
    listed = rabbit_queues(rabbit)
    assert "no-such-queue" not in listed
    assert listed["celery"]["messages_ready"] == 3


@pytest.mark.django_db
def test_looking_creates_no_queue(rabbit, api, settings):
    """Status reads an absent configured queue as 0 without declaring it; purging it purges 0."""
    settings.CELERY_TASK_QUEUES = {"celery": {}, "absent": {}}
    before = set(rabbit_queues(rabbit))

    body = status(api)
    assert body["broker_status"] is True
    assert body["queues"]["absent"] == {"ready": 0, "consumers": 0}
    assert body["queues"]["celery"] == {"ready": 0, "consumers": 0}
    assert api.post(PURGE, {"queue": "absent"}, format="json").json() == {
        "queue": "absent",
        "purged": 0,
        "backend": "default",
    }

    created = set(rabbit_queues(rabbit)) - before
    assert "absent" not in created
    assert "celery" not in created
    # Only the broadcast's own reply queue (x-expires, auto-delete) may appear.
    assert all(name.endswith(REPLY_QUEUE_SUFFIX) for name in created), created


@pytest.mark.django_db
def test_queue_declared_with_other_arguments_is_read_and_purged(rabbit, api, settings):
    """A queue declared with x-max-priority: a plain (non-passive) declare would fail with 406."""
    settings.CELERY_TASK_QUEUES = {"celery": {}, "reports": {}}
    exchange = Exchange("reports", type="direct")
    queue = Queue("reports", exchange, routing_key="reports", queue_arguments={"x-max-priority": 10})
    with Connection(rabbit.url, transport_options={"confirm_publish": True}) as conn:
        channel = conn.channel()
        queue(channel).declare()
        producer = Producer(channel, exchange=exchange, routing_key="reports")
        for i in range(6):
            producer.publish({"n": i}, priority=(0, 5, 10)[i % 3])
        channel.close()

    body = status(api)
    assert body["broker_status"] is True
    assert body["error"] is None
    assert body["queues"]["reports"] == {"ready": 6, "consumers": 0}

    response = api.post(PURGE, {"queue": "reports"}, format="json")
    assert response.status_code == 200, response.content
    assert response.json() == {"queue": "reports", "purged": 6, "backend": "default"}
    assert status(api)["queues"]["reports"]["ready"] == 0
    arguments = rabbitmqctl("list_queues", "-s", "-p", vhost(rabbit), "name", "arguments")
    assert "x-max-priority" in arguments  # still the queue that was declared, not a new one


@pytest.mark.django_db
def test_wrong_password_is_an_unreachable_broker_not_an_error(rabbit, api, settings):
    """RabbitMQ refuses the login (403 ACCESS_REFUSED): the status says the broker is unreachable
    and why, without the password, and purge answers 503."""
    settings.CELERY_BROKER_URL = rabbit.url.replace("guest:guest@", f"guest:{SECRET}@")

    started = time.monotonic()
    response = api.get(STATUS)
    assert time.monotonic() - started < settings.CELERY_BROKER_TIMEOUT + 0.5
    assert response.status_code == 200
    body = response.json()
    assert body["broker_status"] is False
    assert "ACCESS_REFUSED" in body["error"]
    assert SECRET not in response.content.decode()

    response = api.post(PURGE, {}, format="json")
    assert response.status_code == 503
    assert SECRET not in response.content.decode()


@pytest.mark.django_db
@pytest.mark.parametrize("bound", [1.0, 2.0])
def test_broker_down_answers_within_the_bound(api, settings, bound):
    """A closed port: nothing listens where the AMQP broker should be."""
    settings.CELERY_BROKER_URL = f"amqp://guest:guest@127.0.0.1:{free_port()}/dojo-test-down"
    settings.CELERY_BROKER_TRANSPORT_OPTIONS = {}
    settings.CELERY_BROKER_TIMEOUT = bound

    started = time.monotonic()
    response = api.get(STATUS)
    elapsed = time.monotonic() - started

    assert response.status_code == 200
    body = response.json()
    assert body["broker_status"] is body["connected"] is False
    assert body["workers"] == 0
    assert body["queue_length"] is None
    assert body["error"]
    assert elapsed < bound + 0.5, elapsed

    started = time.monotonic()
    response = api.post(PURGE, {}, format="json")
    assert response.status_code == 503
    assert time.monotonic() - started < bound + 0.5


@pytest.mark.django_db
def test_known_workers_answer_fast_and_a_new_worker_is_found(rabbit, api):
    """RabbitMQ lists no bindings: the first read waits the bound; later reads go to the workers that
    answered and still consume, and a worker the queue consumer counts do not explain forces a full round."""
    first = rabbit.start_worker("w0")
    timings = []
    for _ in range(3):
        started = time.monotonic()
        assert status(api)["worker_names"] == [first]
        timings.append(time.monotonic() - started)
    assert timings[0] >= 0.9 and max(timings[1:]) < 0.5, timings

    second = rabbit.start_worker("w1")
    assert status(api)["worker_names"] == sorted([first, second])
    started = time.monotonic()
    assert status(api)["worker_names"] == sorted([first, second])
    assert time.monotonic() - started < 0.5

    rabbit.stop_workers()
    started = time.monotonic()
    body = status(api)
    assert body["workers"] == 0 and body["queues"]["celery"]["consumers"] == 0
    assert time.monotonic() - started < 0.5  # the known workers' control queues have no consumer left
