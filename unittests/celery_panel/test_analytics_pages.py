"""The task analytics pages (task table, task name page, failures grouped) and the overview's
throughput chart, from TaskRollup / FailureRollup rows and stored results written here with known
values, and in headless Chromium: sorting, following a name to its charts, expanding a traceback.
"""

import html
import json
import re
from datetime import UTC, datetime, timedelta
from functools import partial

import pytest
from django.db import OperationalError
from django.test import Client
from django.urls import reverse
from django_celery_results.models import TaskResult

from dojo.celery_panel.analytics import spark_path
from dojo.models import TaskRollup
from dojo.ops import histograms
from dojo.ops.fleet.clock import database_now
from unittests.analytics_rows import failure_rollup, task_rollup
from unittests.conftest import make_user

TABLE = reverse("celery_panel:analytics")
TASK = reverse("celery_panel:analytics_task")
FAILURES = reverse("celery_panel:analytics_failures")
TRACEBACK = 'Traceback (most recent call last):\n  File "mail.py", line 3\nsmtplib.SMTPServerDisconnected: marker-5f2a'


def minute(minutes_ago: float) -> datetime:
    """The start of the minute `minutes_ago` back, by the database's clock (the pages' now)."""
    moment = database_now().astimezone(UTC) - timedelta(minutes=minutes_ago)
    return moment.replace(second=0, microsecond=0)


def hour(hours_ago: float) -> datetime:
    return minute(hours_ago * 60).replace(minute=0)


def buckets(values: list[float]) -> list[int]:
    counts = histograms.empty()
    for seconds in values:
        counts[histograms.bucket_of(seconds)] += 1
    return counts


def rollup(task: str, start: datetime, period: int = 60, runtimes=(), waits=(), **counts: int) -> TaskRollup:
    """A minute row with its hour row, as the monitor writes them (period=3600: an hour row only)."""
    write = task_rollup if period == 60 else partial(TaskRollup.objects.create, period=period)
    return write(
        bucket_start=start,
        backend="default",
        task_name=task,
        queue="celery",
        runtime_buckets=buckets(list(runtimes)),
        runtime_sum=sum(runtimes),
        runtime_max=max(runtimes, default=0.0),
        wait_buckets=buckets(list(waits)),
        wait_sum=sum(waits),
        **counts,
    )


def failure(task: str, exception_type: str, count: int, start: datetime, task_id: str, text: str) -> None:
    failure_rollup(
        bucket_start=start,
        backend="default",
        task_name=task,
        exception_type=exception_type,
        count=count,
        first_seen=start + timedelta(seconds=5),
        last_seen=start + timedelta(seconds=50),
        latest_task_id=task_id,
        latest_exception=f"{exception_type}('{text}')",
        latest_traceback=TRACEBACK.replace("marker-5f2a", text),
    )


def known_rows() -> None:
    """Three task names over the last 24 h, one only in the hour rows of 3 days ago:
    mail.send: 10 runs (9 ok, 1 failed), 2 retries, every run 40 ms (bucket 25-50 ms);
    images.resize: 5 runs of 400 ms (bucket 250-500 ms), waits of 3 s;
    reports.build: 2 runs of 20 s (bucket 15-30 s), 3 h ago (outside the 1 h window)."""
    rollup("mail.send", minute(5), runtimes=[0.04] * 10, waits=[0.002] * 10, succeeded=9, failed=1, retried=2)
    rollup("images.resize", minute(7), runtimes=[0.4] * 5, waits=[3.0] * 5, succeeded=5)
    rollup("reports.build", minute(180), runtimes=[20.0, 20.0], succeeded=2)
    rollup("old.cleanup", hour(72), period=3600, runtimes=[1.0], succeeded=1)


def names(page: str) -> list[str]:
    return re.findall(r'class="analytics-row" data-task-name="([^"]+)"', page)


def row(page: str, name: str) -> list[str]:
    """The text of each cell of `name`'s row."""
    match = re.search(rf'data-task-name="{re.escape(name)}">(.*?)</tr>', page, re.S)
    assert match, name
    return [re.sub(r"<[^>]+>", "", cell).strip() for cell in re.findall(r"<td[^>]*>(.*?)</td>", match.group(1), re.S)]


