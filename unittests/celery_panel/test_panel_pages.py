"""The Celery panel's pages (overview, workers, queues, periodic tasks, configuration) against a
real Redis and real `celery -A dojo worker` processes: access, the values shown, no secrets."""

import os
import re
import signal
from datetime import timedelta
from html import unescape

import pytest
from celery.schedules import crontab
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from dojo.models import CeleryWorkerSeen
from dojo.ops.durations import interval_words
from dojo.ops.fleet.status_cache import get_status
from dojo.ops.read_models.recurring import crontab_words, schedule_words, solar_words
from dojo.ops.read_models.stored_results import recent_activity
from dojo.ops.redaction import is_secret_key, mask
from unittests.conftest import ROOT, free_port, make_user

SECRETS = ("s3cr3t-transport-pw", "s3cr3t-api-key", "s3cr3t-setting", "s3cr3t-beat-token")
TASKS_TEMPLATE = ROOT / "dojo" / "templates" / "celery_panel" / "tasks.html"


def page_urls(worker: str = "w1@example", queue: str = "celery") -> dict[str, str]:
    """Every panel page; the tasks page only once its template exists (another change adds it)."""
    urls = {
        "overview": reverse("celery_panel:overview"),
        "workers": reverse("celery_panel:workers"),
        "worker_detail": reverse("celery_panel:worker_detail", args=[worker]),
        "queues": reverse("celery_panel:queues"),
        "queue_detail": reverse("celery_panel:queue_detail", args=[queue]),
        "periodic_tasks": reverse("celery_panel:periodic_tasks"),
        "configuration": reverse("celery_panel:configuration"),
    }
    if TASKS_TEMPLATE.exists():
        urls["tasks"] = reverse("celery_panel:tasks")
    return urls


def staff_client() -> Client:
    client = Client()
    client.force_login(make_user("staff", staff=True))
    return client


def text(response) -> str:
    """The page's HTML with entities decoded and whitespace collapsed."""
    return re.sub(r"\s+", " ", unescape(response.content.decode()))


def cell(html: str, element_id: str) -> str:
    match = re.search(rf'id="{element_id}"[^>]*>(.*?)</td>', html)
    assert match, f"#{element_id} not found"
    return re.sub(r"<[^>]+>", "", match.group(1)).strip()


def row(html: str, attribute: str, value: str) -> str:
    match = re.search(rf'<tr [^>]*{attribute}="{re.escape(value)}"[^>]*>(.*?)</tr>', html)
    assert match, f"row {attribute}={value} not found"
    return match.group(1)


def plant_secrets(settings) -> None:
    """Secrets where they do not break the broker: transport options, a secret-named setting, beat kwargs."""
    settings.CELERY_BROKER_TRANSPORT_OPTIONS = {
        **settings.CELERY_BROKER_TRANSPORT_OPTIONS,
        "sentinel_kwargs": {"password": SECRETS[0]},
        "api_key": SECRETS[1],
    }
    settings.CELERY_PANEL_TEST_SECRET = SECRETS[2]
    settings.CELERY_BEAT_SCHEDULE = {
        "static-add": {"task": "dojo.tasks.add", "schedule": 300.0, "args": (1, 2)},
        "static-nightly": {
            "task": "dojo.tasks.add",
            "schedule": crontab(minute=0, hour=2),
            "kwargs": {"x": 1, "y": 2, "auth_token": SECRETS[3]},
        },
    }


def database_entries() -> None:
    from django_celery_beat.models import CrontabSchedule, IntervalSchedule, PeriodicTask

    every_5 = IntervalSchedule.objects.create(every=5, period=IntervalSchedule.MINUTES)
    PeriodicTask.objects.create(
        name="db-interval", task="dojo.tasks.add", interval=every_5, args="[3, 4]", enabled=False
    )
    nightly = CrontabSchedule.objects.create(minute="0", hour="2", timezone="UTC")
    PeriodicTask.objects.create(
        name="db-crontab",
        task="dojo.tasks.sleep",
        crontab=nightly,
        last_run_at=timezone.now() - timedelta(hours=3),
    )


def assert_no_secret(html: str, where: str) -> None:
    for secret in SECRETS:
        assert secret not in html, f"{secret} shown on {where}"


@pytest.mark.django_db
@pytest.mark.parametrize("who", ["anonymous", "non-staff"])
def test_pages_refuse_everyone_but_staff(who):
    client = Client()
    if who == "non-staff":
        client.force_login(make_user("plain"))
    urls = page_urls()
    urls["tasks"] = reverse("celery_panel:tasks")  # refused before any template is needed
    for name, url in urls.items():
        response = client.get(url)
        assert response.status_code == 302, name
        assert response["Location"].startswith(reverse("admin:login")), name


