"""The panel's Tasks pages: list, filters, search, pages, capped count, detail and both tasks backends.

Two kinds of data:
- rows made with the ORM in the test database, for what depends only on the stored columns (filters,
  search, pages, the capped count);
- results stored by a real `celery -A dojo worker` with the django-db result backend, for what a real
  run stores (result, exception with traceback, retry, argsrepr, worker). The worker is another process
  and cannot see pytest-django's in-memory SQLite test database, so the test (transaction=True: rows are
  committed) copies the migrated test database to a file with `VACUUM INTO`, points the worker's
  DD_DATABASE_URL at that file, and copies the rows the worker stored back into the test database with
  `ATTACH ... INSERT ... SELECT *` (same schema, columns verbatim). The pages then read them through the
  ORM like any stored result. This works with the suite's default SQLite and needs no PostgreSQL.

This module also defines a task that retries (`unittests.panel.flaky`); the worker imports it through
CELERY_WORKER_INCLUDE (celery's `worker --include`, read from the environment).
"""

import json
import sqlite3
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from celery import shared_task
from django.db import connection
from django.urls import reverse
from django_celery_results.models import TaskResult

from dojo.celery_panel.backends import tasks as tasks_backends
from unittests.conftest import make_user, wait_for

FLAKY_TIME_LIMIT = 120
FLAKY_SOFT_TIME_LIMIT = 100


@shared_task(
    name="unittests.panel.flaky",
    bind=True,
    max_retries=3,
    time_limit=FLAKY_TIME_LIMIT,
    soft_time_limit=FLAKY_SOFT_TIME_LIMIT,
)
def flaky(self, marker: str) -> None:
    """Always asks to be retried, in 60 s: its stored state stays RETRY while the test reads it."""
    raise self.retry(exc=ValueError(f"flaky {marker}"), countdown=60)


TASKS_URL = "/admin/celery/tasks/"
BASE = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)


def stored(
    task_id: str | None = None, *, name: str = "dojo.tasks.add", status: str = "SUCCESS", **fields
) -> TaskResult:
    """A TaskResult row as django-celery-results writes it (JSON text columns); the given dates are kept."""
    dates = {"date_done": fields.pop("date_done", BASE), "date_created": fields.pop("date_created", BASE)}
    row = TaskResult.objects.create(
        task_id=task_id or str(uuid.uuid4()),
        task_name=name,
        status=status,
        content_type="application/json",
        content_encoding="utf-8",
        **fields,
    )
    TaskResult.objects.filter(pk=row.pk).update(**dates)  # auto_now(_add) overwrote them
    return row


@pytest.fixture
def staff_client(client, db):
    """A staff user who may see task data (the rule itself: test_task_data_visibility.py)."""
    client.force_login(make_user("staff", staff=True, permissions=("view_taskresult",)))
    return client


def page_ids(response) -> list[str]:
    """Task ids of the table's rows, in order."""
    return [task.id for task in response.context["page"].tasks]


# --- access ----------------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("who", ["anonymous", "non-staff"])
def test_pages_are_refused_to_anonymous_and_non_staff(client, who):
    row = stored()
    if who == "non-staff":
        client.force_login(make_user("plain"))
    for url in (TASKS_URL, reverse("celery_panel:task_detail", args=[row.task_id])):
        response = client.get(url)
        assert response.status_code == 302
        assert response.url.startswith("/admin/login/")


@pytest.mark.django_db
def test_list_and_detail_render_for_staff_with_the_backend_line(staff_client):
    row = stored()
    page = staff_client.get(TASKS_URL)
    assert page.status_code == 200
    text = page.content.decode()
    assert "Served by <code>DjangoCeleryResultsTasksBackend</code>" in text
    assert "Database (django_celery_results.TaskResult)" in text
    assert row.task_id in text
    assert 'placeholder="Exact task id, or the start of a task name (prefix match)"' in text
    detail = staff_client.get(reverse("celery_panel:task_detail", args=[row.task_id]))
    assert detail.status_code == 200
    assert "Served by <code>DjangoCeleryResultsTasksBackend</code>" in detail.content.decode()


@pytest.mark.django_db
def test_unknown_task_id_is_a_404_page(staff_client):
    response = staff_client.get(reverse("celery_panel:task_detail", args=[str(uuid.uuid4())]))
    assert response.status_code == 404


