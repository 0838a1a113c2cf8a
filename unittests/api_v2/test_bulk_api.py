"""The bulk operations API (dojo.api_v2.bulk) over a private Redis: preview, start, progress,
cancel and the list; each action's permission, read-only mode, CSRF with a session, 400s naming
the field, 409 with a fresh preview, 404 for an unknown id, the audit row of an operation, and a
run to the end on a real `celery -A dojo worker` sharing the test database.
"""

import uuid

import pytest
from django.contrib.auth.models import Permission
from django.urls import reverse
from django.utils import timezone
from django_celery_results.models import TaskResult
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from dojo.models import BulkOperation, CeleryAuditLog
from unittests.conftest import LiveBroker, make_user, wait_for

PREVIEW = reverse("celery_bulk_preview")
BULK = reverse("celery_bulk")


def operation_url(operation_id: int, cancel: bool = False) -> str:
    return reverse("celery_bulk_cancel" if cancel else "celery_bulk_operation", args=[operation_id])


def results(n: int, task_name: str, status: str = "SUCCESS", args: str = '"()"') -> None:
    now = timezone.now()
    TaskResult.objects.bulk_create(
        TaskResult(task_id=str(uuid.uuid4()), task_name=task_name, status=status, date_done=now, task_args=args)
        for _ in range(n)
    )


def client_of(user) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    return client


@pytest.fixture
def ready(redis_only: LiveBroker, settings) -> LiveBroker:
    settings.CELERY_RESULT_BACKEND = "django-db"
    settings.BULK_GROWTH_PERCENT = 0
    return redis_only


@pytest.mark.django_db
def test_preview_then_start_then_cancel_and_the_audit(ready, api):
    results(25, "cleanup.me")
    results(3, "keep.me")
    body = {"action": "delete_results", "filter": {"task_name": "cleanup.me"}}
    shown = api.post(PREVIEW, body, format="json")
    assert shown.status_code == 200, shown.content
    preview = shown.json()
    assert (preview["count"], len(preview["sample"]), preview["filter"]) == (25, 20, {"task_name": "cleanup.me"})
    assert not CeleryAuditLog.objects.exists(), "a preview acts on nothing"

    results(1, "cleanup.me")
    confirm = {**body, "confirmed_count": preview["count"], "fingerprint": preview["fingerprint"]}
    refused = api.post(BULK, confirm, format="json")
    assert refused.status_code == 409
    assert refused.json()["preview"]["count"] == 26
    assert not BulkOperation.objects.exists()

    fresh = refused.json()["preview"]
    started = api.post(
        BULK, {**body, "confirmed_count": fresh["count"], "fingerprint": fresh["fingerprint"]}, format="json"
    )
    assert started.status_code == 201, started.content
    operation = started.json()
    assert (operation["state"], operation["confirmed_count"], operation["username"]) == ("pending", 26, "admin")

    progress = api.get(operation_url(operation["id"]))
    assert progress.status_code == 200
    assert progress.json()["progress"] == {
        "processed": 0,
        "total": 26,
        "percent": 0.0,
        "rate_per_second": None,
        "seconds_left": None,
    }
    # No worker took it: cancelled at once; a second cancel is a conflict.
    cancelled = api.post(operation_url(operation["id"], cancel=True), format="json")
    assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled"
    assert api.post(operation_url(operation["id"], cancel=True), format="json").status_code == 409
    assert TaskResult.objects.filter(task_name="cleanup.me").count() == 26

    audit = CeleryAuditLog.objects.get(action="bulk_delete_results", result="ok")
    assert audit.pk == operation["audit_id"] and audit.target == "task_name=cleanup.me"
    assert audit.counts == {"confirmed": 26, "done": 0, "failed": 0, "cancelled": 1}
    assert CeleryAuditLog.objects.filter(action="bulk_delete_results", result="refused").count() == 1  # the 409
    assert CeleryAuditLog.objects.filter(
        action="bulk_cancel", result="ok", target=f"operation {operation['id']}"
    ).exists()

    listed = api.get(BULK).json()
    assert [row["id"] for row in listed["results"]] == [operation["id"]] and listed["next_before"] is None
    assert api.get(operation_url(999_999)).status_code == 404
    assert api.post(operation_url(999_999, cancel=True), format="json").status_code == 404
    for odd in ("null,null", "-1", "9" * 20, "a/b", "%0A%C2%AB", "%0A5"):
        response = api.get(f"{BULK}{odd}/")
        assert response.status_code == 404 and response["Content-Type"] == "application/json", odd