@pytest.mark.django_db
def test_every_page_shows_the_worker_queue_and_periodic_entries(redis_only, settings):
    from django_celery_beat.models import PeriodicTask

    plant_secrets(settings)
    database_entries()
    worker = redis_only.start_worker("w1")
    pid = redis_only.workers[0].pid
    assert redis_only.client().send_task("dojo.tasks.add", args=(2, 3)).get(timeout=20) == 5
    get_status(refresh=True)
    client = staff_client()

    pages = {}
    for name, url in page_urls(worker).items():
        response = client.get(url)
        assert response.status_code == 200, name
        pages[name] = text(response)
        assert_no_secret(pages[name], name)
        assert "Served by" in pages[name], name  # which backend and data source served it

    workers = row(pages["workers"], "data-worker", worker)
    assert ">online<" in workers
    assert 'class="pool">prefork<' in workers
    assert 'class="concurrency">2<' in workers
    assert 'class="active">0<' in workers
    assert worker.split("@")[1] in workers
    assert "InspectWorkersBackend" in pages["workers"]

    detail = pages["worker_detail"]
    assert cell(detail, "worker-pid") == str(pid)
    assert cell(detail, "worker-pool") == "prefork"
    assert cell(detail, "worker-concurrency") == "2"
    assert cell(detail, "worker-prefetch") == "8"  # concurrency 2 x the default multiplier 4
    assert cell(detail, "worker-total") == "1"
    assert cell(detail, "worker-queues") == "celery"
    assert len(cell(detail, "worker-processes").split(", ")) == 2
    assert cell(detail, "worker-broker") == f"redis://127.0.0.1:{redis_only.url.split(':')[2]}"
    assert "dojo.tasks.add" in detail and "maxrss" in detail
    for caption in ("Active tasks (0)", "Reserved tasks (0)", "Scheduled tasks (0)"):
        assert caption in detail

    queue = row(pages["queues"], "data-queue", "celery")
    assert 'class="exchange">celery<' in queue
    assert 'class="exchange-type">direct<' in queue
    assert 'class="routing-key">celery<' in queue
    assert 'class="durable">yes<' in queue
    assert 'class="consumers">1<' in queue
    assert 'class="ready">0<' in queue
    queue_detail = pages["queue_detail"]
    assert cell(queue_detail, "queue-exchange") == "celery"
    assert cell(queue_detail, "queue-routing-key") == "celery"
    assert cell(queue_detail, "queue-consumed-by") == worker

    periodic = pages["periodic_tasks"]
    static = row(periodic, "data-name", "static-add")
    assert 'class="schedule">every 5 minutes<' in static and 'class="source">static<' in static
    nightly = row(periodic, "data-name", "static-nightly")
    assert 'class="schedule">at 02:00 every day<' in nightly and 'class="next-run">20' in nightly
    interval = row(periodic, "data-name", "db-interval")
    assert 'class="schedule">every 5 minutes<' in interval and 'class="source">database<' in interval
    assert 'class="enabled">no<' in interval and 'class="last-run">never / unknown<' in interval
    crontab = row(periodic, "data-name", "db-crontab")
    assert 'class="schedule">at 02:00 every day (UTC)<' in crontab
    last_run = timezone.localtime(PeriodicTask.objects.get(name="db-crontab").last_run_at)
    assert 'class="enabled">yes<' in crontab
    assert f'class="last-run">{last_run:%Y-%m-%d %H:%M:%S}' in crontab and 'class="next-run">20' in crontab

    overview = pages["overview"]
    assert 'id="workers-online">1<' in overview and 'id="workers-offline">0<' in overview
    for expected in (worker, "dojo.tasks.add", "static-add", "db-crontab", "every 5 minutes"):
        assert expected in overview
    for name in ("workers", "queues", "periodic_tasks", "configuration"):
        assert f'href="{reverse(f"celery_panel:{name}")}"' in overview

    config = pages["configuration"]
    for group in ("Broker", "Result backend", "Tasks", "Workers", "Beat", "Queues and routing"):
        assert f"<caption>{group}</caption>" in config
    assert "'api_key': '****'" in config and "'password': '****'" in config
    assert "CELERY_PANEL_TEST_SECRET" in config
    assert "'priority_steps': [0, 3, 6, 9]" in config  # harmless options stay readable
    assert "'routing_key': 'celery'" in config
    for path in ("backends.workers.InspectWorkersBackend", "backends.periodic.BeatAndDatabasePeriodicTasksBackend"):
        assert path in config


