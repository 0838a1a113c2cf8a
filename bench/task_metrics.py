"""What the task analytics cost a /metrics scrape: the totals tier of TaskRollup as counters and
histograms, the detections as gauges, the monitor's health (dojo.ops.observe.metrics.analytics_metrics).

On a temporary SQLite database (migrated with manage.py migrate) it writes `--tasks` task names x
`--queues` queues of totals rows (x `--workers` with DD_ANALYTICS_METRICS_BY_WORKER), 15 minutes of
minute rows and 24 h of hour rows for every task name (the detections' windows), 200 lost tasks and
20 late periodic entries, then times the families uncached (every scrape interval pays this once)
and cached (every other scrape), p50/p95 over `--runs`, with the exposition's size and sample count.
Every run's answer is checked: the histogram count of the first task name equals its rows.

Usage: python bench/task_metrics.py [--tasks 100] [--queues 3] [--workers 0] [--runs 20]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=100)
    parser.add_argument("--queues", type=int, default=3)
    parser.add_argument("--workers", type=int, default=0, help="with DD_ANALYTICS_METRICS_BY_WORKER: rows per worker")
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["DD_DATABASE_URL"] = f"sqlite:///{tmp}/bench.sqlite3"
        os.environ["DD_ANALYTICS_METRICS_BY_WORKER"] = "true" if args.workers else "false"
        subprocess.run([sys.executable, "manage.py", "migrate", "-v", "0"], cwd=ROOT, env=os.environ, check=True)
        sys.path.insert(0, str(ROOT))
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dojo.settings.settings")
        import django

        django.setup()
        run(args)


def run(args: argparse.Namespace) -> None:
    from datetime import UTC, datetime, timedelta

    from django.core.cache import cache
    from django.utils import timezone
    from django_celery_beat.models import IntervalSchedule, PeriodicTask

    from dojo.models import LostTask, TaskRollup
    from dojo.ops import histograms
    from dojo.ops.brokers.registry import get_broker
    from dojo.ops.observe.metrics import analytics_metrics

    now = timezone.now().replace(second=0, microsecond=0)
    buckets = [3] * histograms.SIZE
    counts = {"received": 100, "started": 100, "succeeded": 90, "failed": 10}
    rows = []
    workers = [f"w{n}@host" for n in range(args.workers)] or [""]
    for t in range(args.tasks):
        for q in range(args.queues):
            for worker in workers:
                rows.append(
                    TaskRollup(
                        period=0,
                        bucket_start=datetime(1970, 1, 1, tzinfo=UTC),
                        backend="default",
                        task_name=f"app.task_{t}",
                        queue=f"queue_{q}",
                        worker=worker,
                        runtime_buckets=buckets,
                        wait_buckets=buckets,
                        runtime_sum=12.5,
                        wait_sum=3.5,
                        **counts,
                    )
                )
        for minute in range(15):
            rows.append(
                TaskRollup(
                    period=60,
                    bucket_start=now - timedelta(minutes=minute),
                    backend="default",
                    task_name=f"app.task_{t}",
                    runtime_buckets=buckets,
                    **counts,
                )
            )
        for hour in range(24):
            rows.append(
                TaskRollup(
                    period=3600,
                    bucket_start=now.replace(minute=0) - timedelta(hours=hour),
                    backend="default",
                    task_name=f"app.task_{t}",
                    runtime_buckets=buckets,
                    **counts,
                )
            )
    TaskRollup.objects.bulk_create(rows, batch_size=2000)
    LostTask.objects.bulk_create(
        LostTask(
            backend="default",
            task_id=f"lost-{n}",
            task_name="app.task_0",
            worker="w@h",
            started_at=now,
            worker_gone_at=now,
            detected_at=now,
        )
        for n in range(200)
    )
    every, _ = IntervalSchedule.objects.get_or_create(every=1, period=IntervalSchedule.MINUTES)
    for n in range(20):
        PeriodicTask.objects.create(
            name=f"late-{n}", task="app.task_0", interval=every, last_run_at=now - timedelta(hours=1)
        )
    broker = get_broker()
    expected = 3 * histograms.SIZE  # the runs of one series: one row per (task, queue[, worker])

    def scrape() -> tuple[float, int, int]:
        started = time.perf_counter()
        families = list(analytics_metrics(broker))
        text = "".join(family.text() for family in families)
        elapsed = time.perf_counter() - started
        first = 'celery_task_runtime_seconds_count{backend="default",task="app.task_0",queue="queue_0"'
        line = next(line for line in text.splitlines() if line.startswith(first))
        assert float(line.rsplit(" ", 1)[1]) == expected, line
        return elapsed, len(text.encode()), sum(1 for line in text.splitlines() if not line.startswith("#"))

    uncached, cached = [], []
    for _ in range(args.runs):
        cache.clear()
        seconds, size, samples = scrape()
        uncached.append(seconds)
        cached.append(scrape()[0])
    print(
        f"{args.tasks} task names x {args.queues} queues x {max(1, args.workers)} worker rows "
        f"({len(rows)} rollup rows in all), {samples} samples, {size / 1024:.0f} KiB of exposition"
    )
    for label, series in (("uncached (once per scrape interval)", uncached), ("cached", cached)):
        ordered = sorted(series)
        p95 = ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]
        print(f"  analytics families {label}: p50 {statistics.median(series) * 1000:.1f} ms, p95 {p95 * 1000:.1f} ms")


if __name__ == "__main__":
    main()