def embedded(page: str, element_id: str) -> dict:
    match = re.search(rf'<script id="{element_id}" type="application/json">(.*?)</script>', page, re.S)
    assert match, element_id
    return json.loads(match.group(1))


def client_for(username: str, *, superuser: bool = False, permitted: bool = False) -> Client:
    user = make_user(username, staff=True, superuser=superuser, permissions=("view_taskresult",) if permitted else ())
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def staff(db) -> Client:
    return client_for("staff")


def get(client: Client, url: str, expected: int = 200, **params: str) -> str:
    response = client.get(url, params)
    assert response.status_code == expected, response.content[:500]
    return response.content.decode()


@pytest.mark.django_db
def test_task_table_figures_sorts_links_and_window_switch(staff):
    known_rows()
    page = get(staff, TABLE)
    assert names(page) == ["mail.send", "images.resize", "reports.build"]  # default: -runs
    # runs, failure %, retry %, p50, p95, p99, p95 wait, worker time (linear within a bucket)
    assert row(page, "mail.send")[1:] == ["10", "10.0 %", "20.0 %", "37.5 ms", "48.8 ms", "49.8 ms", "2.43 ms", "0.9 %"]
    assert row(page, "images.resize")[1:] == ["5", "0.0 %", "0.0 %", "375 ms", "488 ms", "498 ms", "4.88 s", "4.7 %"]
    assert row(page, "reports.build")[1:] == ["2", "0.0 %", "0.0 %", "22.5 s", "29.2 s", "29.9 s", "-", "94.3 %"]
    assert "old.cleanup" not in page  # hour rows are read by the 7 d and 30 d windows only

    mail = re.search(r'data-task-name="mail.send">.*?</tr>', page, re.S).group(0)
    assert f'href="{TASK}?task_name=mail.send&amp;window=24h"' in mail
    assert re.search(r'<svg class="sparkline runs"[^>]*><path d="M0.0 [\d.]+ L', mail)  # a line over 48 points
    assert '<svg class="sparkline p95"' in mail

    # The p95 header sorts largest first; its link keeps the window; clicking again flips it.
    link = html.unescape(re.search(r'<a href="([^"]+)">p95</a>', get(staff, TABLE, window="24h")).group(1))
    assert link == "?window=24h&sort=-runtime_p95#analytics"
    by_p95 = get(staff, TABLE, window="24h", sort="-runtime_p95")
    assert names(by_p95) == ["reports.build", "images.resize", "mail.send"]
    assert 'class="sortable sorted descending"' in by_p95
    assert html.unescape(re.search(r'<a href="([^"]+)">p95</a>', by_p95).group(1)).endswith(
        "sort=runtime_p95#analytics"
    )
    assert names(get(staff, TABLE, sort="task_name")) == ["images.resize", "mail.send", "reports.build"]
    assert names(get(staff, TABLE, sort="wait_p95")) == ["mail.send", "images.resize", "reports.build"]  # None last

    hour_page = get(staff, TABLE, window="1h")
    assert names(hour_page) == ["mail.send", "images.resize"]
    assert "one point every 1 minute)" in hour_page and "one point every 1 hour)" in page
    assert 'data-window="1h" class="current"' in hour_page
    assert 'href="?window=7d"' in hour_page
    seven_days = ["mail.send", "images.resize", "reports.build", "old.cleanup"]
    assert names(get(staff, TABLE, window="7d")) == seven_days  # the hour rows: old.cleanup of 3 days ago too


