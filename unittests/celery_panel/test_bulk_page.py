"""The bulk operations page (/admin/celery/bulk/): the filter read from the URL, 400s naming the
field, the buttons only for holders of the action's permission and none in read-only mode, the
arguments-contain filter and failure reasons only with the task-data right, the audit list and an
operation's detail, the links from the failures grouped and tasks pages; and in headless Chromium
over a private Redis and a real runner worker sharing the test database: Preview, Confirm, the
progress bar to 100 % and the audit row with done = 300.
"""

import re
import uuid
from datetime import timedelta
from html import unescape

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from django_celery_results.models import TaskResult

from dojo.models import BulkOperation, BulkOperationFailure, BulkRetriedTask
from unittests.analytics_rows import failure_rollup
from unittests.conftest import LiveBroker, make_user

PAGE = reverse("celery_panel:bulk")
TASK = "mail.send"
SMTP = '{"exc_type": "SMTPServerDisconnected", "exc_message": ["gone"], "exc_module": "smtplib"}'
FILTER = {"task_name": TASK, "state": "FAILURE", "exception_type": "smtplib.SMTPServerDisconnected"}


def client_for(username: str, *, superuser: bool = False, permissions: tuple = ()) -> Client:
    client = Client()
    client.force_login(make_user(username, staff=True, superuser=superuser, permissions=permissions))
    return client


def failures(n: int, task_name: str = TASK) -> list[str]:
    """`n` stored FAILURE results of `task_name` (SMTPServerDisconnected) whose retry goes to the
    queue `mail`, which no worker of the test consumes; their task ids."""
    now = timezone.now()
    rows = [
        TaskResult(
            task_id=str(uuid.uuid4()),
            task_name=task_name,
            status="FAILURE",
            task_args='"(1,)"',
            task_kwargs='"{}"',
            result=SMTP,
            meta='{"queue": "mail"}',
            date_done=now,
        )
        for _ in range(n)
    ]
    TaskResult.objects.bulk_create(rows)
    return [row.task_id for row in rows]


def operation(**fields) -> BulkOperation:
    values = {
        "username": "alice",
        "action": "retry",
        "backend": "default",
        "filter": {"task_name": TASK, "args_contain": "secret-customer"},
        "confirmed_count": 7,
        "fingerprint": "f",
        "max_id": 1,
        "state": "done",
        "done_count": 5,
        "failed_count": 2,
        "updated_at": timezone.now(),
        **fields,
    }
    return BulkOperation.objects.create(**values)


def value_of(html: str, name: str) -> str:
    found = re.search(rf'<input type="text" name="{name}" value="([^"]*)"', html)
    assert found, name
    return unescape(found.group(1))


