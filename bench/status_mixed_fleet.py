"""What a mixed fleet costs the status read: GET /api/v2/celery/status/?refresh=1 against 8 project
workers, and against 4 project workers beside 4 workers that run none of the project's code.

What it measures, against a real gunicorn (``dojo.wsgi``, 1 process, 4 threads) on a private
redis-server, uncached (DD_CELERY_STATUS_CACHE_SECONDS=0 and ``?refresh=1``: one broker read and
one round of control commands per request), on two fleets, each with its own redis-server,
workers and web server so that nothing of one (cached speakers, stale bindings) reaches the other:

1. project only: 8 ``celery -A dojo worker`` processes; each answers the one ``dojo_status``
   command (today's figure);
2. mixed: 4 project workers and 4 ``celery -A plain_app worker`` processes
   (unittests/plain_fleet/plain_app.py, which imports nothing of the project); the plain ones are
   sent the six built-in inspect commands instead, all published at once and drained in one go.

Both fleets run at once and the requests alternate between them (one to each in turn), so that
whatever else the machine does weighs on both alike.

Every -c 1, prefork. Each response is checked: 200, 8 workers, stats for every worker, and task
counts known (no worker left a command unanswered). Target: p50(mixed) <= 2 x p50(project only).

`--plain-python` runs the plain workers with another interpreter, e.g. an older Celery's venv made
by the tests (var/test-venvs/celery-5.5/bin/python). The start-up helpers come from
bench/status_latency.py; everything runs on 127.0.0.1 in temporary directories, and every process
the script starts is stopped (its whole process group) when it ends, however it ends.

Usage: python bench/status_mixed_fleet.py [--requests 200] [--workers 8] [--plain-python PATH]
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from celery import Celery
from celery import __version__ as celery_version

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ is not a package
from status_latency import (
    HTTP_TIMEOUT,
    ROOT,
    STATUS_PATH,
    WARMUP_REQUESTS,
    Series,
    Started,
    base_env,
    measure,
    ping_names,
    start_redis,
    start_web,
    tail,
    wait_for,
)

PLAIN_FLEET = ROOT / "unittests" / "plain_fleet"
REFRESH_PATH = f"{STATUS_PATH}?refresh=1"
TARGET_RATIO = 2.0


class CheckedClient:
    """GET ?refresh=1 on one keep-alive connection; a response counts only when it describes the
    whole fleet (every worker with its stats, every task count known)."""

    def __init__(self, port: int, key: str) -> None:
        self.headers = {"Authorization": f"Token {key}", "Connection": "keep-alive"}
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=HTTP_TIMEOUT)

    def get(self, workers: int) -> tuple[bool, str]:
        try:
            self.conn.request("GET", REFRESH_PATH, headers=self.headers)
            response = self.conn.getresponse()
            body = response.read()
        except (OSError, http.client.HTTPException) as exc:
            self.conn.close()  # the next request opens a new connection
            return False, f"{type(exc).__name__}: {exc}"
        if response.status != 200:
            return False, f"HTTP {response.status}: {body[:200]!r}"
        try:
            status = json.loads(body)
        except ValueError:
            return False, f"not JSON: {body[:200]!r}"
        if status.get("workers") != workers:
            return False, f"workers == {status.get('workers')}, expected {workers}"
        missing = sorted(name for name, stats in status.get("worker_stats", {}).items() if stats is None)
        if missing or len(status.get("worker_stats", {})) != workers:
            return False, f"no stats for {missing or 'some workers'}"
        unknown = [key for key in ("active_tasks", "reserved_tasks", "scheduled_tasks") if status.get(key) is None]
        return (False, f"unknown: {', '.join(unknown)}") if unknown else (True, "")

    def close(self) -> None:
        self.conn.close()


def start_fleet(
    started: Started, env: dict[str, str], project: int, plain: int, plain_python: str, workdir: Path
) -> None:
    """Start `project` project workers and `plain` plain ones (-c 1 each); wait until all answer a ping."""
    common = ["worker", "-c", "1", "-P", "prefork", "--without-mingle", "--without-gossip", "-l", "warning"]
    plain_env = {k: v for k, v in os.environ.items() if not k.startswith(("DD_", "DJANGO"))}
    plain_env.update(
        PLAIN_BROKER_URL=env["DD_CELERY_BROKER_URL"],
        PLAIN_RESULT_BACKEND=env["DD_CELERY_RESULT_BACKEND"],
        PYTHONPATH=str(PLAIN_FLEET),
    )
    procs: list[tuple[str, subprocess.Popen[bytes], Path]] = []
    for kind, count, python, app, child_env in (
        ("own", project, sys.executable, "dojo", env),
        ("plain", plain, plain_python, "plain_app", plain_env),
    ):
        for index in range(1, count + 1):
            name = f"{kind}{index}"
            log = workdir / f"worker-{name}.log"
            args = [python, "-m", "celery", "-A", app, *common, "-n", f"{name}@%h"]
            procs.append((name, started.spawn(f"worker {name}", args, child_env, log), log))
    client = Celery("bench-client", broker=env["DD_CELERY_BROKER_URL"])

    def all_answer() -> bool:
        for name, proc, log in procs:
            if proc.poll() is not None:
                raise RuntimeError(f"worker {name} exited with {proc.returncode}:\n{tail(log)}")
        return len(ping_names(client, timeout=1)) >= project + plain

    try:
        wait_for(all_answer, 120, f"{project + plain} workers to answer a ping")
    finally:
        client.close()


def plain_celery_version(python: str) -> str:
    done = subprocess.run(
        [python, "-c", "import celery; print(celery.__version__)"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout.strip()


@dataclass
class Stack:
    """One fleet with its own redis-server, workers and gunicorn, and a client of its web server."""

    name: str
    workers: int
    client: CheckedClient
    series: Series


def start_stack(started: Started, name: str, project: int, plain: int, plain_python: str) -> Stack:
    t0 = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="dojo-bench-mixed-"))
    started.dirs.append(workdir)
    redis_port = start_redis(started, workdir)
    env = base_env(redis_port, workdir / "bench.sqlite3")
    start_fleet(started, env, project, plain, plain_python, workdir)
    web_port, key = start_web(started, env, workdir)
    print(
        f"{name}: redis-server on 127.0.0.1:{redis_port}, {project} project + {plain} plain workers answer, "
        f"gunicorn on 127.0.0.1:{web_port} ({time.monotonic() - t0:.1f} s)"
    )
    return Stack(name, project + plain, CheckedClient(web_port, key), Series(name))


def run(requests: int, workers: int, plain_python: str) -> tuple[Series, Series]:
    """Both stacks at once, their requests interleaved (one to each in turn), so that whatever
    else the machine does weighs on both alike."""
    started = Started()
    stacks: list[Stack] = []
    half = workers // 2
    try:
        stacks.append(start_stack(started, f"{workers} project workers", workers, 0, plain_python))
        stacks.append(start_stack(started, f"{half} project + {half} plain workers", half, half, plain_python))
        for stack in stacks:
            warm = measure("warm-up", lambda stack=stack: stack.client.get(stack.workers), WARMUP_REQUESTS, 60)
            if warm.failures == len(warm.times_ms):
                raise RuntimeError(f"{stack.name}: every warm-up request failed; see the messages above")
        deadline = time.monotonic() + max(120.0, requests * 1.0)
        for _ in range(requests):
            if time.monotonic() > deadline:
                for stack in stacks:
                    stack.series.note = f"stopped after {len(stack.series.times_ms)} requests: time budget spent"
                break
            for stack in stacks:
                begin = time.perf_counter()
                ok, reason = stack.client.get(stack.workers)
                stack.series.times_ms.append((time.perf_counter() - begin) * 1000)
                if not ok:
                    stack.series.failures += 1
                    if stack.series.failures <= 3:
                        print(f"  {stack.name} failure: {reason}", file=sys.stderr)
        return stacks[0].series, stacks[1].series
    finally:
        for stack in stacks:
            stack.client.close()
        started.stop_all()


def report(project_only: Series, mixed: Series) -> bool:
    print()
    print(f"{'measure (GET ?refresh=1, uncached)':<44} {'n':>5} {'fail':>5} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}")
    for series in (project_only, mixed):
        print(
            f"{series.name:<44} {len(series.times_ms):>5} {series.failures:>5} {series.percentile(50):>8.1f} "
            f"{series.percentile(95):>8.1f} {series.percentile(100):>8.1f}"
        )
        if series.note:
            print(f"  note: {series.note}")
    ratio50 = mixed.percentile(50) / project_only.percentile(50) if project_only.times_ms else math.nan
    ratio95 = mixed.percentile(95) / project_only.percentile(95) if project_only.times_ms else math.nan
    print(f"ratio mixed / project only: p50 {ratio50:.2f}x, p95 {ratio95:.2f}x")
    met = ratio50 <= TARGET_RATIO and not (project_only.failures or mixed.failures or project_only.note or mixed.note)
    verdict = "MET" if met else "NOT MET"
    print(f"target p50(mixed) <= {TARGET_RATIO:g} x p50(project only), no failed request: {verdict}")
    return met


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=200, help="measured requests per phase (default 200)")
    parser.add_argument("--workers", type=int, default=8, help="workers per phase, even; half plain when mixed")
    parser.add_argument("--plain-python", default=sys.executable, help="the plain workers' python (default: this)")
    args = parser.parse_args(argv)
    if args.requests < 1 or args.workers < 2 or args.workers % 2:
        parser.error("--requests must be at least 1, --workers an even number of at least 2")

    def on_term(signum: int, _frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)  # unwinds through the finally that stops everything

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGHUP, on_term)
    print(f"project workers: Celery {celery_version}; plain workers: Celery {plain_celery_version(args.plain_python)}")
    project_only, mixed = run(args.requests, args.workers, args.plain_python)
    return 0 if report(project_only, mixed) else 1


if __name__ == "__main__":
    sys.exit(main())
