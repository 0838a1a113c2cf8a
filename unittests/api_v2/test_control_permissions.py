"""Who may use each Celery control, and how bad input and an unreachable broker are answered.

Every control is a POST needing its own permission (superusers hold them all), refused with 403
in read-only mode; bad input is a 400 naming the field; an unreachable broker is a 503 with the
reason and no password. These tests use a private Redis and no worker: a control with no live
worker still answers (it has told nobody, which its answer says).
"""

import json
import time
import uuid

import pytest
from django.contrib.auth.models import Permission, User
from django.urls import reverse
from django_celery_results.models import TaskResult
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from dojo.models import CeleryAuditLog, QueuePause, TaskRevocation
from dojo.ops.brokers.connection import broker_connection
from dojo.ops.brokers.registry import get_broker
from unittests.conftest import free_port, make_user

PAUSE = reverse("celery_queue_pause")
RESUME = reverse("celery_queue_resume")
PURGE = reverse("celery_queue_purge")
PURGE_TASK = reverse("celery_queue_purge_task")
RETRY = reverse("celery_task_retry")
REVOKE = reverse("celery_task_revoke")
TERMINATE = reverse("celery_task_terminate")
FAILED_ID = "6f1c3a52-0000-4000-8000-00000000f41d"

# url, permission codename, a valid body
CONTROLS = [
    (PAUSE, "pause_queue", {"queue": "celery"}),
    (RESUME, "pause_queue", {"queue": "celery"}),
    (PURGE, "purge_queue", {"queue": "celery"}),
    (PURGE_TASK, "purge_queue", {"queue": "celery", "task_name": "dojo.tasks.add"}),
    (RETRY, "retry_task", {"task_id": FAILED_ID}),
    (REVOKE, "revoke_task", {"task_id": "a-queued-task"}),
    (TERMINATE, "terminate_task", {"task_id": "a-running-task"}),
]
URLS = [url for url, _permission, _body in CONTROLS]


def stored_failure(
    task_id: str = FAILED_ID, args: str = json.dumps("(2, 3)"), kwargs: str = json.dumps("{}"), **fields
) -> TaskResult:
    """A TaskResult row as django-celery-results stores a failed dojo.tasks.add with result_extended."""
    values = {
        "task_id": task_id,
        "task_name": "dojo.tasks.add",
        "status": "FAILURE",
        "task_args": args,
        "task_kwargs": kwargs,
        "meta": json.dumps({"children": [], "queue": "celery"}),
        "result": json.dumps({"exc_type": "TypeError", "exc_message": ["boom"]}),
    }
    return TaskResult.objects.create(**{**values, **fields})


def token_client(user: User) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    return client


def ready(queue: str) -> int:
    with broker_connection() as conn:
        return get_broker().transport.depths(conn, [queue])[queue].ready


@pytest.mark.django_db
def test_read_only_mode_refuses_every_control(redis_only, api, settings):
    settings.CELERY_READ_ONLY = True
    stored_failure()
    for url, _permission, body in CONTROLS:
        response = api.post(url, body, format="json")
        assert response.status_code == 403, url
        assert "DD_CELERY_READ_ONLY" in response.json()["detail"], url
    assert not QueuePause.objects.exists()
    assert not TaskRevocation.objects.exists()
    assert ready("celery") == 0  # the retry published nothing
    rows = CeleryAuditLog.objects.all()
    assert len(rows) == len(CONTROLS)
    assert {row.result for row in rows} == {"refused"}
    assert {row.username for row in rows} == {"admin"}


@pytest.mark.django_db
def test_a_user_allowed_to_retry_can_retry_and_nothing_else(redis_only):
    retrier = make_user("retrier", staff=True)
    retrier.user_permissions.add(Permission.objects.get(content_type__app_label="dojo", codename="retry_task"))
    client = token_client(retrier)
    stored_failure()

    retried = client.post(RETRY, {"task_id": FAILED_ID}, format="json")
    assert retried.status_code == 200, retried.content
    assert retried.json()["task_name"] == "dojo.tasks.add"
    assert ready("celery") == 1
    for url, permission, body in CONTROLS:
        if permission == "retry_task":
            continue
        response = client.post(url, body, format="json")
        assert response.status_code == 403, url
        assert response.json()["detail"] == f"You need the permission dojo.{permission}.", url
    assert not QueuePause.objects.exists()
    assert ready("celery") == 1  # not purged
    assert list(CeleryAuditLog.objects.filter(username="retrier", result="ok").values_list("action", flat=True)) == [
        "retry_task"
    ]
    assert CeleryAuditLog.objects.filter(username="retrier", result="refused").count() == len(CONTROLS) - 1


