"""The processes of a backend (workers, their pool children, beat) and whether each is live,
from the heartbeats they write every second (dojo/worker/heartbeat.py) and from Celery's own
worker events, which the event monitor (`manage.py celery_monitor`) writes as MonitoredWorker
rows: every worker sends those, whether it runs this project's code or not.

The two are merged by worker name; each row says where it comes from (`source`: "heartbeat",
"events" or "both"). A worker known only from events is live while it has not said
worker-offline and its last event heartbeat is at most `event_stale_after(freq)` old: Celery's
own rule (two heartbeat intervals, 4 s at the default 2 s), so a worker killed with SIGKILL
turns stale within 4 s. While the monitor is down its rows stop moving and turn stale too;
`monitor_state` says since when, so the pages can tell "stale" from "not watched".

A process is live while its last heartbeat is at most STALE_AFTER_SECONDS old. A worker's
main process writes its children's heartbeats too, so a worker killed with SIGKILL turns
stale with its children within STALE_AFTER_SECONDS + one heartbeat (< 5 s); a child's row is
stale whenever its worker's is. Ages are measured on this process's clock against the
writer's, so hosts must keep their clocks in sync (NTP) for the ages to be right.
"""

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from django.conf import settings
from django.utils import timezone

from dojo.models import CeleryProcess, MonitoredWorker, MonitorHeartbeat
from dojo.ops.fleet.clock import database_now
from dojo.ops.fleet.status import CeleryStatus

HEARTBEAT_SECONDS = 1.0  # how often each process writes its heartbeat
STALE_AFTER_SECONDS = 3 * HEARTBEAT_SECONDS
KIND_ORDER = {CeleryProcess.Kind.WORKER: 0, CeleryProcess.Kind.BEAT: 1}
MONITOR_STALE_AFTER_SECONDS = 3.0  # the monitor writes its heartbeat every second


@dataclass(frozen=True)
class ProcessRow:
    name: str
    kind: str  # "worker" | "pool" | "beat"
    parent_name: str | None
    is_live: bool
    last_heartbeat_at: datetime
    heartbeat_age_seconds: float
    hostname: str
    pid: int | None
    source: str = "heartbeat"  # "heartbeat" (CeleryProcess) | "events" (MonitoredWorker) | "both"


@dataclass(frozen=True)
class MonitorState:
    """The event monitor of one backend: "live", "down" (since `since`) or "never" (no monitor ran)."""

    state: str
    since: datetime | None  # live: when it started; down: its last heartbeat (or clean stop)
    last_beat_at: datetime | None = None
    hostname: str = ""
    pid: int | None = None
    broker_connected: bool = False
    last_error: str = ""
    events_seen: int = 0
    task_event_counts: dict[str, int] | None = None


def event_stale_after(freq: float) -> float:
    """How old an event heartbeat may be for its worker to be live: Celery's own window (two
    intervals), and never less than a database heartbeat's."""
    return max(STALE_AFTER_SECONDS, 2 * (freq or 2.0))


def _natural_key(name: str) -> list[int | str]:
    """ForkPoolWorker-2 before ForkPoolWorker-10."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def _event_row(worker: MonitoredWorker, now: datetime) -> ProcessRow:
    age = max(0.0, (now - worker.last_heartbeat_at).total_seconds())
    return ProcessRow(
        name=worker.hostname,
        kind=CeleryProcess.Kind.WORKER,
        parent_name=None,
        is_live=worker.online and age <= event_stale_after(worker.freq),
        last_heartbeat_at=worker.last_heartbeat_at,
        heartbeat_age_seconds=round(age, 3),
        hostname=worker.hostname.partition("@")[2] or worker.hostname,
        pid=worker.pid,
        source="events",
    )


def _merged(heartbeat: ProcessRow, events: ProcessRow | None) -> ProcessRow:
    """A worker both write: its own heartbeat row, live if either says so, with the later heartbeat."""
    if events is None:
        return heartbeat
    newer = events if events.last_heartbeat_at > heartbeat.last_heartbeat_at else heartbeat
    return replace(
        heartbeat,
        is_live=heartbeat.is_live or events.is_live,
        last_heartbeat_at=newer.last_heartbeat_at,
        heartbeat_age_seconds=newer.heartbeat_age_seconds,
        source="both",
    )


def _pool_rows(worker: ProcessRow, pids: Sequence[int]) -> list[ProcessRow]:
    """The pool children of a worker known only from events, from its `stats` answer (pids only:
    no name or heartbeat of their own); live while the worker is."""
    return [
        replace(worker, name=f"{worker.name}/pid-{pid}", kind=CeleryProcess.Kind.POOL, parent_name=worker.name, pid=pid)
        for pid in sorted(pid for pid in pids if isinstance(pid, int))
    ]


def pool_pids(status: CeleryStatus | None) -> dict[str, list[int]]:
    """Each answering worker's pool children (pids) from the status document, for list_processes."""
    if status is None:
        return {}
    stats = status.worker_stats
    return {name: list((worker or {}).get("pool", {}).get("processes") or []) for name, worker in stats.items()}