@pytest.mark.django_db
def test_task_page_counts_charts_slowest_runs_and_failures(settings):
    settings.CELERY_RESULT_BACKEND = "django-db"
    start = minute(20)
    rollup(
        "mail.send",
        start,
        runtimes=[0.04] * 6,
        waits=[0.3] * 6,
        succeeded=4,
        failed=2,
        retried=3,
        revoked=1,
        recovered=2,
        critical=1,
        lost=1,
    )
    failure("mail.send", "smtplib.SMTPServerDisconnected", 2, start, "t-latest", "marker-5f2a")
    done = database_now()
    for task_id, seconds in (("t-quick", 0.2), ("t-slowest", 4.0), ("t-middle", 1.5)):
        TaskResult.objects.create(
            task_id=task_id,
            task_name="mail.send",
            status="SUCCESS",
            worker="w1@host",
            date_started=done - timedelta(seconds=seconds),
        )
    TaskResult.objects.update(date_done=done)  # date_done is auto_now on save
    TaskResult.objects.create(
        task_id="t-other", task_name="images.resize", status="SUCCESS", date_started=done - timedelta(hours=1)
    )  # another name: not among mail.send's slowest
    page = get(client_for("root", superuser=True), TASK, task_name="mail.send", window="24h")
    counts = dict(re.findall(r'data-count="([a-z]+)">(\d+)<', page))
    assert counts == {
        "runs": "6",
        "succeeded": "4",
        "failed": "2",
        "retried": "3",
        "revoked": "1",
        "recovered": "2",
        "critical": "1",
        "lost": "1",
    }
    assert re.search(r'data-figure="failure_percent">33.3 %<', page)
    assert re.search(r'data-figure="wait_p95">[^<]*ms<', page)

    assert re.findall(r'class="slow-run" data-task-id="([^"]+)"', page) == ["t-slowest", "t-middle", "t-quick"]
    assert f'href="{reverse("celery_panel:task_detail", args=["t-slowest"])}"' in page
    assert 'data-runtime="4.0">4 s<' in page and 'data-runtime="1.5">1.5 s<' in page

    chart = embedded(page, "task-series")
    assert len(chart["times"]) == 24 and chart["point_seconds"] == 3600  # 24 h of hour points
    assert sum(chart["runs"]["succeeded"]) == 4 and sum(chart["runs"]["failed"]) == 2
    assert sum(chart["runs"]["retried"]) == 3 and sum(chart["runs"]["revoked"]) == 1
    known = [value for value in chart["runtime"]["p95"] if value is not None]
    assert len(known) == 1 and 0.025 < known[0] <= 0.05
    assert [value for value in chart["wait"]["p95"] if value is not None] == [
        pytest.approx(0.4875)
    ]  # 0.25 + 0.25 * 0.95
    for element in ('id="chart-runs"', 'id="chart-runtime"', 'id="chart-wait"', "celery_chart.js"):
        assert element in page

    group = re.search(r'<tr class="failure-group".*?</tr>', page, re.S).group(0)
    assert 'data-exception-type="smtplib.SMTPServerDisconnected"' in group and ">2<" in group
    assert "marker-5f2a" in group  # a superuser sees the traceback

    assert 'data-window="7d"' in page and f"{TABLE}?window=24h" in page


@pytest.mark.django_db
def test_failures_grouped_with_and_without_the_task_data_right():
    failure("mail.send", "smtplib.SMTPServerDisconnected", 7, minute(10), "t-mail", "marker-mail")
    failure("mail.send", "ValueError", 2, minute(30), "t-value", "marker-value")
    failure("images.resize", "OSError", 4, minute(50), "t-image", "marker-image")
    failure("images.resize", "OSError", 1, minute(60 * 30), "t-old", "marker-old")  # outside 24 h

    def groups(page: str) -> list[tuple[str, str, str]]:
        found = re.findall(
            r'data-task-name="([^"]+)" data-exception-type="([^"]+)">.*?class="num failure-count">(\d+)<', page, re.S
        )
        return [(name, exception, count) for name, exception, count in found]

    for who, client in (("root", client_for("root", superuser=True)), ("reader", client_for("reader", permitted=True))):
        page = get(client, FAILURES)
        assert groups(page) == [
            ("mail.send", "smtplib.SMTPServerDisconnected", "7"),
            ("images.resize", "OSError", "4"),
            ("mail.send", "ValueError", "2"),
        ], who
        assert "marker-mail" in page and "marker-old" not in page
        assert '<details class="traceback"><summary>Traceback</summary>' in page
        assert "hidden: you may not see task data" not in page
    assert f'href="{reverse("celery_panel:tasks")}?filter=failure&amp;q=mail.send"' in page
    assert f'href="{reverse("celery_panel:task_detail", args=["t-mail"])}"' in page

    hidden = get(client_for("staff"), FAILURES)
    assert [group[:2] for group in groups(hidden)] == [
        ("mail.send", "smtplib.SMTPServerDisconnected"),
        ("images.resize", "OSError"),
        ("mail.send", "ValueError"),
    ]
    assert "marker-" not in hidden and "Traceback (most recent" not in hidden
    assert hidden.count("hidden: you may not see task data") == 3
    assert "t-mail" in hidden  # the latest task's id and its link are not task data

    only_images = get(client_for("other", superuser=True), FAILURES, task_name="images.resize", window="30d")
    assert groups(only_images) == [("images.resize", "OSError", "5")]  # 30 d: the older failure too
    only_images = get(client_for("other2", superuser=True), FAILURES, task_name="images.resize")
    assert groups(only_images) == [("images.resize", "OSError", "4")]
    assert 'id="all-failures-link"' in only_images


