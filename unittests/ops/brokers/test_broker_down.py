"""A broker that is down for real: a closed port, and a TCP server that accepts and never answers.

No mocks: the sockets are real, so the time bounds are the ones a request would see.
"""

import time

import pytest
from django.urls import reverse

from unittests.conftest import free_port

SECRET = "s3cret-broker-pw"


def broker_urls(silent_port: int) -> dict[str, str]:
    return {
        "closed port": f"redis://:{SECRET}@127.0.0.1:{free_port()}/0",
        "accepts, never answers": f"redis://:{SECRET}@127.0.0.1:{silent_port}/0",
        "amqp accepts, never answers": f"amqp://guest:{SECRET}@127.0.0.1:{silent_port}//",
    }


@pytest.mark.django_db
@pytest.mark.parametrize("which", ["closed port", "accepts, never answers", "amqp accepts, never answers"])
@pytest.mark.parametrize("bound", [2.0, 1.0])
def test_status_answers_within_the_bound(api, settings, silent_port, which, bound):
    settings.CELERY_BROKER_URL = broker_urls(silent_port)[which]
    settings.CELERY_BROKER_TRANSPORT_OPTIONS = {}
    settings.CELERY_BROKER_TIMEOUT = bound

    started = time.monotonic()
    response = api.get(reverse("celery_status"))
    elapsed = time.monotonic() - started

    assert response.status_code == 200
    body = response.json()
    assert body["broker_status"] is False
    assert body["connected"] is False
    assert body["worker_status"] is False
    assert body["workers"] == 0
    assert body["queue_length"] is None
    assert body["error"]
    assert SECRET not in response.content.decode()
    assert "****" in body["broker_url"]
    assert elapsed < bound + 0.5, elapsed


@pytest.mark.django_db
@pytest.mark.parametrize("which", ["closed port", "accepts, never answers"])
def test_purge_is_503_within_the_bound(api, settings, silent_port, which):
    settings.CELERY_BROKER_URL = broker_urls(silent_port)[which]
    settings.CELERY_BROKER_TRANSPORT_OPTIONS = {}

    started = time.monotonic()
    response = api.post(reverse("celery_queue_purge"), {"queue": "celery"}, format="json")
    elapsed = time.monotonic() - started

    assert response.status_code == 503
    assert "unreachable" in response.json()["detail"]
    assert SECRET not in response.content.decode()
    assert elapsed < settings.CELERY_BROKER_TIMEOUT + 0.5, elapsed
