"""The three reads of many queues on Redis: 10,000 queues with 200,000 ready messages.

What it measures, on a private redis-server with 2 real `celery -A dojo worker` processes
(they consume only an idle queue, so the loaded queues stay full), every queue configured
(DD_CELERY_QUEUES), p50/p95 over `--runs` calls, target p50 <= 200 ms each:

1. The queues table: `queue_table()` in-process (status cached), the dashboard's first page
   (`GET /admin/celery/dashboard/`, 100 rows worst first with their latency) and its second page,
   and `GET /api/v2/celery/queues/?limit=100&offset=100` (a slice with its latency), through Django's test
   client as a staff user. Every answer is checked: every queue's ready messages all counted, the
   page's rows worst first with a latency near the messages' age, the "N more queues" link.
2. The status document: `read_status()` (no cache: the depth read of every configured queue and
   the broadcast to the 2 workers), checked: the ready messages of every queue counted.
3. `GET /metrics` (Bearer DD_METRICS_TOKEN) with `--results` stored results spread over the last
   23 h, the status cached as deployed (DD_CELERY_STATUS_CACHE_SECONDS=5) and the results counts
   kept 15 s; checked: every queue's ready sample present. The results count over the last hour
   (a date_done index range) is also timed uncached.

Beside them, for comparison: the depth read as it was before (LLEN and LINDEX of every priority
list, every next message decoded, in one pipeline) and the figure measured on main before this
change (design.md: queues table 1.9 s p50, 4.3 s p95).

Helpers come from bench/status_latency.py and bench/queues_table.py; everything runs on
127.0.0.1 in temporary directories, and every process the script starts is stopped when it ends.

With --gc-freeze the bench process calls gc.collect() and gc.freeze() once everything is set up,
as a server's post-fork hook would: at 10,000 queues a read allocates tens of thousands of objects
that live until it ends, which sets off full collections of the whole heap now and then (the
slow calls of a bimodal series), so the figure with and without shows what they cost.

Usage: python bench/queues_scale.py [--queues 10000] [--messages 200000] [--runs 30] [--results 200000]
       [--gc-freeze]
"""

from __future__ import annotations

import argparse
import gc
import re
import signal
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from types import FrameType

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ is not a package
from queues_table import (
    IDLE_QUEUE,
    SPREAD_SECONDS,
    WORKERS,
    fill,
    queue_names,
    row,
    setup_django,
    store_results,
    time_calls,
)
from status_latency import Series, Started, base_env, start_redis, start_workers

TARGET_P50_MS = 200.0
BEFORE = "queues table before (design.md, main c76a38a): 1,900 ms p50, 4,300 ms p95"
METRICS_TOKEN = "bench-metrics-token-0123456789"


def table_check(queues: list[str], total: int) -> Callable[[], tuple[bool, str]]:
    from dojo.ops.read_models.queue_table import queue_table

    def call() -> tuple[bool, str]:
        table = queue_table()
        if table.broker_error:
            return False, table.broker_error
        rows = {row.name: row for row in table.rows}
        ready = sum(rows[name].ready_count or 0 for name in queues if name in rows)
        return (True, "") if ready == total else (False, f"ready {ready}, expected {total}")

    return call


def staff_client():
    from django.contrib.auth.models import User
    from django.test import Client

    staff, _ = User.objects.get_or_create(username="bench-staff", defaults={"is_staff": True, "is_superuser": True})
    client = Client()
    client.force_login(staff)
    return client


