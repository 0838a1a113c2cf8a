"""Latency of the panel's Tasks pages on 1,000,000 stored results, next to the stock admin changelist.

What it does: creates a private PostgreSQL database on 127.0.0.1:5432 (user postgres, trust auth),
migrates it with ``manage.py migrate`` (so the celery_panel indexes exist), loads N TaskResult rows
with one ``INSERT ... SELECT FROM generate_series`` (varied states, task names, workers and dates),
runs VACUUM ANALYZE, then times requests made in-process with Django's test Client, logged in as a
superuser: the panel's task list (first page, each state filter, exact id, name prefix, a deep page,
and filter form fields: task name with a state, a done window, a worker, an exception type)
and the django-celery-results admin changelist for the same questions. Prints p50/p95/max in ms and
whether every panel page meets p50 <= 100 ms; drops the database at the end, however it ends.

Usage: python bench/tasks_pages.py [--rows 1000000] [--requests 30] [--admin-requests 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parent.parent
PG = ["-h", "127.0.0.1", "-U", "postgres"]
TARGET_P50_MS = 100.0
WARMUP = 2

LOAD_SQL = """
INSERT INTO django_celery_results_taskresult
    (task_id, task_name, task_args, task_kwargs, status, worker, content_type, content_encoding,
     result, date_created, date_started, date_done, traceback, meta, periodic_task_name)
SELECT
    md5('task' || i)::uuid::text,
    (ARRAY['dojo.tasks.add', 'dojo.tasks.sleep', 'dojo.tasks.prune_broker_files',
           'dojo.tasks.record_celery_snapshot', 'dojo.reports.generate_pdf', 'dojo.reports.generate_csv',
           'dojo.importers.import_scan', 'dojo.importers.reimport_scan', 'dojo.notifications.send_mail',
           'dojo.notifications.send_slack', 'dojo.jira.push_finding', 'dojo.search.reindex'])[1 + (i * 7919) % 12],
    '"(' || (i % 97) || ', ' || (i % 13) || ')"',
    '"{''retry'': ' || CASE WHEN i % 2 = 0 THEN 'True' ELSE 'False' END || '}"',
    s.status,
    'celery' || (1 + (i * 31) % 8) || '@host' || (1 + i % 3),
    'application/json', 'utf-8',
    CASE s.status
        WHEN 'SUCCESS' THEN (i % 1000)::text
        WHEN 'FAILURE' THEN '{"exc_type": "ValueError", "exc_message": ["bad input ' || i || '"], '
                            || '"exc_module": "builtins"}'
        ELSE NULL END,
    done - interval '3 seconds',
    done - interval '2 seconds',
    done,
    CASE WHEN s.status = 'FAILURE'
        THEN E'Traceback (most recent call last):\\n  File "dojo/tasks.py", line 1, in run\\nValueError: bad input'
        ELSE NULL END,
    '{"children": []}',
    NULL
FROM generate_series(1::bigint, %(rows)s) AS i,
LATERAL (SELECT now() - (i * interval '500 milliseconds') AS done) AS d,
LATERAL (SELECT CASE
    WHEN (i * 37) % 100 < 80 THEN 'SUCCESS'
    WHEN (i * 37) % 100 < 88 THEN 'FAILURE'
    WHEN (i * 37) % 100 < 91 THEN 'RETRY'
    WHEN (i * 37) % 100 < 93 THEN 'REVOKED'
    WHEN (i * 37) % 100 < 97 THEN 'STARTED'
    ELSE 'PENDING' END AS status) AS s
