"""The status read at fleet scale: 200 and 1,000 simulated workers (bench/fleet_simulator.py) on a
private redis-server, beside Celery's own ping and inspect on the same fleet.

For each fleet size, with a fresh redis-server, simulator process and gunicorn (``dojo.wsgi``, 1
process, 4 threads, DD_CELERY_STATUS_CACHE_SECONDS=60):

- uncached status: ``GET /api/v2/celery/status/?refresh=1`` through gunicorn (one broker read and
  one round of control commands per request), p50/p95; every response is checked (200, N workers,
  stats for every one, task counts known and equal to what the simulator holds);
- cached status: ``GET /api/v2/celery/status/`` (from Django's cache), p50;
- the document: bytes of the API's JSON answer and of the pickled CeleryStatus (what the cache
  stores), and the web process's RSS (VmRSS of the gunicorn worker) after the reads;
- from this process, on the same fleet: ``app.control.ping(limit=N)`` and
  ``app.control.inspect(limit=N).stats()`` (Celery client, timeout 10 s, stops at N replies), and
  with ``--dojo-fraction 1`` Celery's own ``broadcast("dojo_status", limit=N)``: the same replies
  the status read drains, so the floor the simulator's reply rate sets for it;
- in process (``read_status()`` called here, Django set up against the same broker): p50 and where
  its time goes (bound_workers, queue depths, publish, drain, describe), the number of replies a
  round drains, and pickling/caching the document.

Ratios printed: uncached status / ping(limit=N) (target <= 1.5) and / inspect().stats(limit=N).
The simulator, redis-server, gunicorn and this client share the machine's cores, so the absolute
figures include the simulated fleet's own cost of answering (all its replies come from one process).

At 1,000 workers with the default 2 s broker bound the first read of a fresh web process (six built-in
commands to every worker: 6,000 replies) does not finish in time on a 2-core machine, and its late
replies then fill the next rounds; `--broker-timeout 5` measures the steady state.

Usage: python bench/status_scale.py [--workers 200 1000] [--requests 30] [--dojo-fraction 0.5]
       [--broker-timeout 2]
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import http.client
import json
import math
import os
import pickle
import pstats
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from celery import Celery

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ is not a package
from status_latency import HTTP_TIMEOUT, ROOT, STATUS_PATH, Series, Started, base_env, start_redis, start_web, tail

REFRESH_PATH = f"{STATUS_PATH}?refresh=1"
TARGET_RATIO = 1.5
CLIENT_TIMEOUT = 10.0  # ping/inspect stop at N replies long before this


@dataclass
class Figures:
    workers: int
    uncached: Series
    cached: Series
    ping: Series
    stats: Series
    in_process: Series
    status_broadcast: Series = field(default_factory=lambda: Series(""))
    json_bytes: int = 0
    pickle_bytes: int = 0
    pickle_ms: float = math.nan
    unpickle_ms: float = math.nan
    cache_set_ms: float = math.nan
    cache_get_ms: float = math.nan
    rss_before_kb: int = 0
    rss_after_kb: int = 0
    replies_per_round: int = 0
    reply_bytes_per_round: int = 0
    broadcasts_per_round: int = 0
    broadcast_bytes_per_round: int = 0
    breakdown: dict[str, float] = field(default_factory=dict)  # ms per read, by part


class Checked:
    """GETs on one keep-alive connection; a response counts only when it describes the whole fleet."""

    def __init__(self, port: int, key: str, expected: dict[str, int]) -> None:
        self.headers = {"Authorization": f"Token {key}", "Connection": "keep-alive"}
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=HTTP_TIMEOUT)
        self.expected = expected
        self.last_body = b""

    def get(self, path: str) -> tuple[bool, str]:
        try:
            self.conn.request("GET", path, headers=self.headers)
            response = self.conn.getresponse()
            body = response.read()
        except (OSError, http.client.HTTPException) as exc:
            self.conn.close()
            return False, f"{type(exc).__name__}: {exc}"
        if response.status != 200:
            return False, f"HTTP {response.status}: {body[:200]!r}"
        self.last_body = body
        status = json.loads(body)
        if status.get("workers") != self.expected["workers"]:
            return False, f"workers == {status.get('workers')}, expected {self.expected['workers']}"
        if any(stats is None for stats in status.get("worker_stats", {}).values()):
            return False, "a worker without stats"
        for kind in ("active", "reserved", "scheduled"):
            if status.get(f"{kind}_tasks") != self.expected[kind]:
                return False, f"{kind}_tasks == {status.get(f'{kind}_tasks')}, expected {self.expected[kind]}"
        return True, ""

    def close(self) -> None:
        self.conn.close()


def timed(name: str, call: Callable[[], tuple[bool, str]], count: int, budget: float) -> Series:
    series = Series(name)
    deadline = time.monotonic() + budget
    for _ in range(count):
        if time.monotonic() > deadline:
            series.note = f"stopped after {len(series.times_ms)} calls: budget of {budget:.0f} s spent"
            break
        began = time.perf_counter()
        ok, reason = call()
        series.times_ms.append((time.perf_counter() - began) * 1000)
        if not ok:
            series.failures += 1
            if series.failures <= 3:
                print(f"  {name} failure: {reason}", file=sys.stderr)
    return series


def rss_kb(pid: int) -> int:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def web_worker_pid(master: int) -> int:
    """The gunicorn worker (the master's one child) that serves the requests."""
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    return int(children[0]) if children else master


def start_fleet(started: Started, broker: str, workers: int, fraction: float, workdir: Path) -> dict[str, int]:
    """The simulator in its own process; what it holds (workers and task counts) once it is ready."""
    log = workdir / "fleet.log"
    args = [sys.executable, str(ROOT / "bench" / "fleet_simulator.py"), "--workers", str(workers)]
    args += ["--broker", broker, "--dojo-fraction", str(fraction)]
    proc = started.spawn("fleet simulator", args, dict(os.environ), log)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the fleet simulator exited with {proc.returncode}:\n{tail(log)}")
        for line in log.read_text(errors="replace").splitlines():
            if line.startswith("ready:"):
                print(f"  {line}")
                # "..., 1365 active / 1016 reserved / 508 scheduled tasks, ..."
                counts = line.split(" connections, ", 1)[1].split(" tasks", 1)[0].split(" / ")
                active, reserved, scheduled = (int(part.split()[0]) for part in counts)
                return {"workers": workers, "active": active, "reserved": reserved, "scheduled": scheduled}
        time.sleep(0.2)
    raise TimeoutError(f"the fleet simulator was not ready in 120 s:\n{tail(log)}")


def client_series(broker: str, workers: int, count: int, all_speak: bool) -> tuple[Series, Series, Series]:
    """ping, stats and, when every simulated worker speaks it, Celery's own broadcast of dojo_status
    (the same replies the status read drains: the floor the simulator sets for it)."""
    client = Celery("bench-client", broker=broker)
    try:

        def status_broadcast() -> tuple[bool, str]:
            replies = client.control.broadcast("dojo_status", reply=True, timeout=CLIENT_TIMEOUT, limit=workers) or []
            return (len(replies) == workers, f"{len(replies)} replies")

        def ping() -> tuple[bool, str]:
            replies = client.control.ping(timeout=CLIENT_TIMEOUT, limit=workers) or []
            return (len(replies) == workers, f"{len(replies)} replies")

        def stats() -> tuple[bool, str]:
            replies = client.control.inspect(timeout=CLIENT_TIMEOUT, limit=workers).stats() or {}
            return (len(replies) == workers, f"{len(replies)} replies")

        timed("warm-up ping", ping, 2, 60)
        return (
            timed(f"control.ping(limit={workers})", ping, count, count * 12.0),
            timed(f"inspect(limit={workers}).stats()", stats, count, count * 12.0),
            timed(f"broadcast(dojo_status, limit={workers})", status_broadcast, count, count * 12.0)
            if all_speak
            else Series(""),
        )
    finally:
        client.close()


def in_process(figures: Figures, count: int) -> None:
    """read_status() in this process (a child started by `measure_in_process` with the bench's
    environment), its parts timed by wrapping the module functions it calls (no change to
    dojo/), then the document pickled and cached as the status cache does."""
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dojo.settings.settings")
    django.setup()
    from django.core.cache import cache

    from dojo.ops.brokers import registry
    from dojo.ops.fleet import mailbox, status

    cache.clear()  # a fresh web process: the first read learns the speakers
    totals: dict[str, float] = {}
    replies = [0, 0]  # reply messages, their JSON bytes

    def wrap(owner: Any, name: str, part: str) -> Callable[[], None]:
        original = getattr(owner, name)

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            began = time.perf_counter()
            try:
                result = original(*args, **kwargs)
            finally:
                totals[part] = totals.get(part, 0.0) + time.perf_counter() - began
            if name == "_drain":
                replies[0] += sum(len(bodies) for bodies in result.values())
                replies[1] += sum(len(json.dumps(body)) for bodies in result.values() for body in bodies)
            return result

        setattr(owner, name, wrapper)
        return lambda: setattr(owner, name, original)

    broker = registry.get_broker()
    undo = [
        wrap(type(broker.transport), "bound_workers", "bound_workers"),
        wrap(type(broker.transport), "depths", "queue depths"),
        wrap(mailbox, "_round", "round"),
        wrap(mailbox, "_drain", "drain"),
        wrap(mailbox, "_described", "describe"),
        wrap(status, "query_workers", "query_workers"),
        wrap(status, "worker_loads", "worker_loads"),
    ]
    try:
        status.read_status()  # learns who speaks dojo_status
        totals.clear()
        replies[0] = replies[1] = 0
        last = None

        def read() -> tuple[bool, str]:
            nonlocal last
            last = status.read_status()
            return (last.workers == figures.workers, f"{last.workers} workers")

        figures.in_process = timed("read_status() in process", read, count, count * 10.0)
    finally:
        for restore in undo:
            restore()
    reads = max(1, len(figures.in_process.times_ms))
    per_read = {part: seconds * 1000 / reads for part, seconds in totals.items()}
    per_read["publish (round - drain - describe)"] = (
        per_read.get("round", 0) - per_read.get("drain", 0) - per_read.get("describe", 0)
    )
    per_read["read_status total (p50)"] = figures.in_process.percentile(50)
    figures.breakdown = per_read
    figures.replies_per_round = replies[0] // reads
    figures.reply_bytes_per_round = replies[1] // reads
    if last is None:
        return
    broadcast_bytes(figures, broker.broker_url, lambda: status.read_status())
    with cProfile.Profile() as profile:
        status.read_status()
    stats = pstats.Stats(profile)
    stats.sort_stats("tottime")
    print("  top functions of one read_status() by own time:")
    for (filename, line, function), (_cc, calls, own, cumulative, _callers) in sorted(
        stats.stats.items(), key=lambda item: -item[1][2]
    )[:8]:
        where = f"{Path(filename).parent.name}/{Path(filename).name}:{line}({function})"
        print(f"    {own * 1000:7.1f} ms own {cumulative * 1000:7.1f} ms cum {calls:7d} calls  {where}")
    began = time.perf_counter()
    blob = pickle.dumps(last, pickle.HIGHEST_PROTOCOL)
    figures.pickle_ms = (time.perf_counter() - began) * 1000
    figures.pickle_bytes = len(blob)
    began = time.perf_counter()
    pickle.loads(blob)  # noqa: S301 - our own document
    figures.unpickle_ms = (time.perf_counter() - began) * 1000
    began = time.perf_counter()
    cache.set("bench.status", last, 60)
    figures.cache_set_ms = (time.perf_counter() - began) * 1000
    began = time.perf_counter()
    cache.get("bench.status")
    figures.cache_get_ms = (time.perf_counter() - began) * 1000


IN_PROCESS_FIELDS = (
    "pickle_bytes",
    "pickle_ms",
    "unpickle_ms",
    "cache_set_ms",
    "cache_get_ms",
    "replies_per_round",
    "reply_bytes_per_round",
    "broadcasts_per_round",
    "broadcast_bytes_per_round",
    "breakdown",
)


def broadcast_bytes(figures: Figures, broker_url: str, read: Callable[[], object]) -> None:
    """The control messages one read publishes on Redis: Redis sends each of them to every
    worker's subscription."""
    messages = published_control_messages(broker_url, read)
    figures.broadcasts_per_round, figures.broadcast_bytes_per_round = len(messages), sum(map(len, messages))


def published_control_messages(broker_url: str, read: Callable[[], object]) -> list[bytes]:
    """The control messages (kombu envelopes) `read()` publishes on Redis, as a subscriber of the
    pidbox fanout topic receives them."""
    import redis

    client = redis.Redis.from_url(broker_url)
    pubsub = client.pubsub()
    pubsub.psubscribe("/*.celery.pidbox*")
    while pubsub.get_message(timeout=0.5) is not None:  # the subscribe confirmation
        pass
    read()
    messages = []
    while (message := pubsub.get_message(timeout=0.5)) is not None:
        if message["type"] == "pmessage":
            messages.append(message["data"])
    pubsub.close()
    client.close()
    return messages


def measure_in_process(figures: Figures, env: dict[str, str], count: int) -> None:
    """Run `in_process` in a child with the bench's environment (Django reads its settings once)."""
    args = [sys.executable, __file__, "--in-process", str(figures.workers), str(count)]
    done = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False)
    lines = done.stdout.splitlines()
    result = [line for line in lines if line.startswith("RESULT ")]
    if done.returncode != 0 or not result:
        raise RuntimeError(f"the in-process measure failed ({done.returncode}):\n{done.stderr[-3000:]}")
    print("\n".join(line for line in lines if not line.startswith("RESULT ")))
    found = json.loads(result[-1].removeprefix("RESULT "))
    figures.in_process = Series(found["name"], found["times_ms"], found["failures"], found["note"])
    for name in IN_PROCESS_FIELDS:
        setattr(figures, name, found[name])