@pytest.mark.django_db
def test_bad_input_is_400_naming_the_field(ready, api):
    results(2, "x")
    cases = [
        ({"action": "delete_results", "filter": {}}, "all"),
        ({"action": "delete_results", "filter": {"backend": "default"}}, "all"),
        ({"action": "sweep", "filter": {"task_name": "x"}}, "action"),
        ({"action": "purge", "filter": {"task_name": "x"}}, "filter.queue"),
        ({"action": "revoke", "filter": {"queue": "nowhere"}}, "filter.queue"),
        ({"action": "revoke", "filter": {"queue": "celery", "state": "FAILURE"}}, "filter.state"),
        ({"action": "purge", "filter": {"queue": "celery", "done_after": "2026-01-01T00:00:00Z"}}, "filter.done_after"),
        ({"action": "retry", "filter": {"task_name": "x", "task_name_prefix": "y"}}, "filter.task_name_prefix"),
        ({"action": "retry", "filter": {"state": "RECOVERED"}}, "filter.state"),
        ({"action": "retry", "filter": {"done_after": "soon"}}, "filter.done_after"),
        ({"action": "retry", "filter": {"backend": "nowhere"}}, "filter.backend"),
        ({"action": "retry", "filter": [1, 2]}, "filter"),
    ]
    for body, field in cases:
        response = api.post(PREVIEW, body, format="json")
        assert response.status_code == 400, (body, response.content)
        assert field in response.json(), (body, response.json())
        # One list of messages per field, never a nested object (the schema's error body).
        assert all(isinstance(value, list) for name, value in response.json().items() if name != "detail")
    bad_print = {"action": "retry", "filter": {"task_name": "x"}, "confirmed_count": 1, "fingerprint": "abc"}
    assert "fingerprint" in api.post(BULK, bad_print, format="json").json()
    everything = api.post(PREVIEW, {"action": "delete_results", "all": True}, format="json")
    assert everything.status_code == 200 and everything.json()["count"] == 2


@pytest.mark.django_db
def test_each_action_needs_its_permission_and_read_only_refuses_all(ready, settings):
    results(2, "x", status="FAILURE", args='"(secret-arg,)"')
    deleter = make_user("deleter", staff=True, permissions=("delete_results",))
    client = client_of(deleter)
    delete = {"action": "delete_results", "filter": {"task_name": "x"}}
    retry = {"action": "retry", "filter": {"task_name": "x"}}
    assert client.post(PREVIEW, delete, format="json").status_code == 200
    denied = client.post(PREVIEW, retry, format="json")
    assert denied.status_code == 403 and "dojo.retry_task" in denied.json()["detail"]
    assert CeleryAuditLog.objects.filter(action="bulk_retry", result="refused", username="deleter").exists()
    # Arguments are task data: filtering on them needs the right to see them.
    by_args = client.post(PREVIEW, {"action": "delete_results", "filter": {"args_contain": "secret"}}, format="json")
    assert by_args.status_code == 403 and "task data" in by_args.json()["detail"]
    reader = make_user("reader", staff=True, permissions=("delete_results", "view_taskresult"))
    assert (
        client_of(reader)
        .post(PREVIEW, {"action": "delete_results", "filter": {"args_contain": "secret"}}, format="json")
        .json()["count"]
        == 2
    )

    settings.CELERY_READ_ONLY = True
    for url in (PREVIEW, BULK):
        response = client_of(make_user(f"su{len(url)}", superuser=True)).post(url, delete, format="json")
        assert response.status_code == 403 and "READ_ONLY" in response.json()["detail"]
    assert client.get(BULK).status_code == 200, "reading the operations stays open to staff"
    assert APIClient().get(BULK).status_code == 401


