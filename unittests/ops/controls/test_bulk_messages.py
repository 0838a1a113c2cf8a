"""Bulk revoke and purge of queued messages (dojo.ops.controls.bulk_messages and the runner in
dojo.ops.controls.bulk) on a real Redis: the filter's rules, the preview's count against what the
purge script removes (odd names, prefixes, arguments, a message that is not Celery's), the cap the
start confirmed (kept on Redis across a killed runner), and a real `celery -A dojo worker` that
discards the revoked messages and runs the others.

Most messages are real envelopes the project's Celery client published, cloned with new ids
(unittests.ops.brokers.test_redis_purge_by_name.envelope_factory).
"""

import json
import os
import signal
import time
import uuid

import pytest
import redis

from dojo.models import BulkOperation, TaskRevocation
from dojo.ops.brokers.messages import MessageMatch, task_name
from dojo.ops.brokers.registry import get_broker
from dojo.ops.controls import bulk, bulk_messages
from dojo.ops.read_models.task_filter import FilterError, TaskFilter
from unittests.conftest import LiveBroker, wait_for
from unittests.ops.brokers.test_redis_purge_by_name import envelope_factory
from unittests.ops.controls.test_bulk import STARTUP, wait_state

WORK = "work"
APPEND = "dojo.tasks.append_line"


NAMES = ("celery", WORK, "bulk")


@pytest.fixture
def queues(redis_only: LiveBroker, settings) -> LiveBroker:
    settings.CELERY_QUEUE_NAMES = list(NAMES)
    settings.CELERY_TASK_QUEUES = {name: {"exchange": name, "routing_key": name} for name in NAMES}
    return redis_only


@pytest.fixture
def fleet(queues: LiveBroker, shared_database: str, settings) -> LiveBroker:
    """A runner worker on `bulk`, sharing the test database; nothing consumes `work`."""
    settings.BULK_QUEUE = "bulk"
    queues.worker_env = {
        "DD_DATABASE_URL": shared_database,
        "DD_CELERY_QUEUES": ",".join(NAMES),
        "DD_BULK_STALE_SECONDS": "1",
        "DD_BULK_QUEUE": "bulk",
    }
    return queues


def push(broker: LiveBroker, raws: list[bytes], queue: str = WORK) -> None:
    plain = redis.Redis.from_url(broker.url)
    for first in range(0, len(raws), 1000):
        plain.lpush(queue, *raws[first : first + 1000])


def names_in(broker: LiveBroker, queue: str = WORK) -> list[str | None]:
    return [task_name(raw) for raw in redis.Redis.from_url(broker.url).lrange(queue, 0, -1)]


def test_a_message_filter_names_a_configured_queue_and_only_fields_a_message_has(queues):
    with pytest.raises(FilterError) as refused:
        bulk_messages.check_filter(TaskFilter(task_name="x"))
    assert refused.value.field == "queue"
    with pytest.raises(FilterError) as refused:
        bulk_messages.check_filter(TaskFilter(queue="nowhere"))
    assert refused.value.field == "queue" and "not a configured queue" in refused.value.message
    for name, value in (("state", "FAILURE"), ("exception_type", "ValueError"), ("worker", "w@h")):
        with pytest.raises(FilterError) as refused:
            bulk_messages.check_filter(TaskFilter(queue=WORK, **{name: value}))
        assert refused.value.field == name
    bulk_messages.check_filter(TaskFilter(queue=WORK, task_name_prefix="a.", args_contain="x", backend="default"))


ODD = 'odd."quoted"\\name'
ACCENTED = "dojo.tasks.\u00e9t\u00e9"


