"""Retry, revoke and terminate from the pages: a task's page shows the buttons its state and the
user's permissions allow (none in read-only mode), and the dashboard's break down offers Revoke
per message. The browser test clicks them against a real Redis and a real worker that share the
test database (the fleet of test_controls)."""

import pytest
from django.contrib.auth.models import Permission
from django.test import Client
from django.urls import reverse
from django_celery_results.models import TaskResult

from dojo.models import TaskRevocation
from unittests.conftest import make_user, wait_for
from unittests.ops.controls.test_controls import STARTUP, append, fleet, lines, stored_state  # noqa: F401 - fleet is a fixture

DASHBOARD = reverse("celery_panel:dashboard")
BUTTONS = {"retry": 'data-control="retry"', "revoke": 'data-control="revoke"', "terminate": 'data-control="terminate"'}


def task_page(client: Client, task_id: str) -> str:
    response = client.get(reverse("celery_panel:task_detail", args=[task_id]))
    assert response.status_code == 200
    return response.content.decode()


def buttons(html: str) -> set[str]:
    return {name for name, marker in BUTTONS.items() if marker in html}


@pytest.mark.django_db
def test_a_task_page_shows_the_controls_its_state_and_the_user_allow(settings):
    for task_id, state in (("t-failed", "FAILURE"), ("t-running", "STARTED"), ("t-retrying", "RETRY")):
        TaskResult.objects.create(task_id=task_id, task_name="dojo.tasks.add", status=state, meta="{}")
    TaskResult.objects.create(task_id="t-done", task_name="dojo.tasks.add", status="SUCCESS", meta='{"backend": "b2"}')
    root, clerk = Client(), Client()
    root.force_login(make_user("root", superuser=True))
    staff = make_user("clerk", staff=True)
    staff.user_permissions.add(Permission.objects.get(codename="retry_task"))
    clerk.force_login(staff)

    assert buttons(task_page(root, "t-failed")) == {"retry"}
    assert buttons(task_page(root, "t-running")) == {"terminate"}
    assert '<td id="task-completed">-</td>' in task_page(root, "t-running"), "a running task has not completed"
    assert buttons(task_page(root, "t-retrying")) == {"revoke"}
    assert buttons(task_page(root, "t-done")) == set()
    assert buttons(task_page(clerk, "t-failed")) == {"retry"}
    assert buttons(task_page(clerk, "t-running")) == set(), "no terminate_task permission"
    assert 'data-backend="default"' in task_page(root, "t-failed")

    settings.CELERY_READ_ONLY = True
    assert buttons(task_page(root, "t-failed")) == set()
    assert "data-revoke-url" not in root.get(DASHBOARD).content.decode()


@pytest.mark.django_db(transaction=True)
def test_retry_terminate_and_revoke_from_the_pages(fleet, live_server, browser_page, tmp_path):  # noqa: F811
    """A failed task is retried from its page and succeeds; a running one is killed from its page;
    a message waiting in a queue no worker consumes is revoked from the break down."""
    make_user("root", superuser=True)
    fleet.start_worker("w1", queues="celery", **fleet.worker_env)
    page = browser_page
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.accept()))
    page.goto(live_server.url + reverse("admin:login") + "?next=" + DASHBOARD)
    page.fill("#id_username", "root")
    page.fill("#id_password", "pw-root")
    page.click("input[type=submit], button[type=submit]")
    page.locator("#celery-dashboard").wait_for()

    out = tmp_path / "out.txt"
    failed = append(fleet, out, "again")
    wait_for(lambda: stored_state(failed) == "FAILURE", STARTUP, "the first run to fail")
    out.touch()
    page.goto(live_server.url + reverse("celery_panel:task_detail", args=[failed]))
    with page.expect_navigation():
        page.locator('#task-controls button[data-control="retry"]').click()
    flash = page.locator("#task-controls li.success").inner_text()
    assert dialogs[-1].startswith(f"Retry task {failed} (dojo.tasks.append_line)?")
    retried = flash.split(" as task ")[1].split(" ")[0]
    wait_for(lambda: stored_state(retried) == "SUCCESS", STARTUP, "the retry to succeed")
    assert lines(out) == ["again"]

    client = fleet.client()
    running = client.send_task("dojo.tasks.sleep", args=(60,), queue="celery").id
    client.close()
    wait_for(lambda: stored_state(running) == "STARTED", STARTUP, "the sleep to start")
    page.goto(live_server.url + reverse("celery_panel:task_detail", args=[running]))
    with page.expect_navigation():
        page.locator('#task-controls button[data-signal="SIGKILL"]').click()
    assert page.locator("#task-controls li.success").inner_text() == f"Terminated {running}."
    wait_for(lambda: stored_state(running) == "REVOKED", 30, "the killed task to be stored as revoked")

    waiting = append(fleet, out, "never", queue="reports")
    page.goto(live_server.url + DASHBOARD)
    page.locator('tr.queue-row[data-queue="reports"] button.breakdown-toggle').click()
    revoke = page.locator(f'tr.breakdown-row:not([hidden]) button[data-task-id="{waiting}"]')
    with page.expect_navigation():
        revoke.click()
    assert page.locator("#dashboard-messages li.success").inner_text() == f"Revoked {waiting}."
    assert TaskRevocation.objects.filter(task_id=waiting, terminate=False).exists()
    assert page.console_errors == []