@pytest.mark.django_db
def test_the_filter_is_read_from_the_url_and_a_bad_value_is_a_400_naming_it(settings):
    settings.CELERY_READ_ONLY = False
    client = client_for("root", superuser=True)
    query = "task_name=mail.send&state=FAILURE&exception_type=smtplib.SMTPServerDisconnected&action=delete_results"
    query += "&done_after=2026-01-31T12:00:00Z&queue=mail&worker=w1@h&args_contain=42&include_retried=1"
    html = client.get(f"{PAGE}?{query}").content.decode()
    assert value_of(html, "task_name") == TASK
    assert value_of(html, "exception_type") == "smtplib.SMTPServerDisconnected"
    assert value_of(html, "done_after") == "2026-01-31T12:00:00+00:00"
    assert (value_of(html, "queue"), value_of(html, "worker"), value_of(html, "args_contain")) == ("mail", "w1@h", "42")
    assert value_of(html, "task_name_prefix") == "" and value_of(html, "done_before") == ""
    assert '<option value="FAILURE" selected>' in html
    assert '<input type="radio" name="action" value="delete_results" checked>' in html
    assert '<input type="radio" name="action" value="retry">' in html
    assert 'value="1" id="bulk-include-retried" checked>' in html and 'id="bulk-all">' in html
    assert '<input type="radio" name="action" value="revoke">' in html
    assert '<input type="radio" name="action" value="purge">' in html
    assert '<datalist id="queue-choices"><option value="celery">' in html, "the configured queues are offered"
    shown = re.search(r'id="bulk-url-filter">([^<]*)<', html).group(1)
    assert unescape(shown) == (
        "task_name=mail.send&state=FAILURE&exception_type=smtplib.SMTPServerDisconnected"
        "&done_after=2026-01-31T12%3A00%3A00%2B00%3A00&queue=mail&worker=w1%40h&args_contain=42"
    )
    assert 'id="bulk-preview-button"' in html and "celery_bulk.js" in html

    for bad, field in [
        ("state=BOGUS", "state"),
        ("state=CRITICAL", "state"),
        ("done_before=yesterday", "done_before"),
        ("task_name=a&task_name_prefix=b", "task_name_prefix"),
        ("action=sweep", "action"),
        ("backend=nowhere", "backend"),
        (f"queue={'q' * 256}", "queue"),
    ]:
        answer = client.get(f"{PAGE}?{bad}")
        assert answer.status_code == 400, bad
        assert answer.content.decode().startswith(f"{field}:"), (bad, answer.content)


@pytest.mark.django_db
def test_buttons_only_with_the_action_permission_and_none_read_only(settings):
    settings.CELERY_READ_ONLY = False
    viewer = client_for("viewer").get(PAGE).content.decode()
    assert 'id="bulk-preview-button"' not in viewer and "celery_bulk.js" not in viewer
    assert 'id="no-permission-note"' in viewer
    assert 'name="args_contain"' not in viewer, "the arguments filter needs the task-data right"
    assert client_for("nosy").get(f"{PAGE}?args_contain=secret").status_code == 400

    retrier = client_for("retrier", permissions=("retry_task",)).get(PAGE).content.decode()
    assert 'id="bulk-preview-button"' in retrier
    assert re.search(r'value="delete_results">[^<]*<span class="bulk-note">\(not yours\)', retrier)
    assert not re.search(r'value="retry"[^>]*>[^<]*<span class="bulk-note">', retrier)

    settings.CELERY_READ_ONLY = True
    root = client_for("root", superuser=True).get(PAGE).content.decode()
    assert 'id="read-only-note"' in root
    assert 'id="bulk-preview-button"' not in root and "celery_bulk.js" not in root


@pytest.mark.django_db
def test_the_audit_list_and_an_operation_detail_hide_task_data_without_the_right():
    op = operation()
    BulkOperationFailure.objects.create(operation=op, task_id="t-1", reason="ConnectionError: secret-customer gone")
    other = operation(action="delete_results", filter={}, state="cancelled", cancel_requested=True, done_count=1)
    running = operation(state="running", filter={})

    viewer = client_for("viewer")
    html = viewer.get(PAGE).content.decode()
    rows = re.findall(r'<tr class="bulk-operation" data-operation-id="(\d+)"', html)
    assert rows == [str(running.pk), str(other.pk), str(op.pk)], "newest first"
    assert re.findall(r'data-operation-id="(\d+)" data-active>', html) == [str(running.pk)], "followed after a reload"
    first = html.split(f'data-operation-id="{op.pk}"')[1].split("</tr>")[0]
    assert "alice" in first and "Retry" in first
    assert re.search(r'class="confirmed">7<.*class="done">5<.*class="failed">2<.*class="cancelled">no<', first, re.S)
    assert "secret-customer" not in html and "args_contain=hidden: needs the task-data permission" in html
    assert re.search(r'class="cancelled">yes<', html.split(f'data-operation-id="{other.pk}"')[1])
    assert f'href="{reverse("celery_panel:bulk_operation", args=[op.pk])}"' in html

    detail = viewer.get(reverse("celery_panel:bulk_operation", args=[op.pk])).content.decode()
    assert 'id="op-done">5<' in detail and "t-1" in detail
    assert "secret-customer" not in detail and "hidden: needs the task-data permission" in detail
    shown = client_for("root", superuser=True).get(reverse("celery_panel:bulk_operation", args=[op.pk]))
    assert "ConnectionError: secret-customer gone" in shown.content.decode()
    for missing in ("999999", "abc", "0", "9" * 30):
        assert viewer.get(reverse("celery_panel:bulk_operation", args=[missing])).status_code == 404


