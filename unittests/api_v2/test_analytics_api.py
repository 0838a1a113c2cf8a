"""The task analytics API (dojo.api_v2.analytics): values from rollup rows written here, the 400s
naming the field, the 404 of an unknown task name, the task-data rule, the 503 of a database
error and the four operations in the schema."""

from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.urls import reverse
from django_celery_results.models import TaskResult
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from dojo.models import TaskRollup
from dojo.ops import histograms
from unittests.analytics_rows import failure_rollup, task_rollup
from unittests.conftest import make_user

TASKS = reverse("celery_analytics_tasks")
TASK = reverse("celery_analytics_task")
FAILURES = reverse("celery_analytics_failures")
THROUGHPUT = reverse("celery_analytics_throughput")
MINUTE = TaskRollup.Period.MINUTE


def client_of(user) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    return client


@pytest.fixture
def rows(db) -> datetime:
    """Minute rows (and their hour rows) of the current minute: "mail" 9 ok + 1 failed of 0.3 s, "report" 2 ok of 7 s;
    a ValueError group of "mail" with its text; a stored result of "mail" that took 4 s."""
    minute = datetime.now(UTC).replace(second=0, microsecond=0)
    for name, ok, failed, runtime in (("mail", 9, 1, 0.3), ("report", 2, 0, 7.0)):
        buckets = histograms.empty()
        buckets[histograms.bucket_of(runtime)] = ok + failed
        task_rollup(
            bucket_start=minute,
            backend="default",
            task_name=name,
            queue="celery",
            succeeded=ok,
            failed=failed,
            retried=1,
            runtime_sum=runtime * (ok + failed),
            runtime_buckets=buckets,
            wait_buckets=buckets,
        )
    failure_rollup(
        bucket_start=minute,
        backend="default",
        task_name="mail",
        exception_type="ValueError",
        count=1,
        first_seen=minute,
        last_seen=minute,
        latest_task_id="t-failed",
        latest_exception="ValueError('bad address')",
        latest_traceback="Traceback ...\nValueError: bad address",
    )
    TaskResult.objects.create(task_id="t-slow", task_name="mail", status="SUCCESS", worker="w1@h")
    done = datetime.now(UTC)
    TaskResult.objects.filter(task_id="t-slow").update(date_done=done, date_started=done - timedelta(seconds=4))
    return minute


def test_the_table_with_its_values_and_sorts(api, rows):
    document = api.get(TASKS, {"window": "1h"}).json()
    assert (document["window"], document["point_seconds"], document["backend"], document["sort"]) == (
        "1h",
        60,
        "default",
        "-runs",
    )
    assert len(document["points"]) == 60
    mail, report = document["rows"]
    assert (mail["task_name"], mail["runs"], mail["failed"]) == ("mail", 10, 1)
    assert mail["failure_percent"] == pytest.approx(10.0) and mail["retry_percent"] == pytest.approx(10.0)
    assert 0.25 < mail["runtime_p50"] <= 0.5 and 5.0 < report["runtime_p95"] <= 10.0
    assert mail["time_share_percent"] == pytest.approx(3.0 / 17.0 * 100)
    assert sum(mail["runs_series"]) == 10 and len(mail["p95_series"]) == 60
    assert [row["task_name"] for row in api.get(TASKS, {"window": "1h", "sort": "-runtime_p95"}).json()["rows"]] == [
        "report",
        "mail",
    ]
    assert api.get(TASKS).json()["window"] == "24h"  # the default


def test_the_detail_with_series_failures_and_slowest(api, rows):
    document = api.get(TASK, {"task_name": "mail", "window": "1h"}).json()
    assert document["stats"]["runs"] == 10 and document["task_data_hidden"] is False
    assert sum(point["succeeded"] for point in document["series"]) == 9 and len(document["series"]) == 60
    assert document["failures"] == [
        {
            "task_name": "mail",
            "exception_type": "ValueError",
            "count": 1,
            "first_seen": document["failures"][0]["first_seen"],
            "last_seen": document["failures"][0]["last_seen"],
            "latest_task_id": "t-failed",
            "latest_exception": "ValueError('bad address')",
            "latest_traceback": "Traceback ...\nValueError: bad address",
        }
    ]
    assert [(run["task_id"], run["runtime"], run["state"]) for run in document["slowest"]] == [
        ("t-slow", pytest.approx(4.0), "SUCCESS")
    ]
    missing = api.get(TASK, {"task_name": "nobody"})
    assert missing.status_code == 404 and "nobody" in missing.json()["detail"]


