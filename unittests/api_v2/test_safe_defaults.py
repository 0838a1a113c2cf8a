"""Safe defaults for a deployment (issue 11, item 7): the web server never runs on the public
development key, and the controls are throttled, refusals included, so a user without rights
cannot flood the audit log. (The deploy checks of the compose configuration: test_docker_compose.py.)
"""

import os
import subprocess
import sys

import pytest
from django.urls import reverse
from rest_framework.test import APIClient
from rest_framework.throttling import ScopedRateThrottle

from dojo.models import CeleryAuditLog
from unittests.conftest import ROOT, make_user


def import_wsgi(**variables: str) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("DD_")} | variables
    return subprocess.run(
        [sys.executable, "-c", "import dojo.wsgi"],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_web_server_refuses_the_development_key():
    """Before, DD_SECRET_KEY fell back to a public string with DEBUG off: this failed on that code."""
    refused = import_wsgi()
    assert refused.returncode != 0
    assert "DD_SECRET_KEY is not set" in refused.stderr
    assert import_wsgi(DD_SECRET_KEY="k" * 50).returncode == 0
    assert import_wsgi(DD_DEBUG="true").returncode == 0  # development


@pytest.mark.django_db
def test_refused_controls_are_throttled_before_they_are_audited(monkeypatch):
    """A staff user without the permission sends a control again and again: the first ones are
    refused with 403 and audited, then 429 with no row. Before, refusals were never throttled: every
    one left a row, so this failed on that code."""
    monkeypatch.setattr(
        ScopedRateThrottle, "THROTTLE_RATES", {**ScopedRateThrottle.THROTTLE_RATES, "celery_controls": "3/min"}
    )
    api = APIClient()
    api.force_authenticate(make_user("intruder", staff=True))
    answers = [
        api.post(reverse("celery_queue_pause"), {"queue": "celery"}, format="json").status_code for _ in range(6)
    ]
    assert answers == [403, 403, 403, 429, 429, 429]
    assert CeleryAuditLog.objects.filter(username="intruder").count() == 3
