"""The processes of a backend (workers, their pool children, beat) and whether each is live,
from the heartbeats they write every second (dojo/worker/heartbeat.py).

A process is live while its last heartbeat is at most STALE_AFTER_SECONDS old. A worker's
main process writes its children's heartbeats too, so a worker killed with SIGKILL turns
stale with its children within STALE_AFTER_SECONDS + one heartbeat (< 5 s); a child's row is
stale whenever its worker's is. Ages are measured on this process's clock against the
writer's, so hosts must keep their clocks in sync (NTP) for the ages to be right.
"""

import re
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.utils import timezone

from dojo.models import CeleryProcess

HEARTBEAT_SECONDS = 1.0  # how often each process writes its heartbeat
STALE_AFTER_SECONDS = 3 * HEARTBEAT_SECONDS
KIND_ORDER = {CeleryProcess.Kind.WORKER: 0, CeleryProcess.Kind.BEAT: 1}


@dataclass(frozen=True)
class ProcessRow:
    name: str
    kind: str  # "worker" | "pool" | "beat"
    parent_name: str | None
    is_live: bool
    last_heartbeat_at: datetime
    heartbeat_age_seconds: float
    hostname: str
    pid: int


def _natural_key(name: str) -> list[int | str]:
    """ForkPoolWorker-2 before ForkPoolWorker-10."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def list_processes(backend_alias: str) -> list[ProcessRow]:
    """The backend's processes: each worker followed by its pool children, then beat."""
    now = timezone.now()
    rows = list(CeleryProcess.objects.filter(backend=backend_alias).select_related("parent"))

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
    tops = sorted(
        (process for process in rows if process.parent_id is None),
        key=lambda process: (KIND_ORDER.get(process.kind, 2), _natural_key(process.name)),
    )
    for top in tops:
        top_row = row(top)
        ordered.append(top_row)
        for child in sorted(children.get(top.pk, []), key=lambda process: _natural_key(process.name)):
            ordered.append(row(child, parent_live=top_row.is_live))
    return ordered


def prune_processes() -> int:
    """Delete processes stale for more than DD_CELERY_WORKER_OFFLINE_HOURS (their children go with
    them); how many rows were deleted. Called by the snapshot task (history.record_snapshot)."""
    cutoff = timezone.now() - timedelta(hours=settings.CELERY_WORKER_OFFLINE_HOURS, seconds=STALE_AFTER_SECONDS)
    deleted, _ = CeleryProcess.objects.filter(last_heartbeat_at__lt=cutoff).delete()
    return deleted
