"""The scheduled tasks page (/admin/celery/scheduled/) and POST /api/v2/celery/tasks/revoke-many/ on
Redis with real workers: a `celery -A dojo worker` sharing the test database and a worker of the
plain app (unittests/plain_fleet), each holding countdown tasks.

A past-due row: a live worker starts a task the moment it falls due, so a worker that still holds
a due ETA task is one whose event loop is blocked, and such a worker answers no broadcast either.
What the page can show late is a task read (in the cached status document) before its ETA and
shown after it: that is what the first test does, with the document kept 60 s.
"""

import json
import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest
from celery.result import AsyncResult
from django.urls import reverse
from django.utils import timezone

from dojo.models import CeleryAuditLog, TaskRevocation
from dojo.ops.fleet.status_cache import forget_status, get_status
from unittests.conftest import LiveBroker, make_user, wait_for
from unittests.ops.controls import test_controls
from unittests.ops.controls.test_controls import STARTUP, append, lines, stored_state

fleet = test_controls.fleet  # the fixture: Redis and workers sharing the test database
PAGE = reverse("celery_panel:scheduled")
REVOKE = reverse("celery_task_revoke")
REVOKE_MANY = reverse("celery_task_revoke_many")


def scheduled_ids() -> set[str]:
    lists = get_status(refresh=True).queue_details["scheduled"].values()
    return {task["id"] for tasks in lists for task in tasks}


def plain_task(broker: LiveBroker, name: str, args: tuple, countdown: float) -> str:
    client = broker.client()
    try:
        return client.send_task(name, args=args, queue="plain", countdown=countdown).id
    finally:
        client.close()


def plain_state(broker: LiveBroker, task_id: str) -> str:
    client = broker.client()
    try:
        return AsyncResult(task_id, app=client).state
    finally:
        client.close()


def rows(client, **query) -> list[str]:
    """The task ids of the page's rows, in order."""
    page = client.get(PAGE, query)
    assert page.status_code == 200, page.content[:500]
    return [row.task_id for row in _rows(page.content.decode())]


@dataclass(frozen=True)
class Row:
    task_id: str
    worker: str
    revoked: bool
    html: str  # the row's cells


ROW = re.compile(r'<tr class="scheduled-row( revoked)?" data-task-id="([^"]*)" data-worker="([^"]*)">(.*?)</tr>', re.S)


def _rows(html: str) -> list[Row]:
    return [Row(task_id, worker, bool(revoked), cells) for revoked, task_id, worker, cells in ROW.findall(html)]


def by_id(client, **query) -> dict[str, Row]:
    return {row.task_id: row for row in _rows(client.get(PAGE, query).content.decode())}


def post(client, url: str, body: object) -> tuple[int, dict]:
    response = client.post(url, json.dumps(body), content_type="application/json")
    return response.status_code, response.json()