@pytest.mark.parametrize(
    "conditions",
    [
        {"task_name": "dojo.tasks.add"},
        {"task_name_prefix": "dojo.tasks."},
        {"task_name": ODD},
        {"task_name": ACCENTED},
        {"args_contain": "customer-7"},
        {"args_contain": '"quoted"'},
        {"task_name": "dojo.tasks.add", "args_contain": "customer-"},
        {},
    ],
)
def test_the_preview_counts_exactly_what_the_purge_script_removes(queues, conditions):
    """The preview's matcher (MessageMatch, in Python) and PURGE_SCRIPT (Lua) agree on names with
    escapes, prefixes and text in argsrepr or kwargsrepr; a message that is not Celery's (no
    headers) matches only the filter of the whole queue."""
    make = envelope_factory(queues)
    raws = []
    for i in range(60):
        raws.append(make("dojo.tasks.add", argsrepr=f"('customer-{i % 10}',)"))
        raws.append(make("dojo.tasks.sleep", argsrepr='("quoted" text,)'))
        raws.append(make(ODD))
        raws.append(make(ACCENTED, argsrepr="()"))
        raws.append(make("other.add"))
    kwargs_only = json.loads(make("dojo.tasks.add", argsrepr="()"))
    kwargs_only["headers"]["kwargsrepr"] = "{'who': 'customer-7'}"
    raws += [json.dumps(kwargs_only).encode(), b'{"body": "not celery"}', b"not json"]
    push(queues, raws)
    task_filter = TaskFilter(queue=WORK, **conditions)
    match = MessageMatch(**{k: v for k, v in conditions.items()})
    expected = sum(1 for raw in raws if match.matches(raw))
    assert expected > 0

    shown = bulk_messages.scan(task_filter, revoke=False, sample_size=20)
    assert shown.count == expected
    step = bulk_messages.purge_step(get_broker(), task_filter, uuid.uuid4().int % 10**9, (0, 0), 10**6, 10**6, 0)
    assert (step.total, step.position) == (expected, None)
    left = redis.Redis.from_url(queues.url).lrange(WORK, 0, -1)
    assert len(left) == len(raws) - expected
    assert not any(match.matches(raw) for raw in left), "every match removed, nothing else"


def test_a_purge_never_removes_more_than_its_cap_and_the_count_survives_a_lost_reply(queues):
    """The cap and the count live on Redis (the counter key PURGE_SCRIPT raises atomically): a
    second step from the same position (as after a runner died before recording its batch)
    removes nothing more once the cap is reached, and reports the total."""
    make = envelope_factory(queues)
    push(queues, [make("dojo.tasks.add") for _ in range(500)])
    task_filter = TaskFilter(queue=WORK, task_name="dojo.tasks.add")
    operation_id = uuid.uuid4().int % 10**9
    first = bulk_messages.purge_step(get_broker(), task_filter, operation_id, (0, 0), 150, 320, 0)
    assert first.total == 150 and first.position is not None
    again = bulk_messages.purge_step(get_broker(), task_filter, operation_id, (0, 0), 1000, 320, 0)
    assert (again.total, again.position) == (320, None)
    assert len(names_in(queues)) == 500 - 320
    assert bulk_messages.purge_step(get_broker(), task_filter, operation_id, (0, 0), 1000, 320, 0).total == 320
    assert len(names_in(queues)) == 180


def test_bulk_purge_is_refused_when_system_settings_turn_purge_off(queues, db):
    from dojo.models import SystemSettings

    settings_row = SystemSettings.load()
    settings_row.allow_queue_purge = False
    settings_row.save()
    with pytest.raises(bulk_messages.PurgeDisabled):
        bulk.preview(TaskFilter(queue=WORK, task_name="x"), "purge")
    assert bulk.preview(TaskFilter(queue=WORK, task_name="x"), "revoke").count == 0


def test_a_preview_that_cannot_read_the_queue_in_time_is_refused(queues):
    make = envelope_factory(queues)
    push(queues, [make("dojo.tasks.add") for _ in range(3000)])
    with pytest.raises(bulk_messages.ScanTooLong):
        bulk_messages.scan(TaskFilter(queue=WORK), revoke=False, sample_size=20, seconds=0)


