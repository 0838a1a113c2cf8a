"""The queues table at scale, piece by piece: the Redis depth reads' scripts (names sent in one
length-prefixed argument, stamps read on the server) on a real Redis, and the table's rows built
when asked for (QueueRows) against the same rows built eagerly.

References are independent of the code under test: Redis's own LLEN and LINDEX of kombu's lists,
the envelope decoded in Python by dojo.ops.brokers.messages (the rule the script follows), and the
rows QueueRows builds one by one, sorted and summed in plain Python.
"""

import json
import time
from datetime import UTC, datetime

import pytest

from dojo.ops.brokers import messages
from dojo.ops.brokers import redis as redis_lists
from dojo.ops.brokers.connection import broker_connection
from dojo.ops.brokers.registry import get_broker
from dojo.ops.brokers.transport import QueueDepth, oldest
from dojo.ops.fleet.load import QueueLoads, WorkerLoad
from dojo.ops.limits.semaphores import BlockedQueue
from dojo.ops.read_models.queue_table import QueueRows, _Columns, by_pressure

# Names a naive split would get wrong: the separator, multibyte characters, a comma, an empty-looking one.
ODD_NAMES = ["a:b", "12:x", "ünï:cødé", "with,comma", " ", "q" * 300]


def envelope(stamp: object = None, **headers: object) -> bytes:
    if stamp is not None:
        headers[messages.PUBLISHED_AT_HEADER] = stamp
    return json.dumps({"body": "e30=", "headers": headers, "properties": {}}).encode()


def reference(conn, names: list[str]) -> dict[str, tuple[int, float | None]]:
    """Ready count and oldest stamp of each queue, from LLEN and LINDEX -1 of each list, decoded in Python."""
    client = redis_lists.client(conn)
    found = {}
    for name in names:
        ready, stamps = 0, []
        for key in redis_lists.priority_lists(conn.default_channel, name):
            ready += client.llen(key)
            raw = client.lindex(key, -1)
            if raw is not None:
                stamps.append(messages.published_at(messages.decode(raw)))
        found[name] = (ready, oldest(stamps))
    return found


@pytest.mark.django_db
def test_depth_reads_agree_with_llen_and_lindex_for_odd_names_and_envelopes(redis_only):
    now = time.time()
    with broker_connection() as conn:
        client = redis_lists.client(conn)
        lists = {name: redis_lists.priority_lists(conn.default_channel, name) for name in [*ODD_NAMES, "mixed"]}
        for i, name in enumerate(ODD_NAMES):
            client.rpush(lists[name][0], *[envelope(now - 60 * (i + 1) - 0.123456789)] * (i + 1))
        client.rpush(lists[ODD_NAMES[0]][2], envelope(now - 7200.5))  # the oldest is on a lower priority list
        mixed = lists["mixed"]
        client.rpush(mixed[0], envelope(now - 5))
        client.rpush(mixed[1], envelope())  # unstamped next message: the queue's latency is unknown
        client.rpush(mixed[2], b"not json")
        client.rpush(lists["a:b"][3], json.dumps([1, 2]).encode())  # JSON, not an envelope: unstamped too
        names = [*ODD_NAMES, "mixed", "never-used"]

        narrow = get_broker().transport.depths(conn, names)
        expected = reference(conn, names)
        limit = redis_lists.STAMPED_DEPTHS_MAX
        wide_names = [*names, *(f"pad{i}" for i in range(limit))]
        wide = get_broker().transport.depths(conn, wide_names)

    assert {name: (depth.ready, depth.oldest_published_at) for name, depth in narrow.items()} == expected
    assert expected["mixed"] == (3, None) and expected["a:b"][1] is None
    assert expected["12:x"] == (2, pytest.approx(now - 120.123456789, abs=1e-6))  # every digit kept
    assert expected["never-used"] == (0, None)
    assert {name: wide[name].ready for name in names} == {name: ready for name, (ready, _) in expected.items()}
    assert all(wide[name].ready == 0 and wide[name].oldest_published_at is None for name in wide_names[len(names) :])


@pytest.mark.django_db
def test_depth_reads_of_more_queues_than_a_script_call_takes(redis_only):
    names = [f"chunked-{i}" for i in range(redis_lists.STAMPED_CHUNK * 2 + 3)]
    with broker_connection() as conn:
        client = redis_lists.client(conn)
        for i, name in enumerate(names):
            if i % 4:
                client.rpush(redis_lists.priority_lists(conn.default_channel, name)[0], *[envelope(1e9 + i)] * (i % 4))
        narrow = get_broker().transport.depths(conn, names)
        expected = reference(conn, names)
        assert get_broker().transport.depths(conn, []) == {}
    assert {name: (depth.ready, depth.oldest_published_at) for name, depth in narrow.items()} == expected


def columns(names: list[str]) -> _Columns:
    """A read's columns: varied depths (one queue unread), two blocked queues, a worker load."""
    depths = {
        name: QueueDepth(ready=i % 5, oldest_published_at=1000.0 + i if i % 3 else None) for i, name in enumerate(names)
    }
    del depths[names[7]]  # its ready count is unknown
    loads = QueueLoads()
    loads[names[2]] = WorkerLoad(claimed=3, scheduled=2, consumed_by={"w1": {}})
    blocked_at = datetime(2026, 1, 1, tzinfo=UTC)
    blocked = {names[4]: BlockedQueue(9, blocked_at), names[7]: BlockedQueue(2, blocked_at)}
    idle = loads.default_factory()
    return _Columns(
        depths=depths,
        loads=loads,
        idle_load=(idle.claimed_count, idle.scheduled_count, idle.consumers, None),
        blocked=blocked,
        failed={names[1]: 4},
        finished={names[1]: 6},
        paused={names[3]},
        sources=dict.fromkeys(names, ("configuration",)),
        now=2000.0,
    )


def test_rows_built_when_asked_agree_with_the_rows_built_at_once():
    names = [f"n{(i * 7) % 40:02d}" for i in range(40)]  # not in name order
    rows = QueueRows(names, columns(names))
    built = [rows[i] for i in range(len(rows))]

    assert len(rows) == 40 and [row.name for row in built] == names
    assert list(rows) == built and rows[3:6] == built[3:6] and rows[-1] is built[-1]
    for attr in ("ready_count", "scheduled_count", "latency_seconds", "blocked_count", "paused"):
        assert rows.column(attr) == [getattr(row, attr) for row in built], attr
    assert [row.name for row in by_pressure(rows)] == [row.name for row in by_pressure(built)]
    assert by_pressure(rows)[0].name == names[4]  # 4 ready + 9 blocked
    assert by_pressure(rows)[-1].name == names[7]  # unread: after every known one
    assert rows.rows_of([names[5], names[2]]) == [built[5], built[2]]


def test_stamps_read_later_give_the_latency_of_those_rows_only():
    names = [f"s{i:02d}" for i in range(12)]
    rows = QueueRows(names, columns(names))
    read = {names[0]: QueueDepth(ready=99, oldest_published_at=1500.0), names[1]: QueueDepth(ready=1)}
    later = rows.with_stamps(read)

    assert later[0].latency_seconds == 500.0 and later[0].ready_count == rows[0].ready_count  # counts of the read
    assert later[1].latency_seconds == rows[1].latency_seconds  # no stamp read: as it was
    assert later.column("latency_seconds")[2:] == rows.column("latency_seconds")[2:]
    assert rows[0].latency_seconds is None  # the first read's rows are left as they were