def list_processes(backend_alias: str, pools: Mapping[str, Sequence[int]] | None = None) -> list[ProcessRow]:
    """The backend's processes: each worker followed by its pool children, then beat; workers
    known only from events (project code or not) sort among the workers, with the pool children
    `pools` gives for them (by worker name: the pids of its stats answer in the status document).
    Heartbeat ages are against the database's clock (clock.database_now), read once."""
    now = database_now()
    rows = list(CeleryProcess.objects.filter(backend=backend_alias).select_related("parent"))
    from_events = {
        worker.hostname: _event_row(worker, now) for worker in MonitoredWorker.objects.filter(backend=backend_alias)
    }

    def row(process: CeleryProcess, parent_live: bool = True) -> ProcessRow:
        age = max(0.0, (now - process.last_heartbeat_at).total_seconds())
        return ProcessRow(
            name=process.name,
            kind=process.kind,
            parent_name=process.parent.name if process.parent else None,
            is_live=parent_live and age <= STALE_AFTER_SECONDS,
            last_heartbeat_at=process.last_heartbeat_at,
            heartbeat_age_seconds=round(age, 3),
            hostname=process.hostname,
            pid=process.pid,
        )

    children: dict[int, list[CeleryProcess]] = {}
    for process in rows:
        if process.parent_id is not None:
            children.setdefault(process.parent_id, []).append(process)
    ordered: list[ProcessRow] = []
    tops: list[tuple[ProcessRow, CeleryProcess | None]] = []
    for process in rows:
        if process.parent_id is None:
            events = from_events.pop(process.name, None) if process.kind == CeleryProcess.Kind.WORKER else None
            tops.append((_merged(row(process), events), process))
    tops += [(event_row, None) for event_row in from_events.values()]
    tops.sort(key=lambda top: (KIND_ORDER.get(top[0].kind, 2), _natural_key(top[0].name)))
    for top_row, top in tops:
        ordered.append(top_row)
        if top is None:
            ordered += _pool_rows(top_row, (pools or {}).get(top_row.name, ()))
            continue
        for child in sorted(children.get(top.pk, []), key=lambda process: _natural_key(process.name)):
            ordered.append(row(child, parent_live=top_row.is_live))
    return ordered


def monitor_state(backend_alias: str) -> MonitorState:
    """Whether the event monitor of `backend_alias` runs: live, down since when, or never ran."""
    beat = MonitorHeartbeat.objects.filter(backend=backend_alias).first()
    if beat is None:
        return MonitorState("never", None)
    age = (database_now() - beat.last_beat_at).total_seconds()  # the database's clock
    live = beat.stopped_at is None and age <= MONITOR_STALE_AFTER_SECONDS
    return MonitorState(
        state="live" if live else "down",
        since=beat.started_at if live else (beat.stopped_at or beat.last_beat_at),
        last_beat_at=beat.last_beat_at,
        hostname=beat.hostname,
        pid=beat.pid,
        broker_connected=live and beat.broker_connected,
        last_error=beat.last_error,
        events_seen=beat.events_seen,
        task_event_counts=dict(beat.task_event_counts or {}),
    )


def prune_processes() -> int:
    """Delete processes stale for more than DD_CELERY_WORKER_OFFLINE_HOURS (their children go with
    them), heartbeat and event rows alike; how many rows were deleted. Called by the snapshot task
    (history.record_snapshot)."""
    cutoff = timezone.now() - timedelta(hours=settings.CELERY_WORKER_OFFLINE_HOURS, seconds=STALE_AFTER_SECONDS)
    deleted, _ = CeleryProcess.objects.filter(last_heartbeat_at__lt=cutoff).delete()
    from_events, _ = MonitoredWorker.objects.filter(last_heartbeat_at__lt=cutoff).delete()
    return deleted + from_events
