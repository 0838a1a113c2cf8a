"""Task arguments, results and tracebacks only for superusers and holders of
django_celery_results.view_taskresult, on every page that renders task data (issue 11, item 5).

A real worker runs a task whose arguments and result carry a marker, holds another one scheduled
(the worker's page lists it), and a third waits in a queue nobody consumes (the break down shows
its arguments). Before the rule, any staff user saw the marker on every one of these pages: this
test failed on that code.
"""

import pytest
from django.test import Client
from django.urls import reverse
from django_celery_results.models import TaskResult

from dojo.permissions import TASK_DATA_HIDDEN
from unittests.conftest import LiveBroker, make_user, wait_for

MARKER = "marker-7c1e9d"


def client_for(username: str, *, superuser: bool = False, permitted: bool = False) -> Client:
    user = make_user(username, staff=True, superuser=superuser, permissions=("view_taskresult",) if permitted else ())
    client = Client()
    client.force_login(user)
    return client


@pytest.mark.django_db(transaction=True)
def test_task_data_only_for_permitted_users(redis_only: LiveBroker, shared_database, settings):
    settings.CELERY_RESULT_BACKEND = "django-db"
    worker = redis_only.start_worker(
        "visibility", DD_DATABASE_URL=shared_database, DD_CELERY_RESULT_BACKEND="django-db"
    )
    client = redis_only.client()
    done = client.send_task("dojo.tasks.add", args=(MARKER, "-done"), queue="celery").id
    client.send_task("dojo.tasks.add", args=(MARKER, "-later"), queue="celery", countdown=300)
    client.send_task("dojo.tasks.add", args=(MARKER, "-parked"), queue="parked")
    wait_for(lambda: TaskResult.objects.filter(task_id=done, status="SUCCESS").exists(), 30, "the stored result")

    pages = {
        "tasks": reverse("celery_panel:tasks"),
        "task_detail": reverse("celery_panel:task_detail", args=[done]),
        "worker_detail": reverse("celery_panel:worker_detail", args=[worker]),
    }
    breakdown = reverse("celery_queue_breakdown")

    def seen_by(browser: Client) -> dict[str, str]:
        texts = {name: browser.get(url).content.decode() for name, url in pages.items()}
        answer = browser.get(breakdown, {"queue": "parked"})
        assert answer.status_code == 200, answer.content
        texts["breakdown"] = answer.content.decode()
        return texts

    def worker_holds_the_scheduled_task(browser: Client) -> bool:
        return "dojo.tasks.add" in browser.get(pages["worker_detail"]).content.decode()

    superuser = client_for("root", superuser=True)
    wait_for(lambda: worker_holds_the_scheduled_task(superuser), 20, "the worker's page to list the scheduled task")
    for who, browser in (("superuser", superuser), ("permitted", client_for("reader", permitted=True))):
        for name, text in seen_by(browser).items():
            assert MARKER in text, f"{who} does not see the task data on {name}"
            assert TASK_DATA_HIDDEN not in text, f"{who} is told the data is hidden on {name}"

    plain = seen_by(client_for("staff"))
    for name, text in plain.items():
        assert MARKER not in text, f"a staff user without the permission sees the task data on {name}"
    for name in pages:
        assert TASK_DATA_HIDDEN in plain[name], f"{name} does not say why the data is hidden"
    assert done in plain["tasks"] and done in plain["task_detail"]  # id, name and state stay
    assert '"arguments_hidden":true' in plain["breakdown"] and '"task":"dojo.tasks.add"' in plain["breakdown"]
