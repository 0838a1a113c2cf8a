"""The Celery panel's pages in headless Chromium, logged into the admin as staff, with a real worker."""

import pytest
from django.urls import reverse

from unittests.celery_panel.test_panel_pages import TASKS_TEMPLATE
from unittests.conftest import make_user


@pytest.mark.django_db(transaction=True)
def test_screenshot_every_panel_page(redis_only, live_server, browser_page, tmp_path):
    make_user("staff", staff=True)
    worker = redis_only.start_worker("w1")
    page = browser_page

    page.goto(live_server.url + reverse("admin:index"))
    page.fill("#id_username", "staff")
    page.fill("#id_password", "pw-staff")
    page.click("input[type=submit], button[type=submit]")
    page.wait_for_selector("#celery-panel-section")
    page.screenshot(path=str(tmp_path / "admin_index.png"), full_page=True)

    pages = {
        "overview": reverse("celery_panel:overview"),
        "dashboard": reverse("celery_panel:dashboard"),
        "workers": reverse("celery_panel:workers"),
        "worker_detail": reverse("celery_panel:worker_detail", args=[worker]),
        "queues": reverse("celery_panel:queues"),
        "queue_detail": reverse("celery_panel:queue_detail", args=["celery"]),
        "configuration": reverse("celery_panel:configuration"),
        "periodic_tasks": reverse("celery_panel:periodic_tasks"),
    }
    if TASKS_TEMPLATE.exists():  # the tasks page is added by another change
        pages["tasks"] = reverse("celery_panel:tasks")
    for link in page.locator("#celery-panel-section a").all():
        assert link.get_attribute("href") in {*pages.values(), reverse("celery_panel:tasks")}

    for name, url in pages.items():
        response = page.goto(live_server.url + url)
        assert response.status == 200, name
        assert page.locator("#site-name").count() == 1, name  # the admin's header
        assert page.locator(".backend-info").count() == 1, name  # which backend served it
        page.screenshot(path=str(tmp_path / f"{name}.png"), full_page=True)
        assert (tmp_path / f"{name}.png").stat().st_size > 0
    assert page.console_errors == []
