"""Remote-control commands the project's workers answer.

`dojo_status` answers in one broadcast round what the six built-in inspect commands
(stats, active, reserved, scheduled, registered, active_queues) answer in six: each of
those is its own broadcast, which costs seconds on a large fleet (design.md).
"""

from celery.worker import control
from celery.worker.control import control_command, inspect_command

from dojo.ops.controls.pauses import RESUME_COMMAND
from dojo.ops.fleet.status import STATUS_COMMAND
from dojo.ops.redaction import mask_url
from dojo.worker.startup import consumes_by_configuration

POOL_FIELDS = ("max-concurrency", "processes", "max-tasks-per-child")


def _task_summary(info: dict) -> dict:
    return {
        "id": info.get("id"),
        "name": info.get("name"),
        "args": info.get("args"),
        "kwargs": info.get("kwargs"),
        "time_start": info.get("time_start"),
        "worker_pid": info.get("worker_pid"),
        "delivery_info": {"routing_key": (info.get("delivery_info") or {}).get("routing_key")},
    }


@inspect_command(name=STATUS_COMMAND)
def dojo_status(state, **kwargs) -> dict:
    """This worker's stats, active, reserved and scheduled tasks, registered tasks and queues."""
    stats = control.stats(state)
    pool = stats.get("pool") or {}
    totals = stats.get("total") or {}
    return {
        "stats": {
            "total": sum(totals.values()),
            "total_by_task": totals,
            # Celery says "N/A" for a limit that is not set.
            "pool": {field: None if pool.get(field) == "N/A" else pool.get(field) for field in POOL_FIELDS},
            "pool_implementation": pool.get("implementation"),
            "pid": stats.get("pid"),
            "uptime": stats.get("uptime"),
            "prefetch_count": stats.get("prefetch_count"),
            "rusage": stats.get("rusage"),
        },
        "active": [_task_summary(info) for info in control.active(state)],
        "reserved": [_task_summary(info) for info in control.reserved(state)],
        "scheduled": [
            {**_task_summary(entry["request"]), "eta": entry["eta"], "priority": entry["priority"]}
            for entry in control.scheduled(state)
        ],
        "registered": sorted(name for name in state.app.tasks if not name.startswith("celery.")),
        "active_queues": [queue["name"] for queue in control.active_queues(state)],
        "consumer": _consumer(state),
    }


def _consumer(state) -> dict:
    """Where this worker consumes: its broker URL (secrets masked before it leaves the worker) and
    each queue's binding."""
    conn = state.consumer.connection
    return {
        "broker": mask_url(conn.as_uri(include_password=True)),
        "queues": [
            {
                "name": queue["name"],
                "exchange": (queue.get("exchange") or {}).get("name"),
                "exchange_type": (queue.get("exchange") or {}).get("type"),
                "routing_key": queue.get("routing_key"),
                "durable": queue.get("durable"),
            }
            for queue in control.active_queues(state)
        ],
    }


@control_command(name=RESUME_COMMAND, args=[("queue", str)], signature="<queue>")
def dojo_resume_queue(state, queue: str, **kwargs) -> dict:
    """Consume `queue` again, only if this worker's own configuration selects it: the built-in
    add_consumer would make every worker that gets it consume the queue."""
    if not consumes_by_configuration(queue):
        return {"resumed": False}
    state.consumer.add_task_queue(queue)
    return {"resumed": True}
