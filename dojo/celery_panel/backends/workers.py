"""Workers from the cached status document (one dojo_status broadcast) and the seen-workers table."""

from datetime import UTC, datetime
from typing import ClassVar

from django.conf import settings

from dojo.celery_panel.backends.base import WorkersBackend
from dojo.celery_panel.pages import WorkerDetailPage, WorkerListPage, WorkerRow
from dojo.models import CeleryWorkerSeen
from dojo.ops.fleet.seen_workers import seen_workers
from dojo.ops.fleet.status import CeleryStatus
from dojo.ops.fleet.status_cache import get_status
from dojo.ops.fleet.worker_reply import INSPECT_COMMANDS
from dojo.ops.redaction import mask_url


def _pool_name(implementation: str | None) -> str | None:
    """Celery reports the pool class path (celery.concurrency.prefork:TaskPool); show "prefork"."""
    if not implementation:
        return None
    module = implementation.split(":", 1)[0].rsplit(".", 1)[-1]
    return {"asynpool": "prefork", "solo": "solo", "threads": "threads"}.get(module, module)


def unanswered(reply: dict) -> list[str]:
    """The inspect commands whose answers `reply` lacks (all of them when it is an error): their
    lists are empty in the reply, but unknown, not empty."""
    return list(INSPECT_COMMANDS) if "error" in reply else list(reply.get("unanswered", []))


def worker_row(name: str, reply: dict, last_seen: datetime | None) -> WorkerRow:
    """The list row of a worker that answered with `reply`."""
    stats = reply.get("stats") or {}
    return WorkerRow(
        name=name,
        online=True,
        last_seen=last_seen,
        pool=_pool_name(stats.get("pool_implementation")),
        concurrency=(stats.get("pool") or {}).get("max-concurrency"),
        active=None if "active" in unanswered(reply) else len(reply.get("active", [])),
    )


def _live_task(task: dict) -> dict:
    """A task of a worker's lists with `started_at`, its time_start (epoch seconds) as a date."""
    started = task.get("time_start")
    return {**task, "started_at": datetime.fromtimestamp(started, UTC) if isinstance(started, int | float) else None}


def offline_row(seen: CeleryWorkerSeen) -> WorkerRow:
    return WorkerRow(name=seen.name, online=False, last_seen=seen.last_seen)


class InspectWorkersBackend(WorkersBackend):
    """Online workers are those that answered the last status read; offline ones come from the seen table."""

    BACKEND_DESCRIPTION = "one dojo_status broadcast (cached), plus workers seen within DD_CELERY_WORKER_OFFLINE_HOURS"
    DATA_SOURCE: ClassVar[str] = "Celery remote control (dojo_status) and the CeleryWorkerSeen table"

    def _status(self) -> tuple[CeleryStatus, datetime, dict[str, CeleryWorkerSeen]]:
        status = get_status()
        return status, datetime.fromtimestamp(status.read_at, tz=UTC), seen_workers()

    def get_workers(self) -> WorkerListPage:
        status, read_at, seen = self._status()
        online = [worker_row(name, reply, read_at) for name, reply in sorted(status.worker_replies.items())]
        offline = [offline_row(row) for name, row in sorted(seen.items()) if name not in status.worker_replies]
        return WorkerListPage(workers=online + offline, error=None if status.broker_status else status.error)

    def get_worker_detail(self, worker_id: str) -> WorkerDetailPage:
        status, read_at, seen = self._status()
        reply = status.worker_replies.get(worker_id)
        if reply is None:
            if worker_id in seen:
                return WorkerDetailPage(worker=offline_row(seen[worker_id]), error=status.error)
            return WorkerDetailPage(worker=None, error=f"No worker {worker_id!r} was seen recently.")
        stats = reply.get("stats") or {}
        consumer = reply.get("consumer") or {}
        queues = [queue["name"] for queue in consumer.get("queues", [])] or list(reply.get("active_queues", []))
        processes = (stats.get("pool") or {}).get("processes") or []
        return WorkerDetailPage(
            worker=worker_row(worker_id, reply, read_at),
            error=reply.get("error"),
            pid=stats.get("pid"),
            prefetch_count=stats.get("prefetch_count"),
            total_tasks=stats.get("total"),
            active=[_live_task(task) for task in reply.get("active", [])],
            reserved=[_live_task(task) for task in reply.get("reserved", [])],
            scheduled=[_live_task(task) for task in reply.get("scheduled", [])],
            registered=list(reply.get("registered", [])),
            queues=queues,
            processes=list(processes),
            rusage=dict(stats.get("rusage") or {}),
            broker=mask_url(consumer.get("broker") or settings.CELERY_BROKER_URL),
            unanswered=unanswered(reply),
        )
