"""The operator dashboard (/admin/celery/dashboard/) on a real Redis: every section, masked secrets,
staff only, sorting by several columns, controls hidden in read-only mode and without the
permissions; the sort helper on its own; and in headless Chromium, a queue paused from the page
with a real worker consuming it."""

import re
from dataclasses import dataclass

import pytest
from django.contrib.auth.models import Permission
from django.http import QueryDict
from django.urls import reverse
from django.utils import timezone
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from dojo.celery_panel.sorting import Column, parse_ordering, sort_table
from dojo.models import CeleryAuditLog, CeleryProcess, QueuePause
from unittests.conftest import free_port, make_user, wait_for

DASHBOARD = reverse("celery_panel:dashboard")
SECTIONS = ["backend-context", "summary-cards", "queues", "processes", "recurring", "semaphores", "raw-rows"]
QUEUES = {"celery": 1, "reports": 3, "bulk": 2}  # ready messages published to each


def publish(broker, queue: str, count: int) -> None:
    client = broker.client()
    with client.connection_for_write() as conn:
        for i in range(count):
            client.send_task("dojo.tasks.add", args=(i, i), queue=queue, connection=conn)
    client.close()


@pytest.fixture
def three_queues(redis_only, settings):
    settings.CELERY_TASK_QUEUES = {name: {"exchange": name, "routing_key": name} for name in QUEUES}
    for name, count in QUEUES.items():
        publish(redis_only, name, count)
    return redis_only


@pytest.fixture
def staff_client(client, db):
    client.force_login(make_user("staff", staff=True))
    return client


def row_names(html: str, row_class: str, attribute: str = "data-queue") -> list[str]:
    return re.findall(rf'class="{row_class}[^"]*" {attribute}="([^"]+)"', html)


def controls(html: str) -> set[str]:
    return set(re.findall(r'data-control="([a-z]+)"', html))


@pytest.mark.django_db
def test_every_section_renders_for_staff_with_secrets_masked(three_queues, staff_client, settings):
    settings.CELERY_RESULT_BACKEND = "redis://:result-pw-42@127.0.0.1:6390/1"
    settings.CELERY_BEAT_SCHEDULE = {"nightly": {"task": "dojo.tasks.add", "schedule": 86400.0, "args": [1, 2]}}
    QueuePause.objects.create(backend="default", queue="elsewhere", paused_by="someone")

    response = staff_client.get(DASHBOARD)
    html = response.content.decode()

    assert response.status_code == 200
    for section in [*SECTIONS, "shared-queues"]:
        assert f'id="{section}"' in html, section
    assert "result-pw-42" not in html and "redis://:****@127.0.0.1:6390/1" in html
    assert row_names(html, "queue-row") == ["celery", "reports", "bulk"]
    assert row_names(html, "shared-queue-row") == ["elsewhere"]
    assert row_names(html, "recurring-row", "data-key") == ["nightly"]
    assert re.search(r'id="card-ready" href="[^"]*qo=-2[^"]*#queues"', html)
    card = re.search(r'id="card-ready".*?card-value">([^<]*)<', html, re.S).group(1)
    assert card == str(sum(QUEUES.values()))
    assert reverse("celery_panel:tasks") + "?filter=failure" in html
    assert reverse("admin:django_celery_results_taskresult_changelist") in html
    assert reverse("celery_panel:dashboard") in staff_client.get(reverse("admin:index")).content.decode()


@pytest.mark.django_db
def test_a_backend_whose_broker_is_down_still_renders_without_its_password(redis_only, staff_client, settings):
    settings.CELERY_BACKENDS = {"other": {"broker_url": f"redis://:broker-pw-77@127.0.0.1:{free_port()}/0"}}

    response = staff_client.get(DASHBOARD, {"backend": "other"})
    html = response.content.decode()

    assert response.status_code == 200
    assert 'id="broker-error"' in html
    assert "broker-pw-77" not in html
    assert re.search(r'data-fact="broker">redis://:\*\*\*\*@127.0.0.1', html)
    assert 'data-backend-link="default"' in html and 'data-backend-link="other" class="current"' in html
    assert re.search(r'id="card-ready".*?card-value">-<', html, re.S)  # unknown, not 0
    assert 'class="errornote">' in html.split('id="semaphores"')[1].split('id="raw-rows"')[0]
    assert staff_client.get(DASHBOARD, {"backend": "nope"}).status_code == 400