@pytest.mark.django_db
def test_a_superuser_holds_every_control(redis_only, api):
    stored_failure()
    expected = {PAUSE: 200, RESUME: 200, PURGE: 200, PURGE_TASK: 200, RETRY: 200, REVOKE: 200, TERMINATE: 404}
    for url, _permission, body in CONTROLS:
        response = api.post(url, body, format="json")
        assert response.status_code == expected[url], (url, response.content)
    actions = list(CeleryAuditLog.objects.order_by("created_at").values_list("action", "result"))
    assert actions == [
        ("pause_queue", "ok"),
        ("resume_queue", "ok"),
        ("purge_queue", "ok"),
        ("purge_task", "ok"),
        ("retry_task", "ok"),
        ("revoke_task", "ok"),
        ("terminate_task", "refused"),  # nothing running to terminate
    ]
    assert TaskRevocation.objects.filter(task_id="a-queued-task").exists()


@pytest.mark.django_db
@pytest.mark.parametrize("url", URLS)
def test_anonymous_is_401_and_not_audited(filesystem_only, url):
    response = APIClient().post(url, {"queue": "celery", "task_id": "x"}, format="json")
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Token")
    assert not CeleryAuditLog.objects.exists()


@pytest.mark.django_db
def test_a_session_post_needs_the_csrf_token(redis_only, superuser):
    client = APIClient(enforce_csrf_checks=True)
    assert client.login(username="admin", password="pw-admin")
    for url, _permission, body in CONTROLS:
        response = client.post(url, body, format="json")
        assert response.status_code == 403, url
        assert "CSRF" in response.json()["detail"], url
    assert not QueuePause.objects.exists()

    client.get(reverse("login"))  # sets the csrftoken cookie
    with_token = client.post(
        PAUSE, {"queue": "celery"}, format="json", HTTP_X_CSRFTOKEN=client.cookies["csrftoken"].value
    )
    assert with_token.status_code == 200
    assert QueuePause.objects.filter(queue="celery").exists()


@pytest.mark.django_db
@pytest.mark.parametrize("url", URLS)
@pytest.mark.parametrize("method", ["get", "put", "delete"])
def test_controls_accept_only_post(filesystem_only, api, url, method):
    assert getattr(api, method)(url).status_code == 405


@pytest.mark.django_db
@pytest.mark.parametrize(("url", "_permission", "body"), CONTROLS)
def test_an_unknown_backend_is_400_naming_the_field(filesystem_only, api, url, _permission, body):
    response = api.post(url, {**body, "backend": "nope"}, format="json")
    assert response.status_code == 400
    assert "nope" in response.json()["backend"][0]
    assert CeleryAuditLog.objects.get().result == "refused"


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("url", "body", "field"),
    [
        (PAUSE, {}, "queue"),
        (PAUSE, {"queue": ""}, "queue"),
        (PAUSE, {"queue": "q" * 256}, "queue"),
        (RESUME, {"queue": None}, "queue"),
        (PURGE, {"queue": "not-configured"}, "queue"),
        (PURGE_TASK, {"task_name": "dojo.tasks.add"}, "queue"),
        (PURGE_TASK, {"queue": "not-configured", "task_name": "dojo.tasks.add"}, "queue"),
        (PURGE_TASK, {"queue": "celery"}, "task_name"),
        (RETRY, {}, "task_id"),
        (REVOKE, {"task_id": ""}, "task_id"),
        (TERMINATE, {}, "task_id"),
        (TERMINATE, {"task_id": "x", "signal": "SIGHUP"}, "signal"),
    ],
)
def test_bad_input_is_400_naming_the_field(filesystem_only, api, url, body, field):
    response = api.post(url, body, format="json")
    assert response.status_code == 400, response.content
    assert field in response.json()
    row = CeleryAuditLog.objects.get()
    assert row.result == "refused" and field in row.detail


@pytest.mark.django_db
def test_a_malformed_body_is_400_and_does_nothing(filesystem_only, api):
    for url in URLS:
        response = api.post(url, "{not json", content_type="application/json")
        assert response.status_code == 400, url
    assert not QueuePause.objects.exists()
    assert CeleryAuditLog.objects.filter(result="refused").count() == len(URLS)


