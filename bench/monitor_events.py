"""The event monitor's state: events per second it handles and the process's RSS while it does.

Synthetic but real-shaped events (the fields Celery 5.7 workers send) go through the same code
path as the monitor's receiver: `EventReceiver._receive` (clock adjustment, timestamp
localisation, `local_received`), then `EventState.handle` (dojo.ops.fleet.event_state), in
batches as Celery's event dispatcher groups them. Only the transport is left out, so the figure
is what the monitor's own code can take, not what a broker delivers.

The stream: `--workers` workers each sending a worker-heartbeat every 2 s of simulated time,
and `--tasks` tasks, each received, started and succeeded (every tenth one failed instead), spread
over the workers; at least 100,000 task events (the default is 300,000). The caps are the
defaults (DD_CELERY_MONITOR_MAX_TASKS 10,000, DD_CELERY_MONITOR_MAX_WORKERS 2,000), so most tasks
are dropped as the LRU turns: the RSS must flatten once the cap is reached. Printed: events/s
overall, RSS (VmRSS) at checkpoints and the peak (VmHWM), tasks and workers kept.

Then one flush as the writer does it, on a temporary SQLite database: every worker changed, one
transaction (MonitoredWorker upsert + MonitorHeartbeat), its wall time.

Measured (2 cores, Python 3.11, celery 5.7, default caps): 302,200 events (300,000 task events,
200 workers) in 12.6-12.9 s, 23,500-24,000 events/s (about 42 us each, most of it in Celery's
State); RSS 63.5 MB before, 124.7 MB once 10,000 tasks are kept and flat from there to the end
(peak 124.8 MB). With 2,000 workers: 23,100 events/s, 131.5 MB; a flush of 2,000 changed workers
on SQLite 136 ms median (196 ms the first, inserting), of 200 workers 27-57 ms median.

Usage: python bench/monitor_events.py [--tasks 100000] [--workers 200] [--batch 20]
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def rss_mb(field: str = "VmRSS") -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def setup(database: Path) -> None:
    os.environ.update(DD_DATABASE_URL=f"sqlite:///{database}", DD_CELERY_BROKER_URL="memory://")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dojo.settings.settings")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()


def worker_event(kind: str, hostname: str, now: float, processed: int) -> dict:
    return {
        "type": kind,
        "hostname": hostname,
        "utcoffset": 0,
        "pid": 1000 + hash(hostname) % 30000,
        "clock": 0,
        "freq": 2.0,
        "active": 1,
        "processed": processed,
        "loadavg": [0.5, 0.4, 0.3],
        "sw_ident": "py-celery",
        "sw_ver": "5.7.0",
        "sw_sys": "Linux",
        "timestamp": now,
    }


def task_events(task_id: str, hostname: str, now: float, failed: bool) -> list[dict]:
    base = {"uuid": task_id, "hostname": hostname, "utcoffset": 0, "pid": 4242, "clock": 0}
    received = {
        **base,
        "type": "task-received",
        "timestamp": now,
        "name": "plain.add",
        "args": "(2, 3)",
        "kwargs": "{}",
        "root_id": task_id,
        "parent_id": None,
        "retries": 0,
        "eta": None,
        "expires": None,
    }
    started = {**base, "type": "task-started", "timestamp": now + 0.001}
    if failed:
        end = {
            **base,
            "type": "task-failed",
            "timestamp": now + 0.002,
            "exception": "ValueError('boom')",
            "traceback": 'Traceback (most recent call last):\n  File "x.py", line 1\nValueError: boom\n',
        }
    else:
        end = {**base, "type": "task-succeeded", "timestamp": now + 0.002, "result": "5", "runtime": 0.001}
    return [received, started, end]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=100_000, help="tasks, 3 events each (default 100,000)")
    parser.add_argument("--workers", type=int, default=200)
    parser.add_argument("--batch", type=int, default=20, help="events per broker message (Celery groups them)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        setup(Path(tmp) / "bench.sqlite3")
        from django.conf import settings
        from django.core.management import call_command
        from kombu import Connection

        from dojo.celery import app
        from dojo.ops.brokers.registry import Broker
        from dojo.ops.fleet.event_state import EventState
        from dojo.ops.observe.monitor import BackendMonitor, Writer

        state = EventState(settings.CELERY_MONITOR_MAX_WORKERS, settings.CELERY_MONITOR_MAX_TASKS)
        receiver = app.events.Receiver(Connection("memory://"), handlers={"*": state.handle}, node_id="bench")
        hostnames = [f"w{i}@bench-host" for i in range(args.workers)]

        # The stream is made batch by batch just before it is fed, with the time of now (a worker's
        # clock far from the monitor's makes Celery's State warn about drift), and only the
        # handling is timed.
        heartbeat_every = max(1, args.tasks // (args.workers * 10))  # each worker beats ~10 times

        def stream() -> Iterator[dict]:
            for hostname in hostnames:
                yield worker_event("worker-online", hostname, time.time(), 0)
            for i in range(args.tasks):
                now = time.time()
                yield from task_events(uuid.uuid4().hex, hostnames[i % args.workers], now, failed=i % 10 == 0)
                if i % heartbeat_every == 0:
                    yield worker_event("worker-heartbeat", hostnames[(i // heartbeat_every) % args.workers], now, i)

        def batches() -> Iterator[list[dict]]:
            events = stream()
            while batch := list(itertools.islice(events, args.batch)):
                yield batch

        rss_before = rss_mb()
        print(f"{args.tasks:,} tasks (3 events each) on {args.workers} workers, messages of {args.batch} events")
        print(f"caps: {settings.CELERY_MONITOR_MAX_TASKS:,} tasks, {settings.CELERY_MONITOR_MAX_WORKERS:,} workers")
        print(f"RSS before feeding: {rss_before:.1f} MB")

        checkpoint = max(1, args.tasks * 3 // 4)
        next_checkpoint = checkpoint
        began = time.perf_counter()
        elapsed_handling = 0.0
        for batch in batches():
            t0 = time.perf_counter()
            receiver._receive(batch, None)  # what the consumer callback gets from the broker
            elapsed_handling += time.perf_counter() - t0
            if state.events_seen >= next_checkpoint:
                next_checkpoint += checkpoint
                print(
                    f"  after {state.events_seen:>9,} events: RSS {rss_mb():7.1f} MB, "
                    f"tasks kept {state.tasks_kept:,}, workers kept {len(state.workers):,}"
                )
        wall = time.perf_counter() - began
        events = state.events_seen
        print(
            f"handled {events:,} events in {elapsed_handling:.2f} s: {events / elapsed_handling:,.0f} events/s "
            f"({elapsed_handling / events * 1e6:.1f} us per event; wall {wall:.2f} s)"
        )
        print(f"RSS after: {rss_mb():.1f} MB, peak (VmHWM) {rss_mb('VmHWM'):.1f} MB")
        counts = state.counts()[1]
        print(f"task events: {sum(counts.values()):,} {counts}")

        call_command("migrate", verbosity=0)
        monitor = BackendMonitor(Broker("default", "memory://"), state, threading.Event())
        for hostname in hostnames:
            state.handle(worker_event("worker-heartbeat", hostname, time.time(), 1))
        writer = Writer([monitor], threading.Event(), datetime.now(UTC))
        t0 = time.perf_counter()
        writer.flush()
        first = time.perf_counter() - t0
        updates = []
        for round_ in range(5):
            for hostname in hostnames:
                state.handle(worker_event("worker-heartbeat", hostname, time.time(), 2 + round_))
            t0 = time.perf_counter()
            writer.flush()
            updates.append(time.perf_counter() - t0)
        print(
            f"flush of {len(hostnames)} changed workers + the heartbeat on SQLite, one transaction: "
            f"{first * 1000:.1f} ms (insert); updates median {statistics.median(updates) * 1000:.1f} ms, "
            f"max {max(updates) * 1000:.1f} ms (5 flushes)"
        )


if __name__ == "__main__":
    main()