@pytest.mark.django_db
def test_raw_row_links_open_the_changelists_filtered_by_backend(redis_only, client):
    client.force_login(make_user("root", superuser=True))
    html = client.get(DASHBOARD).content.decode()
    raw = html.split('id="raw-rows"')[1]
    links = re.findall(r'<a href="([^"]+)"', raw)

    for model in ("queuepause", "celeryprocess", "celeryauditlog"):
        assert reverse(f"admin:dojo_{model}_changelist") + "?backend=default" in links, model
    assert reverse("admin:django_celery_beat_periodictask_changelist") in links
    assert len(links) == 5
    for link in links:
        assert client.get(link.replace("&amp;", "&")).status_code == 200, link


@pytest.mark.django_db
def test_the_page_renders_on_rabbitmq_with_unknown_latency(rabbitmq_broker, staff_client):
    publish(rabbitmq_broker, "celery", 2)

    html = staff_client.get(DASHBOARD).content.decode()

    row = html.split('data-queue="celery"')[1].split("</tr>")[0]
    assert 'class="ready">2<' in row and 'class="latency">-<' in row  # RabbitMQ cannot show the oldest message
    assert "guest:****@" in html and "guest:guest@" not in html
    assert 'id="broker-error"' not in html


@pytest.mark.django_db
def test_anonymous_and_non_staff_users_go_to_the_admin_login(client):
    login = reverse("admin:login")
    assert client.get(DASHBOARD)["Location"].startswith(login)
    client.force_login(make_user("plain"))
    assert client.get(DASHBOARD)["Location"].startswith(login)


@pytest.mark.django_db
def test_tables_sort_by_several_columns_with_their_priority_shown(three_queues, staff_client, settings):
    settings.CELERY_BEAT_SCHEDULE = {}
    QueuePause.objects.create(backend="default", queue="reports")
    every_minute, _ = IntervalSchedule.objects.get_or_create(every=1, period=IntervalSchedule.MINUTES)
    for name in ("b-entry", "a-entry", "c-entry"):
        PeriodicTask.objects.create(name=name, task="dojo.tasks.add", interval=every_minute)

    by_ready = staff_client.get(DASHBOARD, {"qo": "-2"}).content.decode()
    paused_then_ready = staff_client.get(DASHBOARD, {"qo": "8.-2", "ro": "-1"}).content.decode()

    assert row_names(by_ready, "queue-row") == ["reports", "bulk", "celery"]
    assert row_names(paused_then_ready, "queue-row") == ["bulk", "celery", "reports"]
    assert row_names(paused_then_ready, "recurring-row", "data-key") == ["c-entry", "b-entry", "a-entry"]
    queues_head = paused_then_ready.split('id="queues-table"')[1].split("</thead>")[0]
    assert re.findall(r'class="sortpriority"[^>]*>(\d)<', queues_head) == ["2", "1"]  # Ready is 2nd, Paused 1st
    # Only the queues table has two sort keys: the recurring table shows no priority numbers.
    recurring_head = paused_then_ready.split('id="recurring-table"')[1].split("</thead>")[0]
    assert "sortpriority" not in recurring_head and "sorted descending" in recurring_head
    # Each table's links keep the other table's ordering.
    assert re.search(r'href="\?[^"]*qo=8.-2[^"]*#recurring"', paused_then_ready)


@pytest.mark.django_db
def test_superusers_see_every_control_and_none_in_read_only_mode(three_queues, client, settings):
    QueuePause.objects.create(backend="default", queue="bulk")
    every_minute, _ = IntervalSchedule.objects.get_or_create(every=1, period=IntervalSchedule.MINUTES)
    PeriodicTask.objects.create(name="db-entry", task="dojo.tasks.add", interval=every_minute)
    client.force_login(make_user("root", superuser=True))

    allowed = client.get(DASHBOARD).content.decode()
    settings.CELERY_READ_ONLY = True
    read_only = client.get(DASHBOARD).content.decode()

    assert controls(allowed) == {"pause", "resume", "purge", "run", "disable"}
    assert controls(read_only) == set() and 'id="read-only-note"' in read_only
    assert "breakdown-toggle" in read_only  # looking is not a control