@pytest.mark.django_db
def test_purge_by_name_is_refused_on_a_broker_that_cannot_do_it(filesystem_only, api, settings):
    settings.CELERY_BACKENDS = {
        "files": {"broker_url": filesystem_only.url, "transport_options": filesystem_only.transport_options}
    }
    body = {"queue": "celery", "task_name": "dojo.tasks.add", "backend": "files"}
    response = api.post(PURGE_TASK, body, format="json")
    assert response.status_code == 400
    assert "cannot remove selected messages without consuming them" in response.json()["backend"][0]
    # The whole-queue purge still works there.
    assert api.post(PURGE, {"queue": "celery", "backend": "files"}, format="json").status_code == 200


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("fields", "status", "message"),
    [
        ({"task_id": "unknown"}, 404, "No stored result"),
        ({"status": "SUCCESS"}, 400, "Only FAILURE or REVOKED"),
        ({"task_name": None}, 400, "without its name"),
        ({"task_args": None}, 400, "none were stored"),
        ({"task_args": json.dumps("('" + "x" * 1100 + "...',)")}, 400, "cut them at 1024"),
        ({"task_args": json.dumps("([[[...]]],)")}, 400, "cut nested values"),
        ({"task_args": json.dumps("(<object at 0x7f>,)")}, 400, "not literal"),
        ({"task_args": json.dumps("('a\\b',)")}, 400, "do not read back exactly"),
        ({"task_kwargs": json.dumps("[1]")}, 400, "is not a dict"),
        ({"task_args": json.dumps("(b'bytes',)")}, 400, "cannot be sent as JSON"),
    ],
)
def test_retry_refuses_what_cannot_be_run_again_exactly(redis_only, api, fields, status, message):
    task_id = fields.pop("task_id", str(uuid.uuid4()))
    stored_failure(task_id=str(uuid.uuid4()) if task_id == "unknown" else task_id, **fields)
    response = api.post(RETRY, {"task_id": task_id}, format="json")
    assert response.status_code == status, response.content
    text = response.json()["detail"] if status == 404 else response.json()["task_id"][0]
    assert message in text
    assert ready("celery") == 0
    assert CeleryAuditLog.objects.get().result == "refused"


@pytest.mark.django_db
def test_retry_sends_the_stored_arguments_and_options_to_the_stored_queue(redis_only, api, settings):
    settings.CELERY_TASK_QUEUES = {name: {"exchange": name, "routing_key": name} for name in ("celery", "reports")}
    stored_failure(
        args=json.dumps("('it\\'s', [1, {'k': None}])"),
        kwargs=json.dumps("{'flag': True, 'ratio': 0.5}"),
        # Options of the wrong type, or not publish options, are left out.
        meta=json.dumps(
            {"queue": "reports", "options": {"priority": 5, "time_limit": 30, "soft_time_limit": "x", "eta": 1}}
        ),
    )
    response = api.post(RETRY, {"task_id": FAILED_ID}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["queue"] == "reports"
    with broker_connection() as conn, conn.SimpleQueue("reports") as queue:
        message = queue.get(timeout=2)
        args, kwargs, _embed = message.decode()
        assert message.headers["task"] == "dojo.tasks.add"
        assert message.headers["id"] == response.json()["task_id"]
        assert (message.properties["priority"], message.headers["timelimit"]) == (5, [30, None])
        assert message.headers["eta"] is None
        message.ack()
    assert args == ["it's", [1, {"k": None}]]
    assert kwargs == {"flag": True, "ratio": 0.5}


@pytest.mark.django_db
def test_an_unreachable_broker_is_503_with_the_reason_and_no_secret(redis_only, api, settings):
    secret = "s3cret-pw"
    settings.CELERY_BROKER_URL = f"redis://:{secret}@127.0.0.1:{free_port()}/0"  # nothing listens there
    stored_failure()
    for url, _permission, body in CONTROLS:
        response = api.post(url, body, format="json")
        assert response.status_code == 503, url
        assert "unreachable" in response.json()["detail"], url
        assert secret not in response.content.decode(), url
    assert not QueuePause.objects.exists()
    assert not TaskRevocation.objects.exists()
    rows = CeleryAuditLog.objects.all()
    assert {row.result for row in rows} == {"failed"}
    assert len(rows) == len(CONTROLS)
    assert not any(secret in row.detail for row in rows)


@pytest.mark.django_db
def test_a_silent_broker_is_503_within_the_time_bound(redis_only, api, settings, silent_port):
    """A broker that accepts connections and never answers: the control gives up in bounded time."""
    settings.CELERY_BROKER_URL = f"redis://127.0.0.1:{silent_port}/0"
    settings.CELERY_BROKER_TIMEOUT = 1.0
    started = time.monotonic()
    response = api.post(PAUSE, {"queue": "celery"}, format="json")
    assert response.status_code == 503
    assert time.monotonic() - started < 10
    assert not QueuePause.objects.exists()


@pytest.mark.django_db
def test_the_admin_shows_pauses_revocations_and_the_audit_log_read_only(client, superuser):
    QueuePause.objects.create(queue="reports", paused_by="admin")
    TaskRevocation.objects.create(task_id="revoked-id")
    row = CeleryAuditLog.objects.create(
        username="admin", backend="default", action="pause_queue", target="reports", result="ok"
    )
    client.force_login(superuser)
    for model, shown in (
        ("queuepause", "reports"),
        ("taskrevocation", "revoked-id"),
        ("celeryauditlog", "pause_queue"),
    ):
        page = client.get(reverse(f"admin:dojo_{model}_changelist"))
        assert page.status_code == 200, model
        assert shown in page.content.decode(), model
        assert client.get(reverse(f"admin:dojo_{model}_add")).status_code == 403, model
    assert client.post(reverse("admin:dojo_celeryauditlog_delete", args=[row.pk]), {"post": "yes"}).status_code == 403
    assert CeleryAuditLog.objects.filter(pk=row.pk).exists()