# --- list: row fields, filters, search, pages, capped count -----------------------------------------


@pytest.mark.django_db
def test_row_shows_every_field(staff_client):
    task_id = str(uuid.uuid4())
    stored(
        task_id,
        task_args='"(20, 22)"',
        task_kwargs="\"{'scale': 2}\"",
        result="42",
        worker="celery1@box",
        date_created=BASE - timedelta(seconds=10),
        date_started=BASE - timedelta(seconds=4),
        date_done=BASE - timedelta(seconds=1.5),
    )
    response = staff_client.get(TASKS_URL)
    (row,) = response.context["page"].tasks
    assert (row.id, row.name, row.state, row.worker) == (task_id, "dojo.tasks.add", "SUCCESS", "celery1@box")
    assert row.args == (20, 22) and row.kwargs == {"scale": 2} and row.result == 42
    assert row.duration == 2.5
    assert row.queue is None  # no queue in the stored meta
    text = response.content.decode()
    for shown in (
        "(20, 22)",
        "{&#x27;scale&#x27;: 2}",
        "<code>42</code>",
        "2025-01-01 11:59:50",
        "2025-01-01 11:59:56",
        "2025-01-01 11:59:58",
        "2.500 s",
        "celery1@box",
        "state-SUCCESS",
    ):
        assert shown in text, shown


@pytest.mark.django_db
def test_every_state_filter_shows_only_its_state(staff_client):
    by_state = {state: stored(status=state).task_id for state in tasks_backends.STATE_FILTERS.values()}
    everything = page_ids(staff_client.get(TASKS_URL))
    assert sorted(everything) == sorted(by_state.values())
    labels = [choice["label"] for choice in tasks_backends.DjangoCeleryResultsTasksBackend.AVAILABLE_FILTERS]
    assert labels == ["All", "Pending", "Started", "Success", "Failure", "Retry", "Revoked"]
    for value, state in tasks_backends.STATE_FILTERS.items():
        response = staff_client.get(TASKS_URL, {"filter": value})
        assert page_ids(response) == [by_state[state]], value
        assert 'aria-current="page"' in response.content.decode()


@pytest.mark.django_db
def test_search_by_exact_id_and_by_name_prefix(staff_client):
    wanted = stored(name="dojo.reports.generate_pdf", date_done=BASE)
    csv = stored(name="dojo.reports.generate_csv", date_done=BASE - timedelta(seconds=1))
    other = stored(name="dojo.tasks.add", status="FAILURE")

    assert page_ids(staff_client.get(TASKS_URL, {"q": wanted.task_id})) == [wanted.task_id]
    assert page_ids(staff_client.get(TASKS_URL, {"q": wanted.task_id.upper()})) == []  # ids are exact
    assert page_ids(staff_client.get(TASKS_URL, {"q": "dojo.reports."})) == [wanted.task_id, csv.task_id]
    assert page_ids(staff_client.get(TASKS_URL, {"q": "dojo.reports.generate_c"})) == [csv.task_id]
    assert page_ids(staff_client.get(TASKS_URL, {"q": "reports"})) == []  # a prefix, not a substring
    # search and filter combine
    assert page_ids(staff_client.get(TASKS_URL, {"q": "dojo.", "filter": "failure"})) == [other.task_id]


@pytest.mark.django_db
def test_pages_are_newest_first_with_next_and_previous(staff_client):
    ids = [stored(date_done=BASE - timedelta(minutes=n)).task_id for n in range(60)]  # ids[0] is newest
    first = staff_client.get(TASKS_URL)
    assert page_ids(first) == ids[:50]
    assert first.context["page"].has_next
    assert "?page=2" in first.content.decode()
    second = staff_client.get(TASKS_URL, {"page": 2})
    page = second.context["page"]
    assert page_ids(second) == ids[50:]
    assert (page.page, page.has_next, page.total_count, page.total_is_capped) == (2, False, 60, False)
    text = second.content.decode()
    assert "?page=1" in text and "?page=3" not in text
    assert "<strong>60</strong> tasks" in text


