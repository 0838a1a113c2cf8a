"""Heartbeats of this project's Celery processes, written to the CeleryProcess table.

A worker's main process writes one row for itself and one per pool child every
HEARTBEAT_SECONDS, from a daemon thread started on `worker_ready`; beat writes its own row
from `beat_init`. The main process vouches for its children (a child never writes), so a
worker killed with SIGKILL leaves rows that simply stop moving and turn stale
(dojo.ops.fleet.processes, which owns HEARTBEAT_SECONDS). A warm shutdown deletes the rows: the process said it left.

The thread owns its database connection (Django's are per thread) and closes it when it ends;
a database error is logged once as a warning and retried on the next beat, never raised.
"""

import atexit
import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from django.db import DatabaseError, connections, transaction
from django.db.models import Q
from django.utils import timezone

from dojo.models import CeleryProcess
from dojo.ops.brokers.registry import broker_alias_of
from dojo.ops.fleet.processes import HEARTBEAT_SECONDS

logger = logging.getLogger(__name__)

STOP_WAIT_SECONDS = 5.0  # how long a shutdown waits for the thread to delete its rows


@dataclass(frozen=True)
class Child:
    """A pool child as its parent sees it."""

    name: str
    pid: int


@dataclass(frozen=True)
class Identity:
    """Who writes the heartbeat: the row's unique name, its kind and where it runs."""

    backend: str  # the broker's alias (DD_CELERY_BACKENDS)
    name: str
    kind: str
    pid: int
    hostname: str
    started_at: datetime


