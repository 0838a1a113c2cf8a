"""The System Settings page: who may see it, that it makes no broker call, and saving settings."""

import time

import pytest
from django.urls import reverse

from dojo.models import SystemSettings
from unittests.conftest import free_port, make_user

PAGE = reverse("system_settings")
SECRET = "page-s3cret"


@pytest.mark.django_db
def test_anonymous_goes_to_login(client):
    response = client.get(PAGE)
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))


@pytest.mark.django_db
@pytest.mark.parametrize("role", [{}, {"staff": True}])
def test_non_superusers_get_403(client, role):
    make_user("someone", **role)
    client.login(username="someone", password="pw-someone")
    assert client.get(PAGE).status_code == 403
    assert client.post(PAGE, {"instance_name": "x"}).status_code == 403


@pytest.mark.django_db
def test_renders_at_once_with_the_broker_down(client, superuser, settings):
    """A closed port and a planted password: the page neither waits on nor names the broker."""
    settings.CELERY_BROKER_URL = f"redis://:{SECRET}@127.0.0.1:{free_port()}/0"
    client.force_login(superuser)
    started = time.monotonic()
    response = client.get(PAGE)
    assert time.monotonic() - started < 0.5
    html = response.content.decode()
    assert response.status_code == 200
    assert SECRET not in html
    for needed in (
        'id="celery-panel"',
        f'data-status-url="{reverse("celery_status")}"',
        f'data-purge-url="{reverse("celery_queue_purge")}"',
        "admin/js/vendor/jquery/jquery.min.js",
        "dojo/js/celery_panel.js",
        'id="celery-purge"',
        "csrfmiddlewaretoken",
    ):
        assert needed in html


@pytest.mark.django_db
def test_superuser_saves_settings(client, superuser):
    client.force_login(superuser)
    response = client.post(
        PAGE,
        {"instance_name": "Fleet A", "contact_email": "ops@example.com", "status_refresh_seconds": "15"},
    )
    assert response.status_code == 302
    row = SystemSettings.load()
    assert (row.instance_name, row.contact_email, row.allow_queue_purge, row.status_refresh_seconds) == (
        "Fleet A",
        "ops@example.com",
        False,
        15,
    )
    html = client.get(PAGE).content.decode()
    assert "Fleet A" in html
    assert "Queue purge is disabled" in html
    assert 'id="celery-purge"' not in html


@pytest.mark.django_db
def test_invalid_settings_are_400_with_the_field(client, superuser):
    client.force_login(superuser)
    response = client.post(PAGE, {"instance_name": "", "contact_email": "not-an-email"})
    assert response.status_code == 400
    assert response.context["form"].errors.keys() >= {"instance_name", "contact_email"}


@pytest.mark.django_db
def test_login_and_logout(client, superuser):
    response = client.post(reverse("login"), {"username": "admin", "password": "pw-admin"})
    assert response.status_code == 302
    assert client.get(PAGE).status_code == 200
    assert client.post(reverse("logout")).status_code == 302
    assert client.get(PAGE).status_code == 302


@pytest.mark.django_db
def test_admin_is_on(client, superuser):
    client.force_login(superuser)
    assert client.get(reverse("admin:dojo_systemsettings_changelist")).status_code == 200
