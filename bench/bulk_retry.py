"""Bulk retry of 100,000 stored failures on PostgreSQL: total time, rate, the runner worker's peak
RSS, and GET /api/v2/celery/status/ latency during the operation against before it.

What it does: creates a private PostgreSQL database on 127.0.0.1:5432 (user postgres, trust auth),
migrates it, and stores `--results` FAILURE results of one task name with ``bulk_create`` of
django_celery_results' TaskResult (task_args / task_kwargs / meta as the retry's stored_call reads
them: a JSON string holding the repr of the args and of the kwargs, meta with the queue). It starts a
private redis-server (the broker), one ``celery -A dojo worker -Q bulk -c 1`` that runs the bulk
operation (DD_BULK_QUEUE=bulk) and gunicorn serving the API. The retried tasks are published to the
queue ``celery``, which no worker consumes: the `--results` retried messages just wait in Redis, so
the bench measures the operation itself (reading, claiming, publishing), not the retried tasks' runs.

Measures: status GETs (a superuser token, ``?refresh=1``: every read is uncached, it pings the
worker and reads the broker) for `--before` seconds; then preview + start through the API, progress
polled every second until the operation ends while another connection reads the status without
pause. Meanwhile /proc/<pid>/status VmRSS of the worker and of its pool child is sampled every 0.5 s.
It prints the total time (start's 201 to the operation's finished_at), the rate, the peak RSS of each
process (and before the start), status p50/p95 during vs before and the ratio (target p95 <= 2x), and
checks: done_count == N, failed_count == 0, LLEN celery == N, BulkRetriedTask rows == N (all `sent`).
Drops the database and stops every process it started at the end, however it ends.

Usage: python bench/bulk_retry.py [--results 100000] [--batch-size 500] [--pause 0.2] [--before 20]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

import redis

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ is not a package
from celery import Celery
from status_cache import Client
from status_latency import (
    HTTP_TIMEOUT,
    Series,
    Started,
    base_env,
    manage,
    start_redis,
    start_web,
    tail,
    wait_for,
)

PG = ["-h", "127.0.0.1", "-U", "postgres"]
STATUS = "/api/v2/celery/status/?refresh=1"
BULK = "/api/v2/celery/bulk/"
TASK_NAME = "bench.tasks.flaky_export"
TARGET_QUEUE = "celery"  # where the retries go: no worker consumes it
BULK_QUEUE = "bulk"
TARGET_RATIO = 2.0
OPERATION_TIMEOUT = 3600.0

# Run by `manage.py shell -c` in the bench's database: N failures of one task name, stored as the
# django-db backend stores them with result_extended (args and kwargs: a JSON string of their repr).
LOAD_SCRIPT = """
import json, uuid
from django.utils import timezone
from django_celery_results.models import TaskResult
now = timezone.now()
meta = json.dumps({{"children": [], "queue": "{queue}"}})
result = json.dumps({{"exc_type": "ConnectionError", "exc_message": ["export endpoint refused"],
    "exc_module": "builtins"}})
traceback = "Traceback (most recent call last):\\n  File \\"export.py\\", line 12, in run\\nConnectionError: refused"
def rows(start, stop):
    for i in range(start, stop):
        yield TaskResult(task_id=str(uuid.uuid4()), task_name="{name}", status="FAILURE",
            task_args=json.dumps(repr((i, "report-%d.csv" % i))), task_kwargs=json.dumps(repr({{"retries": 3}})),
            worker="export@bench", content_type="application/json", content_encoding="utf-8",
            result=result, traceback=traceback, meta=meta, date_done=now)
for start in range(0, {count}, 5000):
    TaskResult.objects.bulk_create(rows(start, min({count}, start + 5000)))
