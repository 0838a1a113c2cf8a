"""Many queues on a real Redis: the status document's ready counts over 2,000 configured queues
(the counts-only depth read, every priority list summed on the server), the dashboard's queues
table a page at a time (worst first, the "N more queues" link, a second page, the latency of the
page's rows), the API's slice, and /metrics' stored-results counts served from the cache.

The references are independent of the code under test: the counts the test itself published,
and Redis's own LLEN of each list (kombu's key names).
"""

import re
from datetime import timedelta

import pytest
import redis
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from django_celery_results.models import TaskResult

from dojo.ops.brokers import redis as redis_lists
from dojo.ops.brokers.connection import broker_connection
from dojo.ops.brokers.registry import get_broker
from dojo.ops.fleet.status import read_status
from unittests.conftest import make_user

DASHBOARD = reverse("celery_panel:dashboard")
QUEUES_API = reverse("celery_queues")
METRICS = reverse("metrics")


def publish(broker, counts: dict[str, int], priorities: tuple = (None, 3, 6, 9)) -> None:
    """Publish counts[queue] tasks to each queue as the project does (with the publish stamp),
    cycling through priorities so every priority list is used."""
    client = broker.client()
    with client.connection_for_write() as conn:
        for queue, count in counts.items():
            for i in range(count):
                priority = priorities[i % len(priorities)]
                client.send_task("dojo.tasks.add", args=(i, i), queue=queue, priority=priority, connection=conn)
    client.close()


def configure(settings, names: list[str]) -> None:
    settings.CELERY_TASK_QUEUES = {name: {"exchange": name, "routing_key": name} for name in names}


def llen_total(broker, names: list[str]) -> int:
    """Redis's own count: LLEN of every list kombu keeps for each queue."""
    client = redis.Redis.from_url(broker.url)
    with broker_connection() as conn:
        keys = [key for name in names for key in redis_lists.priority_lists(conn.default_channel, name)]
    return sum(client.llen(key) for key in keys)


@pytest.mark.django_db
def test_status_counts_every_queue_and_priority_list_of_2000(redis_only, settings):
    names = [f"s{i:04d}" for i in range(2000)]
    configure(settings, names)
    published = {names[0]: 9, names[777]: 4, names[1999]: 6, "celery": 2}
    publish(redis_only, published)
    settings.CELERY_BROKER_TIMEOUT = 1.0

    status = read_status()

    assert status.broker_status
    assert set(status.queues) == {"celery", *names}
    assert {name: state.ready for name, state in status.queues.items() if state.ready} == published
    assert sum(state.ready for state in status.queues.values()) == llen_total(redis_only, [*names, "celery"]) == 21


@pytest.mark.django_db
def test_a_wide_depth_read_counts_only_a_narrow_one_reads_the_next_message(redis_only, settings):
    names = [f"d{i:04d}" for i in range(redis_lists.STAMPED_DEPTHS_MAX + 1)]
    publish(redis_only, {names[3]: 5})
    transport = get_broker().transport
    with broker_connection() as conn:
        wide = transport.depths(conn, names)
        narrow = transport.depths(conn, names[:10])
    assert wide[names[3]].ready == narrow[names[3]].ready == 5
    assert sum(depth.ready for depth in wide.values()) == 5
    assert wide[names[3]].oldest_published_at is None  # not read on a wide read
    assert narrow[names[3]].oldest_published_at is not None


def queue_rows(html: str) -> list[tuple[str, int, str]]:
    """(queue, ready, latency cell) of each row of the queues table, in page order."""
    found = re.findall(
        r'class="queue-row[^"]*" data-queue="([^"]+)">.*?<td class="ready">([^<]*)</td>'
        r'.*?<td class="latency">([^<]*)</td>',
        html,
        re.S,
    )
    return [(name, int(ready), latency) for name, ready, latency in found]