def dashboard_check(queue_count: int, page: int) -> Callable[[], tuple[bool, str]]:
    from django.urls import reverse

    from dojo.celery_panel.dashboard import QUEUES_PER_PAGE

    client = staff_client()
    path = reverse("celery_panel:dashboard") + (f"?qp={page}" if page > 1 else "")
    ready_cell = re.compile(r'<td class="ready">(\d+)</td>')
    latency_cell = re.compile(r'<td class="latency">([\d.]+) s</td>')

    def call() -> tuple[bool, str]:
        response = client.get(path)
        if response.status_code != 200:
            return False, f"HTTP {response.status_code}"
        html = response.content.decode()
        ready = [int(n) for n in ready_cell.findall(html)]
        latencies = [float(s) for s in latency_cell.findall(html)]
        listed = re.search(r'data-fact="queues">(\d+)<', html)
        if listed is None or int(listed.group(1)) < queue_count:
            return False, f"queues fact {listed and listed.group(1)}"
        more = int(listed.group(1)) - page * QUEUES_PER_PAGE
        if len(ready) != QUEUES_PER_PAGE or ready != sorted(ready, reverse=True):
            return False, f"{len(ready)} rows, worst first: {ready == sorted(ready, reverse=True)}"
        if len(latencies) != QUEUES_PER_PAGE or not all(
            SPREAD_SECONDS - 5 < s < SPREAD_SECONDS + 900 for s in latencies
        ):
            return False, f"{len(latencies)} latencies, e.g. {latencies[:3]}"
        if f"{more} more queues" not in html:
            return False, f"no '{more} more queues' link"
        return True, ""

    return call


def api_check(queue_count: int) -> Callable[[], tuple[bool, str]]:
    from django.urls import reverse

    client = staff_client()
    path = reverse("celery_queues") + "?limit=100&offset=100"

    def call() -> tuple[bool, str]:
        response = client.get(path)
        if response.status_code != 200:
            return False, f"HTTP {response.status_code}"
        body = response.json()
        rows = body["rows"]
        if body["total"] < queue_count or len(rows) != 100:
            return False, f"total {body['total']}, {len(rows)} rows"
        if any(row["latency_seconds"] is None for row in rows):
            return False, "a row without its latency"
        return True, ""

    return call


def status_check(total: int) -> Callable[[], tuple[bool, str]]:
    from dojo.ops.fleet.status import read_status

    def call() -> tuple[bool, str]:
        status = read_status()
        if not status.broker_status:
            return False, status.error or "broker down"
        ready = sum(state.ready or 0 for state in status.queues.values())
        if ready != total or status.workers != WORKERS:
            return False, f"ready {ready}, expected {total}; {status.workers} workers"
        return True, ""

    return call


def metrics_check(queue_count: int) -> Callable[[], tuple[bool, str]]:
    from django.test import Client
    from django.urls import reverse

    client = Client()
    path = reverse("metrics")

    def call() -> tuple[bool, str]:
        response = client.get(path, HTTP_AUTHORIZATION=f"Bearer {METRICS_TOKEN}")
        if response.status_code != 200:
            return False, f"HTTP {response.status_code}"
        samples = response.content.count(b"\ndojo_celery_queue_ready_messages{")
        if samples < queue_count:
            return False, f"{samples} queue_ready_messages samples"
        if b"\ndojo_celery_task_results{" not in response.content:
            return False, "no task_results sample"
        return True, ""

    return call


def results_query() -> Callable[[], tuple[bool, str]]:
    from dojo.ops.observe.metrics import RESULTS_WINDOW
    from dojo.ops.read_models.stored_results import count_results

    def call() -> tuple[bool, str]:
        counts = count_results(("task_name", "status"), RESULTS_WINDOW)
        return (True, "") if sum(counts.values()) > 0 else (False, "nothing counted")

    return call


def old_depths(queues: list[str], total: int) -> Callable[[], tuple[bool, str]]:
    """The depth read as it was: LLEN and LINDEX of every list, every next message decoded in Python,
    in one pipeline (kept here only, for comparison)."""
    from dojo.ops.brokers import messages
    from dojo.ops.brokers import redis as redis_lists
    from dojo.ops.brokers.connection import broker_connection

    def call() -> tuple[bool, str]:
        with broker_connection() as conn:
            keys = {name: redis_lists.priority_lists(conn.default_channel, name) for name in queues}
            pipe = redis_lists.client(conn).pipeline(transaction=False)
            for name in queues:
                for key in keys[name]:
                    pipe.llen(key)
                    pipe.lindex(key, -1)
            answers = iter(pipe.execute())
        ready = 0
        for name in queues:
            for _key in keys[name]:
                length, next_message = next(answers), next(answers)
                ready += length
                if next_message is not None:
                    messages.published_at(messages.decode(next_message))
        return (True, "") if ready == total else (False, f"ready {ready}")

    return call