print(TaskResult.objects.filter(task_name="{name}", status="FAILURE").count())
"""


def psql(db: str, sql: str) -> str:
    done = subprocess.run(
        ["psql", *PG, "-d", db, "-tA", "-v", "ON_ERROR_STOP=1", "-c", sql], capture_output=True, text=True, check=False
    )
    if done.returncode:
        raise RuntimeError(f"psql failed: {done.stderr.strip()}")
    return done.stdout.strip()


def rss_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def children_of(pid: int) -> list[int]:
    found: list[int] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            found += [int(child) for child in (task / "children").read_text().split()]
    except (OSError, ValueError):
        pass
    return found


@dataclass
class RssSampler:
    """VmRSS of the worker (the main process) and of its pool children every `interval` seconds."""

    pid: int
    interval: float = 0.5
    peaks: dict[str, int] = field(default_factory=lambda: {"main": 0, "pool": 0})
    samples: int = 0
    stop: threading.Event = field(default_factory=threading.Event)

    def sample(self) -> dict[str, int]:
        now = {"main": rss_kib(self.pid) or 0, "pool": max((rss_kib(c) or 0 for c in children_of(self.pid)), default=0)}
        for role, kib in now.items():
            self.peaks[role] = max(self.peaks[role], kib)
        self.samples += 1
        return now

    def run(self) -> None:
        while not self.stop.wait(self.interval):
            self.sample()


class Api:
    """JSON requests on one keep-alive connection with a token."""

    def __init__(self, port: int, key: str) -> None:
        self.headers = {"Authorization": f"Token {key}", "Content-Type": "application/json"}
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=HTTP_TIMEOUT * 6)

    def call(self, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
        self.conn.request(method, path, body=json.dumps(body) if body is not None else None, headers=self.headers)
        response = self.conn.getresponse()
        raw = response.read()
        try:
            return response.status, json.loads(raw)
        except ValueError:
            return response.status, {"raw": raw[:300].decode(errors="replace")}

    def close(self) -> None:
        self.conn.close()


def read_status(client: Client, series: Series, until: threading.Event | float) -> None:
    """Sequential status reads into `series` until the event is set or the monotonic deadline passes."""
    while not (until.is_set() if isinstance(until, threading.Event) else time.monotonic() >= until):
        start = time.perf_counter()
        ok, reason = client.get(STATUS, 1)
        series.times_ms.append((time.perf_counter() - start) * 1000)
        if not ok:
            series.failures += 1
            if series.failures <= 3:
                print(f"  {series.name} failure: {reason}", file=sys.stderr)


def start_worker(started: Started, env: dict[str, str], workdir: Path) -> int:
    """The runner's worker (queue `bulk` only, one prefork child); its pid once it answers a ping."""
    log = workdir / "worker.log"
    args = [sys.executable, "-m", "celery", "-A", "dojo", "worker", "-n", "bulk@%h", "-Q", BULK_QUEUE]
    args += ["-c", "1", "-P", "prefork", "--without-mingle", "--without-gossip", "-l", "warning"]
    proc = started.spawn("worker", args, env, log)
    client = Celery("bench-client", broker=env["DD_CELERY_BROKER_URL"])

    def answers() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"the worker exited with {proc.returncode}:\n{tail(log)}")
        return bool(client.control.ping(timeout=1))

    try:
        wait_for(answers, 90, "the worker to answer a ping")
    finally:
        client.close()
    return proc.pid


def mib(kib: int) -> str:
    return f"{kib / 1024:.1f} MiB"


