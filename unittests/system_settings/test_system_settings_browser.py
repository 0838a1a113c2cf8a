"""The System Settings page in headless Chromium against a real Redis broker."""

import json
import re
import time
from datetime import timedelta

import pytest
from django.urls import reverse

from unittests.api_v2.test_status_and_purge import publish
from unittests.conftest import make_user, wait_for


def log_in(page, live_server) -> None:
    page.goto(live_server.url + reverse("system_settings"))
    page.fill("#id_username", "admin")
    page.fill("#id_password", "pw-admin")
    page.click("button[type=submit]")
    page.wait_for_url("**" + reverse("system_settings"))


@pytest.mark.django_db(transaction=True)
def test_purge_from_the_page(redis_only, live_server, browser_page, tmp_path):
    make_user("admin", superuser=True)
    publish(redis_only, 5, priorities=(0, 9))
    page = browser_page

    log_in(page, live_server)
    page.wait_for_selector("#celery-broker-badge.ok")
    assert page.text_content("#celery-queue-length") == "5"
    assert page.text_content("#celery-task-time-limit") == "12 hours"
    assert page.text_content("#celery-task-soft-time-limit") == "off"
    assert page.text_content("#celery-worker-badge") == "none answering"
    assert page.is_enabled("#celery-purge")

    dialogs: list[str] = []

    def accept(dialog) -> None:
        dialogs.append(dialog.message)
        dialog.accept()

    page.once("dialog", accept)
    page.click("#celery-purge")
    page.wait_for_selector("#celery-purge-result:not([hidden])")
    assert 'Purged 5 task(s) from "celery"' in page.text_content("#celery-purge-result")
    page.wait_for_function("document.querySelector('#celery-queue-length').textContent === '0'")
    assert '"celery"' in dialogs[0] and "5" in dialogs[0]
    page.screenshot(path=str(tmp_path / "system_settings.png"), full_page=True)
    assert page.console_errors == []


@pytest.mark.django_db(transaction=True)
def test_broker_down_shows_in_the_panel_and_disables_purge(live_server, browser_page, settings):
    from unittests.conftest import free_port

    settings.CELERY_BROKER_URL = f"redis://:pw@127.0.0.1:{free_port()}/0"
    settings.CELERY_BROKER_TRANSPORT_OPTIONS = {}
    make_user("admin", superuser=True)
    page = browser_page

    log_in(page, live_server)
    page.wait_for_selector("#celery-broker-badge.bad")
    assert page.text_content("#celery-queue-length") == "unknown"
    assert "unreachable" in page.text_content("#celery-error")
    assert page.is_disabled("#celery-purge")
    assert page.console_errors == []


def status_url_pattern() -> re.Pattern:
    return re.compile(re.escape(reverse("celery_status")) + r"(\?|$)")


def path_points(d: str) -> int:
    """How many points a chart path has: one M (start of a run) or L command each."""
    return len(re.findall(r"[ML]", d))


def only_failed_loads(console_errors: list[str]) -> bool:
    """Chromium logs every HTTP error answer to an XHR; those are expected where a test forces one."""
    return all("Failed to load resource" in error for error in console_errors)


@pytest.mark.django_db(transaction=True)
def test_running_tasks_and_alerts(redis_only, live_server, browser_page, tmp_path):
    from dojo.ops.fleet.status_cache import get_status

    make_user("admin", superuser=True)
    worker = redis_only.start_worker("w1")
    client = redis_only.client()
    ids = [client.send_task("dojo.tasks.sleep", args=(30,)).id for _ in range(2)]
    try:
        wait_for(lambda: get_status(refresh=True).active_tasks == 2, 30, "two running sleep tasks")
        page = browser_page

        log_in(page, live_server)
        for task_id in ids:
            page.wait_for_selector(f'#celery-active tr[data-task-id="{task_id}"]')
        first = page.locator("#celery-active tr.worker-first")
        assert first.locator("td.worker").text_content() == worker
        assert first.locator("td.concurrency").text_content() == "2"
        assert first.locator("td.active-count").text_content() == "2"
        for task_id in ids:
            row = page.locator(f'#celery-active tr[data-task-id="{task_id}"]')
            assert row.locator("td.task-name").text_content() == "dojo.tasks.sleep"
            assert row.locator("code.task-id").text_content() == task_id
            assert row.locator("code.task-args").text_content() == "[30]"
            assert re.fullmatch(r"\d+\.\d s", row.locator("td.running").text_content())
        assert page.text_content("#celery-active-total") == "2"
        assert page.text_content("#celery-reserved-total") == "0"
        assert page.text_content("#celery-scheduled-total") == "0"
        assert page.text_content("#celery-worker-badge") == "running"
        assert re.fullmatch(r"\d+ s ago", page.text_content("#celery-read-ago"))
        queue_row = page.locator('#celery-queues tr[data-queue="celery"]')
        assert queue_row.locator("td.queue-ready").text_content() == "0"
        assert queue_row.locator("td.queue-consumers").text_content() == "1"

        # Both slots of the only worker are busy: the status document says so, and so does the page.
        alert = page.locator('#celery-alerts li[data-code="worker_saturated"]')
        assert alert.locator(".badge").text_content() == "warning"
        assert alert.locator(".alert-message").text_content() == f"Worker {worker} runs 2 of 2 tasks at once."
        assert page.locator("#celery-alerts li").count() == 1
        page.screenshot(path=str(tmp_path / "running_tasks.png"), full_page=True)
        assert page.console_errors == []
    finally:
        client.control.revoke(ids, terminate=True)  # so the worker stops at once, not after the sleep


