"""The default expiry (DD_CELERY_TASK_DEFAULT_EXPIRES) never drops work the user scheduled: it
counts from the message's ETA, each retry gets a fresh one from its own ETA, and an `expires`
of the caller's is never changed. On a real worker, with a 3 s default, and in the raw message
headers read from Redis without consuming them (the queue's list, or the `unacked` hash where a
worker keeps the messages it holds for their ETA).
"""

import json
import time
from datetime import UTC, datetime, timedelta

import pytest
import redis

from dojo.publishing import DEFAULT_EXPIRES_HEADER
from unittests.conftest import LiveBroker

DEFAULT = 3  # seconds: DD_CELERY_TASK_DEFAULT_EXPIRES of the test and its worker
UNCONSUMED = "nobody-consumes-this"  # a queue no worker reads, for headers as published


def when(text: str) -> datetime:
    return datetime.fromisoformat(text)


def queued_headers(broker: LiveBroker, queue: str) -> list[dict]:
    """The headers of the messages waiting in `queue`, oldest first (LRANGE: nothing consumed)."""
    raw = redis.Redis.from_url(broker.url).lrange(queue, 0, -1)
    return [json.loads(message)["headers"] for message in reversed(raw)]


def held_headers(broker: LiveBroker) -> list[dict]:
    """The headers of the messages workers hold unacknowledged (ETA messages wait there)."""
    held = redis.Redis.from_url(broker.url).hvals("unacked")
    return [json.loads(value)[0]["headers"] for value in held]


