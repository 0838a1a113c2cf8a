"""The tasks page and GET /api/v2/celery/tasks/ on the shared TaskFilter (dojo.ops.read_models.task_filter).

The page's URL is its filter: loaded with one, the form shows it and the list is exactly
`stored_results(filter)` newest first; its 'Bulk action on these' link previews the same count
through the bulk preview API; a bad value is the page with the field's message and status 400;
the arguments filter needs the task-data right (refused with a 400 naming args_contain, the field
not shown); old `?filter=`/`?q=` bookmarks mean the same set. The API takes every TaskFilter field
as a query parameter. Stored rows are made with the ORM in the test database; one test runs a real
worker for the live tasks (the InspectTasksBackend page and the API's live part).
"""

import re
import uuid
from datetime import UTC, datetime, timedelta
from html import unescape
from urllib.parse import parse_qsl, urlsplit

import pytest
from django.test import Client
from django.urls import reverse
from django_celery_results.models import TaskResult

from dojo.celery_panel.pages import TaskListPage, TaskRow
from dojo.ops.read_models.task_filter import FILTER_FIELDS, TaskFilter, stored_results
from unittests.conftest import LiveBroker, make_user, wait_for

PAGE = reverse("celery_panel:tasks")
API = reverse("celery_tasks")
BASE = datetime(2026, 1, 31, 12, 0, tzinfo=UTC)
SMTP = '{"exc_type": "SMTPServerDisconnected", "exc_message": ["gone"], "exc_module": "smtplib"}'
VALUE = '{"exc_type": "ValueError", "exc_message": ["bad"], "exc_module": "builtins"}'


def client_for(username: str, *, superuser: bool = False, permissions: tuple = ()) -> Client:
    client = Client()
    client.force_login(make_user(username, staff=True, superuser=superuser, permissions=permissions))
    return client


def stored(name: str, status: str, minutes: int, **fields) -> str:
    """A stored result done `minutes` before BASE; its task id."""
    row = TaskResult.objects.create(
        task_id=str(uuid.uuid4()),
        task_name=name,
        status=status,
        content_type="application/json",
        content_encoding="utf-8",
        **fields,
    )
    TaskResult.objects.filter(pk=row.pk).update(date_done=BASE - timedelta(minutes=minutes))
    return row.task_id


@pytest.fixture
def rows(db) -> dict[str, str]:
    """Results that each field tells apart."""
    return {
        "smtp": stored(
            "mail.send",
            "FAILURE",
            1,
            result=SMTP,
            worker="w1@h",
            meta='{"queue": "mail", "backend": "default"}',
            task_args="\"('alice@example.org',)\"",
        ),
        "value": stored("mail.send", "FAILURE", 2, result=VALUE, worker="w2@h", meta='{"queue": "mail"}'),
        "ok": stored("mail.send", "SUCCESS", 3, result="1", worker="w1@h", meta='{"queue": "celery"}'),
        "digest": stored("mail.digest", "SUCCESS", 30, result="2", worker="w2@h", task_kwargs="\"{'to': 'bob'}\""),
        "report": stored("reports.pdf", "RETRY", 90, worker="w1@h", meta='{"queue": "reports", "backend": "other"}'),
    }


def value_of(html: str, name: str) -> str:
    found = re.search(rf'<input type="text" name="{name}" value="([^"]*)"', html)
    assert found, name
    return unescape(found.group(1))


def listed(response) -> list[str]:
    return [task.id for task in response.context["page"].tasks]


def expected(task_filter: TaskFilter) -> list[str]:
    return list(stored_results(task_filter).order_by("-date_done", "-id").values_list("task_id", flat=True))


FILTERS = [
    {"task_name": "mail.send"},
    {"task_name_prefix": "mail."},
    {"state": "FAILURE"},
    {"exception_type": "smtplib.SMTPServerDisconnected"},
    {"exception_type": "ValueError", "task_name": "mail.send"},
    {"done_after": "2026-01-31T11:58:00Z"},
    {"done_before": "2026-01-31T11:58:30Z", "done_after": "2026-01-31T10:00:00+01:00"},
    {"queue": "mail"},
    {"worker": "w2@h"},
    {"backend": "default", "state": "SUCCESS"},
    {"args_contain": "alice@"},
    {"args_contain": "'to'"},
]