def crafted_status(**overrides) -> dict:
    """A status document as the API returns it, for tests that stand in for the server."""
    now = time.time()
    markup = '<img src=x onerror="window.__injected = 1">'
    document = {
        "enabled": True,
        "connected": True,
        "broker_status": True,
        "worker_status": True,
        "workers": 1,
        "worker_names": ["w9@host"],
        "queue": "celery",
        "queue_length": 3,
        "queues": {"celery": {"ready": 3, "consumers": 1}, "reports": {"ready": None, "consumers": 0}},
        "active_tasks": 2,
        "reserved_tasks": 1,
        "scheduled_tasks": 0,
        "registered_tasks": [],
        "worker_stats": {"w9@host": {"pool": {"max-concurrency": 4}}},
        "queue_details": {
            "active": {
                "w9@host": [
                    {
                        "id": "t-1",
                        "name": "dojo.tasks.sleep",
                        "args": [markup * 4],
                        "kwargs": {},
                        "time_start": now - 3.2,
                    },
                    {
                        "id": "t-2",
                        "name": "dojo.tasks.add",
                        "args": [1, 2],
                        "kwargs": {"x": "<b>y</b>"},
                        "time_start": now - 250,
                    },
                ]
            },
            "reserved": {"w9@host": [{"id": "t-3", "name": "dojo.tasks.add", "args": [], "kwargs": {}}]},
            "scheduled": {"w9@host": []},
        },
        "alerts": [
            {"code": "no_workers", "severity": "critical", "message": "<b>critical</b> one"},
            {"code": "queue_too_long", "severity": "warning", "message": "Queue 'celery' holds 3 messages."},
        ],
        "task_time_limit": None,
        "task_soft_time_limit": None,
        "task_default_expires": None,
        "broker_url": "redis://127.0.0.1:1/0",
        "error": None,
        "read_at": now - 2,
    }
    document.update(overrides)
    return document


@pytest.mark.django_db(transaction=True)
def test_task_arguments_and_alerts_are_shown_as_text(live_server, browser_page, tmp_path):
    make_user("admin", superuser=True)
    page = browser_page
    overrides: list[dict] = [{}]  # the document is made per request: running times start from then
    page.route(
        status_url_pattern(),
        lambda route: route.fulfill(
            status=200, content_type="application/json", body=json.dumps(crafted_status(**overrides[-1]))
        ),
    )

    log_in(page, live_server)
    page.wait_for_selector('#celery-active tr[data-task-id="t-1"]')
    args = page.text_content('tr[data-task-id="t-1"] code.task-args')
    assert args.startswith('["<img src=x onerror=') and args.endswith("…") and len(args) == 80
    assert page.text_content('tr[data-task-id="t-2"] code.task-args') == '[1,2] {"x":"<b>y</b>"}'
    assert re.fullmatch(r"[34]\.\d s", page.text_content('tr[data-task-id="t-1"] td.running'))
    assert page.text_content('tr[data-task-id="t-2"] td.running') == "4 min"
    assert page.text_content("#celery-alerts li[data-code=no_workers] .alert-message") == "<b>critical</b> one"
    assert page.text_content("#celery-alerts li[data-code=no_workers] .badge") == "critical"
    assert page.locator("#celery-panel img, #celery-panel b").count() == 0
    assert page.evaluate("window.__injected") is None
    assert page.text_content('#celery-queues tr[data-queue="reports"] td.queue-ready') == "unknown"
    assert page.text_content("#celery-reserved-total") == "1"
    assert page.text_content("#celery-chart") == "No history recorded yet"

    overrides.append({"alerts": []})
    page.click("#celery-refresh")
    page.wait_for_selector("#celery-alerts li.no-alerts")
    assert page.text_content("#celery-alerts") == "No alerts"
    page.screenshot(path=str(tmp_path / "crafted.png"), full_page=True)
    assert page.console_errors == []