def test_scheduled_tasks_across_workers_late_hidden_and_revoked(fleet, client, settings, tmp_path):
    settings.CELERY_STATUS_CACHE_SECONDS = 60  # the page shows the document read before the ETA
    with ThreadPoolExecutor(2) as pool:  # both start at once: a start is seconds of imports
        started = [
            pool.submit(fleet.start_worker, "w1", **fleet.worker_env),
            pool.submit(fleet.start_plain_worker, "plain1", queues="plain"),
        ]
        w1, plain = (future.result() for future in started)
    out = tmp_path / "scheduled.txt"
    out.touch()
    soon = append(fleet, out, "soon", countdown=6)
    far_one = append(fleet, out, "redis://:pw-in-args@example.org/0", countdown=14)  # a secret in an argument
    far_two = append(fleet, out, "far-two", countdown=14)
    plain_far = plain_task(fleet, "plain.add", (2, 3), countdown=14)
    plain_kept = plain_task(fleet, "plain.add", (40, 2), countdown=120)
    sent_at = time.time()
    everything = {soon, far_one, far_two, plain_far, plain_kept}
    wait_for(lambda: everything <= scheduled_ids(), STARTUP, "the countdown tasks on both workers")

    admin = make_user("root", superuser=True)
    client.force_login(admin)
    # Exact totals when the lists are capped: 3 on w1, 2 on plain1; the cap of 2 cuts one of w1's.
    settings.CELERY_STATUS_MAX_TASKS_PER_WORKER = 2
    forget_status()
    html = client.get(PAGE).content.decode()
    assert 'id="scheduled-total">5<' in html
    assert "<strong>1 more not listed</strong>" in html and f'data-left-out="{w1}">{w1}: 1<' in html
    assert len(_rows(html)) == 4
    settings.CELERY_STATUS_MAX_TASKS_PER_WORKER = 100
    forget_status()
    assert soon in scheduled_ids()  # the document read before `soon` falls due, kept 60 s

    listed = rows(client)
    assert set(listed) == everything and listed[0] == soon and listed[-1] == plain_kept, "by ETA, soonest first"
    shown = by_id(client)
    assert shown[soon].worker == w1 and shown[plain_far].worker == plain
    assert "plain.add" in shown[plain_kept].html and "(40, 2)" in shown[plain_kept].html, "superuser: arguments"
    assert "&#x27;soon&#x27;" in shown[soon].html
    assert "pw-in-args" not in client.get(PAGE).content.decode() and "example.org/0" in shown[far_one].html, "masked"
    held = {task["id"]: task for task in get_status().queue_details["scheduled"][plain]}
    eta = timezone.localtime(datetime.fromisoformat(held[plain_kept]["eta"])).strftime("%Y-%m-%d %H:%M:%S")
    assert f'<td class="eta">{eta} ' in shown[plain_kept].html
    assert '<td class="not-due">-</td>' in shown[soon].html, "not due yet"
    assert f'data-revoke-many-url="{REVOKE_MANY}"' in client.get(PAGE).content.decode()

    # Filters: task name prefix, worker; sorting by worker descending.
    assert set(rows(client, task_name="plain.")) == {plain_far, plain_kept}
    assert set(rows(client, worker=w1)) == {soon, far_one, far_two}
    assert rows(client, task_name="dojo.tasks.append_line", worker=plain) == []
    assert rows(client, o="6")[:2] == [plain_far, plain_kept], "by worker, then by ETA"
    assert rows(client, o="-6")[:3] == [soon, far_one, far_two], "w1 first, each worker by ETA"
    for bad, field in [
        ({"page": "x"}, "page"),
        ({"backend": "nope"}, "backend"),
        ({"task_name": "x" * 300}, "task_name"),
    ]:
        response = client.get(PAGE, bad)
        assert response.status_code == 400 and response.content.decode().startswith(field), bad

    # Past due: the document read before the ETA, shown after it.
    wait_for(lambda: time.time() > sent_at + 7, 10, "the first ETA to pass")
    late = by_id(client)[soon]
    seconds = float(late.html.split('<td class="late">', 1)[1].split(" s<", 1)[0])
    assert 0 < seconds < 60
    wait_for(lambda: "soon" in lines(out), STARTUP, "the due task to run")

    # Staff without the task-data right and without revoke_task: no arguments, no buttons, 403.
    viewer = make_user("viewer", staff=True)
    client.force_login(viewer)
    html = client.get(PAGE).content.decode()
    assert "(40, 2)" not in html and "soon&#x27;" not in html and 'id="task-data-hidden"' in html
    assert "data-revoke-many-url" not in html and "select-task" not in html and 'data-control="revoke"' not in html
    code, body = post(client, REVOKE_MANY, {"task_ids": [far_one]})
    assert code == 403 and "revoke_task" in body["detail"]

    revoker = make_user("revoker", staff=True, permissions=("revoke_task",))
    client.force_login(revoker)
    html = client.get(PAGE).content.decode()
    assert "(40, 2)" not in html and f'value="{far_two}"' in html and 'data-control="revoke"' in html
    for bad in [{"task_ids": []}, {"task_ids": "x"}, {"task_ids": [f"id-{n}" for n in range(501)]}, {}]:
        code, body = post(client, REVOKE_MANY, bad)
        assert code == 400 and "task_ids" in body, (bad, body)
    code, body = post(client, REVOKE_MANY, {"task_ids": ["fine", 0, None]})
    assert code == 400 and body["task_ids"] == ["item 1: Not a valid string.", "item 2: This field may not be null."]
    code, body = post(client, REVOKE, {"task_id": far_one})
    assert code == 200, body
    code, body = post(client, REVOKE_MANY, {"task_ids": [far_two, plain_far, far_two]})
    assert code == 200, body
    assert (body["revoked"], body["task_ids"], set(body["workers"])) == (2, [far_two, plain_far], {w1, plain})
    stored = set(TaskRevocation.objects.filter(backend="default").values_list("task_id", flat=True))
    assert {far_one, far_two, plain_far} <= stored and plain_kept not in stored
    audit = CeleryAuditLog.objects.get(action="revoke_tasks", result="ok")
    assert audit.counts == {"tasks": 2, "workers": 2} and audit.target.startswith("2 task ids: ")
    assert CeleryAuditLog.objects.filter(action="revoke_tasks", result="refused").count() == 6

    # Revoked rows stay on the worker's timer until due, marked and without buttons.
    revoked = by_id(client)
    assert all(revoked[task_id].revoked for task_id in (far_one, far_two, plain_far))
    assert not revoked[plain_kept].revoked and f'value="{plain_kept}"' in revoked[plain_kept].html

    # After their ETA: none of them ran, each is stored REVOKED; the kept one is still scheduled.
    wait_for(lambda: time.time() > sent_at + 16, 20, "the revoked tasks' ETA to pass")
    wait_for(
        lambda: stored_state(far_one) == stored_state(far_two) == "REVOKED" == plain_state(fleet, plain_far),
        STARTUP,
        "the revoked tasks to be discarded",
    )
    assert lines(out) == ["soon"]
    forget_status()
    assert rows(client) == [plain_kept]


