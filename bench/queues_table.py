"""The queues table and the break down on a loaded Redis: 200 queues, 1,000,000 ready messages.

What it measures, on a private redis-server with 2 real `celery -A dojo worker` processes
(they consume only an idle queue, so the loaded queues stay full):

1. `dojo.ops.read_models.queue_table.queue_table()` in-process (ready counts of every priority list
   and the next message of each, for 200 queues, in one Redis pipeline; the worker columns from
   the cached status document), and `GET /api/v2/celery/queues/` through Django's test client
   as a staff user: p50/p95 over `--runs` runs, target p50 <= 300 ms; then the obvious
   alternative, a passive declare per queue (what kombu's qsize does), as a ratio. The table
   is also timed with the status cache off (a status read, 200 passive declares and a
   broadcast, on every call).
2. The 24 h failed/finished query (grouped by status and the queue in `meta`) with 200,000
   stored results, all inside the window, on the bench's SQLite database, uncached; and the
   table again with those results present (the table keeps the counts 60 s).
3. The break down of one 1,000,000-message queue in a subprocess: wall time and peak RSS
   (`ru_maxrss`) against the process's RSS just before it (the peak is reset there with
   /proc/self/clear_refs, so the start-up's own peak does not hide the break down's); and the
   same for the obvious way (LRANGE 0 -1 of every list, every message decoded), for comparison.

Messages are real Celery protocol 2 envelopes: one is published through the project's app
(so it carries the publish stamp header), read back, and cloned with new ids, task names,
priorities and publish times (spread over the last 10 minutes), pushed with pipelines.

Everything runs on 127.0.0.1, in temporary directories, and every process the script starts is
stopped when it ends, however it ends. Helpers come from bench/status_latency.py.

Usage: python bench/queues_table.py [--queues 200] [--messages 1000000] [--runs 30] [--results 200000]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from types import FrameType

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ is not a package
from status_latency import ROOT, Series, Started, base_env, measure, start_redis, start_workers

TARGET_P50_MS = 300.0
TASK_NAMES = ("dojo.tasks.add", "dojo.tasks.sleep", "dojo.tasks.prune_broker_files")
PRIORITY_BY_SLOT = (0, 0, 0, 0, 0, 0, 0, 3, 6, 9)  # 70 % at the default priority, 10 % each lower
SPREAD_SECONDS = 600.0  # publish times of each queue's messages span the last 10 minutes
PUSH_CHUNK = 1000
PIPELINE_MESSAGES = 20_000
IDLE_QUEUE = "bench-idle"  # the only queue the workers consume
BULK_QUEUE = "bulk"
WORKERS = 2


def queue_names(count: int) -> list[str]:
    return [f"q{i:03d}" for i in range(count)]


def setup_django(env: dict[str, str]) -> None:
    os.environ.update(env)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dojo.settings.settings")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()


def message_template() -> str:
    """A real envelope published by the project's app, as a %-template for new ids, task name,
    priority and publish stamp."""
    from dojo.celery import app
    from dojo.ops.brokers import redis as redis_lists
    from dojo.ops.brokers.connection import broker_connection
    from dojo.publishing import PUBLISHED_AT_HEADER

    probe = f"template-{uuid.uuid4().hex}"
    app.send_task("dojo.tasks.add", args=(1, 2), queue=probe)
    with broker_connection() as conn:
        client = redis_lists.client(conn)
        raw = client.rpop(probe)
    envelope = json.loads(raw)
    headers, properties = envelope["headers"], envelope["properties"]
    assert PUBLISHED_AT_HEADER in headers, "the publish stamp is missing: is dojo.celery's signal connected?"
    headers.update(id="@@ID@@", root_id="@@ID@@", task="@@TASK@@", **{PUBLISHED_AT_HEADER: 1111111111.25})
    properties.update(correlation_id="@@ID@@", delivery_tag="@@TAG@@", priority=-987654)
    text = json.dumps(envelope).replace("%", "%%")
    for sentinel, field in (
        ('"@@ID@@"', '"%(id)s"'),
        ('"@@TAG@@"', '"%(tag)s"'),
        ('"@@TASK@@"', '"%(task)s"'),
        ("1111111111.25", "%(stamp).3f"),
        ("-987654", "%(priority)d"),
    ):
        text = text.replace(sentinel, field)
    return text


def fill(queues: list[str], total: int) -> float:
    """Push `total` messages spread evenly over `queues`; returns the seconds it took."""
    from dojo.ops.brokers import redis as redis_lists
    from dojo.ops.brokers.connection import broker_connection

    template = message_template()
    started = time.monotonic()
    now = time.time()
    with broker_connection(timeout=60) as conn:
        channel = conn.default_channel
        client = redis_lists.client(conn)
        pipe = client.pipeline(transaction=False)
        pending = 0

        def push(key: str, values: list[str]) -> None:
            nonlocal pending
            pipe.lpush(key, *values)
            pending += len(values)
            values.clear()
            if pending >= PIPELINE_MESSAGES:
                pipe.execute()
                pending = 0

        for index, queue in enumerate(queues):
            count = total // len(queues) + (1 if index < total % len(queues) else 0)
            by_key: dict[str, list[str]] = {}
            for i in range(count):  # oldest first: LPUSH leaves the first pushed at the consuming end
                priority = PRIORITY_BY_SLOT[i % len(PRIORITY_BY_SLOT)]
                fields = {
                    "id": str(uuid.uuid4()),
                    "tag": str(uuid.uuid4()),
                    "task": TASK_NAMES[i % len(TASK_NAMES)],
                    "stamp": now - SPREAD_SECONDS + SPREAD_SECONDS * i / max(count, 1),
                    "priority": priority,
                }
                values = by_key.setdefault(channel._q_for_pri(queue, priority), [])
                values.append(template % fields)
                if len(values) >= PUSH_CHUNK:
                    push(channel._q_for_pri(queue, priority), values)
            for key, values in by_key.items():
                if values:
                    push(key, values)
        pipe.execute()
    return time.monotonic() - started


def delete_queues(queues: list[str]) -> None:
    from dojo.ops.brokers import redis as redis_lists
    from dojo.ops.brokers.connection import broker_connection

    with broker_connection(timeout=60) as conn:
        keys = [key for queue in queues for key in redis_lists.priority_lists(conn.default_channel, queue)]
        redis_lists.client(conn).delete(*keys)


def time_calls(name: str, call: Callable[[], tuple[bool, str]], runs: int, warmups: int = 2) -> Series:
    measure(f"{name} (warm-up)", call, warmups, budget=120)
    return measure(name, call, runs, budget=max(120.0, runs * 10.0))


def table_check(queues: list[str], total: int) -> Callable[[], tuple[bool, str]]:
    """One queue_table() call, checked: every queue present, the ready messages all counted,
    and a latency near SPREAD_SECONDS for the queues."""
    from dojo.ops.read_models.queue_table import queue_table

    def call() -> tuple[bool, str]:
        table = queue_table()
        rows = {row.name: row for row in table.rows}
        if table.broker_error:
            return False, table.broker_error
        ready = sum(rows[name].ready_count or 0 for name in queues if name in rows)
        if ready != total:
            return False, f"ready {ready}, expected {total}"
        latency = rows[queues[0]].latency_seconds
        if latency is None or not SPREAD_SECONDS - 5 < latency < SPREAD_SECONDS + 600:
            return False, f"latency {latency}"
        return True, ""

    return call


def api_check(queue_count: int) -> Callable[[], tuple[bool, str]]:
    from django.contrib.auth.models import User
    from django.test import Client
    from django.urls import reverse

    staff, _ = User.objects.get_or_create(username="bench-staff", defaults={"is_staff": True})
    client = Client()
    client.force_login(staff)
    path = reverse("celery_queues")

    def call() -> tuple[bool, str]:
        response = client.get(path)
        if response.status_code != 200:
            return False, f"HTTP {response.status_code}"
        rows = len(response.json()["rows"])
        return (True, "") if rows >= queue_count else (False, f"{rows} rows")

    return call


def declare_loop(queues: list[str], total: int) -> Callable[[], tuple[bool, str]]:
    """The obvious alternative: a passive declare per queue (kombu's qsize), counts only."""
    from dojo.ops.brokers.connection import broker_connection
    from dojo.ops.brokers.registry import get_broker
    from dojo.ops.brokers.transport import Transport

    generic = Transport(get_broker())  # the transport interface's plain passive declare, not Redis's pipeline

    def call() -> tuple[bool, str]:
        with broker_connection() as conn:
            ready = sum(depth.ready for depth in generic.depths(conn, queues).values())
        return (True, "") if ready == total else (False, f"ready {ready}, expected {total}")

    return call


def store_results(queues: list[str], count: int) -> float:
    """`count` TaskResult rows done within the last 23 h (the whole window), 80 % SUCCESS,
    12 % FAILURE, the rest other states, each with its queue in meta; seconds taken."""
    from datetime import timedelta

    from django.utils import timezone
    from django_celery_results.models import TaskResult

    states = ["SUCCESS"] * 80 + ["FAILURE"] * 12 + ["REVOKED"] * 4 + ["STARTED"] * 4
    started = time.monotonic()
    batch = 10_000
    for first in range(0, count, batch):
        TaskResult.objects.bulk_create(
            TaskResult(
                task_id=str(uuid.uuid4()),
                task_name=TASK_NAMES[i % len(TASK_NAMES)],
                status=states[i % len(states)],
                meta=json.dumps({"queue": queues[i % len(queues)], "children": []}),
                result="3",
                content_type="application/json",
                content_encoding="utf-8",
            )
            for i in range(first, min(first + batch, count))
        )
    # bulk_create stamps date_done now (auto_now): spread it over the last 23 hours.
    now, ids = timezone.now(), list(TaskResult.objects.order_by("id").values_list("id", flat=True)[::batch])
    for hour, first_id in enumerate(ids):
        TaskResult.objects.filter(id__gte=first_id).update(date_done=now - timedelta(hours=23 * hour / len(ids)))
    return time.monotonic() - started


def result_counts_check(expected_failed: int) -> Callable[[], tuple[bool, str]]:
    from dojo.ops.read_models.queue_table import count_results

    def call() -> tuple[bool, str]:
        counts = count_results()
        failed = sum(counts.failed.values())
        return (True, "") if failed == expected_failed else (False, f"failed {failed}, expected {expected_failed}")

    return call


def naive_breakdown(queue: str) -> tuple[int, dict[str, int], int]:
    """The obvious way, for comparison: read every list whole (LRANGE 0 -1) and decode every
    message; total, counts by task, messages kept."""
    from collections import Counter

    from dojo.ops.brokers import redis as redis_lists
    from dojo.ops.brokers.connection import broker_connection

    with broker_connection(timeout=60) as conn:
        channel = conn.default_channel
        client = redis_lists.client(conn)
        decoded = [
            json.loads(raw) for key in redis_lists.priority_lists(channel, queue) for raw in client.lrange(key, 0, -1)
        ]
    by_task = Counter(message["headers"]["task"] for message in decoded)
    return len(decoded), dict(by_task), min(len(decoded), 100)


def breakdown_child(queue: str, naive: bool) -> int:
    """Run in the subprocess: break `queue` down, print wall time and peak RSS as JSON."""
    setup_django({})
    from dojo.ops.brokers.connection import broker_connection
    from dojo.ops.read_models.breakdown import breakdown

    with broker_connection() as conn:  # import and connect everything once, outside the measure
        conn.default_channel.client.ping()
    # Reset the peak to the current RSS (Linux), so the peak after is the break down's own, not
    # the start-up's; where that is not possible the figure is an upper bound of the start-up.
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.monotonic()
    if naive:
        total, by_task, kept = naive_breakdown(queue)
    else:
        found = breakdown(queue, seconds=3600)  # the whole queue, past DD_CELERY_BREAKDOWN_SECONDS
        total, by_task, kept = found.total, found.by_task, len(found.messages)
    wall = time.monotonic() - started
    rss_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    figures = {"wall_s": wall, "rss_before_kb": rss_before, "rss_peak_kb": rss_peak, "total": total}
    print(json.dumps({**figures, "by_task": by_task, "messages": kept}))
    return 0


def run_breakdown(env: dict[str, str], total: int, naive: bool = False) -> tuple[bool, dict]:
    done = subprocess.run(
        [sys.executable, __file__, "--breakdown-child", BULK_QUEUE, *(["--naive"] if naive else [])],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"the break down subprocess failed ({done.returncode}):\n{done.stderr[-2000:]}")
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    return figures["total"] == total and figures["messages"] == 100, figures


def row(series: Series) -> str:
    return (
        f"{series.name:<58} {len(series.times_ms):>4} {series.failures:>5} "
        f"{series.percentile(50):>9.1f} {series.percentile(95):>9.1f} {series.percentile(100):>9.1f}"
    )


def run(queue_count: int, total: int, runs: int, results: int) -> bool:
    started = Started()
    try:
        workdir = Path(tempfile.mkdtemp(prefix="dojo-bench-queues-"))
        started.dirs.append(workdir)
        redis_port = start_redis(started, workdir)
        queues = queue_names(queue_count)
        env = base_env(redis_port, workdir / "bench.sqlite3")
        env.update(DD_CELERY_STATUS_CACHE_SECONDS="5", DD_CELERY_QUEUES=",".join(queues), DD_ALLOWED_HOSTS="testserver")
        setup_django(env)
        from django.conf import settings
        from django.core.management import call_command

        call_command("migrate", verbosity=0, interactive=False)
        start_workers(started, {**env, "DD_CELERY_QUEUES": IDLE_QUEUE}, WORKERS, workdir)
        print(f"redis-server on 127.0.0.1:{redis_port}, {WORKERS} workers consuming {IDLE_QUEUE!r} only")

        seconds = fill(queues, total)
        print(f"pushed {total:,} messages into {queue_count} queues (4 priority lists each) in {seconds:.1f} s")
        service = time_calls("queue_table() (status cached, default)", table_check(queues, total), runs)
        api = time_calls("GET /api/v2/celery/queues/ (Django test client)", api_check(queue_count), runs)
        alternative = time_calls(f"passive declare x {queue_count} (counts only)", declare_loop(queues, total), runs)
        settings.CELERY_STATUS_CACHE_SECONDS = 0
        uncached = time_calls("queue_table() (status read on every call)", table_check(queues, total), runs)
        settings.CELERY_STATUS_CACHE_SECONDS = 5

        seconds = store_results(queues, results)
        print(f"stored {results:,} results (all in the last 24 h) in {seconds:.1f} s")
        expected_failed = sum(1 for i in range(results) if 80 <= i % 100 < 92)
        result_query = time_calls(
            f"24 h failed/finished query, uncached ({results:,} results)", result_counts_check(expected_failed), 10
        )
        label = f"queue_table() with {results:,} results (counts kept 60 s)"
        with_results = time_calls(label, table_check(queues, total), runs)

        delete_queues(queues)
        seconds = fill([BULK_QUEUE], total)
        print(f"pushed {total:,} messages into {BULK_QUEUE!r} in {seconds:.1f} s")
        breakdown_ok, figures = run_breakdown(env, total)
        _, naive = run_breakdown(env, total, naive=True)
        measures = [service, api, alternative, uncached, result_query, with_results]
        return report(measures, breakdown_ok, {"breakdown()": figures, "LRANGE 0 -1 + json.loads": naive}, total)
    finally:
        started.stop_all()


def report(series: list[Series], breakdown_ok: bool, breakdowns: dict[str, dict], total: int) -> bool:
    service, _api, alternative, *_ = series
    print()
    print(f"{'measure':<58} {'n':>4} {'fail':>5} {'p50 ms':>9} {'p95 ms':>9} {'max ms':>9}")
    for one in series:
        print(row(one))
        if one.note:
            print(f"  note: {one.note}")
    ratio = alternative.percentile(50) / service.percentile(50)
    print(f"ratio p50(passive declare loop) / p50(queue_table): {ratio:.1f}x")
    for name, figures in breakdowns.items():
        rss_before, rss_peak = figures["rss_before_kb"] / 1024, figures["rss_peak_kb"] / 1024
        print(
            f"break down of {figures['total']:,} messages with {name}: {figures['wall_s']:.1f} s "
            f"({figures['total'] / figures['wall_s']:,.0f} messages/s), peak RSS {rss_peak:.1f} MiB "
            f"against {rss_before:.1f} MiB before (+{rss_peak - rss_before:.1f} MiB); by task {figures['by_task']}"
        )
    tables = (service, series[-1])  # without and with the stored results
    met = all(one.percentile(50) <= TARGET_P50_MS for one in tables)
    met = met and not any(one.failures for one in series) and breakdown_ok
    print(
        f"target p50(queue_table) <= {TARGET_P50_MS:.0f} ms (without and with the results), no failed call, "
        f"break down counted all {total:,}: "
        f"{'MET' if met else 'NOT MET'}"
    )
    return met


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--queues", type=int, default=200, help="queues (default 200)")
    parser.add_argument("--messages", type=int, default=1_000_000, help="ready messages (default 1,000,000)")
    parser.add_argument("--runs", type=int, default=30, help="measured runs per measure (default 30)")
    parser.add_argument("--results", type=int, default=200_000, help="stored results (default 200,000)")
    parser.add_argument("--breakdown-child", metavar="QUEUE", help=argparse.SUPPRESS)
    parser.add_argument("--naive", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.breakdown_child:
        return breakdown_child(args.breakdown_child, args.naive)
    if min(args.queues, args.messages, args.runs, args.results) < 1:
        parser.error("every count must be at least 1")

    def on_term(signum: int, _frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)  # unwinds through the finally that stops everything

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGHUP, on_term)
    return 0 if run(args.queues, args.messages, args.runs, args.results) else 1


if __name__ == "__main__":
    sys.exit(main())
