"""A fleet at scale is read whole: 30 configured queues and 10 real workers on a private RabbitMQ
vhost are all reported by every read; a worker on a queue outside DD_CELERY_QUEUES is found by the
periodic full round; two backends on one Redis server with different key prefixes keep separate
documents; a SIGKILLed worker's stale binding on Redis is removed once it is known dead. Real
brokers and worker processes, no mocks (module constants are shortened to keep the tests fast).
"""

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
import redis

from dojo.ops.brokers.connection import broker_connection
from dojo.ops.brokers.registry import get_broker
from dojo.ops.fleet import mailbox
from dojo.ops.fleet.mailbox import SPEAKERS_CACHE_KEY, fleet_key
from dojo.ops.fleet.status import read_status
from dojo.ops.fleet.status_cache import _cache_key, cached_status, get_status
from unittests.conftest import ROOT, LiveBroker, RedisServer, wait_for

QUEUES = [f"q{index:02}" for index in range(29)]  # with the default queue "celery": 30


def _start_workers(workers: list[tuple[LiveBroker, str, str]]) -> list[str]:
    """Project workers (broker, name, queues) with one pool process each, all launched at once
    (each is seconds of imports), then waited for together; their names, sorted."""
    brokers: dict[int, LiveBroker] = {}
    pending: dict[int, set[str]] = {}
    for broker, name, queues in workers:
        hostname = f"{name}@{socket.gethostname()}"
        log = open(broker.tmp / f"{name}.log", "w")  # noqa: SIM115 - closed with the process
        command = [sys.executable, "-m", "celery", "-A", "dojo", "worker", "-n", hostname, "-Q", queues, "-c", "1"]
        command += ["-P", "prefork", "-l", "info", "--without-mingle", "--without-gossip"]
        broker.workers.append(
            subprocess.Popen(
                command, cwd=ROOT, env=broker.env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        )
        brokers[id(broker)] = broker
        pending.setdefault(id(broker), set()).add(hostname)
    names = sorted(name for names in pending.values() for name in names)

    def all_answer() -> bool:
        for key, missing in pending.items():
            broker = brokers[key]
            if any(proc.poll() is not None for proc in broker.workers):
                raise RuntimeError(f"a worker exited; logs in {broker.tmp}")
            if missing:
                replies = broker.client().control.ping(destination=sorted(missing), timeout=1)
                missing -= {name for reply in replies for name in reply}
        return not any(pending.values())

    wait_for(all_answer, 90, f"{len(names)} workers")
    return names


@pytest.fixture
def scale_fleet(rabbitmq_broker, settings) -> Iterator[tuple[LiveBroker, list[str]]]:
    settings.CELERY_TASK_QUEUES = {name: {"exchange": name, "routing_key": name} for name in QUEUES}
    settings.CELERY_BROKER_TIMEOUT = 2.0
    queues = ",".join(["celery", *QUEUES])
    workers = _start_workers([(rabbitmq_broker, f"w{index}", queues) for index in range(10)])
    yield rabbitmq_broker, workers
    for proc in rabbitmq_broker.workers:  # all at once; the fixture then waits for each
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)


@pytest.mark.django_db
def test_every_read_of_30_queues_and_10_workers_reports_every_worker(scale_fleet, settings, monkeypatch):
    """Then a worker that consumes only a queue outside DD_CELERY_QUEUES (it changes no count the
    read sees) is found by the next full round, FULL_ROUND_SECONDS after the last one."""
    broker, workers = scale_fleet
    timings = []
    for _ in range(6):  # the first one asks everyone and waits the round; the others end when all answered
        started = time.monotonic()
        status = read_status()
        timings.append(round(time.monotonic() - started, 3))
        assert status.connected, status.error
        assert status.worker_names == workers, timings
        assert status.queues["q28"].consumers == 10 and status.queues["celery"].ready == 0
    print("read times (s), 30 queues / 10 workers:", timings)
    assert max(timings[1:]) < 1.0, timings  # the bound is 2 s: the remembered workers answered well before it

    # With a bound this small the queue reads and control-queue counts (three round trips each,
    # in series, out of the round's budget) left the round nothing: 0 workers in 3 of 6 reads.
    settings.CELERY_BROKER_TIMEOUT = 0.1
    for _ in range(5):
        assert read_status().worker_names == workers
    settings.CELERY_BROKER_TIMEOUT = 2.0

    monkeypatch.setattr(mailbox, "FULL_ROUND_SECONDS", 3)
    with broker_connection() as conn:
        mailbox.cache.delete(f"{mailbox.FULL_ROUND_CACHE_KEY}:{fleet_key(conn)}")  # the 30 s one
    read_status()  # a full round now, remembered for 3 s
    [special] = _start_workers([(broker, "special", "special")])
    started, found = time.monotonic(), []

    def seen() -> bool:
        found[:] = read_status().worker_names
        return special in found

    wait_for(seen, 3 + 2 * 2.0 + 1, "the worker on queue special in a read")
    assert found == sorted([*workers, special])
    assert time.monotonic() - started <= 3 + 2 * 2.0 + 1