@pytest.mark.django_db
@pytest.mark.parametrize("query", FILTERS, ids=lambda query: "&".join(query))
def test_the_page_url_round_trips_and_lists_stored_results_of_its_filter(rows, query):
    task_filter = TaskFilter.from_query(query)
    root = client_for("root", superuser=True)
    response = root.get(PAGE, query)
    assert response.status_code == 200, response.content
    html = response.content.decode()
    assert listed(response) == expected(task_filter) != []
    for name, value in task_filter.to_dict().items():
        if name in ("state", "backend"):
            assert f'<option value="{value}" selected>' in html
        else:
            assert value_of(html, name) == value, name
    for name in set(FILTER_FIELDS) - set(task_filter.to_dict()) - {"state", "backend"}:
        assert value_of(html, name) == "", name
    shown = unescape(re.search(r'id="task-filter-query">([^<]*)<', html).group(1))
    assert shown == task_filter.to_query()
    # the form's values, submitted again, are the same filter: the same page
    again = root.get(f"{PAGE}?{shown}")
    assert listed(again) == listed(response)
    assert TaskFilter.from_query(dict(parse_qsl(shown))) == task_filter


@pytest.mark.django_db
def test_the_forms_empty_fields_are_left_out_of_the_url(rows):
    root = client_for("root", superuser=True)
    submitted = root.get(PAGE, {"q": "", "task_name": "", "state": "FAILURE", "queue": "mail", "args_contain": ""})
    assert submitted.status_code == 302 and submitted.url == f"{PAGE}?state=FAILURE&queue=mail"
    assert root.get(PAGE, {"q": "", "worker": ""}).url == PAGE


@pytest.mark.django_db
def test_pages_keep_the_filter_and_old_bookmarks_mean_the_same_set(db):
    ids = [stored("mail.send", "FAILURE", n, result=SMTP) for n in range(55)]
    stored("mail.send", "SUCCESS", 0)
    root = client_for("root", superuser=True)
    first = root.get(PAGE, {"state": "FAILURE", "task_name_prefix": "mail."})
    assert listed(first) == ids[:50] and first.context["page"].has_next
    html = first.content.decode()
    assert 'href="?task_name_prefix=mail.&amp;state=FAILURE&amp;page=2"' in html
    second = root.get(f"{PAGE}?task_name_prefix=mail.&state=FAILURE&page=2")
    assert listed(second) == ids[50:]

    old = root.get(PAGE, {"filter": "failure", "q": "mail."})  # a bookmark from before the filter form
    assert listed(old) == ids[:50]
    old_html = old.content.decode()
    assert value_of(old_html, "task_name_prefix") == "mail." and '<option value="FAILURE" selected>' in old_html
    assert re.search(r'<a href="\?task_name_prefix=mail\.&amp;state=FAILURE"\s+class="task-filter current"', old_html)
    assert listed(root.get(PAGE, {"q": ids[3]})) == [ids[3]], "q with a task id is still the exact id"
    assert listed(root.get(PAGE, {"q": ids[3], "state": "SUCCESS"})) == [], "and the filter applies too"

    conflict = root.get(PAGE, {"filter": "failure", "state": "SUCCESS"})
    assert conflict.status_code == 400
    assert 'data-field="filter"' in conflict.content.decode()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"state": "BOGUS"}, "state"),
        ({"state": "CRITICAL"}, "state"),
        ({"done_before": "yesterday"}, "done_before"),
        ({"done_after": "2026-13-01T00:00:00Z"}, "done_after"),
        ({"task_name": "a", "task_name_prefix": "b"}, "task_name_prefix"),
        ({"task_name": "a", "q": "mail."}, "q"),
        ({"backend": "nowhere"}, "backend"),
        ({"queue": "q" * 256}, "queue"),
        ({"worker": "w\x00"}, "worker"),
        ({"args_contain": "x" * 1001}, "args_contain"),
    ],
)
def test_a_bad_value_is_the_page_with_the_fields_message_and_400(rows, query, field):
    response = client_for("root", superuser=True).get(PAGE, query)
    assert response.status_code == 400
    html = response.content.decode()
    error = re.search(r'<p class="errornote" id="task-filter-error" data-field="([^"]+)">([^<]*)</p>', html)
    assert error and error.group(1) == field and unescape(error.group(2)).startswith(f"{field}: ")
    if field not in ("q", "filter"):
        assert f'<ul class="errorlist" data-field="{field}">' in html, "the message is next to the field too"
    assert response.context["page"] is None and 'id="tasks-table"' not in html, "nothing listed"
    assert "bulk-action-link" not in html


