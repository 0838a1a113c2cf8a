"""The event monitor (`manage.py celery_monitor`): one receiver thread per configured broker
feeding a bounded EventState (dojo.ops.fleet.event_state), and one writer thread that puts what
the pages need in the database once a second, in one transaction: the workers that changed
(MonitoredWorker) and a heartbeat per backend (MonitorHeartbeat). The task events also feed each
backend's analytics (dojo.ops.observe.rollups): the writer looks for lost tasks every second and
writes the rollups every DD_ANALYTICS_FLUSH_SECONDS, in a transaction of their own.

Like Flower, each receiver re-sends `enable_events` to its broker's workers every
DD_CELERY_MONITOR_ENABLE_EVENTS_SECONDS (never with DD_CELERY_READ_ONLY), so workers started
without -E, or after the monitor, send task events too. The broadcast expects no reply and is
bounded by the broker time bound (dojo.ops.fleet.mailbox).

A broker that is down or goes away is retried with a back-off (1 s doubling to
RECONNECT_MAX_SECONDS, with jitter), never in a hot loop; the backend's heartbeat row says
whether its receiver is connected and the last error. A database that fails is logged once and
written again on the next second. The event queue has a stable name per host and backend, so a
restarted monitor reuses it (the filesystem broker never removes old bindings).
"""

import contextlib
import logging
import os
import random
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from django.conf import settings
from django.db import DatabaseError, connections, transaction
from kombu import Connection

from dojo.celery import app
from dojo.models import MonitoredWorker, MonitorHeartbeat
from dojo.ops.brokers.connection import BrokerUnavailable, broker_timeout
from dojo.ops.brokers.registry import Broker, configured_brokers
from dojo.ops.fleet.event_state import EventState, WorkerInfo
from dojo.ops.fleet.mailbox import broadcast
from dojo.ops.observe.rollups import Rollups
from dojo.ops.observe.rollups import flush as flush_rollups
from dojo.ops.redaction import redact

logger = logging.getLogger(__name__)

FLUSH_SECONDS = 1.0  # how often the writer writes the changed workers and the heartbeats
RECONNECT_MIN_SECONDS = 1.0
RECONNECT_MAX_SECONDS = 30.0
# Reads on the receiver's socket: longer than the transports' own 1 s polls, short enough that a
# broker that stopped answering mid-read is noticed.
RECEIVER_SOCKET_TIMEOUT = 10.0
WORKER_FIELDS = [
    "online",
    "last_heartbeat_at",
    "pid",
    "freq",
    "sw_ident",
    "sw_ver",
    "sw_sys",
    "processed",
    "active",
    "loadavg",
]  # what a flush updates; first_seen stays as the first write made it


