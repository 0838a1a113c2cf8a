"""The System Settings page in headless Chromium against a real Redis broker."""

import os
import shutil

import pytest
from django.urls import reverse

from unittests.conftest import IN_CI, make_user
from unittests.test_celery_status import publish

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]


@pytest.fixture
def browser_page():
    chromium = shutil.which("chromium")
    if chromium is None:
        if IN_CI:
            pytest.fail("chromium is not installed")
        pytest.skip("chromium is not installed")
    from playwright.sync_api import sync_playwright

    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"  # Playwright's sync API runs an event loop
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        page = browser.new_page()
        console_errors: list[str] = []
        page.on("console", lambda msg: msg.type == "error" and console_errors.append(msg.text))
        page.on("pageerror", lambda exc: console_errors.append(str(exc)))
        page.console_errors = console_errors
        yield page
        browser.close()


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
