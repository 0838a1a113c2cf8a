"""Plain workers are asked `registered` and `active_queues` only when the mailbox has no answer of
theirs yet or once every FULL_ROUND_SECONDS; in between their last answers are reused. Against
bench/fleet_simulator.py on the private Redis (20 simulated plain workers that count the commands
they answer); no mocks."""

import sys

import pytest
from django.core.cache import cache

from dojo.ops.brokers.connection import broker_connection
from dojo.ops.fleet.mailbox import RARE_ROUND_CACHE_KEY, fleet_key
from dojo.ops.fleet.status import read_status
from unittests.conftest import ROOT

sys.path.insert(0, str(ROOT / "bench"))  # bench/ is not a package
from fleet_simulator import FleetSimulator

WORKERS = 20


def _asked(fleet: FleetSimulator, command: str) -> int:
    return sum(worker.commands.get(command, 0) for worker in fleet.workers.values())


@pytest.mark.django_db
def test_rare_commands_once_per_full_round(redis_only, settings):
    settings.CELERY_BROKER_TIMEOUT = 2.0
    with FleetSimulator(redis_only.url, workers=WORKERS, dojo_fraction=0.0, per_connection=10) as fleet:
        first = read_status()
        assert first.workers == WORKERS
        assert _asked(fleet, "registered") == _asked(fleet, "active_queues") == WORKERS

        second = read_status()  # within FULL_ROUND_SECONDS: the four others only
        assert second.workers == WORKERS
        assert _asked(fleet, "stats") == 2 * WORKERS and _asked(fleet, "reserved") == 2 * WORKERS
        assert _asked(fleet, "registered") == _asked(fleet, "active_queues") == WORKERS
        for name, reply in second.worker_replies.items():
            assert reply["registered"] == first.worker_replies[name]["registered"] != []
            assert reply["active_queues"] == first.worker_replies[name]["active_queues"] != []
            assert reply["unanswered"] == []
        assert second.queues["celery"].consumers == first.queues["celery"].consumers > 0

        with broker_connection() as conn:
            cache.delete(f"{RARE_ROUND_CACHE_KEY}:{fleet_key(conn)}")  # FULL_ROUND_SECONDS have passed
        third = read_status()
        assert third.workers == WORKERS
        assert _asked(fleet, "registered") == _asked(fleet, "active_queues") == 2 * WORKERS


@pytest.mark.django_db
def test_a_worker_not_seen_before_is_asked_everything(redis_only, settings):
    settings.CELERY_BROKER_TIMEOUT = 2.0
    with FleetSimulator(redis_only.url, workers=5, dojo_fraction=0.0, prefix="old") as old:
        assert read_status().workers == 5
        with FleetSimulator(redis_only.url, workers=3, dojo_fraction=0.0, prefix="new") as new:
            status = read_status()
            assert status.workers == 8
            assert _asked(old, "registered") == 5 and _asked(new, "registered") == 3
            for name in new.names:
                assert status.worker_replies[name]["active_queues"] and status.worker_replies[name]["unanswered"] == []