@pytest.mark.django_db
def test_revoke_and_purge_need_their_permissions_and_purge_the_system_setting(ready):
    from dojo.models import SystemSettings

    revoker = client_of(make_user("revoker", staff=True, permissions=("revoke_task",)))
    revoke = {"action": "revoke", "filter": {"queue": "celery", "task_name": "x"}}
    purge = {"action": "purge", "filter": {"queue": "celery", "task_name": "x"}}
    shown = revoker.post(PREVIEW, revoke, format="json")
    assert shown.status_code == 200 and (shown.json()["count"], shown.json()["max_id"]) == (0, 0)
    denied = revoker.post(PREVIEW, purge, format="json")
    assert denied.status_code == 403 and "dojo.purge_queue" in denied.json()["detail"]
    purger = client_of(make_user("purger", staff=True, permissions=("purge_queue",)))
    assert purger.post(PREVIEW, purge, format="json").status_code == 200
    row = SystemSettings.load()
    row.allow_queue_purge = False
    row.save()
    off = purger.post(PREVIEW, purge, format="json")
    assert off.status_code == 403 and "disabled in System Settings" in off.json()["detail"]
    assert CeleryAuditLog.objects.filter(action="bulk_purge", result="refused", username="purger").exists()


@pytest.mark.django_db
def test_a_session_post_needs_the_csrf_token(ready, superuser):
    results(1, "x")
    client = APIClient(enforce_csrf_checks=True)
    assert client.login(username="admin", password="pw-admin")
    body = {"action": "delete_results", "filter": {"task_name": "x"}}
    response = client.post(PREVIEW, body, format="json")
    assert response.status_code == 403 and "CSRF" in response.json()["detail"]
    client.get(reverse("login"))
    with_token = client.post(PREVIEW, body, format="json", HTTP_X_CSRFTOKEN=client.cookies["csrftoken"].value)
    assert with_token.status_code == 200


def test_an_operation_runs_to_the_end_on_a_real_worker(ready, shared_database, settings):
    settings.CELERY_QUEUE_NAMES = ["celery"]
    results(1200, "cleanup.me")
    ready.start_worker(
        "runner",
        DD_DATABASE_URL=shared_database,
        DD_CELERY_RESULT_BACKEND="django-db",
        DD_BULK_BATCH_SIZE="500",
        DD_BULK_BATCH_PAUSE_SECONDS="0",
    )
    api = client_of(make_user("admin", superuser=True))
    body = {"action": "delete_results", "filter": {"task_name_prefix": "cleanup."}}
    preview = api.post(PREVIEW, body, format="json").json()
    started = api.post(
        BULK, {**body, "confirmed_count": preview["count"], "fingerprint": preview["fingerprint"]}, format="json"
    ).json()
    wait_for(lambda: api.get(operation_url(started["id"])).json()["state"] == "done", 60, "the operation")
    done = api.get(operation_url(started["id"])).json()
    assert (done["done_count"], done["failed_count"], done["progress"]["percent"]) == (1200, 0, 100.0)
    assert done["progress"]["seconds_left"] == 0.0 and done["progress"]["rate_per_second"] > 0
    assert not TaskResult.objects.filter(task_name="cleanup.me").exists()
    audit = CeleryAuditLog.objects.get(pk=done["audit_id"])
    assert audit.counts == {"confirmed": 1200, "done": 1200, "failed": 0, "cancelled": 0}
    assert audit.detail == f"operation {started['id']} done"


@pytest.mark.django_db
def test_permission_objects_exist_for_every_bulk_action():
    from dojo.ops.controls.bulk import ACTION_PERMISSIONS as PERMISSIONS

    codenames = set(Permission.objects.filter(content_type__app_label="dojo").values_list("codename", flat=True))
    assert set(PERMISSIONS.values()) <= codenames