"""


def psql(db: str, sql: str) -> str:
    done = subprocess.run(
        ["psql", *PG, "-d", db, "-tA", "-v", "ON_ERROR_STOP=1", "-c", sql], capture_output=True, text=True, check=False
    )
    if done.returncode:
        raise RuntimeError(f"psql failed: {done.stderr.strip()}")
    return done.stdout.strip()


def timed(client, url: str, requests: int) -> list[float]:
    """Milliseconds of `requests` GETs of `url` after WARMUP unmeasured ones; each must answer 200."""
    times = []
    for n in range(WARMUP + requests):
        started = time.perf_counter()
        response = client.get(url)
        elapsed = (time.perf_counter() - started) * 1000
        if response.status_code != 200:
            raise RuntimeError(f"GET {url} answered {response.status_code}")
        if n >= WARMUP:
            times.append(elapsed)
    return times


def p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=30, help="measured requests per panel page")
    parser.add_argument("--admin-requests", type=int, default=5, help="measured requests per admin page (slow)")
    args = parser.parse_args()

    db = f"dojo_bench_tasks_{os.getpid()}"
    url = f"postgres://postgres@127.0.0.1:5432/{db}"
    subprocess.run(["createdb", *PG, db], check=True)
    try:
        env = {**os.environ, "DD_DATABASE_URL": url}
        started = time.monotonic()
        subprocess.run([sys.executable, "manage.py", "migrate", "-v", "0"], cwd=ROOT, env=env, check=True)
        print(f"migrated in {time.monotonic() - started:.1f} s", flush=True)
        started = time.monotonic()
        psql(db, LOAD_SQL.replace("%(rows)s", str(args.rows)))
        print(f"loaded {args.rows:,} rows in {time.monotonic() - started:.1f} s", flush=True)
        started = time.monotonic()
        psql(db, "VACUUM ANALYZE django_celery_results_taskresult")
        print(f"VACUUM ANALYZE in {time.monotonic() - started:.1f} s", flush=True)
        task_id = psql(db, "SELECT task_id FROM django_celery_results_taskresult WHERE id = 500000")
        return run_requests(url, task_id, args)
    finally:
        if "django" in sys.modules:
            from django.db import connections

            connections.close_all()
        subprocess.run(["dropdb", *PG, "--force", "--if-exists", db], check=False)
        print(f"dropped database {db}")


def run_requests(url: str, task_id: str, args: argparse.Namespace) -> int:
    os.environ["DD_DATABASE_URL"] = url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dojo.settings.settings")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.contrib.auth.models import User
    from django.test import Client

    from dojo.celery_panel.backends.tasks import STATE_FILTERS

    client = Client(HTTP_HOST="localhost")
    client.force_login(User.objects.create_superuser("bench", "bench@example.invalid", None))
    panel = "/admin/celery/tasks/"
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(days=2)
    window = urlencode({"done_after": start.isoformat(), "done_before": (start + timedelta(hours=1)).isoformat()})
    admin = "/admin/django_celery_results/taskresult/"
    pages = [
        ("panel", "first page", panel),
        *(("panel", f"filter {value}", f"{panel}?filter={value}") for value in STATE_FILTERS),
        ("panel", "exact id", f"{panel}?q={task_id}"),
        ("panel", "name prefix 'dojo.reports.'", f"{panel}?q=dojo.reports."),
        ("panel", "page 1000 (offset 49,950)", f"{panel}?page=1000"),
        # The filter form's fields (TaskFilter): the same URL a bookmark or the bulk link carries.
        ("panel", "task_name + state=FAILURE", f"{panel}?task_name=dojo.reports.generate_pdf&state=FAILURE"),
        ("panel", "done window (1 h, 2 days ago)", f"{panel}?{window}"),
        ("panel", "worker", f"{panel}?worker=celery3%40host2"),
        ("panel", "exception_type + state=FAILURE", f"{panel}?exception_type=ValueError&state=FAILURE"),
        ("admin", "first page", admin),
        *(("admin", f"status {state}", f"{admin}?status__exact={state}") for state in STATE_FILTERS.values()),
        ("admin", "q=<id>", f"{admin}?q={task_id}"),
        ("admin", "q=dojo.reports.", f"{admin}?q=dojo.reports."),
        ("admin", "p=1000 (offset 99,900)", f"{admin}?p=1000"),
    ]
    print(f"\n{'page':<44} {'n':>3} {'p50 ms':>9} {'p95 ms':>9} {'max ms':>9}")
    panel_ok = True
    for where, label, path in pages:
        times = timed(client, path, args.requests if where == "panel" else args.admin_requests)
        p50 = statistics.median(times)
        if where == "panel":
            panel_ok &= p50 <= TARGET_P50_MS
        print(
            f"{where + ': ' + label:<44} {len(times):>3} {p50:>9.1f} {p(times, 0.95):>9.1f} {max(times):>9.1f}",
            flush=True,
        )
    verdict = "met" if panel_ok else "NOT met"
    print(f"\ntarget p50 <= {TARGET_P50_MS:.0f} ms on every panel page: {verdict}")
    return 0 if panel_ok else 1


if __name__ == "__main__":
    sys.exit(main())
