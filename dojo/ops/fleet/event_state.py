"""A bounded picture of one backend's fleet, fed by Celery's own events.

Every Celery worker sends worker-online/heartbeat/offline events (a heartbeat every 2 s, even
without -E) and, once events are enabled, task events; so this describes any worker, whether it
runs this project's code or not. The event monitor (dojo.ops.observe.monitor) feeds one
EventState per backend from its receiver thread and a writer thread takes what changed once a
second.

Memory is bounded: workers are kept in an LRU of `max_workers` (the one heard from least
recently goes first), task ids in an LRU of `max_tasks` or, in the monitor, in the task sink it
passes (dojo.ops.observe.rollups: the analytics' own bounded tracker, which gets every task and
worker event), and the task event counts are a fixed set of keys. (Celery's own
`celery.events.state.State` is not used: it cost most of the time per event.)
"""

import threading
from collections import Counter, OrderedDict
from dataclasses import dataclass, field, replace
from typing import Protocol

# Task event types counted by name; anything else a worker sends counts as "other".
TASK_EVENT_TYPES = frozenset({"sent", "received", "started", "succeeded", "failed", "retried", "revoked", "rejected"})
WORKER_EVENT_TYPES = frozenset({"worker-online", "worker-heartbeat", "worker-offline"})


@dataclass
class WorkerInfo:
    """A worker as its last worker event described it. Times are epoch seconds on the
    monitor's clock (when the event was received)."""

    hostname: str
    first_seen: float
    last_heartbeat: float
    online: bool = True
    pid: int | None = None
    freq: float = 2.0
    sw_ident: str = ""
    sw_ver: str = ""
    sw_sys: str = ""
    processed: int = 0
    active: int = 0
    loadavg: list[float] = field(default_factory=list)


def _int(value: object, default: int = 0) -> int:
    try:
        return max(0, int(value))  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return default


def _float(value: object, default: float) -> float:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return default
    return number if number > 0 else default


class TaskSink(Protocol):
    """Gets every task and worker event after the state took it (the monitor's rollups)."""

    def handle(self, kind: str, event: dict) -> None: ...

    def __len__(self) -> int: ...


class TaskIds:
    """The task ids last seen, an LRU of `cap`: the default sink when nothing else keeps tasks."""

    def __init__(self, cap: int) -> None:
        self.cap = max(1, cap)
        self.ids: OrderedDict[str, None] = OrderedDict()

    def handle(self, kind: str, event: dict) -> None:
        task_id = event.get("uuid")
        if not kind.startswith("task-") or not task_id:
            return
        self.ids[task_id] = None
        self.ids.move_to_end(task_id)
        if len(self.ids) > self.cap:
            self.ids.popitem(last=False)

    def __len__(self) -> int:
        return len(self.ids)


class EventState:
    """What the events of one backend said, bounded; safe to feed from one thread and read from others."""

    def __init__(self, max_workers: int = 2000, max_tasks: int = 10000, tasks: TaskSink | None = None) -> None:
        self.max_workers = max(1, max_workers)
        self.tasks: TaskSink = TaskIds(max_tasks) if tasks is None else tasks
        self.workers: OrderedDict[str, WorkerInfo] = OrderedDict()
        self.task_event_counts: Counter[str] = Counter()
        self.events_seen = 0
        self._dirty: set[str] = set()
        self._lock = threading.Lock()

    def handle(self, event: dict) -> None:
        """One event as `celery.events.EventReceiver` hands it over (with `local_received`)."""
        kind = event.get("type", "")
        with self._lock:
            self.events_seen += 1
            if kind in WORKER_EVENT_TYPES:
                self._worker_event(kind, event)
            elif kind.startswith("task-"):
                name = kind[5:]
                self.task_event_counts[name if name in TASK_EVENT_TYPES else "other"] += 1
            else:
                return
        self.tasks.handle(kind, event)

    def _worker_event(self, kind: str, event: dict) -> None:
        hostname = str(event.get("hostname") or "")
        if not hostname:
            return
        received = _float(event.get("local_received"), 0.0) or _float(event.get("timestamp"), 0.0)
        info = self.workers.get(hostname)
        if info is None:
            info = WorkerInfo(hostname=hostname, first_seen=received, last_heartbeat=received)
            self.workers[hostname] = info
            while len(self.workers) > self.max_workers:
                dropped, _ = self.workers.popitem(last=False)
                self._dirty.discard(dropped)
        else:
            self.workers.move_to_end(hostname)
        info.online = kind != "worker-offline"
        info.last_heartbeat = max(info.last_heartbeat, received)
        info.pid = _int(event.get("pid"), 0) or info.pid
        info.freq = _float(event.get("freq"), info.freq)
        info.sw_ident = str(event.get("sw_ident") or info.sw_ident)[:100]
        info.sw_ver = str(event.get("sw_ver") or info.sw_ver)[:100]
        info.sw_sys = str(event.get("sw_sys") or info.sw_sys)[:100]
        info.processed = _int(event.get("processed"), info.processed)
        info.active = _int(event.get("active"), info.active)
        loadavg = event.get("loadavg")
        if isinstance(loadavg, list | tuple):
            info.loadavg = [round(_float(value, 0.0), 2) for value in loadavg[:3]]
        self._dirty.add(hostname)

    def take_dirty(self) -> list[WorkerInfo]:
        """Copies of the workers that changed since the last call (forgets that they changed)."""
        with self._lock:
            changed = [replace(self.workers[name], loadavg=list(self.workers[name].loadavg)) for name in self._dirty]
            self._dirty.clear()
        return changed

    def mark_dirty(self, hostnames: list[str]) -> None:
        """A write of these workers failed: take them again next time (if still kept)."""
        with self._lock:
            self._dirty.update(name for name in hostnames if name in self.workers)

    def counts(self) -> tuple[int, dict[str, int]]:
        """Events seen and task events by type, since this state was made."""
        with self._lock:
            return self.events_seen, dict(self.task_event_counts)

    @property
    def tasks_kept(self) -> int:
        return len(self.tasks)