@pytest.mark.django_db
def test_the_bulk_link_carries_the_filter_and_previews_the_same_count(rows, settings):
    settings.CELERY_READ_ONLY = False
    root = client_for("root", superuser=True)
    for query in ({"task_name": "mail.send", "state": "FAILURE", "queue": "mail"}, {"worker": "w1@h"}, {}):
        page = root.get(PAGE, query)
        html = page.content.decode()
        href = unescape(re.search(r'<a class="button" href="([^"]+)" id="bulk-action-link"', html).group(1))
        url = urlsplit(href)
        assert url.path == reverse("celery_panel:bulk")
        assert url.query == TaskFilter.from_query(query).to_query()
        # delete_results previews stored_results(filter) itself (retry keeps the retryable states only)
        body = {"action": "delete_results", "filter": dict(parse_qsl(url.query)), "all": not url.query}
        preview = root.post(reverse("celery_bulk_preview"), body, content_type="application/json")
        assert preview.status_code == 200, preview.content
        assert preview.json()["count"] == page.context["page"].total_count == len(listed(page)), query
    by_id = root.get(PAGE, {"q": rows["ok"]}).content.decode()
    assert "bulk-action-link" not in by_id, "a task id search is no set to act on"


@pytest.mark.django_db
def test_the_arguments_filter_and_the_args_only_with_the_task_data_right(rows):
    plain = client_for("staff")
    page = plain.get(PAGE)
    html = page.content.decode()
    assert page.status_code == 200 and 'name="args_contain"' not in html and 'id="task-data-hidden"' in html
    assert "alice@example.org" not in html
    assert all(task.args is None for task in page.context["page"].tasks)
    refused = plain.get(PAGE, {"args_contain": "alice"})
    assert refused.status_code == 400
    text = refused.content.decode()
    assert 'data-field="args_contain"' in text
    assert "args_contain: filters on task data; it needs the permission to see task data." in text
    assert "alice@example.org" not in text

    reader = client_for("reader", permissions=("view_taskresult",))
    allowed = reader.get(PAGE, {"args_contain": "alice"})
    assert allowed.status_code == 200 and listed(allowed) == [rows["smtp"]]
    assert value_of(allowed.content.decode(), "args_contain") == "alice"
    assert "alice@example.org" in allowed.content.decode()


class OldStyleBackend:
    """A tasks backend written before the TaskFilter: no TASK_FILTER_FIELDS, no task_filter keyword."""

    BACKEND_DESCRIPTION = "old contract"
    DATA_SOURCE = "a list"
    DEFAULT_FILTER = None
    AVAILABLE_FILTERS = [{"value": None, "label": "All"}, {"value": "FAILURE", "label": "Failure"}]

    def __init__(self, app):
        self.app = app

    def get_tasks(self, search_query=None, page=1, per_page=50, filter_type=None):
        rows = [TaskRow(id="t-1", name="mail.send", state="FAILURE"), TaskRow(id="t-2", name="x.y", state="SUCCESS")]
        rows = [row for row in rows if filter_type in (None, row.state) and search_query in (None, row.id)]
        return TaskListPage(tasks=rows, total_count=len(rows))

    def get_task_detail(self, task_id):
        raise NotImplementedError


