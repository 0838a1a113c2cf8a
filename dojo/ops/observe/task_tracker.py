"""What the event monitor remembers of each task between its events, and of each worker's life,
for the rollups (dojo.ops.observe.rollups) and lost-task detection.

Celery's task events carry little each: task-received has the name and the retries but not the
queue, task-started only the worker, task-succeeded the runtime, task-failed neither the name nor
the runtime. So the tracker keeps, per task id, what the later events need: name, queue (from a
task-sent event, which publishers send with `task_send_sent_event`), publish time (the task-sent
event's timestamp), received and started times, the worker and its process id, the retries.
It is an LRU of DD_ANALYTICS_MAX_TRACKED_TASKS ids: a terminal event forgets the task, the
oldest is dropped first, so memory is bounded whatever the event rate.

Lost tasks follow Celery's own liveness rule: a worker is gone after worker-offline, or when no
heartbeat came for twice its heartbeat interval (`celery.events.state.heartbeat_expires`) plus
EXPIRY_SLACK_SECONDS; a heartbeat with another process id means the process the task started in
is gone (a restart under the same name). A started task whose process is gone and that has no
terminal event DD_ANALYTICS_LOST_GRACE_SECONDS later is lost. A worker that only missed beats and
sends heartbeats again (same pid) within the grace loses nothing.
"""

from collections import OrderedDict

EXPIRY_SLACK_SECONDS = 1.0  # past Celery's freq * 2, for a heartbeat a little late on a loaded host
MAX_REMEMBERED_PIDS = 8  # a worker's former process ids remembered, with when each went away


class TrackedTask:
    """One task id's state between events (times are epoch seconds, the sender's clock)."""

    __slots__ = ("counted", "name", "queue", "received", "retries", "sent", "started", "worker", "worker_pid")

    def __init__(self) -> None:
        self.name = ""
        self.queue = ""
        self.worker = ""
        self.worker_pid = 0  # the worker's main process id (from its heartbeats) when it started
        self.retries = 0
        self.sent = 0.0  # publish time; 0 = unknown
        self.received = 0.0
        self.started = 0.0  # 0 = not running
        self.counted: tuple | None = None  # the rollup key its task-received was counted under


class WorkerLife:
    """What lost-task detection needs of one worker: its heartbeats, whether it said goodbye,
    the ids of the tasks running on it, and the former process ids that went away."""

    __slots__ = ("freq", "gone_pids", "last_heartbeat", "offline_at", "pid", "running")

    def __init__(self) -> None:
        self.pid = 0
        self.freq = 2.0
        self.last_heartbeat = 0.0  # the monitor's clock (local_received)
        self.offline_at = 0.0  # worker-offline seen (0 = not since its last heartbeat)
        self.running: set[str] = set()
        self.gone_pids: dict[int, float] = {}

    def gone_at(self, pid: int, now: float) -> float:
        """When the process `pid` of this worker went away (0.0 while it is alive)."""
        if pid and pid in self.gone_pids:
            return self.gone_pids[pid]
        if self.offline_at:
            return self.offline_at
        expires = self.last_heartbeat + self.freq * 2
        if self.last_heartbeat and now > expires + EXPIRY_SLACK_SECONDS:
            return expires
        return 0.0


class LostCandidate:
    """A task found lost: what its LostTask row says."""

    __slots__ = ("gone_at", "name", "queue", "started", "task_id", "worker")

    def __init__(self, task_id: str, task: TrackedTask, gone_at: float) -> None:
        self.task_id = task_id
        self.name = task.name
        self.queue = task.queue
        self.worker = task.worker
        self.started = task.started
        self.gone_at = gone_at


