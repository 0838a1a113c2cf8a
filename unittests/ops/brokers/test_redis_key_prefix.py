"""A Redis broker with a key prefix (transport option ``global_keyprefix``): the queues table, the
break down and purge by task name find the prefixed lists. kombu's own client prefixes only some
commands (LLEN yes, LINDEX/LRANGE/LREM no), so this fails if any of them used the raw name."""

import pytest
import redis

from dojo.ops.controls.purge import purge_task_name
from dojo.ops.read_models.breakdown import breakdown
from dojo.ops.read_models.queue_table import queue_table
from unittests.conftest import LiveBroker
from unittests.ops.read_models.test_queue_table import publish, row_of

PREFIX = "tenant-a:"


@pytest.fixture
def prefixed(redis_only: LiveBroker, settings) -> LiveBroker:
    redis_only.transport_options = {**redis_only.transport_options, "global_keyprefix": PREFIX}
    settings.CELERY_BROKER_TRANSPORT_OPTIONS = redis_only.transport_options
    return redis_only


@pytest.mark.django_db
def test_prefixed_lists_are_read_broken_down_and_purged_by_name(prefixed, redis_server) -> None:
    publish(prefixed, 4, priorities=(0, 9))
    publish(prefixed, 3, task="dojo.tasks.sleep", args=(1,), priorities=(0, 9))
    keys = redis.Redis(port=redis_server.port).keys("*celery*")
    assert keys and all(key.startswith(PREFIX.encode()) for key in keys)

    row = row_of(queue_table(), "celery")
    assert row.ready_count == 7
    assert row.latency_seconds is not None and 0 <= row.latency_seconds < 5

    found = breakdown("celery")
    assert found.total == 7
    assert found.by_task == {"dojo.tasks.add": 4, "dojo.tasks.sleep": 3}
    assert len(found.messages) == 7

    assert purge_task_name("celery", "dojo.tasks.sleep").purged == 3
    assert breakdown("celery").by_task == {"dojo.tasks.add": 4}
