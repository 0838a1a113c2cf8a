"""The OpenAPI schema documents every endpoint with its serializers, with no warnings."""

import subprocess
import sys

import pytest
from django.urls import reverse

from unittests.conftest import ROOT


def test_schema_generates_without_warnings():
    result = subprocess.run(
        [sys.executable, "manage.py", "spectacular", "--validate", "--fail-on-warn", "--format", "openapi-json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert "Warning" not in result.stderr
    assert "/api/v2/celery/status/" in result.stdout


@pytest.mark.django_db
def test_schema_and_swagger_are_served(api):
    schema = api.get(reverse("schema_oa3"), {"format": "json"}).json()
    status = schema["paths"]["/api/v2/celery/status/"]["get"]
    assert status["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith("OrDisabled")
    one_of = schema["components"]["schemas"]["CeleryStatusOrDisabled"]["oneOf"]
    assert {ref["$ref"].rsplit("/", 1)[1] for ref in one_of} == {"CeleryStatus", "CeleryDisabled"}
    purge = schema["paths"]["/api/v2/celery/queue/purge/"]["post"]
    assert set(purge["responses"]) >= {"200", "400", "403", "503"}
    assert "queue" in schema["components"]["schemas"]["CeleryStatus"]["properties"]
    swagger = api.get(reverse("swagger-ui_oa3"))
    assert swagger.status_code == 200
    assert b"swagger-ui" in swagger.content


@pytest.mark.django_db
def test_schema_needs_a_login(client):
    assert client.get(reverse("schema_oa3")).status_code in (401, 403)