@pytest.mark.django_db
def test_a_killed_worker_is_shown_offline_then_forgotten(redis_only, settings):
    from dojo.ops.observe.history import record_snapshot

    worker = redis_only.start_worker("doomed")
    client = staff_client()
    assert ">online<" in row(text(client.get(reverse("celery_panel:workers"))), "data-worker", worker)

    proc = redis_only.workers[0]
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert worker not in get_status(refresh=True).worker_names

    html = text(client.get(reverse("celery_panel:workers")))
    offline = row(html, "data-worker", worker)
    seen = CeleryWorkerSeen.objects.get(name=worker)
    assert ">offline<" in offline
    assert timezone.localtime(seen.last_seen).strftime("%Y-%m-%d %H:%M:%S") in offline
    detail = text(client.get(reverse("celery_panel:worker_detail", args=[worker])))
    assert ">offline<" in detail and "worker-pid" not in detail
    assert 'id="workers-offline">1<' in text(client.get(reverse("celery_panel:overview")))

    CeleryWorkerSeen.objects.filter(name=worker).update(last_seen=timezone.now() - timedelta(hours=25))
    assert worker not in text(client.get(reverse("celery_panel:workers")))  # past DD_CELERY_WORKER_OFFLINE_HOURS
    record_snapshot()
    assert not CeleryWorkerSeen.objects.filter(name=worker).exists()
    assert client.get(reverse("celery_panel:worker_detail", args=[worker])).status_code == 404


@pytest.mark.django_db
def test_broker_url_password_is_masked_with_the_broker_down(settings):
    secret = "s3cr3t-broker-url-pw"
    port = free_port()
    settings.CELERY_BROKER_URL = f"redis://dojo:{secret}@127.0.0.1:{port}/0"
    settings.CELERY_BROKER_TRANSPORT_OPTIONS = {}
    client = staff_client()

    for name, url in page_urls().items():
        response = client.get(url)
        html = text(response)
        assert secret not in html, name
        assert response.status_code == (404 if name == "worker_detail" else 200), name
    config = text(client.get(reverse("celery_panel:configuration")))
    assert f"redis://dojo:****@127.0.0.1:{port}/0" in config
    assert 'class="errornote"' in text(client.get(reverse("celery_panel:workers")))  # the broker error, redacted


@pytest.mark.parametrize(
    "key",
    [
        *("password", "broker_password", "api_key", "apiKey", "secret_access_key", "auth_token", "credentials", "key"),
        *("auth", "dbpassword", "accessToken", "sentinel_kwargs_password"),
    ],
)
def test_secret_keys(key):
    assert is_secret_key(key)


@pytest.mark.parametrize(
    "key",
    ["task_routes", "routing_key", "task_default_routing_key", "global_keyprefix", "key_prefix", "keyfile", "author"],
)
def test_harmless_keys(key):
    assert not is_secret_key(key)


def test_mask_reaches_every_depth():
    value = {
        "broker_url": "redis://u:pw1@h:6379/0",
        "opts": {"sentinel_kwargs": {"password": "pw2"}, "urls": ["amqp://u:pw3@h//", "redis://h/1"]},
        "task_routes": {"a.*": {"queue": "a"}},
        "password": "",
    }
    assert mask(value) == {
        "broker_url": "redis://u:****@h:6379/0",
        "opts": {"sentinel_kwargs": {"password": "****"}, "urls": ["amqp://u:****@h//", "redis://h/1"]},
        "task_routes": {"a.*": {"queue": "a"}},
        "password": "",
    }


def test_schedules_in_words():
    assert interval_words(300) == "every 5 minutes"
    assert interval_words(60) == "every minute"
    assert interval_words(90) == "every 90 seconds"
    assert schedule_words(timedelta(hours=2)) == "every 2 hours"
    assert schedule_words(crontab(minute=0, hour=2)) == "at 02:00 every day"
    assert schedule_words(crontab(minute=30, hour=7, day_of_week=1)) == "at 07:30 every Monday"
    assert schedule_words(crontab(minute="*/15")) == "cron */15 * * * *"
    assert crontab_words("0", "2", "1", "*", "*") == "cron 0 2 1 * *"
    assert solar_words("sunset", 52.37, 4.89) == "sunset at 52.37,4.89"


@pytest.mark.django_db
def test_recent_activity_is_one_group_by(settings):
    from django_celery_results.models import TaskResult

    settings.CELERY_RESULT_BACKEND = "django-db"
    for i, state in enumerate(["SUCCESS", "SUCCESS", "FAILURE", "STARTED", "SUCCESS"]):
        TaskResult.objects.create(task_id=f"t{i}", status=state)
    old = TaskResult.objects.create(task_id="old", status="FAILURE")
    TaskResult.objects.filter(pk=old.pk).update(date_done=timezone.now() - timedelta(hours=2))
    with CaptureQueriesContext(connection) as queries:
        assert recent_activity() == {"FAILURE": 1, "STARTED": 1, "SUCCESS": 3}
    assert len(queries) == 1
