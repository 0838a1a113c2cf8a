"""Who may call the Celery API, over session and token auth, and CSRF on session POSTs."""

import pytest
from django.urls import reverse
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from unittests.conftest import make_user

STATUS = reverse("celery_status")
PURGE = reverse("celery_queue_purge")
ROLES = {"plain": {}, "staff": {"staff": True}, "superuser": {"superuser": True}}


def client_for(role: str, auth: str) -> APIClient:
    client = APIClient(enforce_csrf_checks=True)
    if role == "anonymous":
        return client
    user = make_user(role, **ROLES[role])
    if auth == "token":
        client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    else:
        assert client.login(username=role, password="pw-" + role)
    return client


def session_post(client: APIClient, url: str, data: dict):
    """A session POST the way the page sends it: with the CSRF token from the cookie."""
    client.get(reverse("login"))  # any page with a form sets the csrftoken cookie
    token = client.cookies["csrftoken"].value
    return client.post(url, data, format="json", HTTP_X_CSRFTOKEN=token)


@pytest.mark.django_db
@pytest.mark.parametrize("auth", ["session", "token"])
@pytest.mark.parametrize(("role", "expected"), [("anonymous", 401), ("plain", 403), ("staff", 403), ("superuser", 200)])
def test_permission_matrix(filesystem_only, auth, role, expected):
    client = client_for(role, auth)

    assert client.get(STATUS).status_code == expected
    if auth == "session" and role != "anonymous":
        purge = session_post(client, PURGE, {"queue": "celery"})
    else:
        purge = client.post(PURGE, {"queue": "celery"}, format="json")
    assert purge.status_code == expected
    if expected == 200:
        assert purge.json() == {"queue": "celery", "purged": 0, "backend": "default"}
    if expected == 401:
        assert purge["WWW-Authenticate"].startswith("Token")


@pytest.mark.django_db
def test_session_post_without_csrf_token_is_refused(filesystem_only):
    client = client_for("superuser", "session")
    response = client.post(PURGE, {"queue": "celery"}, format="json")
    assert response.status_code == 403
    assert "CSRF" in response.json()["detail"]


@pytest.mark.django_db
@pytest.mark.parametrize("method", ["get", "put", "patch", "delete"])
def test_purge_accepts_only_post(filesystem_only, api, method):
    assert getattr(api, method)(PURGE).status_code == 405


@pytest.mark.django_db
def test_status_accepts_only_get(filesystem_only, api):
    assert api.post(STATUS).status_code == 405


@pytest.mark.django_db
@pytest.mark.parametrize("body", [{"queue": ""}, {"queue": 5}, {"queue": ["celery"]}])
def test_purge_bad_body_is_400_with_the_field(filesystem_only, api, body):
    response = api.post(PURGE, body, format="json")
    assert response.status_code == 400
    assert "queue" in response.json()


@pytest.mark.django_db
def test_purge_malformed_json_is_400(filesystem_only, api):
    response = api.post(PURGE, "{not json", content_type="application/json")
    assert response.status_code == 400
