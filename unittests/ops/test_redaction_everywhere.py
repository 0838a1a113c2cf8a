"""Secrets planted in every shape never reach a page, an API answer, /metrics or a log line
(dojo.ops.redaction, issue 11 item 6).

Shapes: a broker URL whose user is a token (rediss://TOKEN@host), a secret query parameter
(?access_token=), transport options under a secret key, a secret-named setting, and, in a queued
message, a secret keyword argument and a positional argument in a well-known token shape. The
extra brokers point at a closed port, so their error messages are on the pages too. Before the one
module, the token user, the query secret in free text and the positional token were shown as they
were: this test failed on that code.
"""

import logging

import pytest
from django.test import Client
from django.urls import reverse
from rest_framework.authtoken.models import Token

from unittests.conftest import LiveBroker, free_port, make_user

TOKEN_USER = "u9Xk2TokenUserQ7z"
QUERY_SECRET = "qs-S3cret-77"
OPTION_SECRET = "opt-S3cret-88"
SETTING_SECRET = "set-S3cret-99"
KWARG_SECRET = "kw-S3cret-11"
POSITIONAL_TOKEN = "ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8"
SECRETS = (TOKEN_USER, QUERY_SECRET, OPTION_SECRET, SETTING_SECRET, KWARG_SECRET, POSITIONAL_TOKEN)


@pytest.mark.django_db
def test_planted_secrets_reach_no_page_answer_metric_or_log(redis_only: LiveBroker, settings, caplog):
    closed = free_port()
    settings.CELERY_BACKENDS = {
        "token": {"broker_url": f"rediss://{TOKEN_USER}@127.0.0.1:{closed}/0"},
        "query": {"broker_url": f"redis://127.0.0.1:{closed}/0?access_token={QUERY_SECRET}"},
    }
    settings.CELERY_BROKER_TRANSPORT_OPTIONS = {
        **settings.CELERY_BROKER_TRANSPORT_OPTIONS,
        "sentinel_kwargs": {"password": OPTION_SECRET},
    }
    settings.CELERY_PANEL_TEST_SIGNATURE = SETTING_SECRET
    redis_only.client().send_task(
        "dojo.tasks.add", args=(POSITIONAL_TOKEN, "plain"), kwargs={"api_token": KWARG_SECRET}, queue="parked"
    )
    root = make_user("root", superuser=True)
    client = Client()
    client.force_login(root)
    token = Token.objects.create(user=root).key
    caplog.set_level(logging.INFO)

    answers = {}
    for alias in ("default", "token", "query"):
        for name in ("overview", "dashboard", "workers", "queues", "configuration", "periodic_tasks"):
            answers[f"{name} ({alias})"] = client.get(reverse(f"celery_panel:{name}"), {"backend": alias})
        for name in ("celery_status", "celery_queues", "celery_processes", "celery_semaphores", "metrics"):
            query = {"backend": alias, "refresh": "1"}
            answers[f"{name} ({alias})"] = client.get(reverse(name), query, HTTP_AUTHORIZATION=f"Token {token}")
    answers["break down"] = client.get(reverse("celery_queue_breakdown"), {"queue": "parked"})
    answers["system settings"] = client.get(reverse("system_settings"))

    assert answers["break down"].json()["messages"][0]["task"] == "dojo.tasks.add"  # the message was read
    assert "****" in answers["configuration (default)"].content.decode()
    for where, response in answers.items():
        assert response.status_code in (200, 503), (where, response.status_code)
        body = response.content.decode()
        for secret in SECRETS:
            assert secret not in body, f"{secret} shown by {where}"
    logged = "\n".join(record.getMessage() for record in caplog.records)
    for secret in SECRETS:
        assert secret not in logged, f"{secret} logged"
