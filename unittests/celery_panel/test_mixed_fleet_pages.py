"""The panel's pages, the dashboard and the status API on a mixed fleet: a project worker (`celery
-A dojo worker`) beside a worker of unittests/plain_fleet/plain_app.py, which imports nothing of
the project, on Redis and on RabbitMQ. Real processes, no mocks.

The plain worker (concurrency 1) consumes `celery` and `plain`, and runs one plain.sleep with a
second prefetched: every page must show it as fully as the project's worker (pool, concurrency,
its tasks) and count its claimed tasks on its queue.
"""

import json
import re

import pytest
from django.test import Client
from django.urls import reverse

from dojo.ops.fleet.status_cache import get_status
from unittests.celery_panel.test_panel_pages import cell, row, text
from unittests.conftest import LiveBroker, wait_for


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