def record_history(count: int, queues: dict[str, int]) -> None:
    """`count` snapshots five minutes apart over the last hour; the queue grows, a second worker joins."""
    from django.utils import timezone

    from dojo.models import CeleryStatusSnapshot

    now = timezone.now()
    for i in range(count):
        snapshot = CeleryStatusSnapshot.objects.create(
            broker_status=True,
            workers=1 if i < count // 2 else 2,
            active_tasks=0,
            reserved_tasks=0,
            scheduled_tasks=0,
            queue_lengths={name: base + 2 * i for name, base in queues.items()},
            active_by_worker={},
        )
        minutes_ago = 5 * (count - 1 - i) + 1
        CeleryStatusSnapshot.objects.filter(pk=snapshot.pk).update(created_at=now - timedelta(minutes=minutes_ago))


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("queues", "series"),
    [({"celery": 0}, ["queue", "workers"]), ({"celery": 0, "reports": 5}, ["queue", "total", "workers"])],
)
def test_history_chart(redis_only, live_server, browser_page, tmp_path, settings, queues, series):
    from django.utils import timezone

    from dojo.models import CeleryStatusSnapshot

    settings.CELERY_TASK_QUEUES = {name: {} for name in queues}
    make_user("admin", superuser=True)
    record_history(12, queues)
    # Three hours ago: outside the default hour, inside the last six hours.
    old = CeleryStatusSnapshot.objects.create(
        broker_status=True, workers=1, active_tasks=0, reserved_tasks=0, scheduled_tasks=0,
        queue_lengths=dict.fromkeys(queues, 1), active_by_worker={},
    )  # fmt: skip
    CeleryStatusSnapshot.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(hours=3))
    page = browser_page
    history_urls: list[str] = []
    page.on("request", lambda request: reverse("celery_history") in request.url and history_urls.append(request.url))

    log_in(page, live_server)
    page.wait_for_selector("#celery-chart svg path.series")
    assert (
        page.locator("#celery-chart svg path.series").evaluate_all("paths => paths.map(p => p.dataset.series)")
        == series
    )
    for name in series:
        assert path_points(page.get_attribute(f'#celery-chart path[data-series="{name}"]', "d")) == 12
    # The queue grew: its line ends higher (smaller y) than it starts.
    d = page.get_attribute('#celery-chart path[data-series="queue"]', "d")
    ys = [float(y) for y in re.findall(r"[ML][\d.]+ ([\d.]+)", d)]
    assert ys[-1] < ys[0]
    legend = page.locator("#celery-chart .legend-item text").all_text_contents()
    assert legend[0] == "Queue celery" and legend[-1] == "Workers (right axis)"
    assert len(legend) == len(series)
    assert page.locator("#celery-chart text.tick").count() >= 6  # time and both value axes are labelled
    assert len(history_urls) == 1 and "since=" in history_urls[0]
    page.screenshot(path=str(tmp_path / f"history_{len(queues)}.png"), full_page=True)

    page.select_option("#celery-history-range", "21600")
    page.wait_for_function(
        """() => {
            const path = document.querySelector('#celery-chart path[data-series="workers"]');
            return path && (path.getAttribute('d').match(/[ML]/g) || []).length === 13;
        }"""
    )
    assert len(history_urls) == 2
    assert page.console_errors == []


