"""The panel's pages, the dashboard and the status API on a mixed fleet: a project worker (`celery
-A dojo worker`) beside a worker of unittests/plain_fleet/plain_app.py, which imports nothing of
the project, on Redis and on RabbitMQ. Real processes; one fault injected (see the last test).

The plain worker (concurrency 1) consumes `celery` and `plain`, and runs one plain.sleep with a
second prefetched: every page must show it as fully as the project's worker (pool, concurrency,
its tasks) and count its claimed tasks on its queue. A plain worker that gives its stats but not
its task lists in time must read unknown where it did not say, never 0.
"""

import json
import re

import pytest
from django.test import Client
from django.urls import reverse

from dojo.ops.fleet.status_cache import get_status
from unittests.celery_panel.test_panel_pages import cell, row, text
from unittests.conftest import PLAIN_FLEET, LiveBroker, wait_for


@pytest.fixture(params=["redis_only", "rabbitmq_broker"])
def fleet_broker(request, settings) -> LiveBroker:
    settings.CELERY_TASK_QUEUES = {"celery": {}, "plain": {}}
    settings.CELERY_BROKER_TIMEOUT = 2.0
    return request.getfixturevalue(request.param)


def dashboard_row(html: str, queue: str) -> str:
    table = html.split('id="queues-table"')[1].split("</table>")[0]
    return row(table, "data-queue", queue)


def td(html: str, css_class: str) -> str:
    match = re.search(rf'<td class="{css_class}">(.*?)</td>', html, re.S)
    assert match, f"td.{css_class} not found"
    return re.sub(r"<[^>]+>", "", match.group(1)).strip()


@pytest.mark.django_db
def test_every_page_shows_a_plain_worker_beside_a_project_worker(fleet_broker, superuser, api):
    own = fleet_broker.start_worker("own")
    plain = fleet_broker.start_plain_worker("plain", queues="celery,plain", concurrency=1)
    client = fleet_broker.client()
    running = client.send_task("plain.sleep", args=(30,), queue="plain")
    waiting = client.send_task("plain.sleep", args=(30,), queue="plain")

    def busy() -> bool:
        reply = get_status(refresh=True).worker_replies.get(plain, {})
        return len(reply.get("active", [])) == 1 and len(reply.get("reserved", [])) == 1

    wait_for(busy, 20, "the plain worker busy with one task and one prefetched")
    browser = Client()
    browser.force_login(superuser)
    pages = {}
    for name, url in {
        "workers": reverse("celery_panel:workers"),
        "own": reverse("celery_panel:worker_detail", args=[own]),
        "plain": reverse("celery_panel:worker_detail", args=[plain]),
        "queues": reverse("celery_panel:queues"),
        "overview": reverse("celery_panel:overview"),
        "dashboard": reverse("celery_panel:dashboard"),
    }.items():
        response = browser.get(url)
        assert response.status_code == 200, name
        pages[name] = text(response)

    for name, concurrency, active in ((own, 2, 0), (plain, 1, 1)):
        listed = row(pages["workers"], "data-worker", name)
        assert ">online<" in listed, name
        assert td(listed, "pool") == "prefork" and td(listed, "concurrency") == str(concurrency), listed
        assert td(listed, "active") == str(active), name

    detail = pages["plain"]
    assert cell(detail, "worker-pool") == "prefork" and cell(detail, "worker-concurrency") == "1"
    assert cell(detail, "worker-pid") == str(fleet_broker.workers[1].pid)
    assert cell(detail, "worker-prefetch") == "4"
    assert sorted(cell(detail, "worker-queues").split(", ")) == ["celery", "plain"]
    assert len(cell(detail, "worker-processes").split(", ")) == 1
    assert "Active tasks (1)" in detail and "Reserved tasks (1)" in detail and "Scheduled tasks (0)" in detail
    assert running.id in detail and waiting.id in detail
    started = re.search(rf"{running.id}.*?<td class=\"started\">(.*?)</td>", detail).group(1)
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \S+", started), started  # a date, not epoch seconds
    for name in ("plain.add", "plain.fail", "plain.sleep"):
        assert f"<td>{name}</td>" in detail
    assert "Registered tasks (3)" in detail and "maxrss" in detail
    assert "KeyError" not in detail and "error" not in detail.lower(), detail
    own_detail = pages["own"]
    assert cell(own_detail, "worker-concurrency") == "2" and "dojo.tasks.add" in own_detail
    assert "Active tasks (0)" in own_detail and "plain.sleep" not in own_detail

    queues = pages["queues"]
    assert td(row(queues, "data-queue", "celery"), "consumers") == "2"
    assert td(row(queues, "data-queue", "plain"), "consumers") == "1"

    dashboard = pages["dashboard"]
    celery_row, plain_row = dashboard_row(dashboard, "celery"), dashboard_row(dashboard, "plain")
    assert td(celery_row, "live-workers") == "2" and td(plain_row, "live-workers") == "1"
    assert td(plain_row, "claimed") == "2" and td(celery_row, "claimed") == "0"
    assert re.search(r'id="card-running".*?card-value">1<', dashboard), "the running card"

    status = api.get("/api/v2/celery/status/", {"refresh": "1"})
    assert status.status_code == 200
    body = status.json()
    assert sorted(body["worker_stats"]) == sorted([own, plain])
    assert body["worker_stats"][plain]["pool"]["max-concurrency"] == 1
    assert body["worker_stats"][own]["pool"]["max-concurrency"] == 2
    assert (body["active_tasks"], body["reserved_tasks"], body["scheduled_tasks"]) == (1, 1, 0)
    assert body["queues"]["celery"]["consumers"] == 2 and body["queues"]["plain"]["consumers"] == 1
    assert {"plain.sleep", "dojo.tasks.add"} <= set(body["registered_tasks"]), json.dumps(body)[:2000]

    log = (fleet_broker.tmp / "plain.log").read_text()
    assert "pidbox command error" not in log, log[-3000:]