@pytest.mark.django_db
def test_dashboard_pages_a_wide_queues_table_worst_first(redis_only, settings, client):
    from dojo.celery_panel.dashboard import QUEUES_PER_PAGE, QUEUES_SHOWN_WHOLE

    total = QUEUES_SHOWN_WHOLE + QUEUES_PER_PAGE // 2  # with "celery"; the last page is half full
    names = [f"p{i:03d}" for i in range(total - 1)]
    configure(settings, names)
    worst = {names[total - 3]: 7, names[5]: 5, names[total // 2]: 3}
    publish(redis_only, worst)
    settings.CELERY_BROKER_TIMEOUT = 1.0
    client.force_login(make_user("staff", staff=True))

    first = client.get(DASHBOARD)
    assert first.status_code == 200
    html = first.content.decode()
    rows = queue_rows(html)
    assert len(rows) == QUEUES_PER_PAGE
    assert [(name, ready) for name, ready, _ in rows[:3]] == list(worst.items())  # worst first
    assert all(ready == 0 for _, ready, _ in rows[3:])
    assert all(latency.endswith(" s") for _, _, latency in rows[:3])  # read for the page's rows
    assert f"{total - QUEUES_PER_PAGE} more queues" in html
    more = re.search(r'<a id="queues-more" href="([^"]+)">', html).group(1)
    assert "qp=2" in more

    pages = [rows, queue_rows(client.get(DASHBOARD + more.replace("&amp;", "&")).content.decode())]
    last = -(-total // QUEUES_PER_PAGE)
    for number in range(3, last + 1):
        page = client.get(DASHBOARD, {"qp": number}).content.decode()
        pages.append(queue_rows(page))
    assert [len(page) for page in pages] == [QUEUES_PER_PAGE] * (last - 1) + [QUEUES_PER_PAGE // 2]
    shown = [name for page in pages for name, _, _ in page]
    assert sorted(shown) == sorted(["celery", *names])  # every queue once, none twice
    assert 'id="queues-more"' not in page and 'id="queues-previous"' in page
    assert f'data-fact="queues">{total}<' in html
    assert client.get(DASHBOARD, {"qp": 99}).status_code == 200  # past the last: the last
    assert client.get(DASHBOARD, {"qp": "x"}).status_code == 400
    assert client.get(DASHBOARD, {"qp": "0"}).status_code == 400


@pytest.mark.django_db
def test_api_slice_has_the_latency_of_its_rows_and_the_total(redis_only, settings, client):
    names = [f"a{i:03d}" for i in range(600)]
    configure(settings, names)
    publish(redis_only, {names[300]: 2})
    settings.CELERY_BROKER_TIMEOUT = 1.0
    client.force_login(make_user("staff", staff=True))

    whole = client.get(QUEUES_API).json()
    page = client.get(QUEUES_API, {"limit": 10, "offset": 296}).json()

    assert whole["total"] == len(whole["rows"]) == 601
    assert sum(row["ready_count"] for row in whole["rows"]) == 2
    assert page["total"] == 601 and [row["name"] for row in page["rows"]] == names[295:305]
    by_name = {row["name"]: row for row in page["rows"]}
    assert by_name[names[300]]["ready_count"] == 2 and by_name[names[300]]["latency_seconds"] is not None
    assert client.get(QUEUES_API, {"limit": 0}).status_code == 400
    assert client.get(QUEUES_API, {"limit": 501}).status_code == 400


def store(status: str, done_ago: timedelta) -> None:
    row = TaskResult.objects.create(
        task_id=f"t-{TaskResult.objects.count()}", task_name="dojo.tasks.add", status=status
    )
    TaskResult.objects.filter(pk=row.pk).update(date_done=timezone.now() - done_ago)


@pytest.mark.django_db
def test_metrics_results_counts_come_from_the_cache_within_the_interval(redis_only, settings, api):
    settings.CELERY_RESULT_BACKEND = "django-db"
    settings.CELERY_BROKER_TIMEOUT = 1.0
    store("SUCCESS", timedelta(minutes=5))
    store("SUCCESS", timedelta(minutes=50))
    store("FAILURE", timedelta(hours=2))  # outside the window
    sample = b'dojo_celery_task_results{state="SUCCESS",task="dojo.tasks.add"} 2.0'

    with CaptureQueriesContext(connection) as first:
        body = api.get(METRICS).content
    assert sample in body and b'state="FAILURE"' not in body
    assert any("django_celery_results_taskresult" in query["sql"] for query in first.captured_queries)

    store("SUCCESS", timedelta(minutes=1))
    with CaptureQueriesContext(connection) as second:
        body = api.get(METRICS).content
    assert sample in body  # the counts of the first scrape
    assert not [query for query in second.captured_queries if "django_celery_results_taskresult" in query["sql"]]