@pytest.mark.django_db(transaction=True)
def test_auto_refresh_pauses_while_the_page_is_hidden(redis_only, live_server, browser_page, tmp_path):
    make_user("admin", superuser=True)
    page = browser_page
    pattern = status_url_pattern()
    requests: list[str] = []
    # Counted in the page: an XHR is in flight from send() until it is done (readyState 4, which
    # comes before the load event whose handlers may start the next one), whatever the outcome.
    page.add_init_script(
        """(() => {
            window.__statusInFlight = 0;
            window.__statusMostInFlight = 0;
            const open = XMLHttpRequest.prototype.open;
            const send = XMLHttpRequest.prototype.send;
            XMLHttpRequest.prototype.open = function (method, url) {
                this.__isStatus = String(url).indexOf(STATUS_PATH) >= 0;
                return open.apply(this, arguments);
            };
            XMLHttpRequest.prototype.send = function () {
                if (this.__isStatus) {
                    window.__statusInFlight += 1;
                    window.__statusMostInFlight = Math.max(window.__statusMostInFlight, window.__statusInFlight);
                    this.addEventListener("readystatechange", () => {
                        if (this.readyState === 4) { window.__statusInFlight -= 1; }
                    });
                }
                return send.apply(this, arguments);
            };
        })();""".replace("STATUS_PATH", json.dumps(reverse("celery_status")))
    )
    page.on("request", lambda request: pattern.search(request.url) and requests.append(request.url))

    log_in(page, live_server)
    page.wait_for_selector("#celery-broker-badge.ok")
    assert page.text_content("#celery-queue-length") == "0"
    assert page.input_value("#celery-auto-refresh") == "0"  # status_refresh_seconds is 0
    page.select_option("#celery-auto-refresh", "2")
    assert page.evaluate("localStorage.getItem('dojo.celery.autoRefreshSeconds')") == "2"

    publish(redis_only, 7)
    # The status is cached for a few seconds: the change shows within cache + interval, without a click.
    page.wait_for_function("document.querySelector('#celery-queue-length').textContent === '7'", timeout=15_000)
    assert len(requests) >= 2
    assert not any("refresh=1" in url for url in requests), requests

    # A click while an automatic read may be out never makes a second request at once.
    for _ in range(3):
        page.click("#celery-refresh")
    page.wait_for_function("document.querySelector('#celery-spinner').hidden")
    assert any("refresh=1" in url for url in requests)

    page.evaluate(
        """() => {
            Object.defineProperty(document, 'hidden', {configurable: true, get: () => true});
            Object.defineProperty(document, 'visibilityState', {configurable: true, get: () => 'hidden'});
            document.dispatchEvent(new Event('visibilitychange'));
        }"""
    )
    page.wait_for_timeout(300)  # a request sent just before hiding is reported by now
    before = len(requests)
    publish(redis_only, 3)
    page.wait_for_timeout(6_500)  # three intervals
    assert len(requests) == before, requests[before:]
    assert page.text_content("#celery-queue-length") == "7"

    page.evaluate(
        """() => {
            Object.defineProperty(document, 'hidden', {configurable: true, get: () => false});
            Object.defineProperty(document, 'visibilityState', {configurable: true, get: () => 'visible'});
            document.dispatchEvent(new Event('visibilitychange'));
        }"""
    )
    # At once (well before the 2 s interval) and up to date: the cache expired while hidden.
    page.wait_for_function("document.querySelector('#celery-queue-length').textContent === '10'", timeout=1_500)
    assert len(requests) == before + 1
    assert page.evaluate("window.__statusMostInFlight") == 1
    page.screenshot(path=str(tmp_path / "auto_refresh.png"), full_page=True)

    page.reload()  # the pick is remembered
    page.wait_for_selector("#celery-broker-badge.ok")
    assert page.input_value("#celery-auto-refresh") == "2"
    assert page.console_errors == []


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(("configured", "shown"), [(15, "15"), (7, "0")])
def test_auto_refresh_starts_from_the_settings(redis_only, live_server, browser_page, configured, shown):
    from dojo.models import SystemSettings

    make_user("admin", superuser=True)
    system_settings = SystemSettings.load()
    system_settings.status_refresh_seconds = configured
    system_settings.save()
    page = browser_page

    log_in(page, live_server)
    page.wait_for_selector("#celery-broker-badge.ok")
    assert page.input_value("#celery-auto-refresh") == shown
    assert page.console_errors == []


@pytest.mark.django_db(transaction=True)
def test_history_and_purge_failures_show_in_the_panel(redis_only, live_server, browser_page, tmp_path):
    make_user("admin", superuser=True)
    publish(redis_only, 2)
    page = browser_page
    page.route(
        re.compile(re.escape(reverse("celery_history"))),
        lambda route: route.fulfill(status=500, content_type="text/html", body="<h1>Server Error</h1>"),
    )
    page.route(
        re.compile(re.escape(reverse("celery_queue_purge"))),
        lambda route: route.fulfill(
            status=503, content_type="application/json", body=json.dumps({"detail": "broker gone"})
        ),
    )

    log_in(page, live_server)
    page.wait_for_selector("#celery-error .error-history")
    assert page.text_content("#celery-error .error-history") == "Loading the Celery history failed (HTTP 500)."
    assert page.text_content("#celery-chart") == "The history could not be loaded."
    page.wait_for_selector("#celery-broker-badge.ok")
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#celery-purge")
    page.wait_for_selector("#celery-error .error-purge")
    assert page.text_content("#celery-error .error-purge") == "Purge failed (HTTP 503): broker gone"
    # The status read after the purge succeeds and leaves both failures shown.
    page.wait_for_function("document.querySelector('#celery-spinner').hidden")
    assert page.locator("#celery-error > div").count() == 2
    assert page.is_visible("#celery-error")
    assert page.text_content("#celery-queue-length") == "2"
    page.screenshot(path=str(tmp_path / "failures.png"), full_page=True)
    assert page.console_errors and only_failed_loads(page.console_errors), page.console_errors