@pytest.mark.django_db
def test_count_stops_at_the_cap(staff_client, monkeypatch):
    monkeypatch.setattr(tasks_backends, "COUNT_CAP", 5)
    for n in range(60):
        stored(date_done=BASE - timedelta(seconds=n))
    response = staff_client.get(TASKS_URL)
    page = response.context["page"]
    assert (page.total_count, page.total_is_capped, page.has_next) == (5, True, True)
    text = response.content.decode()
    assert "<strong>5+</strong> tasks" in text and "more than 5 match" in text

    monkeypatch.setattr(tasks_backends, "COUNT_CAP", 10_000)
    bigger = staff_client.get(TASKS_URL, {"page": 2}).content.decode()
    assert "<strong>60</strong> tasks" in bigger
    monkeypatch.setattr(tasks_backends, "COUNT_CAP", 20)
    capped = staff_client.get(TASKS_URL, {"page": 2}).content.decode()
    assert "<strong>20+</strong> tasks" in capped


@pytest.mark.django_db
def test_large_cap_is_written_with_separators(staff_client, monkeypatch):
    monkeypatch.setattr(tasks_backends, "COUNT_CAP", 10_000)
    TaskResult.objects.bulk_create(
        TaskResult(task_id=str(uuid.uuid4()), task_name="dojo.tasks.add", status="SUCCESS") for _ in range(10_001)
    )
    text = staff_client.get(TASKS_URL).content.decode()
    assert "<strong>10,000+</strong> tasks" in text
    assert "more than 10,000 match" in text


# --- real results from a real worker ----------------------------------------------------------------


def worker_database(tmp_path: Path) -> Path:
    """A file copy of the (migrated, committed) test database for the worker to write to."""
    path = tmp_path / "worker-results.sqlite3"
    with connection.cursor() as cursor:
        cursor.execute("VACUUM INTO %s", [str(path)])
    return path


def stored_states(path: Path) -> dict[str, str]:
    with sqlite3.connect(path) as db:
        return dict(db.execute("SELECT task_id, status FROM django_celery_results_taskresult").fetchall())


def copy_results_from(path: Path) -> None:
    with connection.cursor() as cursor:
        cursor.execute("ATTACH DATABASE %s AS worker_db", [str(path)])
        try:
            cursor.execute(
                "INSERT INTO django_celery_results_taskresult SELECT * FROM worker_db.django_celery_results_taskresult"
            )
        finally:
            cursor.execute("DETACH DATABASE worker_db")


