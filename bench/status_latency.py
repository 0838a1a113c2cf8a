"""Latency of GET /api/v2/celery/status/ against real workers, compared with a fixed-timeout ping.

What it measures: the wall-clock time, seen by an HTTP client on a keep-alive
connection, of ``GET /api/v2/celery/status/`` served by a real gunicorn process
(``dojo.wsgi``) while N real ``celery -A dojo worker`` processes listen on a private
redis-server; and, for comparison, the time of Celery's own
``Celery(broker=...).control.ping(timeout=1)`` against the same workers.

Why: the status view (``dojo.ops.fleet.status_cache.get_status``) pings the workers but stops
as soon as every live worker has answered, instead of always waiting for the full
timeout as ``control.ping`` does. The page that shows the status must stay fast,
so the target is a median (p50) of at most 50 ms with every worker counted; the
ratio p50(ping) / p50(status) shows what the early stop saves.

Everything runs on 127.0.0.1, in temporary directories, and every process the
script starts is stopped (its whole process group) when it ends, however it ends.

Usage: python bench/status_latency.py [--requests 200] [--workers 4] [--pings 20]
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import math
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from celery import Celery

ROOT = Path(__file__).resolve().parent.parent
STATUS_PATH = "/api/v2/celery/status/"
WARMUP_REQUESTS = 10
TARGET_P50_MS = 50.0
HTTP_TIMEOUT = 10.0  # seconds, per request
TOKEN_SCRIPT = (
    "from django.contrib.auth.models import User\n"
    "from rest_framework.authtoken.models import Token\n"
    "user = User.objects.create_superuser('bench', 'bench@example.invalid', None)\n"
    "print(Token.objects.create(user=user).key)\n"
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.2) -> None:
    """Call `predicate` until it is true; bounded by `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


def tail(path: Path, chars: int = 2000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return "(no log)"


@dataclass
class Started:
    """The processes and directories this script started, stopped and removed in reverse order."""

    procs: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)
    dirs: list[Path] = field(default_factory=list)

    def spawn(self, name: str, args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
        """Start `args` in its own process group (session), output to `log`."""
        with log.open("wb") as out:  # the child keeps its own copy of the descriptor
            proc = subprocess.Popen(
                args,
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.procs.append((name, proc))
        return proc

    def stop_all(self, grace: float = 10.0) -> None:
        for _name, proc in reversed(self.procs):
            if proc.poll() is None:
                _signal_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for _name, proc in reversed(self.procs):
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(max(0.1, deadline - time.monotonic()))
            # Kill the whole group even if the leader exited: prefork children may linger.
            _signal_group(proc, signal.SIGKILL)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                print(f"warning: process {proc.pid} did not exit", file=sys.stderr)
        self.procs.clear()
        for path in reversed(self.dirs):
            shutil.rmtree(path, ignore_errors=True)
        self.dirs.clear()


def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)  # pid == pgid: started with start_new_session


def base_env(redis_port: int, database: Path) -> dict[str, str]:
    """The environment of every child: this one without any DD_ variable, plus the bench's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DD_")}
    env.update(
        DD_CELERY_BROKER_URL=f"redis://127.0.0.1:{redis_port}/0",
        DD_CELERY_RESULT_BACKEND=f"redis://127.0.0.1:{redis_port}/1",
        DD_DATABASE_URL=f"sqlite:///{database}",
        DD_ALLOWED_HOSTS="127.0.0.1",
        DD_SECRET_KEY=secrets.token_urlsafe(50),  # the web server refuses the development key
        # Every request reads the broker and the workers (no cache), and none is throttled.
        DD_CELERY_STATUS_CACHE_SECONDS="0",
        DD_CELERY_API_THROTTLE_RATE="1000000/s",
        PYTHONPATH=str(ROOT),
    )
    return env


def start_redis(started: Started, workdir: Path) -> int:
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed")
    port = free_port()
    log = workdir / "redis.log"
    args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    args += ["--dir", str(workdir)]
    proc = started.spawn("redis-server", args, dict(os.environ), log)

    def answers() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"redis-server exited:\n{tail(log)}")
        with socket.socket() as sock:
            sock.settimeout(1)
            return sock.connect_ex(("127.0.0.1", port)) == 0

    wait_for(answers, 10, "redis-server", interval=0.05)
    return port


def ping_names(client: Celery, timeout: float) -> list[str]:
    """Names of the workers that answered Celery's own fixed-timeout ping."""
    replies = client.control.ping(timeout=timeout) or []
    return sorted(name for reply in replies for name in reply)


def start_workers(started: Started, env: dict[str, str], count: int, workdir: Path) -> None:
    procs: list[tuple[str, subprocess.Popen[bytes], Path]] = []
    for index in range(1, count + 1):
        name = f"b{index}"
        log = workdir / f"worker-{name}.log"
        args = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "dojo",
            "worker",
            "-n",
            f"{name}@%h",
            "-c",
            "1",
            "-P",
            "prefork",
            "--without-mingle",
            "--without-gossip",
            "-l",
            "warning",
        ]
        procs.append((name, started.spawn(f"worker {name}", args, env, log), log))

    client = Celery("bench-client", broker=env["DD_CELERY_BROKER_URL"])

    def all_answer() -> bool:
        for name, proc, log in procs:
            if proc.poll() is not None:
                raise RuntimeError(f"worker {name} exited with {proc.returncode}:\n{tail(log)}")
        return len(ping_names(client, timeout=1)) >= count

    try:
        wait_for(all_answer, 90, f"{count} workers to answer a ping")
    finally:
        client.close()


def manage(env: dict[str, str], *args: str, timeout: float = 120) -> str:
    """Run `python manage.py ARGS` to completion; returns its stdout."""
    done = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        start_new_session=True,
    )
    if done.returncode != 0:
        raise RuntimeError(f"manage.py {args[0]} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return done.stdout


def start_web(started: Started, env: dict[str, str], workdir: Path) -> tuple[int, str]:
    """Migrate, create a superuser token, start gunicorn; returns its port and the token key."""
    manage(env, "migrate", "--noinput", "-v", "0")
    lines = manage(env, "shell", "-c", TOKEN_SCRIPT).strip().splitlines()
    if not lines:
        raise RuntimeError("manage.py shell printed no token")
    key = lines[-1].strip()
    port = free_port()
    log = workdir / "gunicorn.log"
    args = [
        sys.executable,
        "-m",
        "gunicorn",
        "dojo.wsgi:application",
        "-b",
        f"127.0.0.1:{port}",
        "-w",
        "1",
        "--threads",
        "4",
        "--error-logfile",
        "-",
    ]
    proc = started.spawn("gunicorn", args, env, log)

    def answers() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"gunicorn exited with {proc.returncode}:\n{tail(log)}")
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        try:
            conn.request("GET", STATUS_PATH, headers={"Authorization": f"Token {key}"})
            conn.getresponse().read()
            return True
        except OSError:
            return False
        finally:
            conn.close()

    wait_for(answers, 60, "gunicorn to answer")
    return port, key


@dataclass
class Series:
    name: str
    times_ms: list[float] = field(default_factory=list)
    failures: int = 0
    note: str = ""

    def percentile(self, pct: float) -> float:
        """Nearest-rank percentile in ms; NaN when there are no samples."""
        if not self.times_ms:
            return math.nan
        ordered = sorted(self.times_ms)
        return ordered[max(0, math.ceil(pct / 100 * len(ordered)) - 1)]


class StatusClient:
    """GET the status on one keep-alive connection; reconnects only after an error."""

    def __init__(self, port: int, key: str) -> None:
        self.port = port
        self.headers = {"Authorization": f"Token {key}", "Connection": "keep-alive"}
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=HTTP_TIMEOUT)

    def get(self, workers: int) -> tuple[bool, str]:
        """One request; True when it answered 200 with `workers` workers, else the reason."""
        try:
            self.conn.request("GET", STATUS_PATH, headers=self.headers)
            response = self.conn.getresponse()
            body = response.read()
        except (OSError, http.client.HTTPException) as exc:
            self.conn.close()  # the next request opens a new connection
            return False, f"{type(exc).__name__}: {exc}"
        if response.status != 200:
            return False, f"HTTP {response.status}: {body[:200]!r}"
        try:
            seen = json.loads(body).get("workers")
        except ValueError:
            return False, f"not JSON: {body[:200]!r}"
        if seen != workers:
            return False, f"workers == {seen}, expected {workers}"
        return True, ""

    def close(self) -> None:
        self.conn.close()


def measure(name: str, call: Callable[[], tuple[bool, str]], count: int, budget: float) -> Series:
    """Time `count` sequential calls of `call`; stops early when `budget` seconds are spent."""
    series = Series(name)
    deadline = time.monotonic() + budget
    for _ in range(count):
        if time.monotonic() > deadline:
            series.note = f"stopped after {len(series.times_ms)} calls: time budget of {budget:.0f} s spent"
            break
        start = time.perf_counter()
        ok, reason = call()
        series.times_ms.append((time.perf_counter() - start) * 1000)
        if not ok:
            series.failures += 1
            if series.failures <= 3:
                print(f"  {name} failure: {reason}", file=sys.stderr)
    return series


def report(status: Series, ping: Series) -> bool:
    """Print the table; True when the target is met and nothing failed."""
    print()
    print(f"{'measure':<36} {'n':>5} {'fail':>5} {'p50 ms':>9} {'p95 ms':>9} {'max ms':>9}")
    for series in (status, ping):
        print(
            f"{series.name:<36} {len(series.times_ms):>5} {series.failures:>5} "
            f"{series.percentile(50):>9.1f} {series.percentile(95):>9.1f} {series.percentile(100):>9.1f}"
        )
        if series.note:
            print(f"  note: {series.note}")
    ratio = ping.percentile(50) / status.percentile(50) if status.times_ms else math.nan
    print(f"ratio p50(ping) / p50(status): {ratio:.1f}x")
    met = status.percentile(50) <= TARGET_P50_MS and status.failures == 0 and not status.note
    verdict = "MET" if met else "NOT MET"
    p50 = status.percentile(50)
    print(f"target p50(status) <= {TARGET_P50_MS:.0f} ms with no failures: {verdict} (p50 = {p50:.1f} ms)")
    return met


def run(requests: int, workers: int, pings: int) -> bool:
    started = Started()
    try:
        workdir = Path(tempfile.mkdtemp(prefix="dojo-bench-"))
        started.dirs.append(workdir)
        t0 = time.monotonic()
        redis_port = start_redis(started, workdir)
        env = base_env(redis_port, workdir / "bench.sqlite3")
        start_workers(started, env, workers, workdir)
        print(f"redis-server on 127.0.0.1:{redis_port}, {workers} workers answer ({time.monotonic() - t0:.1f} s)")
        web_port, key = start_web(started, env, workdir)
        print(f"gunicorn on 127.0.0.1:{web_port} answers ({time.monotonic() - t0:.1f} s)")

        client = StatusClient(web_port, key)
        try:
            warm = measure("warm-up", lambda: client.get(workers), WARMUP_REQUESTS, budget=60)
            if warm.failures == len(warm.times_ms):
                raise RuntimeError("every warm-up request failed; see the messages above")
            status = measure(
                f"GET {STATUS_PATH}", lambda: client.get(workers), requests, budget=max(60.0, requests * 0.5)
            )
        finally:
            client.close()

        # One client for every call, as the HTTP side keeps one connection.
        ping_client = Celery("bench-client", broker=env["DD_CELERY_BROKER_URL"])

        def plain_ping() -> tuple[bool, str]:
            try:
                names = ping_names(ping_client, timeout=1)
            except Exception as exc:  # a broker error is a failed call, as on the HTTP side
                return False, f"{type(exc).__name__}: {exc}"
            return (True, "") if len(names) == workers else (False, f"{len(names)} workers answered")

        try:
            measure("warm-up ping", plain_ping, 1, budget=30)
            ping = measure("control.ping(timeout=1)", plain_ping, pings, budget=pings * 3.0 + 30)
        finally:
            ping_client.close()
        return report(status, ping)
    finally:
        started.stop_all()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=200, help="measured status requests (default 200)")
    parser.add_argument("--workers", type=int, default=4, help="celery workers to start (default 4)")
    parser.add_argument("--pings", type=int, default=20, help="measured control.ping calls (default 20)")
    args = parser.parse_args(argv)
    if args.requests < 1 or args.workers < 1 or args.pings < 1:
        parser.error("--requests, --workers and --pings must be at least 1")

    def on_term(signum: int, _frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)  # unwinds through the finally that stops everything

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGHUP, on_term)
    return 0 if run(args.requests, args.workers, args.pings) else 1


if __name__ == "__main__":
    sys.exit(main())