def test_bulk_purge_survives_a_killed_runner_and_removes_exactly_what_was_confirmed(fleet):
    make = envelope_factory(fleet)
    raws = [make("reindex", argsrepr=f"({i},)") for i in range(3000)] + [make("keep.me") for _ in range(1000)]
    push(fleet, raws)
    env = {**fleet.worker_env, "DD_BULK_BATCH_SIZE": "100", "DD_BULK_BATCH_PAUSE_SECONDS": "0.3"}
    fleet.start_worker("runner", queues="bulk", **env)
    runner = fleet.workers[-1]

    task_filter = TaskFilter(queue=WORK, task_name="reindex")
    shown = bulk.preview(task_filter, "purge")
    assert shown.count == 3000 and len(shown.sample) == 20 and shown.sample[0]["state"] == "QUEUED"
    push(fleet, [make("reindex")])
    with pytest.raises(bulk.Conflict) as grown:
        bulk.start(task_filter, "purge", shown.count, shown.fingerprint, None)
    shown = grown.value.preview
    operation = bulk.start(task_filter, "purge", shown.count, shown.fingerprint, None)
    assert operation.message_limit == 3001
    push(fleet, [make("reindex") for _ in range(7)])  # after the start: beyond the cap
    wait_for(lambda: BulkOperation.objects.get(pk=operation.pk).done_count >= 500, STARTUP, "five batches")
    os.killpg(runner.pid, signal.SIGKILL)
    runner.wait(10)

    fleet.start_worker("runner2", queues="bulk", **{**env, "DD_BULK_BATCH_SIZE": "1000"})
    time.sleep(1.1)
    assert bulk.resume_stale(stale_seconds=1) == [operation.pk]
    operation = wait_state(operation.pk, ("done", "failed"), 120)
    assert operation.state == "done", operation.detail
    assert operation.done_count == 3001, "exactly the confirmed count, the killed batch counted once"
    left = names_in(fleet)
    assert left.count("reindex") == 7 and left.count("keep.me") == 1000
    assert bulk.progress(operation)["percent"] == 100.0


def test_bulk_revoke_of_queued_messages_a_real_worker_then_discards(fleet, tmp_path):
    """200 queued append_line messages whose arguments say `drop`, 50 that say `keep`: the revoke
    by name and arguments stores 200 revocations; a worker started afterwards on the queue runs
    only the 50 (each file gets its line) and discards the revoked ones (their files stay empty)."""
    folder = tmp_path / "out"
    folder.mkdir()
    for i in range(200):
        (folder / f"drop-{i}.txt").touch()
    for i in range(50):
        (folder / f"keep-{i}.txt").touch()
    client = fleet.client()
    try:
        for i in range(200):
            client.send_task(APPEND, args=(str(folder / f"drop-{i}.txt"), "x"), queue=WORK)
        for i in range(50):
            client.send_task(APPEND, args=(str(folder / f"keep-{i}.txt"), "x"), queue=WORK)
    finally:
        client.close()
    fleet.start_worker("runner", queues="bulk", **fleet.worker_env, DD_BULK_BATCH_SIZE="60")

    task_filter = TaskFilter(queue=WORK, task_name=APPEND, args_contain="drop-")
    shown = bulk.preview(task_filter, "revoke")
    assert shown.count == 200
    operation = bulk.start(task_filter, "revoke", shown.count, shown.fingerprint, None)
    operation = wait_state(operation.pk, ("done", "failed"), 120)
    assert operation.state == "done", operation.detail
    assert operation.done_count == 200
    assert TaskRevocation.objects.count() == 200
    assert bulk.preview(task_filter, "revoke").count == 0, "what is revoked is not counted again"
    assert len(names_in(fleet)) == 250, "a revoke leaves the messages to the workers"

    fleet.start_worker("work", queues=WORK, **fleet.worker_env)
    wait_for(lambda: not names_in(fleet), STARTUP, "the queue drained")
    kept = [folder / f"keep-{i}.txt" for i in range(50)]
    wait_for(lambda: all(path.read_text() for path in kept), STARTUP, "the 50 kept runs")
    time.sleep(1)
    assert all(path.read_text() == "x\n" for path in kept)
    assert not any(path.read_text() for path in folder.glob("drop-*.txt")), "no revoked message ran"


def test_the_purge_script_still_serves_the_purge_by_task_name(queues):
    make = envelope_factory(queues)
    push(queues, [make("dojo.tasks.add") for _ in range(30)] + [make("dojo.tasks.addition") for _ in range(5)])
    from dojo.ops.controls.purge import purge_task_name

    assert purge_task_name(WORK, "dojo.tasks.add").purged == 30
    assert names_in(queues) == ["dojo.tasks.addition"] * 5