@pytest.mark.django_db(transaction=True)
def test_real_results_of_a_real_worker(redis_only, staff_client, settings, tmp_path):
    if connection.vendor != "sqlite":
        pytest.skip("copies the results through a SQLite file")
    database = worker_database(tmp_path)
    hostname = redis_only.start_worker(
        "panel-results",
        DD_CELERY_RESULT_BACKEND="django-db",
        DD_DATABASE_URL=f"sqlite:///{database}",
        CELERY_WORKER_INCLUDE="unittests.celery_panel.test_panel_tasks",
    )
    celery = redis_only.client()
    success = celery.send_task("dojo.tasks.add", args=(20,), kwargs={"y": 22}).id
    failure = celery.send_task("dojo.tasks.add", args=(1, "x")).id
    retry = celery.send_task("unittests.panel.flaky", args=("m1",)).id
    wanted = {success: "SUCCESS", failure: "FAILURE", retry: "RETRY"}
    wait_for(lambda: stored_states(database) == wanted, 30, f"stored states {wanted}")
    copy_results_from(database)
    # django-celery-results stores request.meta, where dojo.worker.signals.remember_queue puts the queue, the
    # backend and the publish options (Redis delivers priority 0 when none was given).
    stored_meta = json.loads(TaskResult.objects.get(task_id=success).meta)
    assert stored_meta == {"queue": "celery", "backend": "default", "options": {"priority": 0}, "children": []}

    listing = staff_client.get(TASKS_URL)
    rows = {task.id: task for task in listing.context["page"].tasks}
    assert set(rows) == set(wanted)
    assert rows[success].worker == hostname and rows[success].result == 42
    assert rows[success].args == (20,) and rows[success].kwargs == {"y": 22}
    assert rows[success].date_started <= rows[success].date_done and rows[success].duration >= 0
    assert page_ids(staff_client.get(TASKS_URL, {"filter": "retry"})) == [retry]
    assert page_ids(staff_client.get(TASKS_URL, {"q": "unittests.panel"})) == [retry]
    assert page_ids(staff_client.get(TASKS_URL, {"q": failure})) == [failure]

    ok = staff_client.get(reverse("celery_panel:task_detail", args=[success]))
    text = ok.content.decode()
    assert '<span id="task-state" class="state state-SUCCESS">SUCCESS</span>' in text
    assert '<pre class="payload" id="task-args">[\n  20\n]</pre>' in text
    assert '<pre class="payload" id="task-kwargs">{\n  &quot;y&quot;: 22\n}</pre>' in text
    assert '<pre class="payload" id="task-result">42</pre>' in text
    assert f'<td id="task-worker">{hostname}</td>' in text
    assert '<td id="task-queue">celery</td>' in text
    assert rows[success].queue == "celery"
    stored_row = TaskResult.objects.get(task_id=success)
    assert stored_row.date_done.strftime("%Y-%m-%d %H:%M:%S") in text
    assert f"hard: {settings.CELERY_TASK_TIME_LIMIT} s" in text
    assert "none set (the configured limits apply)" in text

    failed = staff_client.get(reverse("celery_panel:task_detail", args=[failure])).content.decode()
    assert "state-FAILURE" in failed and "<h2>Exception</h2>" in failed
    assert "&quot;exc_type&quot;: &quot;TypeError&quot;" in failed
    traceback = TaskResult.objects.get(task_id=failure).traceback
    assert traceback.startswith("Traceback (most recent call last)")
    assert "unsupported operand type(s) for +" in traceback
    assert '<pre class="payload" id="task-traceback">Traceback (most recent call last)' in failed
    assert "unsupported operand type(s) for +: &#x27;int&#x27; and &#x27;str&#x27;" in failed

    retried = staff_client.get(reverse("celery_panel:task_detail", args=[retry])).content.decode()
    assert "state-RETRY" in retried and "ValueError" in retried and "flaky m1" in retried
    assert f"hard: {FLAKY_TIME_LIMIT} · soft: {FLAKY_SOFT_TIME_LIMIT}" in retried
    assert '<td id="task-retries">not recorded</td>' in retried


# --- the live backend ----------------------------------------------------------------------------


@pytest.mark.django_db
def test_inspect_backend_shows_a_live_active_task(redis_only, staff_client, settings):
    settings.DJ_CELERY_PANEL_SETTINGS = {"tasks_backend": "dojo.celery_panel.backends.tasks.InspectTasksBackend"}
    settings.CELERY_STATUS_CACHE_SECONDS = 0  # every page asks the workers
    hostname = redis_only.start_worker("panel-live")
    running = redis_only.client().send_task("dojo.tasks.sleep", args=(6,)).id

    def listed() -> bool:
        return running in page_ids(staff_client.get(TASKS_URL, {"filter": "active"}))

    wait_for(listed, 15, "the sleeping task on the active list")
    response = staff_client.get(TASKS_URL)
    text = response.content.decode()
    assert "Served by <code>InspectTasksBackend</code>" in text
    assert "Celery workers via the dojo_status broadcast" in text
    (row,) = response.context["page"].tasks
    assert (row.id, row.name, row.state, row.worker, row.queue) == (
        running,
        "dojo.tasks.sleep",
        "ACTIVE",
        hostname,
        "celery",
    )
    assert row.args == [6] or row.args == (6,)
    assert [choice["label"] for choice in response.context["filters"]] == ["All", "Active", "Reserved", "Scheduled"]
    assert page_ids(staff_client.get(TASKS_URL, {"filter": "reserved"})) == []
    assert page_ids(staff_client.get(TASKS_URL, {"q": "dojo.tasks.sl"})) == [running]
    assert page_ids(staff_client.get(TASKS_URL, {"q": running})) == [running]
    assert page_ids(staff_client.get(TASKS_URL, {"q": "dojo.tasks.add"})) == []

    detail = staff_client.get(reverse("celery_panel:task_detail", args=[running]))
    assert detail.status_code == 200
    detail_text = detail.content.decode()
    assert "state-ACTIVE" in detail_text and hostname in detail_text
    assert '<pre class="payload" id="task-args">[\n  6\n]</pre>' in detail_text
    assert staff_client.get(reverse("celery_panel:task_detail", args=[str(uuid.uuid4())])).status_code == 404