def _prefixed(redis_server: RedisServer, tmp_path, prefix: str) -> LiveBroker:
    return LiveBroker(
        kind="redis",
        url=redis_server.url(0),
        transport_options={"global_keyprefix": prefix},
        result_backend=redis_server.url(1),
        tmp=tmp_path / prefix.strip(":"),
    )


@pytest.mark.django_db
def test_backends_on_one_redis_url_with_different_key_prefixes_keep_separate_documents(
    redis_server, settings, tmp_path
):
    redis.Redis(port=redis_server.port).flushall()
    first, second = _prefixed(redis_server, tmp_path, "one:"), _prefixed(redis_server, tmp_path, "two:")
    for fleet in (first, second):
        fleet.tmp.mkdir()
    settings.CELERY_BROKER_URL = redis_server.url(0)
    settings.CELERY_BROKER_TRANSPORT_OPTIONS = {}
    settings.CELERY_BACKENDS = {
        "one": {"broker_url": first.url, "transport_options": first.transport_options},
        "two": {"broker_url": second.url, "transport_options": second.transport_options},
    }
    settings.CELERY_STATUS_CACHE_SECONDS = 60
    settings.CELERY_BROKER_TIMEOUT = 2.0
    try:
        on_first, on_second = _start_workers([(first, "first", "celery"), (second, "second", "celery")])
        one, two = get_broker("one"), get_broker("two")
        assert _cache_key(one) != _cache_key(two)
        assert get_status(broker=one).worker_names == [on_first]
        assert get_status(broker=two).worker_names == [on_second]  # not the first backend's cached document
        assert cached_status(one).worker_names == [on_first] and cached_status(one).backend == "one"
        assert cached_status(two).worker_names == [on_second] and cached_status(two).backend == "two"
        with broker_connection(broker=one) as conn_one, broker_connection(broker=two) as conn_two:
            assert fleet_key(conn_one) != fleet_key(conn_two)
            speakers = [mailbox.cache.get(f"{SPEAKERS_CACHE_KEY}:{fleet_key(c)}") for c in (conn_one, conn_two)]
        assert speakers == [{on_first}, {on_second}]
    finally:
        first.stop_workers()
        second.stop_workers()


@pytest.mark.django_db
def test_a_killed_workers_stale_binding_is_removed_once_it_is_known_dead(
    redis_only, shared_database, settings, monkeypatch
):
    """Silent rounds alone remove nothing (a busy or slow worker is silent too); silent rounds and a
    database heartbeat older than DEAD_AFTER_SECONDS (the workers share the test database) do."""
    settings.CELERY_BROKER_TIMEOUT = 1.0
    monkeypatch.setattr(mailbox, "SILENT_RECHECK_SECONDS", 0)  # ask the silent worker every round, not once a minute
    monkeypatch.setattr(mailbox, "DEAD_AFTER_SECONDS", 6.0)
    alive = redis_only.start_worker("alive", DD_DATABASE_URL=shared_database)
    doomed = redis_only.start_worker("doomed", DD_DATABASE_URL=shared_database)
    assert read_status().worker_names == sorted([alive, doomed])
    victim = redis_only.workers[1]
    os.killpg(victim.pid, signal.SIGKILL)
    killed_at = time.monotonic()
    victim.wait()
    bindings = redis.Redis.from_url(redis_only.url)
    binding_key = "_kombu.binding.celery.pidbox"
    members_before = bindings.smembers(binding_key)
    assert any(doomed.encode() in member for member in members_before)

    slow = []
    for _ in range(mailbox.DEAD_AFTER_SILENT_ROUNDS):
        started = time.monotonic()
        assert read_status().worker_names == [alive]
        slow.append(time.monotonic() - started)
    assert min(slow) >= 0.9, slow  # each waited for the silent worker: the whole 1 s bound
    assert time.monotonic() - killed_at < mailbox.DEAD_AFTER_SECONDS
    assert bindings.smembers(binding_key) == members_before  # silent, but its heartbeat is not that old yet
    time.sleep(max(0.0, killed_at + mailbox.DEAD_AFTER_SECONDS + 0.5 - time.monotonic()))
    assert read_status().worker_names == [alive]  # silent once more, and its heartbeat is now too old

    members_after = bindings.smembers(binding_key)
    assert members_after == {member for member in members_before if doomed.encode() not in member}
    assert len(members_after) == 1 and alive.encode() in next(iter(members_after))
    with broker_connection() as conn:
        assert get_broker().transport.bound_workers(conn, "celery") == {alive}
    fast = []
    for _ in range(3):
        started = time.monotonic()
        assert read_status().worker_names == [alive]
        fast.append(time.monotonic() - started)
    assert max(fast) < 0.3, fast