@pytest.mark.django_db
def test_retry_these_from_the_failures_grouped_page_and_bulk_action_from_the_tasks_page(settings):
    settings.CELERY_READ_ONLY = False
    start = timezone.now().replace(second=0, microsecond=0) - timedelta(minutes=5)
    failure_rollup(
        bucket_start=start,
        backend="default",
        task_name=TASK,
        exception_type="smtplib.SMTPServerDisconnected",
        count=4,
        first_seen=start,
        last_seen=start + timedelta(seconds=30),
        latest_task_id="t-9",
    )
    url = reverse("celery_panel:analytics_failures")
    expected = f"{PAGE}?task_name=mail.send&amp;state=FAILURE&amp;exception_type=smtplib.SMTPServerDisconnected"
    expected += "&amp;action=retry"
    retrier, viewer = client_for("retrier", permissions=("retry_task",)), client_for("viewer")
    html = retrier.get(url).content.decode()
    assert f'<a href="{expected}" class="bulk-retry-link"' in html
    assert "bulk-retry-link" not in viewer.get(url).content.decode()
    followed = retrier.get(unescape(expected)).content.decode()
    assert value_of(followed, "task_name") == TASK and '<option value="FAILURE" selected>' in followed

    tasks = reverse("celery_panel:tasks")
    page = retrier.get(tasks, {"filter": "failure", "q": "mail."}).content.decode()
    assert f'href="{PAGE}?task_name_prefix=mail.&amp;state=FAILURE" id="bulk-action-link"' in page
    assert f'href="{PAGE}" id="bulk-action-link"' in retrier.get(tasks).content.decode()
    by_id = retrier.get(tasks, {"q": str(uuid.uuid4())}).content.decode()
    assert "bulk-action-link" not in by_id, "a task id search is no set to act on"
    assert "bulk-action-link" not in viewer.get(tasks).content.decode()
    settings.CELERY_READ_ONLY = True
    assert "bulk-action-link" not in retrier.get(tasks).content.decode()
    assert "bulk-retry-link" not in retrier.get(url).content.decode()


@pytest.fixture
def runner(redis_only: LiveBroker, shared_database: str, settings) -> LiveBroker:
    """Redis and a worker consuming only the runner's queue `bulk`, sharing the test database."""
    settings.CELERY_RESULT_BACKEND = "django-db"
    settings.CELERY_READ_ONLY = False
    settings.BULK_QUEUE = "bulk"
    settings.BULK_GROWTH_PERCENT = 0
    redis_only.start_worker(
        "runner",
        queues="bulk",
        DD_DATABASE_URL=shared_database,
        DD_CELERY_RESULT_BACKEND="django-db",
        DD_BULK_QUEUE="bulk",
        DD_BULK_BATCH_SIZE="50",
        DD_BULK_BATCH_PAUSE_SECONDS="0.2",
    )
    return redis_only