class Heartbeat:
    """Writes `identity`'s row, and its children's rows, every `interval` seconds until stopped."""

    def __init__(
        self,
        identity: Identity,
        children: Callable[[], list[Child]] | None = None,
        interval: float = HEARTBEAT_SECONDS,
    ) -> None:
        self.identity = identity
        self.children = children or list
        self.interval = interval
        self._stop = threading.Event()
        self._remove_rows = False
        self._row_pk: int | None = None
        self._known_children: frozenset[Child] | None = None
        self._failing = False
        self._thread = threading.Thread(target=self._run, name=f"dojo-heartbeat-{identity.kind}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, remove_rows: bool = True) -> None:
        """Stop beating; with `remove_rows`, delete this process's rows (its children's go with it)."""
        self._remove_rows = remove_rows
        self._stop.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(STOP_WAIT_SECONDS)

    def _run(self) -> None:
        try:
            next_beat = time.monotonic()
            while not self._stop.is_set():
                self._guarded(self.tick)
                # One beat per interval: a slow write shortens the wait instead of delaying every later beat.
                next_beat = max(next_beat + self.interval, time.monotonic())
                self._stop.wait(next_beat - time.monotonic())
            if self._remove_rows:
                self._guarded(self.remove)
        finally:
            with contextlib.suppress(DatabaseError):
                connections.close_all()  # this thread's connections only

    def _guarded(self, write: Callable[[], None]) -> None:
        """Run one write; a failure is logged once per streak and the next beat tries again."""
        try:
            write()
        except Exception as exc:  # whatever fails, the worker and this thread go on
            if not self._failing:
                logger.warning("Heartbeat of %s not written: %s: %s", self.identity.name, type(exc).__name__, exc)
            self._failing = True
            self._row_pk = None  # re-create the rows once the database is back
            if isinstance(exc, DatabaseError):
                with contextlib.suppress(DatabaseError):
                    connections["default"].close()  # reconnect on the next beat
        else:
            if self._failing:
                logger.warning("Heartbeat of %s written again.", self.identity.name)
            self._failing = False

    def tick(self) -> None:
        """One heartbeat: a single UPDATE while nothing changed, a full resync otherwise."""
        now = timezone.now()
        children = frozenset(self.children())
        if self._row_pk is not None and children == self._known_children:
            rows = CeleryProcess.objects.filter(Q(pk=self._row_pk) | Q(parent_id=self._row_pk))
            if rows.update(last_heartbeat_at=now) == 1 + len(children):
                return
        self._resync(children, now)

    def _resync(self, children: frozenset[Child], now: datetime) -> None:
        """Write this process's row and exactly its current children's (a replaced child's row goes)."""
        me = self.identity
        with transaction.atomic():
            row, _ = CeleryProcess.objects.update_or_create(
                backend=me.backend,
                name=me.name,
                defaults={
                    "kind": me.kind,
                    "parent": None,
                    "hostname": me.hostname,
                    "pid": me.pid,
                    "started_at": me.started_at,
                    "last_heartbeat_at": now,
                },
            )
            CeleryProcess.objects.filter(parent=row).exclude(name__in={child.name for child in children}).delete()
            known_pids = dict(CeleryProcess.objects.filter(parent=row).values_list("name", "pid"))
            for child in children:
                fields = {"kind": CeleryProcess.Kind.POOL, "parent": row, "hostname": me.hostname}
                fields["last_heartbeat_at"] = now
                if known_pids.get(child.name) != child.pid:  # a new child, or a restarted worker's namesake
                    fields.update(pid=child.pid, started_at=now)
                CeleryProcess.objects.update_or_create(backend=me.backend, name=child.name, defaults=fields)
        self._row_pk = row.pk
        self._known_children = children

    def remove(self) -> None:
        CeleryProcess.objects.filter(backend=self.identity.backend, name=self.identity.name).delete()
        self._row_pk = None


def identity(backend: str, name: str, kind: str) -> Identity:
    return Identity(backend, name, kind, os.getpid(), socket.gethostname(), timezone.now())


def pool_children(worker_name: str, pool: object) -> Callable[[], list[Child]]:
    """The live children of a prefork pool, read from billiard's own list of its processes
    (a dead child leaves that list when the pool reaps it); nothing for solo/threads pools."""

    def children() -> list[Child]:
        processes = getattr(getattr(pool, "_pool", None), "_pool", None) or []
        return [Child(f"{worker_name}/{process.name}", process.pid) for process in list(processes) if process.pid]

    return children


# --- Signal handlers, connected in dojo/worker/signals.py -------------------------------------------------

_running: dict[str, Heartbeat] = {}  # by kind: this process's worker and/or beat heartbeat


def _start(kind: str, make: Callable[[], Heartbeat]) -> None:
    """Start this process's `kind` heartbeat, unless it already beats (a consumer that reconnected
    to the broker says it is ready again: same process, same rows)."""
    if kind in _running:
        return
    _running[kind] = heartbeat = make()
    heartbeat.start()


def on_worker_ready(sender, **_kwargs) -> None:
    """`worker_ready` (sender: the consumer): beat for the worker and its pool children."""
    name = sender.hostname
    alias = broker_alias_of(sender.app.conf.broker_url)
    _start("worker", lambda: Heartbeat(identity(alias, name, "worker"), pool_children(name, sender.pool)))


def on_worker_shutdown(**_kwargs) -> None:
    """`worker_shutdown` (warm or cold, not SIGKILL): the worker says it leaves, so its rows go."""
    heartbeat = _running.pop("worker", None)
    if heartbeat is not None:
        heartbeat.stop(remove_rows=True)


def on_beat_init(sender, **_kwargs) -> None:
    """`beat_init` (sender: beat's Service): beat's own row, removed when the process exits normally
    (beat has no shutdown signal; its SIGTERM handler raises SystemExit, so atexit runs)."""
    alias = broker_alias_of(sender.app.conf.broker_url)
    _start("beat", lambda: Heartbeat(identity(alias, f"celerybeat@{socket.gethostname()}", "beat")))
    atexit.register(_stop_beat)  # registering twice is harmless: the second call finds nothing to stop


def _stop_beat() -> None:
    heartbeat = _running.pop("beat", None)
    if heartbeat is not None:
        heartbeat.stop(remove_rows=True)
