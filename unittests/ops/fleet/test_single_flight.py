"""The single flight of the status read (dojo/ops/fleet/status_cache.py), against a broker that
accepts connections and never answers (the `silent_port` fixture, a real socket: every read of
it costs the whole broker bound) and a real private Redis as the shared cache.

Each test fails on the code before the per-backend, owner-token single flight (checked): there
twenty refreshing reads that each dropped the document afterwards ran one after another, one
lock served every backend, and a waiter that gave up read anyway and deleted the lock it did
not hold.
"""

import json
import subprocess
import sys
import threading
import time

import pytest
import redis

from unittests.conftest import ROOT

BOUND = 1.0  # DD_CELERY_BROKER_TIMEOUT here: one read of the silent broker costs this
MARGIN = 1.0  # a loaded two-core machine


@pytest.fixture
def silent_broker(silent_port, settings) -> str:
    settings.CELERY_BROKER_URL = f"redis://127.0.0.1:{silent_port}/0"
    settings.CELERY_BROKER_TRANSPORT_OPTIONS = {}
    settings.CELERY_BROKER_TIMEOUT = BOUND
    settings.CELERY_STATUS_CACHE_SECONDS = 30
    return settings.CELERY_BROKER_URL


def refresh_act_forget() -> float:
    """What every control does: a refreshing read (live_workers), then the action, then
    forget_status; the read's start (CeleryStatus.read_at)."""
    from dojo.ops.fleet.status_cache import forget_status, get_status

    status = get_status(refresh=True)
    forget_status()
    return status.read_at


def run_together(count: int, call) -> tuple[list, float]:
    """`call()` in `count` threads released at once; their results and the wall time."""
    results: list = []
    barrier = threading.Barrier(count)

    def run() -> None:
        barrier.wait()
        results.append(call())

    threads = [threading.Thread(target=run) for _ in range(count)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results, time.monotonic() - started


@pytest.mark.django_db(transaction=True)
def test_twenty_concurrent_refreshes_cost_about_one_bound(silent_broker):
    """Each refresh takes a read that began after it was asked; the read in progress when most
    of them arrive, or the one that follows it, serves them all (before: 20 bounds)."""
    asked = time.time()
    read_starts, elapsed = run_together(20, refresh_act_forget)

    assert len(read_starts) == 20 and min(read_starts) >= asked
    assert len(set(read_starts)) <= 2, sorted(read_starts)
    assert elapsed < 2 * BOUND + MARGIN, elapsed


CHILD = """
import os, sys, threading, time, json
import django
django.setup()
from unittests.ops.fleet.test_single_flight import refresh_act_forget
print("ready", flush=True)
start_at = float(sys.stdin.readline())
asked, starts = [], []
def run():
    while time.time() < start_at:
        time.sleep(0.001)
    asked.append(time.time())
    starts.append(refresh_act_forget())
threads = [threading.Thread(target=run) for _ in range(10)]
for thread in threads: thread.start()
for thread in threads: thread.join()
print(json.dumps({"asked": asked, "starts": starts, "done": time.time()}))
"""


def test_refreshes_in_two_processes_share_one_read(silent_port, redis_server, shared_database):
    """Two web processes with a shared Redis cache, ten refreshing controls each at once."""
    redis.Redis(port=redis_server.port, db=9).flushdb()
    env = {
        "DJANGO_SETTINGS_MODULE": "dojo.settings.settings",
        "PYTHONPATH": str(ROOT),
        "PATH": "/usr/bin:/bin",
        "DD_CELERY_BROKER_URL": f"redis://127.0.0.1:{silent_port}/0",
        "DD_CELERY_BROKER_TIMEOUT": str(BOUND),
        "DD_CELERY_STATUS_CACHE_SECONDS": "30",
        "DD_CACHE_URL": redis_server.url(9),
        "DD_DATABASE_URL": shared_database,
    }
    children = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD], cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    try:
        assert [child.stdout.readline() for child in children] == ["ready\n", "ready\n"]
        start_at = time.time() + 0.3
        for child in children:
            child.stdin.write(f"{start_at}\n")
            child.stdin.flush()
        outputs = [json.loads(child.communicate(timeout=60)[0]) for child in children]
    finally:
        for child in children:
            child.kill()
            child.wait()

    starts = {start for output in outputs for start in output["starts"]}
    assert len(starts) <= 2, sorted(starts)
    assert all(start >= start_at for start in starts)
    assert max(output["done"] for output in outputs) - start_at < 2 * BOUND + MARGIN


@pytest.mark.django_db
def test_a_dead_backend_does_not_slow_another(redis_only, silent_port, settings):
    """The main backend is a real Redis (no worker: its read is quick); a second one is silent."""
    from dojo.ops.brokers.registry import get_broker
    from dojo.ops.fleet.status_cache import get_status

    settings.CELERY_BROKER_TIMEOUT = 2.0
    settings.CELERY_BACKENDS = {"dead": {"broker_url": f"redis://127.0.0.1:{silent_port}/0"}}
    dead_reader = threading.Thread(target=get_status, kwargs={"refresh": True, "broker": get_broker("dead")})
    dead_reader.start()
    time.sleep(0.2)  # the dead backend's read is under way

    started = time.monotonic()
    status = get_status(refresh=True)
    elapsed = time.monotonic() - started
    dead_reader.join()

    assert status.broker_status is True and status.backend == "default"
    assert elapsed < 0.8, elapsed  # not behind the dead backend's 2 s


@pytest.mark.django_db
def test_a_waiter_keeps_to_the_lock_it_does_not_hold(silent_broker, redis_server, settings):
    """Another process is mid-read: its lock key (holding its own token) is in the shared cache.
    A reader here waits for it as long as a read can take and never deletes it."""
    from django.core.cache import cache

    from dojo.ops.brokers.registry import get_broker
    from dojo.ops.fleet.status_cache import _cache_key, get_status, read_bound

    settings.CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": redis_server.url(10)}
    }
    settings.DATABASE_CONNECT_TIMEOUT = 0  # a short read_bound for the test; the connection is open already
    settings.DATABASE_STATEMENT_TIMEOUT = settings.DATABASE_BUSY_TIMEOUT = 0.5
    cache.clear()
    lock_key = f"{_cache_key(get_broker())}:reading"
    assert cache.add(lock_key, "token-of-another-process", 60)
    bound = read_bound()
    assert bound >= 3 * BOUND  # a worst-case read: connect, queue reads, broadcast, database

    asked = time.time()
    status = get_status(refresh=True)

    assert cache.get(lock_key) == "token-of-another-process"
    assert status.read_at - asked >= bound - 0.2  # it waited for the other reader, then read itself

    cache.delete(lock_key)
    reader = threading.Thread(target=get_status, kwargs={"refresh": True})
    reader.start()
    time.sleep(0.3)  # now this process reads: its own lock lives as long as the read can
    ttl = redis.Redis(port=redis_server.port, db=10).ttl(cache.make_key(lock_key))
    reader.join()
    assert ttl >= bound - 1, (ttl, bound)
    assert cache.get(lock_key) is None  # and the owner deleted it when done