def _at(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def node_id(alias: str) -> str:
    """The event queue's name part: stable per host and backend."""
    return f"dojo-monitor.{socket.gethostname()}.{alias}"


@dataclass
class BackendMonitor:
    """The receiver of one broker: its state, whether it is connected, and its last error."""

    broker: Broker
    state: EventState
    stop: threading.Event
    enable_events_seconds: float = 0.0
    # Called (broker, worker name) when a worker comes online or is first heard of by this
    # monitor: the management command passes dojo.ops.controls.late_workers.bring_in_line_soon.
    on_worker_online: Callable[[Broker, str], None] | None = None
    rollups: Rollups | None = None
    connected: bool = False
    last_error: str = ""
    _next_enable: float = 0.0
    _failing: bool = False
    _ready_once: bool = False  # connected since the last failure: the back-off starts again
    _thread: threading.Thread | None = field(default=None, repr=False)

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name=f"dojo-monitor-{self.broker.alias}", daemon=True)
        self._thread.start()

    def join(self, timeout: float) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def run(self) -> None:
        backoff = RECONNECT_MIN_SECONDS
        while not self.stop.is_set():
            try:
                self._receive()
            except Exception as exc:  # whatever the broker or the transport raised: retry later
                self.connected = False
                self.last_error = redact(f"{type(exc).__name__}: {exc}")
                if not self._failing:
                    logger.warning("Event monitor of %s lost its broker: %s", self.broker.alias, self.last_error)
                self._failing = True
            else:
                self.connected = False
                if self.stop.is_set():
                    return
            if self._ready_once:
                backoff = RECONNECT_MIN_SECONDS  # it was connected: start the back-off again
            self._ready_once = False
            self.stop.wait(backoff * random.uniform(0.5, 1.0))  # noqa: S311 - jitter, not secrets
            backoff = min(backoff * 2, RECONNECT_MAX_SECONDS)

    def connection(self) -> Connection:
        timeout = broker_timeout()
        options = {**self.broker.transport_options, **self.broker.transport.bounded_options(RECEIVER_SOCKET_TIMEOUT)}
        options.update(max_retries=1, interval_start=0)
        return Connection(self.broker.broker_url, connect_timeout=timeout, transport_options=options)

    def _receive(self) -> None:
        """Connect, consume until stopped or the broker fails (which raises)."""
        with self.connection() as conn:
            conn.ensure_connection(max_retries=0, timeout=broker_timeout())
            receiver = app.events.Receiver(conn, handlers={"*": self.handle}, node_id=node_id(self.broker.alias))
            receiver.connect_max_retries = 0  # its own reconnect loop would retry forever: ours backs off
            receiver.should_stop = False

            def on_iteration() -> None:
                if self.stop.is_set():
                    receiver.should_stop = True
                    return
                if not self.connected:
                    self.connected, self._ready_once = True, True
                    if self._failing:
                        logger.warning("Event monitor of %s receives events again.", self.broker.alias)
                    self._failing, self.last_error = False, ""
                    self._next_enable = 0.0  # a (re)connected monitor asks for task events at once
                self._maybe_enable_events()

            receiver.on_iteration = on_iteration
            receiver.capture(limit=None, timeout=None, wakeup=False)

    def handle(self, event: dict) -> None:
        """One event into the state; a worker that came online (or that this monitor hears of for
        the first time, say it started while the monitor was down) goes to `on_worker_online`."""
        kind, hostname = event.get("type"), str(event.get("hostname") or "")
        new = kind == "worker-online" or (kind == "worker-heartbeat" and hostname not in self.state.workers)
        self.state.handle(event)
        if new and hostname and self.on_worker_online is not None:
            self.on_worker_online(self.broker, hostname)

    def _maybe_enable_events(self) -> None:
        if self.enable_events_seconds <= 0 or settings.CELERY_READ_ONLY:
            return
        now = time.monotonic()
        if now < self._next_enable:
            return
        self._next_enable = now + self.enable_events_seconds
        try:
            broadcast(self.broker, "enable_events", {}, expected_replies=0)
        except BrokerUnavailable as exc:
            logger.info("enable_events not sent to %s: %s", self.broker.alias, exc)


@dataclass
class Writer:
    """Writes the monitors' changed workers and their heartbeats, one transaction a second."""

    monitors: list[BackendMonitor]
    stop: threading.Event
    started_at: datetime
    hostname: str = field(default_factory=socket.gethostname)
    pid: int = field(default_factory=os.getpid)
    _failing: bool = False
    _rollups_failing: bool = False
    _next_rollups: float = 0.0

    def run(self) -> None:
        try:
            next_flush = time.monotonic()
            self._next_rollups = next_flush + float(settings.ANALYTICS_FLUSH_SECONDS)
            while not self.stop.is_set():
                self.guarded_flush()
                self.check_lost()
                if time.monotonic() >= self._next_rollups:
                    self._next_rollups = time.monotonic() + float(settings.ANALYTICS_FLUSH_SECONDS)
                    self.guarded_rollups()
                next_flush = max(next_flush + FLUSH_SECONDS, time.monotonic())
                self.stop.wait(next_flush - time.monotonic())
        finally:
            with contextlib.suppress(DatabaseError):
                connections.close_all()  # this thread's connections only

    def guarded_flush(self, stopped: bool = False) -> bool:
        try:
            self.flush(stopped)
        except Exception as exc:  # the monitor goes on; the next second writes again
            if not self._failing:
                logger.warning("Event monitor could not write: %s", redact(f"{type(exc).__name__}: {exc}"))
            self._failing = True
            if isinstance(exc, DatabaseError):
                with contextlib.suppress(DatabaseError):
                    connections["default"].close()
            return False
        if self._failing:
            logger.warning("Event monitor writes again.")
        self._failing = False
        return True

    def check_lost(self, now: float | None = None) -> int:
        """Count the lost tasks of every backend into its rollups (written with the next flush)."""
        now = time.time() if now is None else now
        grace = float(settings.ANALYTICS_LOST_GRACE_SECONDS)
        return sum(len(m.rollups.check_lost(now, grace)) for m in self.monitors if m.rollups is not None)

    def guarded_rollups(self) -> bool:
        """Write the rollups (one transaction); a failure keeps the deltas for the next flush."""
        taken = {m.broker.alias: (m.rollups, m.rollups.take()) for m in self.monitors if m.rollups is not None}
        try:
            flush_rollups(taken)
        except Exception as exc:
            if not self._rollups_failing:
                logger.warning("Event monitor could not write the rollups: %s", redact(f"{type(exc).__name__}: {exc}"))
            self._rollups_failing = True
            if isinstance(exc, DatabaseError):
                with contextlib.suppress(DatabaseError):
                    connections["default"].close()
            return False
        if self._rollups_failing:
            logger.warning("Event monitor writes the rollups again.")
        self._rollups_failing = False
        return True

    def flush(self, stopped: bool = False) -> None:
        now = datetime.now(UTC)
        taken: list[tuple[BackendMonitor, list[WorkerInfo]]] = [(m, m.state.take_dirty()) for m in self.monitors]
        try:
            with transaction.atomic():
                for monitor, workers in taken:
                    alias = monitor.broker.alias
                    if workers:
                        write_workers(alias, workers)
                    events_seen, counts = monitor.state.counts()
                    MonitorHeartbeat.objects.update_or_create(
                        backend=alias,
                        defaults={
                            "hostname": self.hostname,
                            "pid": self.pid,
                            "started_at": self.started_at,
                            "last_beat_at": now,
                            "stopped_at": now if stopped else None,
                            "broker_connected": monitor.connected and not stopped,
                            "last_error": monitor.last_error[:2000],
                            "events_seen": events_seen,
                            "task_event_counts": counts,
                        },
                    )
        except Exception:
            for monitor, workers in taken:
                monitor.state.mark_dirty([worker.hostname for worker in workers])
            raise