@pytest.mark.django_db
def test_staff_see_only_the_controls_of_their_permissions(three_queues, client):
    every_minute, _ = IntervalSchedule.objects.get_or_create(every=1, period=IntervalSchedule.MINUTES)
    PeriodicTask.objects.create(name="db-entry", task="dojo.tasks.add", interval=every_minute)
    pauser = make_user("pauser", staff=True)
    pauser.user_permissions.add(Permission.objects.get(codename="pause_queue"))
    runner = make_user("runner", staff=True)
    runner.user_permissions.add(Permission.objects.get(codename="run_periodic_task"))

    client.force_login(make_user("staff", staff=True))
    assert controls(client.get(DASHBOARD).content.decode()) == set()
    client.force_login(pauser)
    assert controls(client.get(DASHBOARD).content.decode()) == {"pause"}
    client.force_login(runner)
    assert controls(client.get(DASHBOARD).content.decode()) == {"run"}


@pytest.mark.django_db(transaction=True)
def test_processes_show_each_worker_with_its_pool_children_live(redis_only, shared_database, client):
    worker = redis_only.start_worker("w1", DD_DATABASE_URL=shared_database)
    wait_for(lambda: CeleryProcess.objects.filter(backend="default").count() == 3, 30, "heartbeat rows")
    client.force_login(make_user("staff", staff=True))

    html = client.get(DASHBOARD).content.decode()

    names = row_names(html, 'process-row[^"]*', "data-process")
    assert names[0] == worker and len(names) == 3
    rows = html.split('id="processes-table"')[1].split("</table>")[0].split('class="process-row')[1:]
    assert all('class="state online">live<' in row for row in rows)
    assert all(f"under {worker}" in row and "kind-pool" in row for row in rows[1:])
    assert re.search(r'class="heartbeat">[\d-]+ [\d:]+ \(\d+\.\d s ago\)<', rows[0])
    assert re.search(r'id="card-workers".*?card-value">1 / 0<', html, re.S)


@pytest.mark.django_db
def test_semaphores_show_limit_free_slots_waiters_and_expiry(redis_only, staff_client):
    from dojo.ops.brokers.registry import get_broker
    from dojo.ops.limits.semaphores import Slot, acquire_slot, record_waiter

    backend = get_broker()
    for holder in ("run-1", "run-2"):
        assert acquire_slot(Slot(backend, "report:42", holder, limit=3, expires=600))
    assert acquire_slot(Slot(backend, "export", "run-3", limit=1, expires=600))
    record_waiter(Slot(backend, "export", "run-4", 1, 600), "dojo.tasks.add", "celery", timezone.now())

    html = staff_client.get(DASHBOARD, {"so": "-3"}).content.decode()

    assert row_names(html, "semaphore-row", "data-key") == ["report:42", "export"]  # limit, descending
    rows = html.split('id="semaphores-table"')[1].split('class="semaphore-row')[1:]
    assert 'class="available">1<' in rows[0] and 'class="limit">3<' in rows[0] and 'class="waiters">0<' in rows[0]
    assert 'class="available">0<' in rows[1] and 'class="waiters">1<' in rows[1]
    assert re.search(r'class="expires">20\d\d-\d\d-\d\d [\d:]+<', rows[1])
    queue = html.split('data-queue="celery"')[1].split("</tr>")[0]
    assert 'class="blocked">1<' in queue and 'class="oldest-blocked">-<' not in queue


# --- the sort helper -----------------------------------------------------------------------


@dataclass
class Item:
    name: str
    size: int | None


COLUMNS = [Column("Name", "name"), Column("Size", "size"), Column("Controls")]
ITEMS = [Item("b", 2), Item("a", None), Item("c", 2), Item("d", 1)]


def test_parse_ordering_drops_unknown_unsortable_and_repeated_columns():
    assert parse_ordering("2.-1", COLUMNS) == [(1, True), (0, False)]
    assert parse_ordering("x.9.3.0.2.-2", COLUMNS) == [(1, True)]
    assert parse_ordering("", COLUMNS) == []