def run(queue_count: int, total: int, runs: int, results: int, freeze: bool = False) -> bool:
    started = Started()
    try:
        workdir = Path(tempfile.mkdtemp(prefix="dojo-bench-queues-scale-"))
        started.dirs.append(workdir)
        redis_port = start_redis(started, workdir)
        queues = queue_names(queue_count)
        env = base_env(redis_port, workdir / "bench.sqlite3")
        env.update(
            DD_CELERY_STATUS_CACHE_SECONDS="5",
            DD_CELERY_QUEUES=",".join(queues),
            DD_ALLOWED_HOSTS="testserver",
            DD_CELERY_RESULT_BACKEND="django-db",
            DD_METRICS_TOKEN=METRICS_TOKEN,
        )
        setup_django(env)
        from django.conf import settings
        from django.core.management import call_command

        call_command("migrate", verbosity=0, interactive=False)
        start_workers(started, {**env, "DD_CELERY_QUEUES": IDLE_QUEUE}, WORKERS, workdir)
        print(f"redis-server on 127.0.0.1:{redis_port}, {WORKERS} workers consuming {IDLE_QUEUE!r} only")
        seconds = fill(queues, total)
        print(f"pushed {total:,} messages into {queue_count:,} queues (4 priority lists each) in {seconds:.1f} s")
        seconds = store_results(queues, results)
        print(f"stored {results:,} results (spread over the last 23 h) in {seconds:.1f} s")
        if freeze:
            gc.collect()
            gc.freeze()
            print(f"gc.freeze(): {gc.get_freeze_count():,} objects kept out of the collections")

        measures = [
            time_calls("queue_table() (status cached)", table_check(queues, total), runs),
            time_calls("GET dashboard, page 1 (100 rows, worst first)", dashboard_check(queue_count, 1), runs),
            time_calls("GET dashboard ?qp=2", dashboard_check(queue_count, 2), runs),
            time_calls("GET /api/v2/celery/queues/?limit=100&offset=100", api_check(queue_count), runs),
        ]
        settings.CELERY_STATUS_CACHE_SECONDS = 0
        measures.append(time_calls("read_status() (uncached, 2 workers)", status_check(total), runs))
        settings.CELERY_STATUS_CACHE_SECONDS = 5
        measures.append(time_calls("GET /metrics (status cache 5 s, results 15 s)", metrics_check(queue_count), runs))
        extra = [
            time_calls("1 h results count by task and state, uncached", results_query(), runs),
            time_calls("depth read as before: LLEN+LINDEX+decode x all", old_depths(queues, total), min(runs, 10)),
        ]
        return report(measures, extra)
    finally:
        started.stop_all()


def report(measures: list[Series], extra: list[Series]) -> bool:
    print()
    print(f"{'measure':<58} {'n':>4} {'fail':>5} {'p50 ms':>9} {'p95 ms':>9} {'max ms':>9}")
    for one in [*measures, *extra]:
        print(row(one))
        if one.note:
            print(f"  note: {one.note}")
    print(BEFORE)
    met = all(one.percentile(50) <= TARGET_P50_MS for one in measures)
    met = met and not any(one.failures for one in [*measures, *extra])
    print(
        f"target p50 <= {TARGET_P50_MS:.0f} ms for each of the first {len(measures)}, no failed call: "
        f"{'MET' if met else 'NOT MET'}"
    )
    return met


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--queues", type=int, default=10_000, help="queues (default 10,000)")
    parser.add_argument("--messages", type=int, default=200_000, help="ready messages (default 200,000)")
    parser.add_argument("--runs", type=int, default=30, help="measured runs per measure (default 30)")
    parser.add_argument("--results", type=int, default=200_000, help="stored results (default 200,000)")
    parser.add_argument("--gc-freeze", action="store_true", help="gc.freeze() after the set-up (see above)")
    args = parser.parse_args(argv)
    if args.queues < 401 or min(args.messages, args.runs, args.results) < 1:
        parser.error("at least 401 queues (two full dashboard pages and more), every other count at least 1")

    def on_term(signum: int, _frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)  # unwinds through the finally that stops everything

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGHUP, on_term)
    return 0 if run(args.queues, args.messages, args.runs, args.results, args.gc_freeze) else 1


if __name__ == "__main__":
    sys.exit(main())