@pytest.mark.django_db
def test_a_backend_of_the_old_contract_keeps_working_and_refuses_filter_fields(settings):
    settings.DJ_CELERY_PANEL_SETTINGS = {"tasks_backend": f"{__name__}.OldStyleBackend"}
    root = client_for("root", superuser=True)
    assert [task.id for task in root.get(PAGE).context["page"].tasks] == ["t-1", "t-2"]
    assert listed(root.get(PAGE, {"filter": "FAILURE"})) == ["t-1"]
    assert listed(root.get(PAGE, {"q": "t-2"})) == ["t-2"]
    html = root.get(PAGE).content.decode()
    assert 'id="task-filter-fields"' not in html and "OldStyleBackend takes none of the filter" in html
    assert "bulk-action-link" not in html
    refused = root.get(PAGE, {"state": "FAILURE"})
    assert refused.status_code == 400 and 'data-field="state"' in refused.content.decode()


# --- the API ---------------------------------------------------------------------------------


@pytest.fixture
def api_client(rows, redis_only, settings) -> Client:
    """A superuser's session on a Redis broker no worker consumes: only stored results are found."""
    settings.CELERY_RESULT_BACKEND = "django-db"
    return client_for("root", superuser=True)


def found(client: Client, **query) -> list[str]:
    response = client.get(API, query)
    assert response.status_code == 200, response.content
    return [task["id"] for task in response.json()["results"]]


@pytest.mark.django_db
def test_the_api_filters_by_each_task_filter_field(api_client, rows):
    r = rows
    assert found(api_client, task_name="mail.send") == [r["smtp"], r["value"], r["ok"]]
    assert found(api_client, task_name_prefix="mail.") == [r["smtp"], r["value"], r["ok"], r["digest"]]
    assert found(api_client, exception_type="smtplib.SMTPServerDisconnected") == [r["smtp"]]
    assert found(api_client, exception_type="ValueError") == [r["value"]]
    assert found(api_client, done_after="2026-01-31T11:57:30Z") == [r["smtp"], r["value"]]
    assert found(api_client, done_before="2026-01-31T11:31:00Z") == [r["digest"], r["report"]]
    assert found(api_client, done_after="2026-01-31T11:00:00+01:00", done_before="2026-01-31T11:29:00Z") == [
        r["report"]
    ]
    assert found(api_client, queue="mail") == [r["smtp"], r["value"]]
    assert found(api_client, args_contain="alice@") == [r["smtp"]]
    assert found(api_client, args_contain="'to'") == [r["digest"]]
    # with the older parameters, all must match
    assert found(api_client, queue="mail", worker="w2@h") == [r["value"]]
    assert found(api_client, task_name_prefix="mail.", state="success") == [r["ok"], r["digest"]]
    assert found(api_client, task_name="mail.send", task_name_prefix="mail.") == [r["smtp"], r["value"], r["ok"]]
    assert found(api_client, task_name="mail.send", task_name_prefix="reports.") == []
    assert found(api_client, queue="mail", limit=1) == [r["smtp"]]
    assert found(api_client, task_name=" ", queue="") == found(api_client), "blank is absent"
    assert found(api_client, queue=" mail ") == [r["smtp"], r["value"]], "stripped, as TaskFilter does"
    refused = api_client.get(API, {"queue": "q" * 254 + "  "})
    assert refused.status_code == 400 and "queue" in refused.json(), "maxLength is of the value as sent"
    # a window end outside the years 1 to 9999 in UTC is the earliest / latest time, not a 400
    assert found(api_client, done_after="0001-01-01T00:00:00+01:00") == found(api_client)
    assert found(api_client, done_before="9999-12-31T23:59:59-01:00") == found(api_client)


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"done_after": "yesterday"}, "done_after"),
        ({"done_before": "2026-02-30T00:00:00Z"}, "done_before"),
        ({"task_name": "t" * 256}, "task_name"),
        ({"task_name_prefix": "t" * 256}, "task_name_prefix"),
        ({"exception_type": "E\x00"}, "exception_type"),
        ({"queue": "q" * 256}, "queue"),
        ({"args_contain": "a" * 1001}, "args_contain"),
    ],
)
def test_the_api_refuses_a_bad_value_with_a_400_naming_the_field(api_client, query, field):
    response = api_client.get(API, query)
    assert response.status_code == 400
    body = response.json()
    assert field in body and body["detail"] == f"Invalid input: {field}.", body


