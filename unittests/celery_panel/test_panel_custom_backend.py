"""The worked example of docs/celery_panel_backends.md, run as written: extracted from the doc,
plugged in through DJ_CELERY_PANEL_SETTINGS, against a real Redis result backend and a real worker."""

import re
import sys

import pytest
from django.urls import reverse

from unittests.conftest import ROOT, make_user

DOC = ROOT / "docs" / "celery_panel_backends.md"


@pytest.fixture
def doc_backend(tmp_path, monkeypatch, settings, redis_only):
    """The doc's example saved as the module myapp_doc.panel_backends and configured for the tasks page."""
    text = DOC.read_text()
    example = text.split("## Worked example", 1)[1]
    code = re.search(r"```python\n(.*?)```", example, re.S).group(1)
    package = tmp_path / "myapp_doc"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "panel_backends.py").write_text(code)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("myapp_doc.panel_backends", None)
    settings.DJ_CELERY_PANEL_SETTINGS = {"tasks_backend": "myapp_doc.panel_backends.RedisResultsTasksBackend"}
    return redis_only


@pytest.mark.django_db
def test_the_documented_backend_serves_the_tasks_page(doc_backend, client):
    from dojo.celery import app

    worker_env = {"DD_CELERY_RESULT_BACKEND": doc_backend.result_backend}
    doc_backend.start_worker("docs", **worker_env)
    celery_client = doc_backend.client()
    done = celery_client.send_task("dojo.tasks.add", args=(20, 22))
    assert done.get(timeout=15) == 42
    failed = celery_client.send_task("dojo.tasks.add", args=(1, "x"))
    with pytest.raises(TypeError):
        failed.get(timeout=15)

    original = app.conf.result_backend
    app.conf.result_backend = doc_backend.result_backend  # the example reads the app it is given
    try:
        client.force_login(make_user("staff", staff=True, permissions=("view_taskresult",)))
        page = client.get(reverse("celery_panel:tasks")).content.decode()
        assert "RedisResultsTasksBackend" in page
        assert "Redis result backend (celery-task-meta-* keys)" in page
        assert done.id in page and failed.id in page

        only_failures = client.get(reverse("celery_panel:tasks"), {"filter": "FAILURE"}).content.decode()
        assert failed.id in only_failures and done.id not in only_failures

        detail = client.get(reverse("celery_panel:task_detail", args=[failed.id]))
        assert detail.status_code == 200
        assert "TypeError" in detail.content.decode()
        assert client.get(reverse("celery_panel:task_detail", args=["no-such-task"])).status_code == 404
    finally:
        app.conf.result_backend = original