def test_failures_and_throughput(api, rows):
    groups = api.get(FAILURES, {"window": "1h"}).json()
    assert [(g["task_name"], g["exception_type"], g["count"]) for g in groups["groups"]] == [("mail", "ValueError", 1)]
    assert groups["task_name"] == "" and groups["limit"] == 200
    assert api.get(FAILURES, {"task_name": "report"}).json()["groups"] == []
    assert api.get(FAILURES, {"task_name": "mail", "window": "7d"}).json()["groups"][0]["count"] == 1  # hour rows
    points = api.get(THROUGHPUT, {"minutes": 3}).json()
    assert points["minutes"] == 3 and len(points["points"]) == 3
    assert [(p["succeeded"], p["failed"]) for p in points["points"]][-1] in ((11, 1), (0, 0))  # minute turned?
    assert sum(p["succeeded"] for p in points["points"]) == 11
    assert len(api.get(THROUGHPUT).json()["points"]) == 60


@pytest.mark.parametrize(
    ("url", "params", "field"),
    [
        (TASKS, {"window": "2h"}, "window"),
        (TASKS, {"sort": "bogus"}, "sort"),
        (TASKS, {"sort": "--runs"}, "sort"),
        (TASKS, {"backend": "nope"}, "backend"),
        (TASK, {}, "task_name"),
        (TASK, {"task_name": ""}, "task_name"),
        (TASK, {"task_name": "x" * 256}, "task_name"),
        (TASK, {"task_name": "a\x00b"}, "task_name"),
        (TASK, {"task_name": "mail", "window": "1y"}, "window"),
        (FAILURES, {"window": ""}, "window"),
        (FAILURES, {"task_name": "x" * 256}, "task_name"),
        (THROUGHPUT, {"minutes": 0}, "minutes"),
        (THROUGHPUT, {"minutes": 1441}, "minutes"),
        (THROUGHPUT, {"minutes": "ten"}, "minutes"),
        (THROUGHPUT, {"minutes": ""}, "minutes"),
    ],
)
def test_bad_input_is_a_400_naming_the_field(api, url, params, field):
    response = api.get(url, params)
    assert response.status_code == 400, response.content
    assert field in response.json() and field in response.json()["detail"]


def test_task_data_only_for_users_who_may_see_it(rows):
    """A staff user without django_celery_results.view_taskresult gets the ids, not the texts."""
    plain_staff = client_of(make_user("staff", staff=True))
    trusted = client_of(make_user("trusted", staff=True, permissions=("view_taskresult",)))
    hidden = plain_staff.get(TASK, {"task_name": "mail", "window": "1h"}).json()
    assert hidden["task_data_hidden"] is True
    assert (hidden["failures"][0]["latest_exception"], hidden["failures"][0]["latest_traceback"]) == ("", "")
    assert hidden["failures"][0]["latest_task_id"] == "t-failed" and hidden["slowest"][0]["task_id"] == "t-slow"
    groups = plain_staff.get(FAILURES).json()
    assert groups["task_data_hidden"] is True and groups["groups"][0]["latest_exception"] == ""
    shown = trusted.get(FAILURES).json()
    assert shown["task_data_hidden"] is False and "bad address" in shown["groups"][0]["latest_traceback"]
    assert "bad address" in trusted.get(TASK, {"task_name": "mail"}).json()["failures"][0]["latest_exception"]
    assert plain_staff.get(TASKS).status_code == 200 and plain_staff.get(THROUGHPUT).status_code == 200
    nobody = client_of(make_user("plain"))
    assert {nobody.get(url).status_code for url in (TASKS, FAILURES, THROUGHPUT)} == {403}
    assert APIClient().get(TASKS).status_code == 401


def test_a_database_error_is_the_503(api, rows):
    """A real database error: the rollup table dropped inside the test's transaction (rolled back after)."""
    with connection.cursor() as cursor:
        cursor.execute(f"DROP TABLE {TaskRollup._meta.db_table}")
    for url, params in ((TASKS, {}), (TASK, {"task_name": "mail"}), (THROUGHPUT, {})):
        response = api.get(url, params)
        assert response.status_code == 503, (url, response.content)
        assert "database" in response.json()["detail"]


def test_the_schema_lists_the_four_operations(api):
    schema = api.get(reverse("schema_oa3"), {"format": "json"}).json()
    for path, parameters in (
        ("/api/v2/celery/analytics/tasks/", {"window", "sort", "backend"}),
        ("/api/v2/celery/analytics/task/", {"task_name", "window", "backend"}),
        ("/api/v2/celery/analytics/failures/", {"window", "task_name", "backend"}),
        ("/api/v2/celery/analytics/throughput/", {"minutes", "backend"}),
    ):
        operation = schema["paths"][path]["get"]
        assert {parameter["name"] for parameter in operation["parameters"]} == parameters, path
        assert {"200", "400", "401", "403", "503"} <= set(operation["responses"]), path
    assert "404" in schema["paths"]["/api/v2/celery/analytics/task/"]["get"]["responses"]
    table = schema["paths"]["/api/v2/celery/analytics/tasks/"]["get"]
    window = next(parameter for parameter in table["parameters"] if parameter["name"] == "window")
    assert window["schema"]["enum"] == ["1h", "24h", "7d", "30d"]