def run(args: argparse.Namespace) -> bool:
    db = f"dojo_bench_bulk_{os.getpid()}"
    started = Started()
    created = False
    try:
        workdir = Path(tempfile.mkdtemp(prefix="dojo-bench-bulk-"))
        started.dirs.append(workdir)
        subprocess.run(["createdb", *PG, db], check=True)
        created = True
        redis_port = start_redis(started, workdir)
        env = base_env(redis_port, workdir / "unused.sqlite3")
        env.update(
            DD_DATABASE_URL=f"postgres://postgres@127.0.0.1:5432/{db}",
            DD_CELERY_RESULT_BACKEND="django-db",  # the results a retry reads are stored there
            DD_CELERY_QUEUES=f"{TARGET_QUEUE},{BULK_QUEUE}",
            DD_BULK_QUEUE=BULK_QUEUE,
            DD_BULK_BATCH_SIZE=str(args.batch_size),
            DD_BULK_BATCH_PAUSE_SECONDS=str(args.pause),
            DD_CELERY_CONTROL_THROTTLE_RATE="1000000/s",
        )
        t0 = time.monotonic()
        web_port, key = start_web(started, env, workdir)  # migrates and makes the token first
        print(f"migrated, gunicorn on 127.0.0.1:{web_port} ({time.monotonic() - t0:.1f} s)", flush=True)
        t0 = time.monotonic()
        script = LOAD_SCRIPT.format(count=args.results, name=TASK_NAME, queue=TARGET_QUEUE)
        stored = int(manage(env, "shell", "-c", script, timeout=1800).strip().splitlines()[-1])
        psql(db, "VACUUM ANALYZE django_celery_results_taskresult")
        print(f"stored {stored:,} failures in {time.monotonic() - t0:.1f} s", flush=True)
        worker_pid = start_worker(started, env, workdir)
        print(f"worker {worker_pid} answers", flush=True)

        sampler = RssSampler(worker_pid)
        idle = sampler.sample()
        sampler_thread = threading.Thread(target=sampler.run, daemon=True)
        sampler_thread.start()

        status = Client(web_port, key)
        for _ in range(5):  # warm-up
            status.get(STATUS, 1)
        before = Series("status before")
        read_status(status, before, time.monotonic() + args.before)
        before_peaks = dict(sampler.peaks)

        api = Api(web_port, key)
        body = {"action": "retry", "filter": {"task_name": TASK_NAME, "state": "FAILURE"}}
        t_preview = time.perf_counter()
        code, shown = api.call("POST", f"{BULK}preview/", body)
        preview_ms = (time.perf_counter() - t_preview) * 1000
        if code != 200:
            raise RuntimeError(f"preview answered {code}: {shown}")
        if shown["count"] != args.results:
            raise RuntimeError(f"preview counted {shown['count']}, expected {args.results}")
        during = Series("status during")
        done_reading = threading.Event()
        reader = threading.Thread(target=read_status, args=(status, during, done_reading), daemon=True)
        reader.start()
        t_start = time.perf_counter()
        code, operation = api.call(
            "POST", BULK, {**body, "confirmed_count": shown["count"], "fingerprint": shown["fingerprint"]}
        )
        start_ms = (time.perf_counter() - t_start) * 1000
        if code != 201:
            done_reading.set()
            raise RuntimeError(f"start answered {code}: {operation}")
        deadline = time.monotonic() + OPERATION_TIMEOUT
        polls = 0
        while operation["state"] in ("pending", "running") and time.monotonic() < deadline:
            time.sleep(1)
            code, operation = api.call("GET", f"{BULK}{operation['id']}/")
            polls += 1
            if code != 200:
                raise RuntimeError(f"progress answered {code}: {operation}")
            if polls % 15 == 0:
                shown_progress = operation["progress"]
                print(
                    f"  {shown_progress['processed']:,}/{shown_progress['total']:,} "
                    f"({shown_progress['rate_per_second']} /s), pool RSS {mib(sampler.peaks['pool'])} peak",
                    flush=True,
                )
        done_reading.set()
        reader.join(HTTP_TIMEOUT + 5)
        sampler.stop.set()
        sampler_thread.join(5)
        sampler.sample()
        api.close()
        status.close()

        since = "SELECT extract(epoch FROM finished_at - started_at) FROM dojo_bulkoperation WHERE id = "
        total = psql(db, since + str(int(operation["id"])))
        seconds = float(total) if total else float("nan")
        queued = redis.Redis(port=redis_port, db=0).llen(TARGET_QUEUE)
        claims = psql(db, "SELECT state || '=' || count(*) FROM dojo_bulkretriedtask GROUP BY state ORDER BY state")
        claim_rows = int(psql(db, "SELECT count(*) FROM dojo_bulkretriedtask"))
        sent_rows = int(psql(db, "SELECT count(*) FROM dojo_bulkretriedtask WHERE state = 'sent'"))
        return report(
            args,
            operation,
            seconds,
            preview_ms,
            start_ms,
            idle,
            before_peaks,
            sampler,
            before,
            during,
            queued,
            claim_rows,
            sent_rows,
            claims,
        )
    finally:
        started.stop_all()
        if created:
            subprocess.run(["dropdb", *PG, "--force", "--if-exists", db], check=False)
            print(f"dropped database {db}")


