"""GET /metrics against a real Redis and real `celery -A dojo worker` processes: the values,
who may read them, that no task id or argument leaks into a label, and promtool's verdict."""

import subprocess
import time
import uuid

import pytest
from django.urls import reverse
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from unittests.api_v2.test_status_and_purge import publish
from unittests.conftest import free_port, make_user, require, wait_for

METRICS = reverse("metrics")
METRICS_TOKEN = "scrape-" + uuid.uuid4().hex
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples(body: bytes) -> Samples:
    """Every sample of the exposition by (name, sorted labels)."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }


def scrape(api: APIClient) -> bytes:
    response = api.get(METRICS)
    assert response.status_code == 200, response.content
    assert response["Content-Type"] == CONTENT_TYPE_LATEST
    return response.content


def assert_promtool_accepts(body: bytes) -> None:
    """`promtool check metrics` exits 0 and has nothing to say (no lint problems)."""
    promtool = require("promtool")
    result = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True, timeout=30)
    output = (result.stdout + result.stderr).decode()
    assert result.returncode == 0, output
    assert output.strip() == "", output


def store_results(rows: list[tuple[str, str]]) -> list[str]:
    """Create django-celery-results rows (task name, state) with secret-looking args; their task ids."""
    from django_celery_results.models import TaskResult

    ids = []
    for task_name, state in rows:
        task_id = f"stored-id-{uuid.uuid4()}"
        TaskResult.objects.create(
            task_id=task_id,
            task_name=task_name,
            status=state,
            task_args='["stored-arg-secret"]',
            task_kwargs='{"password": "stored-kwarg-secret"}',
        )
        ids.append(task_id)
    return ids


@pytest.fixture
def two_queues(settings) -> None:
    """A second configured queue ("reports") that the worker on "celery" does not consume."""
    settings.CELERY_TASK_QUEUES = {"celery": {}, "reports": {}}
    settings.CELERY_RESULT_BACKEND = "django-db"


@pytest.mark.django_db
def test_exposition_for_a_known_state(redis_only, api, two_queues):
    worker = redis_only.start_worker("m0")
    publish(redis_only, 5, queue="reports")
    before = time.time()

    got = samples(scrape(api))

    w = (("worker", worker),)
    expected = {
        ("dojo_celery_enabled", ()): 1,
        ("dojo_celery_broker_connected", ()): 1,
        ("dojo_celery_workers_up", ()): 1,
        ("dojo_celery_worker_up", w): 1,
        ("dojo_celery_worker_active_tasks", w): 0,
        ("dojo_celery_worker_concurrency", w): 2,
        ("dojo_celery_queue_ready_messages", (("queue", "celery"),)): 0,
        ("dojo_celery_queue_ready_messages", (("queue", "reports"),)): 5,
        ("dojo_celery_queue_consumers", (("queue", "celery"),)): 1,
        ("dojo_celery_queue_consumers", (("queue", "reports"),)): 0,
        ("dojo_celery_active_tasks", ()): 0,
        ("dojo_celery_reserved_tasks", ()): 0,
        ("dojo_celery_scheduled_tasks", ()): 0,
        # the task analytics (test_task_metrics.py): nothing detected, no monitor ever ran, no rollup rows
        ("dojo_celery_lost_tasks", ()): 0,
        ("dojo_celery_periodic_tasks_late", ()): 0,
        ("dojo_celery_beat_expected", ()): 0,
        ("dojo_celery_beat_down", ()): 0,
        ("dojo_celery_tasks_running_long", ()): 0,
        ("dojo_celery_tasks_failure_rate_up", ()): 0,
        ("dojo_celery_monitor_up", ()): 0,
        ("dojo_celery_monitor_broker_connected", ()): 0,
    }
    read_at = got.pop(("dojo_celery_status_read_timestamp_seconds", ()))
    assert got == expected  # no task_results sample: no stored rows
    assert before - 1 < read_at <= time.time()


@pytest.mark.django_db
def test_scrapes_within_the_cache_period_share_one_status_read(redis_only, api, two_queues, settings, monkeypatch):
    from dojo.ops.fleet import status_cache as cache

    settings.CELERY_STATUS_CACHE_SECONDS = 60
    redis_only.start_worker("m0")
    reads = []
    real_read_status = cache.read_status
    monkeypatch.setattr(cache, "read_status", lambda backend=None: reads.append(1) or real_read_status(backend))

    stamps = {samples(scrape(api))[("dojo_celery_status_read_timestamp_seconds", ())] for _ in range(5)}

    assert len(reads) == 1
    assert len(stamps) == 1


@pytest.mark.django_db
def test_stored_task_result_counts(redis_only, api, two_queues, django_assert_num_queries):
    from dojo.ops.observe.metrics import task_results_metric

    ids = store_results(
        [("dojo.tasks.add", "SUCCESS")] * 3
        + [("dojo.tasks.add", "FAILURE")]
        + [("dojo.tasks.sleep", "SUCCESS")] * 2
        + [("dojo.tasks.sleep", "REVOKED")]
    )

    with django_assert_num_queries(1):
        family = task_results_metric()
    assert family.type == "gauge"
    assert len(family.samples) == 4

    body = scrape(api)
    counts = {labels: value for (name, labels), value in samples(body).items() if name == "dojo_celery_task_results"}
    assert counts == {
        (("state", "SUCCESS"), ("task", "dojo.tasks.add")): 3,
        (("state", "FAILURE"), ("task", "dojo.tasks.add")): 1,
        (("state", "SUCCESS"), ("task", "dojo.tasks.sleep")): 2,
        (("state", "REVOKED"), ("task", "dojo.tasks.sleep")): 1,
    }
    text = body.decode()
    for secret in [*ids, "stored-id-", "stored-arg-secret", "stored-kwarg-secret", "password"]:
        assert secret not in text


@pytest.mark.django_db
def test_no_task_results_without_the_django_db_backend(redis_only, api, settings):
    settings.CELERY_RESULT_BACKEND = redis_only.result_backend
    store_results([("dojo.tasks.add", "SUCCESS")])
    assert "dojo_celery_task_results" not in scrape(api).decode()


def client_for(case: str) -> APIClient:
    client = APIClient()
    if case == "anonymous":
        return client
    if case in ("plain token", "staff token", "superuser token", "superuser session"):
        role = case.split()[0]
        user = make_user(role, staff=role == "staff", superuser=role == "superuser")
        if case == "superuser session":
            assert client.login(username=role, password="pw-" + role)
        else:
            client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
        return client
    bearer = {"bearer": METRICS_TOKEN, "wrong bearer": METRICS_TOKEN + "x", "bearer, no token set": METRICS_TOKEN}
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {bearer[case]}")
    return client


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("case", "metrics_token", "expected"),
    [
        ("anonymous", METRICS_TOKEN, 401),
        ("plain token", METRICS_TOKEN, 403),
        ("staff token", METRICS_TOKEN, 403),
        ("superuser token", "", 200),
        ("superuser token", METRICS_TOKEN, 200),
        ("superuser session", METRICS_TOKEN, 401),  # only a token or the bearer token, never a cookie
        ("bearer", METRICS_TOKEN, 200),
        ("wrong bearer", METRICS_TOKEN, 401),
        ("bearer, no token set", "", 401),
    ],
)
def test_auth_matrix(redis_only, settings, case, metrics_token, expected):
    settings.METRICS_TOKEN = metrics_token
    response = client_for(case).get(METRICS, HTTP_ACCEPT="text/plain")
    assert response.status_code == expected, response.content
    if expected == 200:
        assert response["Content-Type"] == CONTENT_TYPE_LATEST
        assert b"dojo_celery_broker_connected 1.0" in response.content
    else:
        assert b"dojo_celery" not in response.content
    if expected == 401:
        assert response["WWW-Authenticate"].startswith("Token")


@pytest.mark.django_db
def test_disabled_exposes_only_enabled_0(api, settings):
    settings.CELERY_ENABLED = False
    settings.CELERY_BROKER_URL = f"redis://127.0.0.1:{free_port()}/0"  # never asked
    started = time.monotonic()
    body = scrape(api)
    assert time.monotonic() - started < 0.5
    assert samples(body) == {("dojo_celery_enabled", ()): 0}
    assert_promtool_accepts(body)


@pytest.mark.django_db
def test_broker_down(api, settings):
    settings.CELERY_BROKER_URL = f"redis://127.0.0.1:{free_port()}/0"
    settings.CELERY_BROKER_TRANSPORT_OPTIONS = {}
    settings.CELERY_BROKER_TIMEOUT = 1.0
    settings.CELERY_RESULT_BACKEND = "django-db"
    store_results([("dojo.tasks.add", "SUCCESS")])

    body = scrape(api)

    got = samples(body)
    assert got[("dojo_celery_broker_connected", ())] == 0
    assert got[("dojo_celery_workers_up", ())] == 0
    assert not [key for key in got if key[0].startswith(("dojo_celery_queue_", "dojo_celery_worker_"))]
    # The stored results come from the database, which is up.
    assert got[("dojo_celery_task_results", (("state", "SUCCESS"), ("task", "dojo.tasks.add")))] == 1
    assert_promtool_accepts(body)


@pytest.mark.django_db
def test_no_task_id_or_argument_while_tasks_are_active_reserved_or_scheduled(redis_only, api, settings):
    """Two sleeps run (concurrency 2), two adds wait prefetched, one waits for its ETA."""
    settings.CELERY_STATUS_CACHE_SECONDS = 0
    redis_only.start_worker("m0")
    client = redis_only.client()
    ids = [f"live-id-{uuid.uuid4()}" for _ in range(5)]
    with client.connection_for_write() as conn:
        for task_id in ids[:2]:
            client.send_task("dojo.tasks.sleep", args=(4,), task_id=task_id, connection=conn)
        for task_id in ids[2:4]:
            args = ("reserved-arg-secret-", "x")
            client.send_task("dojo.tasks.add", args=args, task_id=task_id, connection=conn)
        args = ("scheduled-arg-secret-", "y")
        client.send_task("dojo.tasks.add", args=args, task_id=ids[4], countdown=300, connection=conn)

    seen: dict[str, bytes] = {}

    def all_kinds_seen() -> bool:
        seen["body"] = scrape(api)
        got = samples(seen["body"])
        return [got[(f"dojo_celery_{kind}_tasks", ())] for kind in ("active", "reserved", "scheduled")] == [2, 2, 1]

    wait_for(all_kinds_seen, 3, "2 active, 2 reserved and 1 scheduled task")
    text = seen["body"].decode()
    for secret in [*ids, "live-id-", "arg-secret", "dojo.tasks.sleep", "dojo.tasks.add"]:
        assert secret not in text
    assert_promtool_accepts(seen["body"])


@pytest.mark.django_db
def test_promtool_accepts_the_live_exposition(redis_only, api, two_queues):
    redis_only.start_worker("m0")
    publish(redis_only, 3, queue="reports", priorities=(0, 9))
    store_results([("dojo.tasks.add", "SUCCESS"), ("dojo.tasks.add", "FAILURE"), ("dojo.tasks.sleep", "STARTED")])
    body = scrape(api)
    assert b"dojo_celery_task_results{" in body
    assert b"dojo_celery_worker_concurrency{" in body
    assert_promtool_accepts(body)
