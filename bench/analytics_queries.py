"""Latency of the task analytics reads (dojo.ops.read_models.analytics) on PostgreSQL with a full
retention of rollups: the per task name table for each window, one task name's detail, and the API.

What it does: creates a private PostgreSQL database on 127.0.0.1:5432 (user postgres, trust auth),
migrates it with ``manage.py migrate``, and loads with ``INSERT ... SELECT FROM generate_series``:
7 days of minute rows and 90 days of hour rows of TaskRollup for `--tasks` task names on `--queues`
queues each, every task name in every minute and hour (dense: the worst case), with histograms of
runtime and wait spread over 4 neighbouring buckets around each task name's own typical runtime
(1 ms .. 10 min), and FailureRollup rows (two exception types, one minute in ten) in both tiers.
After VACUUM ANALYZE it times in-process, with the project's settings (statement_timeout of a web
process, DD_DATABASE_STATEMENT_TIMEOUT), task_table() for each window, task_detail() for 24h and
7d, failure_groups() for 24h and the API's GETs with Django's test Client as a superuser (the
table on 7d and 24h, the task on 7d). Each measure: WARMUP unmeasured calls, then `--runs`; it
prints p50/p95/max in ms and whether the table and the task page meet p50 <= 100 ms on 7d. Every
answer is checked (the table has every task name, the first task's runs equal the rows written).
Drops the database at the end, however it ends (unless --keep; --reuse measures a kept one).

Usage: python bench/analytics_queries.py [--tasks 100] [--queues 1] [--runs 20]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
API = "/api/v2/celery/analytics/"
PG = ["-h", "127.0.0.1", "-U", "postgres"]
TARGET_P50_MS = 100.0
WARMUP = 2
VARIANTS = 8  # histogram shapes per task name, taken in turn by its rows

# One row per (task name, variant): counts and histograms that the rollup rows copy. Task i's
# typical runtime bucket is 1 + i % 17 (2.5 ms .. 10 min); its runs spread over that bucket and
# the three above it, 10 runs a minute on average, failures in one variant of VARIANTS.
SHAPES_SQL = """
CREATE UNLOGGED TABLE bench_shapes AS
SELECT t AS task, v AS variant,
    (8 + (t * 7 + v * 3) %% 5)::bigint AS succeeded,
    (CASE WHEN v = 0 THEN 1 + t %% 3 ELSE 0 END)::bigint AS failed,
    (CASE WHEN v = 1 THEN 1 ELSE 0 END)::bigint AS retried,
    (SELECT jsonb_agg(CASE WHEN b - (1 + t %% 17) BETWEEN 0 AND 3
                           THEN (ARRAY[5, 3, 2, 1])[1 + b - (1 + t %% 17)] + (v + b) %% 2 ELSE 0 END ORDER BY b)
       FROM generate_series(0, 22) AS b) AS runtime_buckets,
    (SELECT jsonb_agg(CASE WHEN b BETWEEN 2 AND 5 THEN (ARRAY[4, 4, 2, 1])[b - 1] ELSE 0 END ORDER BY b)
       FROM generate_series(0, 22) AS b) AS wait_buckets
FROM generate_series(0, %(tasks)s - 1) AS t, generate_series(0, %(variants)s - 1) AS v;
"""

ROLLUPS_SQL = """
INSERT INTO dojo_taskrollup
    (period, bucket_start, backend, task_name, queue, worker, received, started, succeeded, failed, retried,
     revoked, rejected, recovered, critical, lost, runtime_sum, runtime_max, runtime_buckets, wait_sum,
     wait_buckets, publish_wait_sum, publish_wait_buckets)
SELECT %(period)s, date_trunc('%(unit)s', now()) - n * interval '1 %(unit)s', 'default',
    'bench.tasks.task_' || lpad(s.task::text, 3, '0'), 'queue_' || q, '',
    (s.succeeded + s.failed) * %(scale)s, (s.succeeded + s.failed) * %(scale)s, s.succeeded * %(scale)s,
    s.failed * %(scale)s, s.retried * %(scale)s, 0, 0, 0, 0, 0,
    (s.succeeded + s.failed) * %(scale)s * power(2.5, s.task %% 17) * 0.002, power(2.5, s.task %% 17) * 0.01,
    %(runtime)s,
    (s.succeeded + s.failed) * %(scale)s * 0.05,
    %(wait)s,
    0, '[]'::jsonb
