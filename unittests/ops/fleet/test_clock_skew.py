"""Liveness against the database's clock: heartbeat rows written at the database's now show the
same liveness when the web server's clock is an hour ahead or behind. The skew is injected by
replacing django.utils.timezone.now (a skewed system clock cannot be produced for one process)."""

from datetime import timedelta

import pytest
from django.utils import timezone

from dojo.models import CeleryProcess, CeleryWorkerSeen, MonitoredWorker, MonitorHeartbeat
from dojo.ops.fleet import mailbox
from dojo.ops.fleet.clock import database_now
from dojo.ops.fleet.processes import list_processes, monitor_state
from dojo.ops.fleet.seen_workers import seen_workers

FRESH, STALE = "fresh@host", "stale@host"


@pytest.fixture
def heartbeats(db) -> None:
    now = database_now()
    for name, age in ((FRESH, 0.5), (STALE, 600)):
        beat = now - timedelta(seconds=age)
        CeleryProcess.objects.create(
            name=name, kind=CeleryProcess.Kind.WORKER, hostname="host", pid=1, started_at=beat, last_heartbeat_at=beat
        )
        MonitoredWorker.objects.create(hostname=f"ev-{name}", first_seen=beat, last_heartbeat_at=beat)
        CeleryWorkerSeen.objects.create(name=name, first_seen=beat, last_seen=now - timedelta(hours=age))
    MonitorHeartbeat.objects.create(
        backend="default", hostname="host", pid=2, started_at=now - timedelta(minutes=10), last_beat_at=now
    )


def _liveness() -> tuple:
    rows = {row.name: row.is_live for row in list_processes("default")}
    return (
        rows,
        monitor_state("default").state,
        mailbox._known_dead("default", {FRESH, STALE}),
        mailbox._seen_by_events("default"),
        set(seen_workers()),
    )


@pytest.mark.parametrize("skew", [timedelta(hours=1), -timedelta(hours=1)])
def test_same_liveness_with_a_skewed_web_clock(heartbeats, monkeypatch, skew):
    honest = _liveness()
    assert honest[0][FRESH] and not honest[0][STALE] and honest[0][f"ev-{FRESH}"]
    assert honest[1] == "live" and honest[2] == {STALE} and honest[3] == {f"ev-{FRESH}"}
    assert FRESH in honest[4] and STALE not in honest[4]

    real_now = timezone.now
    monkeypatch.setattr(timezone, "now", lambda: real_now() + skew)
    assert _liveness() == honest