def test_revoke_many_is_one_call_for_hundreds(fleet, client, settings):
    """300 scheduled tasks on one worker: paginated (200 a page), and revoked in one request (the
    time is printed beside one single revoke's)."""
    settings.CELERY_STATUS_MAX_TASKS_PER_WORKER = 400
    fleet.start_plain_worker("plain2", queues="plain")
    sender = fleet.client()
    try:
        ids = [sender.send_task("plain.add", args=(n, n), queue="plain", countdown=300).id for n in range(300)]
    finally:
        sender.close()
    wait_for(lambda: set(ids) <= scheduled_ids(), STARTUP, "300 countdown tasks on the worker")
    client.force_login(make_user("root", superuser=True))
    assert len(rows(client)) == 200
    page_two = rows(client, page=2)
    assert len(page_two) == 100 and set(rows(client)) | set(page_two) == set(ids)
    assert rows(client, page=9) == page_two, "a page past the last shows the last"

    started = time.perf_counter()
    code, body = post(client, REVOKE, {"task_id": ids[0]})
    single = time.perf_counter() - started
    assert code == 200, body
    started = time.perf_counter()
    code, body = post(client, REVOKE_MANY, {"task_ids": ids[1:]})
    many = time.perf_counter() - started
    assert code == 200 and body["revoked"] == 299, body
    print(f"\nrevoke one id: {single * 1000:.0f} ms; revoke-many of 299 ids: {many * 1000:.0f} ms")
    assert TaskRevocation.objects.filter(task_id__in=ids).count() == 300
    forget_status()
    assert all(row.revoked for row in by_id(client).values())