@pytest.mark.django_db
def test_unknown_name_is_a_404_page_and_bad_parameters_a_400_naming_the_field(staff):
    rollup("mail.send", minute(5), runtimes=[0.04], succeeded=1)
    missing = get(staff, TASK, 404, task_name="no.such.task")
    assert 'id="task-not-found"' in missing and "no.such.task" in missing
    for url, params, field in (
        (TABLE, {"window": "2h"}, "window"),
        (TABLE, {"sort": "-nope"}, "sort"),
        (TABLE, {"backend": "nowhere"}, "backend"),
        (TASK, {}, "task_name"),
        (TASK, {"task_name": "a\x00b"}, "task_name"),
        (TASK, {"task_name": "x" * 300}, "task_name"),
        (TASK, {"task_name": "mail.send", "window": "1y"}, "window"),
        (FAILURES, {"window": "<script>"}, "window"),
    ):
        page = get(staff, url, 400, **params)
        assert f'data-field="{field}"' in page, (url, params)
        assert "<script>" not in page.split('id="bad-parameter"')[1].split("</p>")[0]
    assert "window: '2h' is not one of 1h, 24h, 7d, 30d." in html.unescape(get(staff, TABLE, 400, window="2h"))


@pytest.mark.django_db
def test_an_odd_task_name_links_to_its_page_and_its_failures(staff):
    odd = 'odd/<b>&"name" ü'
    rollup(odd, minute(5), runtimes=[0.04], succeeded=1)
    failure(odd, "ValueError", 1, minute(5), "t-odd", "marker-odd")
    table = get(staff, TABLE)
    assert "<b>" not in table and names(table) == [html.escape(odd)]
    link = html.unescape(re.search(r'<a href="([^"]+)" class="task-name-link">', table).group(1))
    assert link.startswith(TASK + "?task_name=odd%2F%3Cb%3E%26%22name%22+")
    page = staff.get(link)
    assert page.status_code == 200 and re.search(r'data-count="runs">1<', page.content.decode())
    failures = get(staff, FAILURES, task_name=odd)
    assert "ValueError" in failures and "<b>" not in failures


@pytest.mark.django_db
def test_the_backend_switch_shows_each_backends_rows_and_keeps_the_other_parameters(staff, settings):
    settings.CELERY_BACKENDS = {"second": {"broker_url": "memory://"}}
    rollup("mail.send", minute(5), runtimes=[0.04], succeeded=1)
    rollup("reports.build", minute(5), runtimes=[2.0], succeeded=3)
    TaskRollup.objects.filter(task_name="reports.build").update(backend="second")  # its minute and hour rows
    assert names(get(staff, TABLE)) == ["mail.send"]
    second = get(staff, TABLE, backend="second", window="1h", sort="task_name")
    assert names(second) == ["reports.build"]
    assert 'href="?backend=default&amp;window=1h&amp;sort=task_name" data-backend-link="default"' in second
    assert f'href="{TASK}?task_name=reports.build&amp;window=1h&amp;backend=second"' in second
    assert get(staff, TASK, 404, task_name="reports.build")  # not on the main backend
    assert 'data-count="runs">3<' in get(staff, TASK, task_name="reports.build", backend="second")


def test_sparklines_break_at_unknown_values_and_dot_lone_ones():
    assert spark_path([0, 1, None, 3, None, None]) == "M0.0 21.0 L24.0 14.3 M72.0 1.0 h0.01"
    assert spark_path([0, 0, 0]) == "M0.0 21.0 L60.0 21.0 L120.0 21.0"  # all zero: flat at the bottom
    assert spark_path([None, None]) == ""