def collect_held(broker: LiveBroker, results: list, timeout: float) -> dict[str, list[dict]]:
    """Poll the held messages until every result is ready: the headers of each message seen,
    by task id, in publish order (a retry or re-send is a new message with the same id)."""
    seen: dict[tuple[str, float], dict] = {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not all(result.ready() for result in results):
        for headers in held_headers(broker):
            seen.setdefault((headers["id"], headers["dojo_published_at"]), headers)
        time.sleep(0.05)
    by_id: dict[str, list[dict]] = {}
    for (task_id, _published), headers in sorted(seen.items(), key=lambda item: item[0][1]):
        by_id.setdefault(task_id, []).append(headers)
    return by_id


@pytest.fixture
def worker(redis_only: LiveBroker, shared_database: str, settings) -> LiveBroker:
    """A worker and this process (the test publishes too) with a 3 s default expiry; the worker
    shares the test database (the concurrency limiter records its waiters there)."""
    settings.CELERY_TASK_DEFAULT_EXPIRES = DEFAULT
    redis_only.start_worker("expiry", DD_CELERY_TASK_DEFAULT_EXPIRES=str(DEFAULT), DD_DATABASE_URL=shared_database)
    return redis_only


def test_published_headers_default_from_eta_plain_from_now_explicit_kept(redis_only, settings):
    """As published: a plain task expires now + default, a task with a countdown ETA + default
    (both marked as the project's stamp), an explicit `expires` is exactly the caller's.

    Fails before this change: the countdown task expired at now + default, before its ETA, and
    no stamp was marked."""
    settings.CELERY_TASK_DEFAULT_EXPIRES = DEFAULT
    client = redis_only.client()
    explicit = datetime.now(UTC) + timedelta(days=2)
    before = datetime.now(UTC)
    client.send_task("dojo.tasks.add", args=(1, 1), queue=UNCONSUMED)
    client.send_task("dojo.tasks.add", args=(1, 2), queue=UNCONSUMED, countdown=5)
    client.send_task("dojo.tasks.add", args=(1, 3), queue=UNCONSUMED, countdown=5, expires=explicit)
    client.send_task("dojo.tasks.add", args=(1, 4), queue=UNCONSUMED, expires=30)
    after = datetime.now(UTC)
    plain, scheduled, explicit_date, explicit_seconds = queued_headers(redis_only, UNCONSUMED)

    assert plain["eta"] is None
    assert before + timedelta(seconds=DEFAULT) <= when(plain["expires"]) <= after + timedelta(seconds=DEFAULT)
    assert plain[DEFAULT_EXPIRES_HEADER] == plain["expires"]

    assert when(scheduled["expires"]) - when(scheduled["eta"]) == timedelta(seconds=DEFAULT)
    assert before + timedelta(seconds=5) <= when(scheduled["eta"]) <= after + timedelta(seconds=5)
    assert scheduled[DEFAULT_EXPIRES_HEADER] == scheduled["expires"]

    assert when(explicit_date["expires"]) == explicit
    assert before + timedelta(seconds=30) <= when(explicit_seconds["expires"]) <= after + timedelta(seconds=30)
    assert DEFAULT_EXPIRES_HEADER not in explicit_date
    assert DEFAULT_EXPIRES_HEADER not in explicit_seconds


def test_a_countdown_beyond_the_default_expiry_runs(worker):
    """A task due in 5 s with a 3 s default expiry runs on the worker, and the message it holds
    expires 3 s after its ETA.

    Fails before this change: the message expired 3 s after publishing, 2 s before it fell due,
    and the worker discarded it (TaskRevokedError)."""
    client = worker.client()
    published = time.monotonic()
    result = client.send_task("dojo.tasks.add", args=(20, 22), countdown=5)
    held = collect_held(worker, [result], timeout=30)
    assert result.get(timeout=5) == 42
    assert time.monotonic() - published >= 5
    (headers,) = held[result.id]
    assert when(headers["expires"]) - when(headers["eta"]) == timedelta(seconds=DEFAULT)


def test_retries_past_the_default_expiry_run_and_an_explicit_expiry_is_kept(worker):
    """A task retrying three times 2 s apart (6 s in all, past the 3 s default) runs its last
    attempt: each retry the worker publishes carries ETA + default, marked as the project's
    stamp. A task published with its own `expires` keeps exactly that one on every retry.

    Fails before this change: Celery copies the first publish's expiry into every retry, so the
    second retry (due at 4 s) expired at 3 s and was discarded."""
    client = worker.client()
    explicit = datetime.now(UTC) + timedelta(minutes=5)
    defaulted = client.send_task("dojo.tasks.back_off", args=([2, 2, 2],))
    own = client.send_task("dojo.tasks.back_off", args=([2, 2, 2],), expires=explicit)
    held = collect_held(worker, [defaulted, own], timeout=60)

    assert defaulted.get(timeout=5)["retries"] == 3
    assert own.get(timeout=5)["retries"] == 3
    retried = [headers for headers in held[defaulted.id] if headers["retries"]]
    assert [headers["retries"] for headers in retried] == [1, 2, 3]
    for headers in retried:
        assert when(headers["expires"]) - when(headers["eta"]) == timedelta(seconds=DEFAULT)
        assert headers[DEFAULT_EXPIRES_HEADER] == headers["expires"]
    assert when(retried[2]["eta"]) - when(retried[0]["eta"]) >= timedelta(seconds=4)  # each from its own retry
    kept = [headers for headers in held[own.id] if headers["retries"]]
    assert [headers["retries"] for headers in kept] == [1, 2, 3]
    for headers in kept:
        assert when(headers["expires"]) == explicit
        assert DEFAULT_EXPIRES_HEADER not in headers


def test_the_concurrency_limiters_re_sends_get_a_fresh_default_expiry(worker):
    """A run blocked on a concurrency limit (limit 1) re-sends itself with a countdown; each
    re-send carries its own ETA + default, marked as the project's stamp. (How long a blocked run
    may wait in all is the limiter's rule, dojo.worker.concurrency, not the message's expiry.)

    Fails before this change: the re-sends carried the first publish's expiry."""
    client = worker.client()
    holder = client.send_task("dojo.tasks.limited_sleep_one", args=(2, "fresh-expiry"))
    time.sleep(0.5)  # the holder takes the slot first
    waiter = client.send_task("dojo.tasks.limited_sleep_one", args=(0, "fresh-expiry"))
    held = collect_held(worker, [holder, waiter], timeout=60)
    re_sends = [headers for headers in held.get(waiter.id, []) if headers["eta"]]
    assert holder.get(timeout=5)
    assert re_sends, "the waiter never waited for the slot"
    for headers in re_sends:
        assert when(headers["expires"]) - when(headers["eta"]) == timedelta(seconds=DEFAULT)
        assert headers[DEFAULT_EXPIRES_HEADER] == headers["expires"]