@pytest.mark.django_db(transaction=True)
def test_scheduled_page_read_only_shows_no_buttons(client, settings):
    """No worker needed: read-only mode hides the buttons even from a superuser."""
    settings.CELERY_READ_ONLY = True
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:1/0"  # nobody answers: the page says so
    client.force_login(make_user("root", superuser=True))
    html = client.get(PAGE).content.decode()
    assert 'id="read-only-note"' in html and 'id="broker-error"' in html
    assert "data-revoke-many-url" not in html and 'data-control="revoke"' not in html
    assert f'href="{PAGE}"' in html, "linked from the panel's navigation"


def test_browser_selects_two_rows_and_revokes_them(fleet, live_server, browser_page, tmp_path):
    fleet.start_worker("w1", **fleet.worker_env)
    make_user("root", superuser=True)
    ids = [append(fleet, fleet.tmp / "never.txt", f"line-{n}", countdown=300) for n in range(3)]
    wait_for(lambda: set(ids) <= scheduled_ids(), STARTUP, "the countdown tasks on the worker")
    page = browser_page
    page.goto(live_server.url + reverse("admin:login") + f"?next={PAGE}")
    page.fill("#id_username", "root")
    page.fill("#id_password", "pw-root")
    page.click("input[type=submit], button[type=submit]")
    page.wait_for_selector("#scheduled-table")
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.accept()))
    assert page.locator("#revoke-selected").is_disabled()
    for task_id in ids[:2]:
        page.check(f"input.select-task[value='{task_id}']")
    assert page.locator("[data-selected-count]").text_content() == "2"
    page.click("#revoke-selected")
    page.wait_for_selector("#scheduled-messages li.success")
    assert dialogs and dialogs[0].startswith("Revoke 2 selected tasks on backend default?")
    assert page.locator("#scheduled-messages li.success").text_content().startswith("Revoked 2 task(s)")
    assert set(TaskRevocation.objects.values_list("task_id", flat=True)) == set(ids[:2])
    for task_id in ids[:2]:
        assert "revoked" in page.locator(f"tr[data-task-id='{task_id}']").get_attribute("class")
    assert "revoked" not in page.locator(f"tr[data-task-id='{ids[2]}']").get_attribute("class")
    assert page.locator(f"input.select-task[value='{ids[2]}']").count() == 1
    page.click("#select-all")
    assert page.locator("[data-selected-count]").text_content() == "1", "only the row not revoked has a box"
    page.screenshot(path=str(tmp_path / "scheduled.png"), full_page=True)
    assert page.console_errors == []


@pytest.mark.django_db(transaction=True)
def test_revoke_many_puts_the_stored_rows_back_when_the_broadcast_fails(redis_only, monkeypatch, client, settings):
    """The broadcast is made to fail after the status read answered (injected: a broker that answers
    one and refuses the next cannot be produced on purpose): nothing stays stored that was not before,
    and the id revoked before keeps its time. Read-only mode refuses the call before anything."""
    from dojo.ops.brokers.connection import BrokerUnavailable
    from dojo.ops.controls import revocations

    earlier = TaskRevocation.objects.create(task_id="revoked-before")
    TaskRevocation.objects.filter(pk=earlier.pk).update(revoked_at=datetime(2026, 1, 2, tzinfo=UTC))

    def refused(*args, **kwargs):
        raise BrokerUnavailable("the broker refused the broadcast")

    monkeypatch.setattr(revocations, "broadcast", refused)
    client.force_login(make_user("root", superuser=True))
    code, body = post(client, REVOKE_MANY, {"task_ids": ["revoked-before", "new-one"]})
    assert code == 503 and "refused the broadcast" in body["detail"]
    assert list(TaskRevocation.objects.values_list("task_id", "revoked_at")) == [
        ("revoked-before", datetime(2026, 1, 2, tzinfo=UTC))
    ]
    assert CeleryAuditLog.objects.get(action="revoke_tasks").result == "failed"

    settings.CELERY_READ_ONLY = True
    code, body = post(client, REVOKE_MANY, {"task_ids": ["new-one"]})
    assert code == 403 and "READ_ONLY" in body["detail"]