def test_browser_previews_confirms_watches_progress_to_100_and_opens_the_audit_row(
    runner, live_server, browser_page, tmp_path
):
    ids = failures(299)
    failures(5, task_name="mail.other")
    make_user("root", superuser=True)
    page = browser_page
    query = "task_name=mail.send&state=FAILURE&exception_type=smtplib.SMTPServerDisconnected&action=retry"
    page.goto(live_server.url + reverse("admin:login") + "?next=" + PAGE.replace("/", "%2F"))
    page.fill("#id_username", "root")
    page.fill("#id_password", "pw-root")
    page.click("input[type=submit], button[type=submit]")
    page.goto(f"{live_server.url}{PAGE}")
    page.click("#bulk-preview-button")  # an empty filter is not "everything" without the box
    page.wait_for_selector("#bulk-messages li.error")
    assert page.text_content("#bulk-messages li.error") == (
        'Preview refused: all: The filter narrows nothing: say "all": true to act on all.'
    )
    page.check("#bulk-all")
    page.click("#bulk-preview-button")
    page.wait_for_selector("#bulk-preview:not([hidden])")
    assert (page.text_content("#bulk-preview-count"), page.text_content("#bulk-preview-filter")) == (
        "304",
        "all (no condition)",
    )
    page.goto(f"{live_server.url}{PAGE}?{query}")
    assert page.input_value("input[name=task_name]") == TASK
    page.click("#bulk-preview-button")
    page.wait_for_selector("#bulk-preview:not([hidden])")
    assert page.text_content("#bulk-preview-count") == "299"
    assert page.text_content("#bulk-preview-filter") == (
        "task_name=mail.send · state=FAILURE · exception_type=smtplib.SMTPServerDisconnected"
    )
    assert page.locator("#bulk-sample tbody tr").count() == 20
    assert page.url.endswith("?" + query), "the filter stays in the URL"
    page.click("#bulk-continue")
    assert page.text_content("#bulk-confirm-text") == (
        "Retry 299 stored result(s) matching "
        "task_name=mail.send · state=FAILURE · exception_type=smtplib.SMTPServerDisconnected?"
    )
    ids += failures(1)  # the set grew after the preview: refused with a new preview, asked again
    page.click("#bulk-confirm-button")
    page.wait_for_function("document.getElementById('bulk-preview-count').textContent === '300'")
    assert page.text_content("#bulk-confirm-text").startswith("The set changed since the preview (")
    assert page.text_content("#bulk-confirm-text").endswith(
        "Here is the new one: Retry 300 stored result(s) matching "
        "task_name=mail.send · state=FAILURE · exception_type=smtplib.SMTPServerDisconnected?"
    )
    assert not BulkOperation.objects.exists()
    page.click("#bulk-confirm-button")
    page.wait_for_selector("#bulk-progress:not([hidden])")
    page.wait_for_function("document.getElementById('bulk-progress-state').textContent === 'done'", timeout=60_000)
    assert page.get_attribute("#bulk-progress-bar", "aria-valuenow") == "100"
    assert page.eval_on_selector("#bulk-progress-bar > div", "bar => bar.style.width") == "100%"
    assert (page.text_content("#bulk-progress-done"), page.text_content("#bulk-progress-total")) == ("300", "300")
    assert page.text_content("#bulk-progress-left") == "0" and page.text_content("#bulk-progress-percent") == "100"
    page.screenshot(path=str(tmp_path / "bulk-progress.png"), full_page=True)

    page.reload()
    row = page.locator("tr.bulk-operation").first
    assert row.locator("td.done").text_content() == "300" and row.locator("td.confirmed").text_content() == "300"
    row.locator("a").first.click()
    page.wait_for_selector("#bulk-operation")
    assert (page.text_content("#op-done"), page.text_content("#op-failed")) == ("300", "0")
    assert page.text_content("#op-state").strip() == "done"
    # Chromium logs the refused calls (the 400 and the 409 asked for); nothing else went wrong.
    refused = "Failed to load resource: the server responded with a status of "
    assert page.console_errors == [refused + "400 (Bad Request)", refused + "409 (Conflict)"]
    done = BulkOperation.objects.get()
    assert (done.done_count, done.state) == (300, "done")
    sent = BulkRetriedTask.objects.filter(operation=done, state="sent").values_list("task_id", flat=True)
    assert set(sent) == set(ids), "each of the 300 retried once"
    assert TaskResult.objects.filter(task_name="mail.other").count() == 5