def report(
    args: argparse.Namespace,
    operation: dict,
    seconds: float,
    preview_ms: float,
    start_ms: float,
    idle: dict[str, int],
    before_peaks: dict[str, int],
    sampler: RssSampler,
    before: Series,
    during: Series,
    queued: int,
    claim_rows: int,
    sent_rows: int,
    claims: str,
) -> bool:
    n = args.results
    print()
    print(f"operation {operation['id']}: {operation['state']}, batches of {args.batch_size}, pause {args.pause:g} s")
    print(f"preview {preview_ms:.0f} ms, start {start_ms:.0f} ms (each counts the {n:,} matches)")
    print(f"total {seconds:.1f} s (started_at to finished_at), {n / seconds:,.0f} results/s")
    print(
        f"worker RSS ({sampler.samples} samples every 0.5 s): main {mib(idle['main'])} idle -> "
        f"{mib(sampler.peaks['main'])} peak; pool child {mib(idle['pool'])} idle, {mib(before_peaks['pool'])} "
        f"before the start -> {mib(sampler.peaks['pool'])} peak"
    )
    print(f"\n{'GET ' + STATUS:<44} {'n':>5} {'fail':>5} {'p50 ms':>9} {'p95 ms':>9} {'max ms':>9}")
    for series in (before, during):
        print(
            f"{series.name:<44} {len(series.times_ms):>5} {series.failures:>5} {series.percentile(50):>9.1f} "
            f"{series.percentile(95):>9.1f} {series.percentile(100):>9.1f}"
        )
    ratio95 = during.percentile(95) / before.percentile(95)
    ratio50 = during.percentile(50) / before.percentile(50)
    print(f"ratio during / before: p50 {ratio50:.2f}x, p95 {ratio95:.2f}x")
    checks = {
        f"state done ({operation['state']})": operation["state"] == "done",
        f"done_count == {n:,} ({operation['done_count']:,})": operation["done_count"] == n,
        f"failed_count == 0 ({operation['failed_count']:,})": operation["failed_count"] == 0,
        f"LLEN {TARGET_QUEUE} == {n:,} ({queued:,})": queued == n,
        f"BulkRetriedTask rows == {n:,} ({claim_rows:,}: {claims.replace(chr(10), ', ')})": claim_rows == n,
        f"every claim sent ({sent_rows:,})": sent_rows == n,
        "no status read failed": before.failures == 0 and during.failures == 0,
        f"status p95 during <= {TARGET_RATIO:g}x before ({ratio95:.2f}x)": ratio95 <= TARGET_RATIO,
    }
    print()
    for label, ok in checks.items():
        print(f"{'ok  ' if ok else 'FAIL'} {label}")
    return all(checks.values())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--results", type=int, default=100_000, help="stored failures retried (default 100000)")
    parser.add_argument("--batch-size", type=int, default=500, help="DD_BULK_BATCH_SIZE (default 500)")
    parser.add_argument("--pause", type=float, default=0.2, help="DD_BULK_BATCH_PAUSE_SECONDS (default 0.2)")
    parser.add_argument("--before", type=float, default=20.0, help="seconds of status reads before (default 20)")
    args = parser.parse_args(argv)
    if args.results < 1 or args.batch_size < 1 or args.pause < 0 or args.before <= 0:
        parser.error("--results and --batch-size must be at least 1, --pause >= 0, --before > 0")

    def on_term(signum: int, _frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)  # unwinds through the finally that stops everything

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGHUP, on_term)
    return 0 if run(args) else 1


if __name__ == "__main__":
    sys.exit(main())
