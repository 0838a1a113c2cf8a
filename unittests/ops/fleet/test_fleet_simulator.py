"""The status read against bench/fleet_simulator.py: 50 simulated workers on the private Redis, each
its own kombu pidbox node bound to celery.pidbox, half of them announcing dojo_status in their stats.
No mocks: the read goes through the real broker to nodes that answer in Celery's shapes.
"""

import base64
import json
import sys
import time

import pytest
from django.core.cache import cache

from dojo.ops.brokers.connection import broker_connection
from dojo.ops.fleet.mailbox import SPEAKERS_CACHE_KEY
from dojo.ops.fleet.status import read_status
from dojo.ops.fleet.worker_reply import STATUS_COMMAND
from unittests.conftest import ROOT

sys.path.insert(0, str(ROOT / "bench"))  # bench/ is not a package
from fleet_simulator import FleetSimulator
from status_scale import published_control_messages

WORKERS = 50
BROKER_BOUND = 2.0


def _speakers() -> set[str]:
    with broker_connection() as conn:
        return cache.get(f"{SPEAKERS_CACHE_KEY}:{conn.as_uri()}", set())


@pytest.fixture
def fleet(redis_only, settings):
    settings.CELERY_BROKER_TIMEOUT = BROKER_BOUND
    with FleetSimulator(redis_only.url, workers=WORKERS, dojo_fraction=0.5, per_connection=20) as simulated:
        yield simulated


@pytest.mark.django_db
def test_read_status_describes_every_simulated_worker(fleet):
    first = read_status()  # sends the six built-in commands to all, learns who speaks dojo_status
    assert _speakers() == fleet.speakers and len(fleet.speakers) == WORKERS // 2

    started = time.monotonic()
    status = read_status()
    took = time.monotonic() - started

    assert took < BROKER_BOUND / 2, f"{took:.2f} s: the round waited for the broker bound"
    for read in (first, status):
        assert read.worker_names == fleet.names
        totals = fleet.totals()
        assert (read.active_tasks, read.reserved_tasks, read.scheduled_tasks) == (
            totals["active"],
            totals["reserved"],
            totals["scheduled"],
        )
    for name, worker in fleet.workers.items():
        reply, stats = status.worker_replies[name], status.worker_stats[name]
        assert reply["unanswered"] == [], name
        assert stats["pid"] == worker.pid and stats["total"] == sum(worker.total.values())
        assert stats["pool"]["max-concurrency"] == worker.concurrency
        assert stats["pool"]["processes"] == worker.processes
        for kind in ("active", "reserved"):
            assert [task["id"] for task in reply[kind]] == [task["id"] for task in getattr(worker, kind)]
        assert [task["id"] for task in reply["scheduled"]] == [entry["request"]["id"] for entry in worker.scheduled]
        assert sorted(reply["active_queues"]) == sorted(worker.queues)
    # The second read asked the speakers dojo_status only, the others the built-in commands only,
    # and no node was ever sent a command it does not know.
    for name, worker in fleet.workers.items():
        assert worker.commands.get(STATUS_COMMAND, 0) == (1 if worker.speaks_status else 0), name
        assert worker.commands["stats"] == (1 if worker.speaks_status else 2), name
        assert worker.unknown_commands == {}, name


def _published_status_commands(redis_url: str, read) -> list[dict]:
    """The dojo_status commands `read()` publishes, as every worker's subscription receives them."""
    commands = []
    for data in published_control_messages(redis_url, read):
        body = json.loads(base64.b64decode(json.loads(data)["body"]))
        if body["method"] == STATUS_COMMAND:
            commands.append({**body, "bytes": len(data)})
    return commands


@pytest.mark.django_db
def test_a_fleet_that_all_speaks_dojo_status_gets_it_without_a_destination_list(redis_only, settings):
    """The destination list names every worker and Redis copies it to each of them: when every
    bound worker is sent dojo_status it goes without one, and each node answers it once. Once a
    node is silent, the others are named again."""
    settings.CELERY_BROKER_TIMEOUT = BROKER_BOUND
    with FleetSimulator(redis_only.url, workers=WORKERS, dojo_fraction=1.0, per_connection=20) as fleet:
        read_status()  # learns the speakers

        (command,) = _published_status_commands(redis_only.url, read_status)
        assert command["destination"] is None and command["bytes"] < 1000, command
        assert all(worker.commands[STATUS_COMMAND] == 1 for worker in fleet.workers.values())

        silent = fleet.names[0]
        fleet.silence(silent)
        assert read_status().worker_names == fleet.names[1:]  # waited for it, then left it out
        (command,) = _published_status_commands(redis_only.url, read_status)
        assert command["destination"] == fleet.names[1:]