class TaskTracker:
    """The bounded LRU of task ids and the workers' lives; fed from one thread (the caller locks)."""

    def __init__(self, max_tasks: int = 100_000, max_workers: int = 2000) -> None:
        self.max_tasks = max(1, max_tasks)
        self.max_workers = max(1, max_workers)
        self.tasks: OrderedDict[str, TrackedTask] = OrderedDict()
        self.workers: OrderedDict[str, WorkerLife] = OrderedDict()
        self.dropped = 0  # tasks forgotten by the LRU before their terminal event

    def __len__(self) -> int:
        return len(self.tasks)

    def task(self, task_id: str) -> TrackedTask:
        """The task's entry, made if new; the most recently seen go last."""
        tasks = self.tasks
        task = tasks.get(task_id)
        if task is None:
            task = tasks[task_id] = TrackedTask()
            if len(tasks) > self.max_tasks:
                old_id, old = tasks.popitem(last=False)
                self.dropped += 1
                if old.started:
                    self._not_running(old_id, old)
        else:
            tasks.move_to_end(task_id)
        return task

    def get(self, task_id: str) -> TrackedTask | None:
        return self.tasks.get(task_id)

    def forget(self, task_id: str) -> TrackedTask | None:
        """A terminal event: drop the task (and from its worker's running set)."""
        task = self.tasks.pop(task_id, None)
        if task is not None and task.started:
            self._not_running(task_id, task)
        return task

    def start(self, task_id: str, task: TrackedTask, worker: str, at: float) -> None:
        if task.started and task.worker != worker:
            self._not_running(task_id, task)  # redelivered elsewhere
        life = self.worker(worker)
        task.worker, task.worker_pid, task.started = worker, life.pid, at
        life.running.add(task_id)

    def stop(self, task_id: str, task: TrackedTask) -> None:
        """The run ended but the task goes on (task-retried)."""
        if task.started:
            self._not_running(task_id, task)
        task.started = 0.0

    def _not_running(self, task_id: str, task: TrackedTask) -> None:
        life = self.workers.get(task.worker)
        if life is not None:
            life.running.discard(task_id)

    def worker(self, hostname: str) -> WorkerLife:
        workers = self.workers
        life = workers.get(hostname)
        if life is None:
            life = workers[hostname] = WorkerLife()
            if len(workers) > self.max_workers:
                # The least recently heard worker goes; its running tasks can no longer be found lost.
                for name, old in workers.items():
                    if not old.running and name != hostname:
                        del workers[name]
                        break
                else:
                    workers.popitem(last=False)
        else:
            workers.move_to_end(hostname)
        return life

    def worker_event(self, kind: str, hostname: str, pid: int, freq: float, received: float) -> None:
        """worker-online/heartbeat/offline (times on the monitor's clock)."""
        life = self.worker(hostname)
        if kind == "worker-offline":
            life.offline_at = received or life.last_heartbeat
            return
        if pid and life.pid and pid != life.pid:
            # Another process under the same name: the former one is gone since its last beat
            # expired, or since this first beat of the new one if that came sooner.
            expired = life.last_heartbeat + life.freq * 2 if life.last_heartbeat else received
            life.gone_pids[life.pid] = min(expired, received) if received else expired
            while len(life.gone_pids) > MAX_REMEMBERED_PIDS:
                del life.gone_pids[next(iter(life.gone_pids))]
        if pid:
            life.pid = pid
        if freq > 0:
            life.freq = freq
        life.last_heartbeat = max(life.last_heartbeat, received)
        life.offline_at = 0.0

    def find_lost(self, now: float, grace: float) -> list[LostCandidate]:
        """Forget and return the running tasks whose process has been gone for `grace` seconds;
        cost: the tasks running now (a few per worker), never the tracked total."""
        lost: list[LostCandidate] = []
        for life in self.workers.values():
            if not life.running:
                continue
            for task_id in list(life.running):
                task = self.tasks.get(task_id)
                if task is None or not task.started:
                    life.running.discard(task_id)
                    continue
                gone_at = life.gone_at(task.worker_pid, now)
                if gone_at and now >= gone_at + grace:
                    lost.append(LostCandidate(task_id, task, gone_at))
                    life.running.discard(task_id)
                    del self.tasks[task_id]
        return lost
