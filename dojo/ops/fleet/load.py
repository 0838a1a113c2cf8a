"""What the answering workers hold for each queue, from their status replies: one aggregation for
the status document's consumer counts, the queues table and the panel's queues page."""

from dataclasses import dataclass, field
from datetime import UTC, datetime

from dojo.ops.fleet.worker_reply import TASK_LISTS


@dataclass
class WorkerLoad:
    """One queue's share of the live workers."""

    claimed: int = 0  # reserved (prefetched) plus active
    scheduled: int = 0  # ETA/countdown tasks held until they are due
    oldest_eta: datetime | None = None
    consumed_by: dict[str, dict] = field(default_factory=dict)  # worker -> its binding of the queue
    # An answering worker did not say in time which queues it consumes / which tasks it holds.
    queues_unknown: bool = False
    tasks_unknown: bool = False

    @property
    def consumers(self) -> int | None:
        return None if self.queues_unknown else len(self.consumed_by)

    @property
    def claimed_count(self) -> int | None:
        return None if self.tasks_unknown else self.claimed

    @property
    def scheduled_count(self) -> int | None:
        return None if self.tasks_unknown else self.scheduled


class QueueLoads(dict[str, WorkerLoad]):
    """Loads by queue; a queue nobody holds or consumes reads as an idle load (like a defaultdict,
    but picklable, so the status document can carry the loads it counted before its task lists
    were capped)."""

    def __init__(self, queues_unknown: bool = False, tasks_unknown: bool = False) -> None:
        super().__init__()
        self.queues_unknown, self.tasks_unknown = queues_unknown, tasks_unknown

    def default_factory(self) -> WorkerLoad:
        return WorkerLoad(queues_unknown=self.queues_unknown, tasks_unknown=self.tasks_unknown)

    def __missing__(self, name: str) -> WorkerLoad:
        load = self[name] = self.default_factory()
        return load

    def __reduce__(self) -> tuple:
        return (type(self), (self.queues_unknown, self.tasks_unknown), None, None, iter(self.items()))

    def counts_only(self) -> "QueueLoads":
        """The same loads with the consumers' names only (no bindings): the status summary's copy."""
        slim = QueueLoads(self.queues_unknown, self.tasks_unknown)
        nothing: dict = {}  # one shared empty binding: the summary keeps who consumes, not how
        for name, load in self.items():
            bare = dict.fromkeys(load.consumed_by, nothing)
            slim[name] = WorkerLoad(
                load.claimed, load.scheduled, load.oldest_eta, bare, load.queues_unknown, load.tasks_unknown
            )
        return slim


def worker_loads(replies: dict[str, dict]) -> QueueLoads:
    """Per queue: the tasks the workers hold, by the routing key they were delivered with (each
    queue's own name here), and the workers that consume it. A queue nobody holds or consumes
    reads as an empty load. A worker that did not give its queues or task lists in time makes
    those counts unknown (None) for every queue: it may consume or hold any of them."""
    queues_unknown = any(_unanswered(reply, "active_queues") for reply in replies.values())
    tasks_unknown = any(_unanswered(reply, *TASK_LISTS) for reply in replies.values())
    loads = QueueLoads(queues_unknown=queues_unknown, tasks_unknown=tasks_unknown)
    for worker, reply in replies.items():
        bindings = (reply.get("consumer") or {}).get("queues")
        if bindings is None:  # a reply without the "consumer" key: names only
            bindings = [{"name": name} for name in reply.get("active_queues", [])]
        for binding in bindings:
            loads[binding["name"]].consumed_by[worker] = binding
        for task in [*reply.get("active", []), *reply.get("reserved", [])]:
            loads[_queue_of(task)].claimed += 1
        for task in reply.get("scheduled", []):
            load = loads[_queue_of(task)]
            load.scheduled += 1
            eta = _parse_eta(task.get("eta"))
            if eta is not None and (load.oldest_eta is None or eta < load.oldest_eta):
                load.oldest_eta = eta
    return loads


def _unanswered(reply: dict, *commands: str) -> bool:
    return "error" in reply or any(command in reply.get("unanswered", ()) for command in commands)


def _queue_of(task: dict) -> str:
    return (task.get("delivery_info") or {}).get("routing_key") or ""


def _parse_eta(value: str | None) -> datetime | None:
    try:
        eta = datetime.fromisoformat(value) if value else None
    except ValueError:
        return None
    return eta.replace(tzinfo=eta.tzinfo or UTC) if eta else None