def in_process_child(workers: int, count: int) -> int:
    figures = Figures(workers, Series(""), Series(""), Series(""), Series(""), Series(""))
    in_process(figures, count)
    series = figures.in_process
    found = {name: getattr(figures, name) for name in IN_PROCESS_FIELDS}
    found.update(name=series.name, times_ms=series.times_ms, failures=series.failures, note=series.note)
    print("RESULT " + json.dumps(found))
    return 0


def run_size(workers: int, requests: int, fraction: float, broker_timeout: float) -> Figures:
    started = Started()
    try:
        workdir = Path(tempfile.mkdtemp(prefix="dojo-bench-scale-"))
        started.dirs.append(workdir)
        t0 = time.monotonic()
        redis_port = start_redis(started, workdir)
        env = base_env(redis_port, workdir / "bench.sqlite3")
        env.update(DD_CELERY_STATUS_CACHE_SECONDS="60", DD_CELERY_BROKER_TIMEOUT=str(broker_timeout))
        broker = env["DD_CELERY_BROKER_URL"]
        print(f"{workers} workers: redis-server on 127.0.0.1:{redis_port}")
        expected = start_fleet(started, broker, workers, fraction, workdir)
        web_port, key = start_web(started, env, workdir)
        web_pid = web_worker_pid(started.procs[-1][1].pid)
        print(f"  gunicorn on 127.0.0.1:{web_port} ({time.monotonic() - t0:.1f} s)")
        figures = Figures(workers, Series(""), Series(""), Series(""), Series(""), Series(""))
        figures.rss_before_kb = rss_kb(web_pid)
        client = Checked(web_port, key, expected)
        try:
            timed("warm-up", lambda: client.get(REFRESH_PATH), 3, 60)  # the first read learns the speakers
            figures.uncached = timed("GET status ?refresh=1", lambda: client.get(REFRESH_PATH), requests, requests * 6)
            figures.json_bytes = len(client.last_body)
            figures.cached = timed("GET status (cached)", lambda: client.get(STATUS_PATH), requests, requests * 2)
        finally:
            client.close()
        figures.rss_after_kb = rss_kb(web_pid)
        figures.ping, figures.stats, figures.status_broadcast = client_series(
            broker, workers, max(5, requests // 2), fraction >= 1.0
        )
        measure_in_process(figures, env, max(5, requests // 2))
        return figures
    finally:
        started.stop_all()


def report(all_figures: list[Figures]) -> bool:
    met = True
    for fig in all_figures:
        print()
        print(f"== {fig.workers} simulated workers ==")
        print(f"{'measure':<40} {'n':>4} {'fail':>4} {'p50 ms':>9} {'p95 ms':>9} {'max ms':>9}")
        for series in (fig.uncached, fig.cached, fig.in_process, fig.ping, fig.stats, fig.status_broadcast):
            if not series.name:
                continue
            print(
                f"{series.name:<40} {len(series.times_ms):>4} {series.failures:>4} {series.percentile(50):>9.1f} "
                f"{series.percentile(95):>9.1f} {series.percentile(100):>9.1f}"
            )
            if series.note:
                print(f"  note: {series.note}")
        print(f"document: API JSON {fig.json_bytes:,} bytes; pickled CeleryStatus {fig.pickle_bytes:,} bytes")
        print(
            f"pickle {fig.pickle_ms:.1f} ms, unpickle {fig.unpickle_ms:.1f} ms, "
            f"locmem cache set {fig.cache_set_ms:.1f} ms / get {fig.cache_get_ms:.1f} ms"
        )
        print(f"web process RSS: {fig.rss_before_kb / 1024:.1f} MiB before, {fig.rss_after_kb / 1024:.1f} MiB after")
        print(
            f"per round (in process): {fig.replies_per_round} replies drained ({fig.reply_bytes_per_round:,} bytes "
            f"of JSON bodies); {fig.broadcasts_per_round} control messages published, "
            f"{fig.broadcast_bytes_per_round:,} bytes, which Redis sends to every worker's subscription "
            f"({fig.broadcast_bytes_per_round * fig.workers / 1e6:.1f} MB per read for a real fleet of {fig.workers})"
        )
        print("where read_status() spends its time (ms per read, in process):")
        for part, ms in fig.breakdown.items():
            print(f"  {part:<38} {ms:8.1f}")
        ratio_ping = fig.uncached.percentile(50) / fig.ping.percentile(50)
        ratio_stats = fig.uncached.percentile(50) / fig.stats.percentile(50)
        print(
            f"ratio p50 uncached status / ping(limit=N): {ratio_ping:.2f}x; "
            f"/ inspect().stats(limit=N): {ratio_stats:.2f}x"
        )
        if fig.status_broadcast.times_ms:
            print(
                f"ratio p50 uncached status / broadcast(dojo_status): "
                f"{fig.uncached.percentile(50) / fig.status_broadcast.percentile(50):.2f}x; "
                f"in process {fig.in_process.percentile(50) / fig.status_broadcast.percentile(50):.2f}x"
            )
        ok = ratio_ping <= TARGET_RATIO and not fig.uncached.failures
        met = met and ok
        print(
            f"target uncached status <= {TARGET_RATIO:g} x ping(limit=N), no failed read: {'MET' if ok else 'NOT MET'}"
        )
    return met


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--workers", type=int, nargs="+", default=[200, 1000], help="fleet sizes (default 200 1000)")
    parser.add_argument("--requests", type=int, default=30, help="measured status requests per size (default 30)")
    parser.add_argument("--dojo-fraction", type=float, default=0.5, help="share of nodes that speak dojo_status")
    parser.add_argument("--broker-timeout", type=float, default=2.0, help="DD_CELERY_BROKER_TIMEOUT (default 2)")
    parser.add_argument("--in-process", type=int, nargs=2, metavar=("WORKERS", "COUNT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.in_process:
        return in_process_child(*args.in_process)
    if args.requests < 1 or min(args.workers) < 1 or not 0 <= args.dojo_fraction <= 1:
        parser.error("--requests and --workers must be at least 1, --dojo-fraction within 0..1")

    def on_term(signum: int, _frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGHUP, on_term)
    print(f"DD_CELERY_BROKER_TIMEOUT={args.broker_timeout:g} s, dojo_status fraction {args.dojo_fraction:g}")
    figures = [run_size(n, args.requests, args.dojo_fraction, args.broker_timeout) for n in args.workers]
    return 0 if report(figures) else 1


if __name__ == "__main__":
    sys.exit(main())