@pytest.mark.django_db
def test_a_worker_that_did_not_give_its_task_lists_in_time_reads_unknown_not_zero(redis_only, settings, superuser):
    """The plain worker answers `active` 3 s late (unittests/plain_fleet/late_active, a fault
    injected in a real worker: its main loop stalls), so a read bounded at 2 s gets its stats and
    none of its task lists. It runs one task: the pages must not say 0 active, but that they do not
    know, while its pool and concurrency (from its stats) still show."""
    settings.CELERY_TASK_QUEUES = {"celery": {}, "plain": {}}
    settings.CELERY_BROKER_TIMEOUT = 2.0
    settings.CELERY_STATUS_CACHE_SECONDS = 60  # every page below shows the same read
    own = redis_only.start_worker("own")
    late = redis_only.start_plain_worker(
        "late", queues="celery,plain", concurrency=1, PYTHONPATH=f"{PLAIN_FLEET / 'late_active'}:{PLAIN_FLEET}"
    )
    redis_only.client().send_task("plain.sleep", args=(30,), queue="plain")
    wait_for(lambda: get_status(refresh=True).queues["plain"].ready == 0, 20, "the late worker to take its task")
    status = get_status(refresh=True)
    late_commands = ["active", "reserved", "scheduled", "registered", "active_queues"]
    assert status.worker_replies[late]["unanswered"] == late_commands
    assert status.active_tasks is None and status.worker_replies[own]["unanswered"] == []
    browser = Client()
    browser.force_login(superuser)

    listed = row(text(browser.get(reverse("celery_panel:workers"))), "data-worker", late)
    assert td(listed, "pool") == "prefork" and td(listed, "concurrency") == "1"
    assert td(listed, "active") == "\N{EN DASH}", listed
    assert td(row(text(browser.get(reverse("celery_panel:workers"))), "data-worker", own), "active") == "0"
    detail = text(browser.get(reverse("celery_panel:worker_detail", args=[late])))
    assert cell(detail, "worker-concurrency") == "1" and cell(detail, "worker-pid") == str(redis_only.workers[1].pid)
    for caption in ("Active tasks", "Reserved tasks", "Scheduled tasks", "Registered tasks"):
        assert f"{caption} (unknown)" in detail and f"{caption} (0)" not in detail, caption
    assert "Not answered within the broker time bound." in detail
    own_detail = text(browser.get(reverse("celery_panel:worker_detail", args=[own])))
    assert "Active tasks (0)" in own_detail and "(unknown)" not in own_detail
    queues = text(browser.get(reverse("celery_panel:queues")))
    for queue in ("celery", "plain"):  # it consumes both, but did not say so in time
        assert td(row(queues, "data-queue", queue), "consumers") == "unknown", queue
    overview = text(browser.get(reverse("celery_panel:overview")))
    assert "? active of 1" in overview and "0 active of 2" in overview
    dashboard = text(browser.get(reverse("celery_panel:dashboard")))
    assert re.search(r'id="card-running".*?card-value">-<', dashboard), "the running card"
