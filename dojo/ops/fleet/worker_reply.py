"""One worker's part of the status document, in one shape whatever the worker runs.

The project's workers answer `dojo_status` (dojo/worker/commands.py), one reply built from the
six built-in inspect commands they run locally; any other worker (a fleet the project did not
write, or an older release in a rolling deploy) is asked those six built-in commands. Both go
through `describe_worker`, so the fields and their meaning are the same for both kinds.

Which workers speak `dojo_status`: the project's workers add STATUS_MARKER to the answer of the
built-in `stats` command (a worker bootstep's `info`, which Celery merges into `stats`). A worker
is sent `dojo_status` only after its own `stats` answer carried the marker with this release's
STATUS_VERSION, so a worker never gets a command it does not know, and a worker of another
release (whose reply might be shaped otherwise) is described from the built-in commands.
"""

from collections.abc import Mapping
from typing import Any

STATUS_COMMAND = "dojo_status"  # answered by dojo/worker/commands.py
STATUS_MARKER = "dojo_status_version"  # the key the project's workers add to `stats`
STATUS_VERSION = 1  # the shape of describe_worker's result; bump it when that changes
# The built-in inspect commands every Celery worker answers, and the reply key each fills.
INSPECT_COMMANDS = ("stats", "active", "reserved", "scheduled", "registered", "active_queues")
TASK_LISTS = ("active", "reserved", "scheduled")
POOL_FIELDS = ("max-concurrency", "processes", "max-tasks-per-child")


def speaks_status(stats: Mapping[str, Any] | None) -> bool:
    """Whether a worker's `stats` answer says it answers this release's dojo_status."""
    return isinstance(stats, Mapping) and stats.get(STATUS_MARKER) == STATUS_VERSION


def describe_worker(answers: Mapping[str, Any], broker_url: str | None = None) -> dict[str, Any]:
    """A worker's reply from its answers to INSPECT_COMMANDS (by command name, as Celery's
    control functions or the inspect replies return them). A command it did not answer is named in
    `unanswered` (its list is empty and its counts are unknown); `stats` is then None."""
    stats = answers.get("stats")
    queues = answers.get("active_queues") or []
    return {
        "stats": _stats(stats) if isinstance(stats, Mapping) else None,
        "active": [_task_summary(info) for info in _list(answers.get("active"))],
        "reserved": [_task_summary(info) for info in _list(answers.get("reserved"))],
        "scheduled": [
            {**_task_summary(entry.get("request") or {}), "eta": entry.get("eta"), "priority": entry.get("priority")}
            for entry in _list(answers.get("scheduled"))
        ],
        "registered": sorted(_task_name(name) for name in _list(answers.get("registered")) if _is_user_task(name)),
        "active_queues": [queue["name"] for queue in queues if isinstance(queue, Mapping) and "name" in queue],
        "consumer": {
            "broker": broker_url,
            "queues": [_binding(queue) for queue in queues if isinstance(queue, Mapping) and "name" in queue],
        },
        "unanswered": [command for command in INSPECT_COMMANDS if command not in answers],
    }


def _stats(stats: Mapping[str, Any]) -> dict[str, Any]:
    pool = stats.get("pool") if isinstance(stats.get("pool"), Mapping) else {}
    totals = stats.get("total") if isinstance(stats.get("total"), Mapping) else {}
    return {
        "total": sum(totals.values()),
        "total_by_task": dict(totals),
        # Celery says "N/A" for a limit that is not set.
        "pool": {name: None if pool.get(name) == "N/A" else pool.get(name) for name in POOL_FIELDS},
        "pool_implementation": pool.get("implementation"),
        "pid": stats.get("pid"),
        "uptime": stats.get("uptime"),
        "prefetch_count": stats.get("prefetch_count"),
        "rusage": stats.get("rusage") if isinstance(stats.get("rusage"), Mapping) else None,
    }


def _list(value: Any) -> list:
    return [item for item in value if item is not None] if isinstance(value, list) else []


def _task_summary(info: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "id": info.get("id"),
        "name": info.get("name"),
        "args": info.get("args"),
        "kwargs": info.get("kwargs"),
        "time_start": info.get("time_start"),
        "worker_pid": info.get("worker_pid"),
        "delivery_info": {"routing_key": (info.get("delivery_info") or {}).get("routing_key")},
    }


def _task_name(entry: str) -> str:
    """`registered` may add attributes after the name ("app.add [rate_limit=10/m]")."""
    return entry.split(" [", 1)[0]


def _is_user_task(entry: Any) -> bool:
    return isinstance(entry, str) and not entry.startswith("celery.")


def _binding(queue: Mapping[str, Any]) -> dict[str, Any]:
    exchange = queue.get("exchange") if isinstance(queue.get("exchange"), Mapping) else {}
    return {
        "name": queue["name"],
        "exchange": exchange.get("name"),
        "exchange_type": exchange.get("type"),
        "routing_key": queue.get("routing_key"),
        "durable": queue.get("durable"),
    }


def cap_task_lists(reply: dict[str, Any], cap: int) -> dict[str, Any]:
    """`reply` with each task list cut to its first `cap` entries, so the document stays bounded
    however many tasks a worker holds: `counts` keeps each list's exact length and `left_out` how
    many of it were cut (only the lists that were). A reply with an error has no lists to cut."""
    if "error" in reply:
        return reply
    cap = max(cap, 0)
    counts = {kind: task_count(reply, kind) or 0 for kind in TASK_LISTS}
    cut = [kind for kind in TASK_LISTS if len(reply.get(kind, [])) > cap]
    capped = {**reply, "counts": counts, "left_out": {kind: counts[kind] - cap for kind in cut}}
    for kind in cut:
        capped[kind] = reply[kind][:cap]
    return capped


def task_count(reply: dict[str, Any], kind: str) -> int | None:
    """How many tasks of `kind` the worker holds (its exact count, even when the list was capped);
    None when it did not say."""
    if "error" in reply or kind in reply.get("unanswered", ()):
        return None
    counted = reply.get("counts")
    if isinstance(counted, Mapping) and kind in counted:
        return counted[kind]
    return len(reply.get(kind, []))