def write_workers(alias: str, workers: list[WorkerInfo]) -> None:
    """Insert or update the rows of `workers` in one statement (first_seen is kept)."""
    rows = [
        MonitoredWorker(
            backend=alias,
            hostname=worker.hostname[:255],
            online=worker.online,
            first_seen=_at(worker.first_seen),
            last_heartbeat_at=_at(worker.last_heartbeat),
            pid=worker.pid,
            freq=worker.freq,
            sw_ident=worker.sw_ident,
            sw_ver=worker.sw_ver,
            sw_sys=worker.sw_sys,
            processed=worker.processed,
            active=worker.active,
            loadavg=worker.loadavg,
        )
        for worker in workers
    ]
    MonitoredWorker.objects.bulk_create(
        rows, update_conflicts=True, unique_fields=["backend", "hostname"], update_fields=WORKER_FIELDS
    )


def build_monitors(
    stop: threading.Event,
    brokers: dict[str, Broker] | None = None,
    on_worker_online: Callable[[Broker, str], None] | None = None,
) -> list[BackendMonitor]:
    brokers = configured_brokers() if brokers is None else brokers
    monitors = []
    for broker in brokers.values():
        analytics = Rollups(
            settings.ANALYTICS_MAX_TRACKED_TASKS,
            settings.CELERY_MONITOR_MAX_WORKERS,
            by_worker=settings.ANALYTICS_METRICS_BY_WORKER,
        )
        monitors.append(
            BackendMonitor(
                broker,
                EventState(settings.CELERY_MONITOR_MAX_WORKERS, tasks=analytics),
                stop,
                float(settings.CELERY_MONITOR_ENABLE_EVENTS_SECONDS),
                on_worker_online=on_worker_online,
                rollups=analytics,
            )
        )
    return monitors


def run_monitor(
    stop: threading.Event,
    on_ready: Callable[[list[BackendMonitor]], None] | None = None,
    on_worker_online: Callable[[Broker, str], None] | None = None,
) -> None:
    """Run until `stop` is set: the receivers, and the writer in this thread; then one last write
    that marks every backend's monitor as stopped. `on_worker_online`: see BackendMonitor."""
    monitors = build_monitors(stop, on_worker_online=on_worker_online)
    for monitor in monitors:
        monitor.start()
    if on_ready is not None:
        on_ready(monitors)
    writer = Writer(monitors, stop, datetime.now(UTC))
    try:
        writer.run()
    finally:
        for monitor in monitors:
            monitor.join(RECONNECT_MIN_SECONDS + broker_timeout() + 1)
        writer.guarded_flush(stopped=True)
        writer.guarded_rollups()
        with contextlib.suppress(DatabaseError):
            connections.close_all()