FROM generate_series(0, %(count)s - 1) AS n, generate_series(1, %(queues)s) AS q, bench_shapes AS s
WHERE s.variant = (n + s.task) %% %(variants)s;
"""

FAILURES_SQL = """
INSERT INTO dojo_failurerollup
    (period, bucket_start, backend, task_name, exception_type, count, first_seen, last_seen, latest_task_id,
     latest_exception, latest_traceback)
SELECT period, bucket_start, backend, task_name, e.name, failed, bucket_start, bucket_start + interval '30 seconds',
    md5(task_name || bucket_start || e.name), e.name || '(''bench failure'')',
    'Traceback (most recent call last):' || repeat(E'\\n  File "bench.py", line 1, in run', 20) || E'\\n'
        || e.name || ': bench failure'
FROM dojo_taskrollup, (VALUES ('ValueError'), ('smtplib.SMTPServerDisconnected')) AS e(name)
WHERE failed > 0 AND period IN (60, 3600) AND queue = 'queue_1';
"""


# The hour rows' histograms: the shape's counts times the scale (the minute rows copy the shape).
SCALED = "(SELECT jsonb_agg(value::bigint * {scale}) FROM jsonb_array_elements_text(s.{column}_buckets))"


def psql(db: str, sql: str) -> str:
    done = subprocess.run(
        ["psql", *PG, "-d", db, "-tA", "-v", "ON_ERROR_STOP=1", "-c", sql], capture_output=True, text=True, check=False
    )
    if done.returncode:
        raise RuntimeError(f"psql failed: {done.stderr.strip()}")
    return done.stdout.strip()


def load(db: str, args: argparse.Namespace) -> None:
    values = {"tasks": args.tasks, "variants": VARIANTS, "queues": args.queues}
    psql(db, SHAPES_SQL % values)
    for period, unit, count, scale in ((60, "minute", 7 * 1440, 1), (3600, "hour", 90 * 24, 60)):
        started = time.monotonic()
        histograms = {
            column: SCALED.format(scale=scale, column=column) if scale > 1 else f"s.{column}_buckets"
            for column in ("runtime", "wait")
        }
        sql = ROLLUPS_SQL % {**values, **histograms, "period": period, "unit": unit, "count": count, "scale": scale}
        psql(db, sql)
        rows = count * args.tasks * args.queues
        print(f"loaded {rows:,} {unit} rows in {time.monotonic() - started:.1f} s", flush=True)
    started = time.monotonic()
    psql(db, FAILURES_SQL)
    failures = int(psql(db, "SELECT count(*) FROM dojo_failurerollup"))
    print(f"loaded {failures:,} failure rows in {time.monotonic() - started:.1f} s", flush=True)
    psql(db, "DROP TABLE bench_shapes")
    started = time.monotonic()
    psql(db, "VACUUM ANALYZE dojo_taskrollup")
    psql(db, "VACUUM ANALYZE dojo_failurerollup")
    print(f"VACUUM ANALYZE in {time.monotonic() - started:.1f} s", flush=True)
    size = psql(db, "SELECT pg_size_pretty(pg_total_relation_size('dojo_taskrollup'))")
    print(f"dojo_taskrollup: {size} with its indexes", flush=True)


def timed(call: Callable[[], object], runs: int, before: Callable[[], object] | None = None) -> list[float]:
    """Milliseconds of `runs` calls after WARMUP unmeasured ones; `before` runs untimed before each."""
    times = []
    for n in range(WARMUP + runs):
        if before is not None:
            before()
        started = time.perf_counter()
        call()
        elapsed = (time.perf_counter() - started) * 1000
        if n >= WARMUP:
            times.append(elapsed)
    return times


def p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=100, help="task names")
    parser.add_argument("--queues", type=int, default=1, help="queues per task name (rows per task and period)")
    parser.add_argument("--runs", type=int, default=20, help="measured calls per measure")
    parser.add_argument("--keep", action="store_true", help="keep the database (its name is printed)")
    parser.add_argument("--reuse", metavar="DB", help="measure a database kept by an earlier --keep run")
    args = parser.parse_args()

    if args.reuse:
        return measure(f"postgres://postgres@127.0.0.1:5432/{args.reuse}", args)
    db = f"dojo_bench_analytics_{os.getpid()}"
    url = f"postgres://postgres@127.0.0.1:5432/{db}"
    subprocess.run(["createdb", *PG, db], check=True)
    try:
        env = {**os.environ, "DD_DATABASE_URL": url}
        started = time.monotonic()
        subprocess.run([sys.executable, "manage.py", "migrate", "-v", "0"], cwd=ROOT, env=env, check=True)
        print(f"migrated in {time.monotonic() - started:.1f} s", flush=True)
        load(db, args)
        return measure(url, args)
    finally:
        if "django" in sys.modules:
            from django.db import connections

            connections.close_all()
        if args.keep:
            print(f"kept database {db}")
        else:
            subprocess.run(["dropdb", *PG, "--force", "--if-exists", db], check=False)
            print(f"dropped database {db}")


def measure(url: str, args: argparse.Namespace) -> int:
    os.environ["DD_DATABASE_URL"] = url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dojo.settings.settings")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.conf import settings
    from django.contrib.auth.models import User
    from django.core.cache import cache
    from django.test import Client

    from dojo.models import TaskRollup
    from dojo.ops.read_models import analytics

    first = "bench.tasks.task_000"
    print(f"statement_timeout: {settings.DATABASE_STATEMENT_TIMEOUT:g} s (DD_DATABASE_STATEMENT_TIMEOUT)")

    def table(window: str) -> Callable[[], object]:
        def call() -> None:
            found = analytics.task_table("default", window)
            span = found.since
            runs = sum(
                row.succeeded + row.failed
                for row in TaskRollup.objects.filter(
                    period=analytics.window_of(window).period, task_name=first, bucket_start__gte=span
                ).only("succeeded", "failed")
            )
            assert len(found.rows) == args.tasks, len(found.rows)
            row = next(row for row in found.rows if row.task_name == first)
            assert row.runs == runs, (window, row.runs, runs)  # rows written in the window (a moment apart)

        return call

    def checked_table(window: str) -> Callable[[], object]:
        """The timed call: the read alone (the check above runs once, before)."""
        table(window)()
        return lambda: analytics.task_table("default", window)

    def detail(window: str) -> Callable[[], object]:
        found = analytics.task_detail("default", first, window)
        assert found.stats.runs > 0 and found.failures and len(found.series) == len(found.series)
        return lambda: analytics.task_detail("default", first, window)

    client = Client(HTTP_HOST="localhost")
    user = User.objects.filter(username="bench").first()
    client.force_login(user or User.objects.create_superuser("bench", "bench@example.invalid", None))

    def get(path: str) -> Callable[[], object]:
        def call() -> None:
            response = client.get(path)
            if response.status_code != 200:
                raise RuntimeError(f"GET {path} answered {response.status_code}: {response.content[:200]!r}")

        return call

    # Cold: Django's cache cleared before each call, so every point is read from the database
    # (a first view, or the first after POINT_CACHE_SECONDS); warm: the settled points cached.
    tables = [(window, checked_table(window)) for window in analytics.WINDOWS]
    details = [(window, detail(window)) for window in ("24h", "7d")]
    measures: list[tuple[str, Callable[[], object], bool, bool]] = [
        *((f"task_table {window} cold", call, False, True) for window, call in tables),
        *((f"task_table {window} warm", call, window == "7d", False) for window, call in tables),
        *((f"task_detail {window} cold", call, False, True) for window, call in details),
        *((f"task_detail {window} warm", call, window == "7d", False) for window, call in details),
        ("failure_groups 24h", lambda: analytics.failure_groups("default", "24h"), False, False),
        ("failure_groups 7d", lambda: analytics.failure_groups("default", "7d"), False, False),
        ("throughput 60 min", lambda: analytics.throughput("default", 60), False, False),
        ("GET analytics/tasks/?window=7d", get("/api/v2/celery/analytics/tasks/?window=7d"), True, False),
        ("GET analytics/tasks/?window=24h", get("/api/v2/celery/analytics/tasks/?window=24h"), False, False),
        (
            "GET analytics/task/?window=7d",
            get(f"/api/v2/celery/analytics/task/?window=7d&task_name={first}"),
            True,
            False,
        ),
    ]
    print(f"\n{'measure':<36} {'n':>3} {'p50 ms':>9} {'p95 ms':>9} {'max ms':>9}")
    met = True
    for label, call, targeted, cold in measures:
        times = timed(call, args.runs, cache.clear if cold else None)
        p50 = statistics.median(times)
        if targeted:
            met &= p50 <= TARGET_P50_MS
        mark = " *" if targeted else ""
        print(f"{label + mark:<36} {len(times):>3} {p50:>9.1f} {p(times, 0.95):>9.1f} {max(times):>9.1f}", flush=True)
    verdict = "met" if met else "NOT met"
    print(f"\ntarget p50 <= {TARGET_P50_MS:.0f} ms on the measures marked *: {verdict}")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
