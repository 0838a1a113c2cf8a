"""Every page of the project in headless Chromium, as a superuser and as a plain staff user."""

import logging
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import pytest
from django.contrib import admin
from django.urls import reverse
from django_celery_results.models import TaskResult

from unittests.conftest import make_user, wait_for

if TYPE_CHECKING:
    from playwright.sync_api import Page, Response

OK, FORBIDDEN = 200, 403
USERS = {"root": {"superuser": True}, "staff": {"staff": True}}  # staff: is_staff and no permission at all
ADMIN_APPS = ("dojo", "django_celery_results", "django_celery_beat")


def pages(worker: str, task_id: str) -> list[tuple[str, str, dict[str, int]]]:
    """(name, path, the status each user gets) of every page: the panel, the admin index and the API's
    Swagger UI are any staff user's; System Settings and the changelists need the superuser here."""
    both = {"root": OK, "staff": OK}
    superuser_only = {"root": OK, "staff": FORBIDDEN}
    panel = {
        "overview": reverse("celery_panel:overview"),
        "dashboard": reverse("celery_panel:dashboard"),
        "workers": reverse("celery_panel:workers"),
        "worker detail": reverse("celery_panel:worker_detail", args=[worker]),
        "tasks": reverse("celery_panel:tasks"),
        "task detail": reverse("celery_panel:task_detail", args=[task_id]),
        "queues": reverse("celery_panel:queues"),
        "queue detail": reverse("celery_panel:queue_detail", args=["celery"]),
        "configuration": reverse("celery_panel:configuration"),
        "periodic tasks": reverse("celery_panel:periodic_tasks"),
    }
    changelists = {
        f"{opts.app_label}.{opts.model_name} changelist": reverse(
            f"admin:{opts.app_label}_{opts.model_name}_changelist"
        )
        for opts in (model._meta for model in admin.site._registry)
        if opts.app_label in ADMIN_APPS
    }
    assert {name.split(".")[0] for name in changelists} == set(ADMIN_APPS)
    return [
        ("system settings", reverse("system_settings"), superuser_only),
        ("admin index", reverse("admin:index"), both),
        *((name, path, both) for name, path in panel.items()),
        *((name, path, superuser_only) for name, path in changelists.items()),
        ("swagger ui", reverse("swagger-ui_oa3"), both),
    ]


class Recorder:
    """What went wrong in the page, each tagged with the page being loaded: console errors, uncaught
    errors, requests that fail or answer >= 400."""

    def __init__(self, page: "Page") -> None:
        self.page = page
        self.current = ""
        self.problems: list[str] = []
        self.in_flight: set = set()
        page.on("console", lambda msg: msg.type == "error" and self.add(f"console: {msg.text} ({msg.location['url']})"))
        page.on("pageerror", lambda error: self.add(f"uncaught: {error}"))
        page.on("requestfailed", lambda request: self.add(f"{request.url} failed: {request.failure}"))
        page.on("response", lambda response: response.status >= 400 and self.add(f"{response.url} {response.status}"))
        page.on("request", lambda request: self.in_flight.add(request))
        page.on("requestfinished", lambda request: self.in_flight.discard(request))
        page.on("requestfailed", lambda request: self.in_flight.discard(request))

    def add(self, problem: str) -> None:
        self.problems.append(f"{self.current}: {problem}")

    def settle(self, quiet: float = 0.1, timeout: float = 15) -> None:
        """Wait until no request has been in flight for `quiet` seconds (the page's own fetches are done);
        quicker than Playwright's networkidle, which waits 500 ms on every page."""
        deadline = time.monotonic() + timeout
        idle_since = time.monotonic()
        while time.monotonic() < deadline:
            if self.in_flight:
                idle_since = time.monotonic()
            elif time.monotonic() - idle_since >= quiet:
                return
            self.page.wait_for_timeout(20)  # lets Playwright deliver the events
        raise TimeoutError(f"{self.current}: requests still in flight: {[r.url for r in self.in_flight]}")

    def load(self, name: str, path: str, expected: int, navigate: Callable[[], "Response | None"]) -> list[str]:
        """Run `navigate`, let the page settle, and check it is `path` answered `expected`; what went wrong.

        A refusal (expected >= 400) is checked for its status only: Chromium logs the document's own
        4xx as a console error, and the refusal is Django's plain page."""
        self.current = name
        seen = len(self.problems)
        response = navigate()
        self.settle()
        if response is None or response.status != expected:
            return [f"{name}: {path} answered {response and response.status}, expected {expected}"]
        if urlsplit(self.page.url).path != path:
            return [f"{name}: ended on {self.page.url}, expected {path}"]  # e.g. sent to the login page
        return [] if expected >= 400 else self.problems[seen:]


def expected_warning(record: logging.LogRecord, refused: set[str]) -> bool:
    """A django.request warning the run expects: a superuser page refusing the staff user, or a request
    a refusal page made (Django's plain 403 page links no icon: the browser asks for /favicon.ico)."""
    request = record.request
    if request.user.get_username() != "staff":
        return False
    referer = urlsplit(request.headers.get("Referer", "")).path
    return (record.status_code == FORBIDDEN and request.path in refused) or referer in refused


@pytest.mark.django_db(transaction=True)
def test_every_page_as_superuser_and_staff(redis_only, shared_database, live_server, browser_page, caplog):
    """Catches what only a browser sees, on every page and for both kinds of admin user: a template
    linking a static file that is not there, a resource the browser asks for on its own (the admin
    linked no icon: a /favicon.ico 404), a script error, any console error, any request that fails or
    answers >= 400; and a page answering a user another status than it should (the superuser's pages
    refuse the staff user with 403, the others answer both with 200). The server's log is checked too:
    Playwright does not report the browser's own requests (the icon) as network events."""
    for username, flags in USERS.items():
        make_user(username, **flags)
    worker = redis_only.start_worker("smoke", DD_DATABASE_URL=shared_database, DD_CELERY_RESULT_BACKEND="django-db")
    task_id = str(uuid.uuid4())
    redis_only.client().send_task("dojo.tasks.add", args=(2, 3), task_id=task_id)
    wait_for(lambda: TaskResult.objects.filter(task_id=task_id, status="SUCCESS").exists(), 30, "the stored result")
    every_page = pages(worker, task_id)

    page = browser_page
    page.unroute("**/favicon.ico")  # the fixture answers it; here the browser gets what a real one gets
    recorder = Recorder(page)
    base = live_server.url
    failures: list[str] = []
    login, index = reverse("login"), reverse("admin:index")
    caplog.set_level(logging.WARNING, logger="django.request")
    for username in USERS:
        page.context.clear_cookies()  # logged out
        failures += recorder.load(f"{username} login page", login, OK, lambda: page.goto(f"{base}{login}?next={index}"))

        def submit(username: str = username) -> "Response | None":
            page.fill("#id_username", username)
            page.fill("#id_password", "pw-" + username)
            with page.expect_navigation() as navigation:
                page.click("button[type=submit]")
            return navigation.value

        failures += recorder.load(f"{username} logging in", index, OK, submit)
        assert urlsplit(page.url).path == index, f"{username} is not logged in: {failures}"
        for name, path, statuses in every_page:
            failures += recorder.load(
                f"{username} {name}", path, statuses[username], lambda path=path: page.goto(base + path)
            )
    refused = {path for _, path, statuses in every_page if statuses["staff"] >= 400}
    failures += [
        f"server: {record.getMessage()}"
        for record in caplog.records
        if record.name == "django.request" and not expected_warning(record, refused)
    ]
    assert not failures, "\n".join(failures)
