"""Enqueue a registered task (POST /api/v2/celery/tasks/apply/ and the panel's page) on Redis with
real workers: a `celery -A dojo worker` sharing the test database, and a worker of the plain app,
whose task names the project never imported."""

import json

import pytest
from django.urls import reverse

from dojo.models import CeleryAuditLog
from dojo.ops.fleet.status_cache import forget_status, get_status
from unittests.conftest import make_user, wait_for
from unittests.ops.controls import test_controls
from unittests.ops.controls.test_controls import STARTUP, lines, stored_state

fleet = test_controls.fleet  # the fixture: Redis and workers sharing the test database
APPLY = reverse("celery_task_apply")
PAGE = reverse("celery_panel:apply_task")


def scheduled_ids() -> set[str]:
    lists = get_status(refresh=True).queue_details["scheduled"].values()
    return {task["id"] for tasks in lists for task in tasks}


def apply(api, **body) -> tuple[int, dict]:
    response = api.post(APPLY, body, format="json")
    return response.status_code, response.json()


def test_a_registered_task_runs_with_its_arguments_queue_and_countdown(fleet, api, client, superuser, tmp_path):
    fleet.start_worker("w1", queues="celery,reports", **fleet.worker_env)
    plain = fleet.start_plain_worker("plain1", queues="plain")
    out = tmp_path / "applied.txt"
    out.touch()

    code, body = apply(api, task_name="dojo.tasks.append_line", args=[str(out), "now"], queue="reports", priority=3)
    assert code == 200, body
    assert (body["task_name"], body["queue"], body["eta"]) == ("dojo.tasks.append_line", "reports", None)
    wait_for(lambda: stored_state(body["task_id"]) == "SUCCESS", STARTUP, "the applied task to run")
    assert lines(out) == ["now"]

    code, later = apply(
        api, task_name="dojo.tasks.append_line", kwargs={"path": str(out), "line": "later"}, countdown=4
    )
    assert code == 200, later
    assert later["eta"] is not None and later["queue"] == "celery"
    forget_status()
    wait_for(
        lambda: later["task_id"] in scheduled_ids(),
        STARTUP,
        "the countdown task to wait on the worker as scheduled",
    )
    assert lines(out) == ["now"], "a countdown task does not run at once"
    wait_for(lambda: lines(out) == ["now", "later"], STARTUP, "the countdown task to run when due")

    code, sent = apply(api, task_name="plain.add", args=[2, 3], queue="plain")
    assert code == 200, sent  # a name only the plain worker registered
    assert sent["queue"] == "plain"

    rows = list(CeleryAuditLog.objects.filter(action="apply_task").order_by("created_at"))
    assert [(row.result, row.target) for row in rows] == [
        ("ok", "dojo.tasks.append_line reports"),
        ("ok", "dojo.tasks.append_line"),
        ("ok", "plain.add plain"),
    ]
    assert body["task_id"] in rows[0].detail
    assert not any(str(out) in row.detail or str(out) in row.target for row in rows), "arguments are task data"

    refusals = [
        ({"task_name": "dojo.tasks.nope"}, 404, "task_name"),
        ({"task_name": "dojo.tasks.add", "queue": "nobody-consumes-this"}, 404, "queue"),
        ({"task_name": "dojo.tasks.add", "args": {"x": 1}}, 400, "args"),
        ({"task_name": "dojo.tasks.add", "kwargs": [1]}, 400, "kwargs"),
        ({"task_name": "dojo.tasks.add", "args": ["x" * 70000]}, 400, "args"),
        ({"task_name": "dojo.tasks.add", "countdown": 5, "eta": "2030-01-01T00:00:00Z"}, 400, "eta"),
        ({"task_name": "dojo.tasks.add", "priority": 256}, 400, "priority"),
        ({"task_name": "dojo.tasks.add", "countdown": -1}, 400, "countdown"),
        ({"task_name": ""}, 400, "task_name"),
    ]
    for sent_body, expected, field in refusals:
        code, answer = apply(api, **sent_body)
        assert code == expected and field in answer, (sent_body, code, answer)
    refused = CeleryAuditLog.objects.filter(action="apply_task", result="refused").count()
    assert refused == len(refusals)

    client.force_login(superuser)
    page = client.get(PAGE).content.decode()
    assert '<option value="dojo.tasks.append_line">' in page and '<option value="plain.add">' in page
    assert '<option value="plain">plain</option>' in page and plain


@pytest.mark.django_db
def test_apply_needs_its_permission_and_a_post(client, settings):
    """No worker needed: the permission is checked before the task name is looked up."""
    staff = make_user("staffer", staff=True)
    client.force_login(staff)
    response = client.post(APPLY, json.dumps({"task_name": "dojo.tasks.add"}), content_type="application/json")
    assert response.status_code == 403
    assert "apply_task" in response.json()["detail"]
    page = client.get(PAGE).content.decode()
    assert 'id="apply-not-allowed"' in page and "apply-form" not in page

    granted = make_user("applier", staff=True, permissions=("apply_task",))
    client.force_login(granted)
    body = {"task_name": "dojo.tasks.add", "args": [None], "kwargs": {"x": None}}  # JSON null is an argument too
    response = client.post(APPLY, json.dumps(body), content_type="application/json")
    assert response.status_code == 404 and "task_name" in response.json(), response.json()  # valid: name looked up
    assert "apply-form" in client.get(PAGE).content.decode()
    settings.CELERY_READ_ONLY = True
    admin = make_user("root", staff=True, superuser=True)
    client.force_login(admin)
    assert client.get(APPLY).status_code == 403, "read only: refused before the method"
    settings.CELERY_READ_ONLY = False
    assert client.get(APPLY).status_code == 405
    settings.CELERY_READ_ONLY = True
    response = client.post(APPLY, json.dumps({"task_name": "dojo.tasks.add"}), content_type="application/json")
    assert response.status_code == 403 and "READ_ONLY" in response.json()["detail"]
