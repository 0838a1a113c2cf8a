"""POST /api/v2/celery/queues/purge-task/ on a real Redis: refused when System Settings turn purge
off, and one audit row for every outcome: complete, partial (the time budget ran out) and failed
(the broker stopped answering in the middle of the purge)."""

import pytest
import redis
from django.urls import reverse

from dojo.models import CeleryAuditLog, SystemSettings
from dojo.ops.brokers import redis as redis_lists
from dojo.ops.brokers.messages import task_name
from unittests.conftest import LiveBroker
from unittests.ops.brokers.test_redis_purge_by_name import ADD, SLEEP, envelope_factory, push_oldest_first

PURGE_TASK = reverse("celery_queue_purge_task")
BODY = {"queue": "celery", "task_name": ADD}


@pytest.fixture
def plain(redis_only: LiveBroker) -> redis.Redis:
    return redis.Redis.from_url(redis_only.url)


@pytest.fixture
def loaded(redis_only: LiveBroker, plain: redis.Redis) -> list[bytes]:
    """3,000 messages in `celery`, one in ten of dojo.tasks.add (300): three purge windows."""
    make = envelope_factory(redis_only)
    raws = [make(ADD) if i % 10 == 0 else make(SLEEP) for i in range(3 * redis_lists.PURGE_WINDOW)]
    push_oldest_first(plain, "celery", raws)
    return raws


def rows() -> list[tuple[str, dict, str]]:
    return [
        (row.result, row.counts, row.detail)
        for row in CeleryAuditLog.objects.filter(action="purge_task").order_by("created_at", "id")
    ]


@pytest.mark.django_db
def test_purge_by_name_is_refused_when_purge_is_off_in_system_settings(loaded, plain, api):
    """Like the whole-queue purge: 403, nothing removed, a refused audit row. Fails on the old code,
    which purged by name whatever System Settings said (200)."""
    switch = SystemSettings.load()
    switch.allow_queue_purge = False
    switch.save()

    response = api.post(PURGE_TASK, BODY, format="json")

    assert response.status_code == 403
    assert "disabled in System Settings" in response.json()["detail"]
    assert plain.llen("celery") == len(loaded)
    assert rows() == [("refused", {}, "Queue purge is disabled in System Settings.")]


@pytest.mark.django_db
def test_a_partial_purge_answers_complete_false_and_is_audited_as_partial(loaded, plain, api, settings):
    """No time budget: the answer says complete=false with the 100 removed from the first window and
    the audit row records the count and that it was partial; with a budget, the next request
    removes the other 200 and says complete=true. Fails on the old code (no budget, no
    `complete`)."""
    settings.CELERY_PURGE_TASK_SECONDS = 0

    partial = api.post(PURGE_TASK, BODY, format="json")

    assert partial.status_code == 200, partial.content
    assert partial.json() == {**BODY, "backend": "default", "purged": 100, "complete": False}
    settings.CELERY_PURGE_TASK_SECONDS = 30
    rest = api.post(PURGE_TASK, BODY, format="json")
    assert rest.json() == {**BODY, "backend": "default", "purged": 200, "complete": True}
    assert not any(task_name(raw) == ADD for raw in plain.lrange("celery", 0, -1))
    (first, counts, detail), second = rows()
    assert (first, counts) == ("ok", {"purged": 100})
    assert detail.startswith("partial: the time budget (DD_CELERY_PURGE_TASK_SECONDS) ran out after 100 removed")
    assert second == ("ok", {"purged": 200}, "")


@pytest.mark.django_db
def test_a_broker_that_stops_answering_mid_purge_is_audited_with_what_was_removed(
    loaded, plain, api, settings, monkeypatch
):
    """After two windows (200 removed) Redis stops answering writes (a real CLIENT PAUSE, so the
    third window times out for real): 503 that says what was removed, and a failed audit row with
    that count. Fails on the old code (200: it used no script, so the pause never came; and its
    failure path recorded "nothing was done" without counts). The only stand-in is the trigger: the
    purge script is wrapped so that the pause begins exactly before its third call, which a timer
    could not hit reliably."""
    settings.CELERY_BROKER_TIMEOUT = 0.5
    real_call = redis.commands.core.Script.__call__
    calls = []

    def pausing_call(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            plain.execute_command("CLIENT", "PAUSE", 2000, "WRITE")
        return real_call(self, *args, **kwargs)

    monkeypatch.setattr(redis.commands.core.Script, "__call__", pausing_call)

    response = api.post(PURGE_TASK, BODY, format="json")

    assert response.status_code == 503
    assert "failed after 200 messages were removed" in response.json()["detail"]
    [(result, counts, detail)] = rows()
    assert (result, counts) == ("failed", {"purged": 200})
    assert "failed after 200 messages were removed" in detail
    plain.execute_command("CLIENT", "UNPAUSE")
    assert plain.llen("celery") == len(loaded) - 200