@pytest.mark.django_db
def test_database_errors_give_the_unavailable_page_not_a_500(staff, monkeypatch):
    """The read model is made to raise OperationalError (mocked: a database that stops answering
    mid-request cannot be produced here for the shared test database)."""

    def down(*args, **kwargs):
        raise OperationalError("could not connect to server password=hunter2")

    for name in ("task_table", "task_detail", "failure_groups"):
        monkeypatch.setattr(f"dojo.ops.read_models.analytics.{name}", down)
    for url in (TABLE, f"{TASK}?task_name=x", FAILURES):
        page = get(staff, url, 503)
        assert 'id="analytics-unavailable"' in page and "OperationalError" in page
        assert "hunter2" not in page


@pytest.mark.django_db
def test_overview_throughput_is_succeeded_and_failed_per_minute_of_the_last_hour(redis_only, staff):
    two, ten = minute(2), minute(10)
    rollup("mail.send", two, succeeded=3, failed=1)
    rollup("images.resize", two, succeeded=2)
    rollup("mail.send", ten, failed=4)
    rollup("mail.send", minute(90), succeeded=50)  # before the hour
    page = get(staff, reverse("celery_panel:overview"))
    data = embedded(page, "throughput-series")
    assert len(data["times"]) == 60
    by_time = {
        datetime.fromisoformat(time): (ok, failed)
        for time, ok, failed in zip(data["times"], data["succeeded"], data["failed"], strict=True)
    }
    assert by_time[two] == (5, 1) and by_time[ten] == (0, 4)
    assert sum(data["succeeded"]) == 5 and sum(data["failed"]) == 5
    assert 'id="chart-throughput"' in page and "celery_analytics.js" in page
    assert f'href="{TABLE}"' in page and f'href="{FAILURES}"' in page  # the panel's navigation


@pytest.mark.django_db(transaction=True)
def test_in_a_browser_sort_follow_a_name_to_its_charts_and_expand_a_traceback(live_server, browser_page):
    known_rows()
    failure("mail.send", "smtplib.SMTPServerDisconnected", 3, minute(5), "t-mail", "marker-5f2a")
    make_user("root", superuser=True)
    page = browser_page
    page.goto(live_server.url + reverse("admin:index"))
    page.fill("#id_username", "root")
    page.fill("#id_password", "pw-root")
    page.click("input[type=submit], button[type=submit]")
    page.wait_for_selector("#celery-panel-section")

    page.goto(live_server.url + TABLE)
    rows = "#analytics-table tr.analytics-row"
    assert page.locator(rows).evaluate_all("rows => rows.map(r => r.dataset.taskName)") == [
        "mail.send",
        "images.resize",
        "reports.build",
    ]
    page.click("#analytics-table th >> text=p95")
    page.wait_for_url("**sort=-runtime_p95**")
    assert page.locator(rows).evaluate_all("rows => rows.map(r => r.dataset.taskName)") == [
        "reports.build",
        "images.resize",
        "mail.send",
    ]
    assert page.locator("svg.sparkline.runs path").count() == 3

    page.click("a.task-name-link >> text=mail.send")
    page.wait_for_selector('#chart-runs svg path.series[data-series="succeeded"]')
    for box, series in (
        ("chart-runs", ["succeeded", "failed", "retried", "revoked"]),
        ("chart-runtime", ["p50", "p95", "p99"]),
        ("chart-wait", ["wait_p95"]),
    ):
        drawn = page.locator(f"#{box} svg path.series").evaluate_all("paths => paths.map(p => p.dataset.series)")
        assert drawn == series, box
    runs = page.get_attribute('#chart-runs path[data-series="succeeded"]', "d")
    assert len(re.findall(r"[ML]", runs)) == 24  # a point each hour over 24 h, zeros drawn
    # p95 is known in one point only: a dot, not a line
    assert page.locator("#chart-runtime circle.dot.series-p95").count() == 1
    assert page.locator("#chart-runs text.tick").count() >= 4

    page.goto(live_server.url + FAILURES)
    details = page.locator("#failure-groups details.traceback").first
    assert not details.locator("pre").is_visible()
    details.locator("summary").click()
    assert details.locator("pre").is_visible()
    assert "marker-5f2a" in details.locator("pre").text_content()
    assert page.console_errors == []