@pytest.mark.django_db
def test_the_schema_documents_the_filter_parameters_as_validated(api_client):
    schema = api_client.get("/api/v2/oa3/schema/", {"format": "json"}).json()
    parameters = {p["name"]: p["schema"] for p in schema["paths"]["/api/v2/celery/tasks/"]["get"]["parameters"]}
    assert {"task_name", "task_name_prefix", "exception_type", "done_after", "done_before", "queue"} <= set(parameters)
    for name, limit in [("task_name", 255), ("task_name_prefix", 255), ("exception_type", 255), ("queue", 255)]:
        text, blank = parameters[name]["oneOf"]  # a text without NUL of at most `limit` characters, or ""
        assert (text["maxLength"], text["pattern"], blank["maxLength"]) == (limit, "^[^\\u0000]+$", 0), name
    assert parameters["args_contain"]["oneOf"][0]["maxLength"] == 1000
    assert parameters["done_after"]["format"] == parameters["done_before"]["format"] == "date-time"
    for name in ("name", "state", "worker", "arg", "limit", "refresh", "backend"):
        assert name in parameters, "the older parameters stay"


# --- live tasks: the InspectTasksBackend page and the API's live part, with a real worker ----------


@pytest.mark.django_db
def test_live_tasks_are_filtered_by_the_fields_they_have(redis_only: LiveBroker, settings):
    settings.CELERY_STATUS_CACHE_SECONDS = 0  # every read asks the workers
    settings.CELERY_RESULT_BACKEND = "django-db"
    hostname = redis_only.start_worker("filter-live", queues="celery,slow")
    celery = redis_only.client()
    running = celery.send_task("dojo.tasks.sleep", args=(8,), queue="slow").id
    root = client_for("root", superuser=True)
    wait_for(lambda: running in found(root, state="ACTIVE"), 20, "the sleeping task on the active list")

    # the API: a live task matches the fields it has; an exception type or a done window is a stored result's
    assert running in found(root, task_name="dojo.tasks.sleep", queue="slow", args_contain="8")
    assert running in found(root, task_name_prefix="dojo.tasks.s", worker=hostname)
    assert running not in found(root, queue="celery")
    assert running not in found(root, args_contain="99")
    assert running not in found(root, task_name_prefix="dojo.tasks.a")
    assert running not in found(root, exception_type="ValueError")
    assert running not in found(root, done_after="2026-01-01T00:00:00Z")

    settings.DJ_CELERY_PANEL_SETTINGS = {"tasks_backend": "dojo.celery_panel.backends.tasks.InspectTasksBackend"}
    shown = root.get(PAGE, {"task_name_prefix": "dojo.tasks.", "queue": "slow", "worker": hostname})
    assert listed(shown) == [running]
    html = shown.content.decode()
    assert value_of(html, "queue") == "slow" and 'name="exception_type"' not in html
    applied = "Task name (exact), or its beginning, Queue, Worker, Arguments contain"
    assert f"InspectTasksBackend filters on: {applied}" in html
    assert "are the stored results' and are refused here" in html
    assert "bulk-action-link" not in html, "a bulk action is on stored results, not on these"
    assert listed(root.get(PAGE, {"filter": "active", "args_contain": "8"})) == [running]
    assert listed(root.get(PAGE, {"q": "dojo.tasks.sl"})) == [running], "q's name prefix, as before"
    assert listed(root.get(PAGE, {"queue": "celery"})) == []
    assert listed(root.get(PAGE, {"task_name": "dojo.tasks.add"})) == []
    refused = root.get(PAGE, {"state": "FAILURE"})
    assert refused.status_code == 400 and 'data-field="state"' in refused.content.decode()
    assert "InspectTasksBackend does not filter on it" in refused.content.decode()