def test_sort_table_sorts_by_several_keys_with_unknown_values_last():
    table = sort_table(ITEMS, COLUMNS, QueryDict("so=-2.1&backend=x"), "so", "things")

    assert [item.name for item in table.rows] == ["a", "b", "c", "d"]  # None is the largest value
    ascending = sort_table(ITEMS, COLUMNS, QueryDict("so=2.-1"), "so", "things")
    assert [item.name for item in ascending.rows] == ["d", "c", "b", "a"]
    name, size, buttons = table.headers
    assert (size.sort_priority, size.ascending, name.sort_priority, name.ascending) == (1, False, 2, True)
    assert table.num_sorted_fields == 2 and not buttons.sortable
    assert size.url_toggle == "?so=2.1&backend=x#things"
    assert size.url_remove == "?so=1&backend=x#things"
    assert name.url_primary == "?so=-1.-2&backend=x#things"  # made first, direction flipped
    unsorted = sort_table(ITEMS, COLUMNS, QueryDict(""), "so", "things")
    assert unsorted.rows == ITEMS and unsorted.headers[0].url_primary == "?so=1#things"


# --- in the browser --------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_pause_and_resume_a_queue_from_the_page(
    redis_only, shared_database, settings, live_server, browser_page, tmp_path
):
    """Clicks Pause on a real worker's queue, accepts the confirmation, and sees the reloaded row
    say paused with a Resume button; then resumes it the same way, and runs a recurring task now."""
    settings.CELERY_BEAT_SCHEDULE = {"add-now": {"task": "dojo.tasks.add", "schedule": 3600.0, "args": [2, 3]}}
    settings.CELERY_TASK_QUEUES = {name: {"exchange": name, "routing_key": name} for name in ("celery", "reports")}
    make_user("root", superuser=True)
    worker = redis_only.start_worker(
        "w1", queues="celery,reports", DD_DATABASE_URL=shared_database, DD_CELERY_QUEUES="celery,reports"
    )
    page = browser_page
    dialogs: list[str] = []
    accept = [True]  # flipped to dismiss the last confirmation
    page.on(
        "dialog", lambda dialog: (dialogs.append(dialog.message), (dialog.accept if accept[0] else dialog.dismiss)())
    )

    page.goto(live_server.url + reverse("admin:login") + "?next=" + DASHBOARD)
    page.fill("#id_username", "root")
    page.fill("#id_password", "pw-root")
    page.click("input[type=submit], button[type=submit]")
    row = page.locator('tr.queue-row[data-queue="reports"]')
    row.wait_for()
    assert row.locator("td.paused-cell").inner_text() == "no"
    assert row.locator("td.live-workers").inner_text() == "1"

    with page.expect_navigation():
        row.locator('button[data-control="pause"]').click()
    row.wait_for()
    assert dialogs and dialogs[0].startswith("Pause queue reports?")
    assert "paused" in row.get_attribute("class") and row.locator("td.paused-cell").inner_text() == "yes"
    assert page.locator("#dashboard-messages li.success").inner_text().startswith("Paused reports")
    assert QueuePause.objects.filter(backend="default", queue="reports").exists()
    assert page.locator('tr.queue-row[data-queue="celery"] td.paused-cell').inner_text() == "no"
    row.locator("button.breakdown-toggle").click()
    page.locator("tr.breakdown-row:not([hidden]) table").first.wait_for()
    page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)

    with page.expect_navigation():
        row.locator('button[data-control="resume"]').click()
    row.wait_for()
    assert row.locator("td.paused-cell").inner_text() == "no"
    assert row.locator('button[data-control="pause"]').count() == 1
    assert not QueuePause.objects.filter(queue="reports").exists()

    with page.expect_navigation():
        page.locator('tr.recurring-row[data-key="add-now"] button[data-control="run"]').click()
    sent = page.locator("#dashboard-messages li.success").inner_text()
    task_id = re.fullmatch(r"Sent add-now as task ([0-9a-f-]+)\.", sent).group(1)
    assert redis_only.client().AsyncResult(task_id).get(timeout=60) == 5
    assert [d.split("?")[0] for d in dialogs] == [
        "Pause queue reports",
        "Resume queue reports",
        "Run add-now (dojo.tasks.add) now",
    ]

    accept[0] = False
    row.locator('button[data-control="purge"]').click()
    page.wait_for_timeout(500)
    assert dialogs[-1].startswith("Purge every ready message from reports?")
    assert not CeleryAuditLog.objects.filter(action="purge_queue").exists(), "a dismissed confirmation sends nothing"
    assert worker and page.console_errors == []
