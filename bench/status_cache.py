"""What the status cache saves: GET /api/v2/celery/status/ uncached and cached, and the broadcasts
the broker really sees while many clients ask at once.

What it measures, against a real gunicorn (``dojo.wsgi``, 1 process, 8 threads) and 8 real
``celery -A dojo worker`` processes on a private redis-server:

1. uncached status, ``GET /api/v2/celery/status/?refresh=1`` (one broker read and one
   ``dojo_status`` broadcast per request), target p50 <= 60 ms;
2. cached status, plain ``GET`` (answered from Django's cache, DD_CELERY_STATUS_CACHE_SECONDS),
   target p50 <= 10 ms;
3. 50 concurrent clients (threads, each with its own keep-alive connection) hammering the plain
   ``GET`` for 12 s: request throughput and latency, and the ``dojo_status`` broadcasts counted
   where the broker sees them. kombu's Redis transport sends a broadcast as a Redis ``PUBLISH``
   on the control exchange's channel; the script first finds that channel with ``PSUBSCRIBE *``
   and one refresh, then subscribes to it and decodes every message (a kombu message whose
   base64 body holds the command's ``method``). Target: at most one broadcast per cache period,
   i.e. at most ceil(12 / 5) + 1 in total.

The broadcast counter also runs during 1 and 2, which checks it: phase 1 must see exactly one
broadcast per request.

The API's throttle (DD_CELERY_API_THROTTLE_RATE, 120/min by default) is raised for the run so
that it does not answer 429; its bookkeeping still runs on every request.

Everything runs on 127.0.0.1, in temporary directories, and every process the script starts is
stopped (its whole process group) when it ends, however it ends. The helpers that start Redis,
the workers and Django come from bench/status_latency.py.

Usage: python bench/status_cache.py [--requests 200] [--workers 8] [--clients 50] [--seconds 12]
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import math
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from types import FrameType

import redis

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ is not a package
from status_latency import (
    HTTP_TIMEOUT,
    STATUS_PATH,
    TOKEN_SCRIPT,
    WARMUP_REQUESTS,
    Series,
    Started,
    base_env,
    free_port,
    manage,
    measure,
    start_redis,
    start_workers,
    tail,
    wait_for,
)

REFRESH_PATH = f"{STATUS_PATH}?refresh=1"
STATUS_METHOD = "dojo_status"
GUNICORN_THREADS = 8
TARGET_UNCACHED_P50_MS = 60.0
TARGET_CACHED_P50_MS = 10.0
THROTTLE_RATE = "1000000/s"  # high enough never to answer 429 here


def start_web(started: Started, env: dict[str, str], workdir: Path) -> tuple[int, str]:
    """Migrate, create a superuser token, start gunicorn with GUNICORN_THREADS threads; its port and the key."""
    manage(env, "migrate", "--noinput", "-v", "0")
    lines = manage(env, "shell", "-c", TOKEN_SCRIPT).strip().splitlines()
    if not lines:
        raise RuntimeError("manage.py shell printed no token")
    key = lines[-1].strip()
    port = free_port()
    log = workdir / "gunicorn.log"
    args = [sys.executable, "-m", "gunicorn", "dojo.wsgi:application", "-b", f"127.0.0.1:{port}"]
    args += ["-w", "1", "--threads", str(GUNICORN_THREADS), "--error-logfile", "-"]
    proc = started.spawn("gunicorn", args, env, log)
    client = Client(port, key)

    def answers() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"gunicorn exited with {proc.returncode}:\n{tail(log)}")
        return client.get(STATUS_PATH, workers=None)[0]

    try:
        wait_for(answers, 60, "gunicorn to answer")
    finally:
        client.close()
    return port, key


class Client:
    """GETs on one keep-alive connection; reconnects only after an error."""

    def __init__(self, port: int, key: str) -> None:
        self.headers = {"Authorization": f"Token {key}", "Connection": "keep-alive"}
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=HTTP_TIMEOUT)

    def get(self, path: str, workers: int | None) -> tuple[bool, str]:
        """One request; True when it answered 200 (with `workers` workers unless None), else the reason."""
        try:
            self.conn.request("GET", path, headers=self.headers)
            response = self.conn.getresponse()
            body = response.read()
        except (OSError, http.client.HTTPException) as exc:
            self.conn.close()  # the next request opens a new connection
            return False, f"{type(exc).__name__}: {exc}"
        if response.status != 200:
            return False, f"HTTP {response.status}: {body[:200]!r}"
        if workers is None:
            return True, ""
        try:
            seen = json.loads(body).get("workers")
        except ValueError:
            return False, f"not JSON: {body[:200]!r}"
        return (True, "") if seen == workers else (False, f"workers == {seen}, expected {workers}")

    def close(self) -> None:
        self.conn.close()


def pidbox_method(data: bytes) -> str | None:
    """The remote-control command in a kombu message published on the pidbox channel."""
    try:
        message = json.loads(data)
        body = message["body"]
        if message.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        return json.loads(body).get("method")
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


def find_broadcast_channel(redis_port: int, trigger: Callable[[], object], wait: float = 5.0) -> str:
    """PSUBSCRIBE * and `trigger` one status read: the channel that carried the dojo_status broadcast."""
    pubsub = redis.Redis(port=redis_port, socket_timeout=5).pubsub()
    try:
        pubsub.psubscribe("*")
        pubsub.get_message(timeout=1)  # the subscribe confirmation
        trigger()
        deadline = time.monotonic() + wait
        seen: list[str] = []
        while time.monotonic() < deadline:
            message = pubsub.get_message(timeout=0.2)
            if not message or message["type"] != "pmessage":
                continue
            channel = message["channel"].decode()
            seen.append(channel)
            if pidbox_method(message["data"]) == STATUS_METHOD:
                return channel
        raise RuntimeError(f"no {STATUS_METHOD} broadcast seen within {wait:.0f} s (channels seen: {seen})")
    finally:
        pubsub.close()


@dataclass
class BroadcastCounter:
    """Counts the control commands published on `channel` (a Redis pub/sub channel), with their times."""

    redis_port: int
    channel: str
    seen: list[tuple[float, str | None]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    ready: threading.Event = field(default_factory=threading.Event)
    error: str = ""

    def run(self) -> None:
        pubsub = redis.Redis(port=self.redis_port, socket_timeout=5).pubsub()
        try:
            pubsub.subscribe(self.channel)
            while not self.stop.is_set():
                message = pubsub.get_message(timeout=0.2)
                if message is None:
                    continue
                if message["type"] == "subscribe":
                    self.ready.set()
                elif message["type"] == "message":
                    self.seen.append((time.monotonic(), pidbox_method(message["data"])))
        except redis.RedisError as exc:
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            self.ready.set()
            pubsub.close()

    def status_broadcasts(self, start: float, end: float) -> list[float]:
        return [at for at, method in list(self.seen) if method == STATUS_METHOD and start <= at <= end]

    def others(self, start: float, end: float) -> int:
        return sum(1 for at, method in list(self.seen) if method != STATUS_METHOD and start <= at <= end)


@dataclass
class Hammer:
    series: Series
    seconds: float
    requests: int


def hammer(port: int, key: str, clients: int, seconds: float, workers: int) -> Hammer:
    """`clients` threads, each on its own keep-alive connection, GET the status until `seconds` pass."""
    results: list[list[tuple[float, bool, str]]] = [[] for _ in range(clients)]
    barrier = threading.Barrier(clients + 1)
    stop_at: list[float] = []

    def client_loop(index: int) -> None:
        client = Client(port, key)
        try:
            barrier.wait(timeout=30)
            end = stop_at[0]
            while time.monotonic() < end:
                start = time.perf_counter()
                ok, reason = client.get(STATUS_PATH, workers)
                results[index].append(((time.perf_counter() - start) * 1000, ok, reason))
        finally:
            client.close()

    threads = [threading.Thread(target=client_loop, args=(i,), daemon=True) for i in range(clients)]
    for thread in threads:
        thread.start()
    started = time.monotonic()
    stop_at.append(started + seconds)
    barrier.wait(timeout=30)
    for thread in threads:
        thread.join(timeout=seconds + HTTP_TIMEOUT + 5)
    elapsed = time.monotonic() - started
    if any(thread.is_alive() for thread in threads):
        print("warning: a client thread did not finish", file=sys.stderr)
    series = Series(f"{clients} clients x {seconds:.0f} s, GET (cached)")
    reasons: list[str] = []
    for rows in results:
        for ms, ok, reason in rows:
            series.times_ms.append(ms)
            if not ok:
                series.failures += 1
                reasons.append(reason)
    for reason in reasons[:3]:
        print(f"  hammer failure: {reason}", file=sys.stderr)
    return Hammer(series, elapsed, len(series.times_ms))


def row(series: Series, broadcasts: int) -> str:
    return (
        f"{series.name:<40} {len(series.times_ms):>6} {series.failures:>5} {series.percentile(50):>8.1f} "
        f"{series.percentile(95):>8.1f} {series.percentile(100):>8.1f} {broadcasts:>11}"
    )


def run(requests: int, workers: int, clients: int, seconds: float, cache_seconds: int) -> bool:
    started = Started()
    counter: BroadcastCounter | None = None
    counter_thread: threading.Thread | None = None
    try:
        workdir = Path(tempfile.mkdtemp(prefix="dojo-bench-cache-"))
        started.dirs.append(workdir)
        t0 = time.monotonic()
        redis_port = start_redis(started, workdir)
        env = base_env(redis_port, workdir / "bench.sqlite3")
        env.update(DD_CELERY_STATUS_CACHE_SECONDS=str(cache_seconds), DD_CELERY_API_THROTTLE_RATE=THROTTLE_RATE)
        start_workers(started, env, workers, workdir)
        print(f"redis-server on 127.0.0.1:{redis_port}, {workers} workers answer ({time.monotonic() - t0:.1f} s)")
        web_port, key = start_web(started, env, workdir)
        print(
            f"gunicorn -w 1 --threads {GUNICORN_THREADS} on 127.0.0.1:{web_port} answers, "
            f"DD_CELERY_STATUS_CACHE_SECONDS={cache_seconds} ({time.monotonic() - t0:.1f} s)"
        )

        client = Client(web_port, key)
        try:
            channel = find_broadcast_channel(redis_port, lambda: client.get(REFRESH_PATH, workers))
            print(f"PSUBSCRIBE * check: {STATUS_METHOD} broadcasts are published on channel {channel!r}")
            counter = BroadcastCounter(redis_port, channel)
            counter_thread = threading.Thread(target=counter.run, daemon=True)
            counter_thread.start()
            if not counter.ready.wait(10) or counter.error:
                raise RuntimeError(f"could not subscribe to {channel!r}: {counter.error or 'timed out'}")

            warm = measure("warm-up", lambda: client.get(REFRESH_PATH, workers), WARMUP_REQUESTS, budget=60)
            if warm.failures == len(warm.times_ms):
                raise RuntimeError("every warm-up request failed; see the messages above")
            a0 = time.monotonic()
            uncached = measure(
                "GET ?refresh=1 (uncached)", lambda: client.get(REFRESH_PATH, workers), requests, budget=120
            )
            a1 = time.monotonic()
            cached = measure("GET (cached)", lambda: client.get(STATUS_PATH, workers), requests, budget=120)
            a2 = time.monotonic()
        finally:
            client.close()

        h0 = time.monotonic()
        load = hammer(web_port, key, clients, seconds, workers)
        h1 = time.monotonic()
        time.sleep(0.3)  # let the last published message reach the subscriber
        return report(counter, (a0, a1, a2, h0, h1), uncached, cached, load, cache_seconds, requests)
    finally:
        if counter is not None:
            counter.stop.set()
        if counter_thread is not None:
            counter_thread.join(timeout=5)
        started.stop_all()


def report(
    counter: BroadcastCounter,
    marks: tuple[float, float, float, float, float],
    uncached: Series,
    cached: Series,
    load: Hammer,
    cache_seconds: int,
    requests: int,
) -> bool:
    a0, a1, a2, h0, h1 = marks
    in_uncached = counter.status_broadcasts(a0, a1)
    in_cached = counter.status_broadcasts(a1, a2)
    in_load = counter.status_broadcasts(h0, h1)
    print()
    print(f"{'measure':<40} {'n':>6} {'fail':>5} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8} {'broadcasts':>11}")
    print(row(uncached, len(in_uncached)))
    print(row(cached, len(in_cached)))
    print(row(load.series, len(in_load)))
    for series in (uncached, cached):
        if series.note:
            print(f"  note ({series.name}): {series.note}")
    print(
        f"throughput under load: {load.requests / load.seconds:.0f} requests/s "
        f"({load.requests} requests in {load.seconds:.1f} s)"
    )
    other = counter.others(a0, h1)
    print(f"other control messages on the channel meanwhile: {other}")

    periods = max(1, math.ceil((h1 - h0) / cache_seconds))
    print(f"dojo_status broadcasts per {cache_seconds} s cache period under load (from the start of the load):")
    per_period = [0] * periods
    for at in in_load:
        per_period[min(periods - 1, int((at - h0) // cache_seconds))] += 1
    for index, count in enumerate(per_period):
        start, end = index * cache_seconds, min((index + 1) * cache_seconds, h1 - h0)
        print(f"  {start:>5.1f} - {end:>5.1f} s: {count}")
    gaps = [later - earlier for earlier, later in pairwise(in_load)]
    offsets = ", ".join(f"{at - h0:.2f}" for at in in_load)
    print(f"  at (s): {offsets or '-'}; smallest gap between two: {min(gaps) if gaps else math.nan:.2f} s")

    allowed = math.ceil(load.seconds / cache_seconds) + 1
    checks = [
        (f"uncached p50 <= {TARGET_UNCACHED_P50_MS:.0f} ms", uncached.percentile(50) <= TARGET_UNCACHED_P50_MS),
        (f"cached p50 <= {TARGET_CACHED_P50_MS:.0f} ms", cached.percentile(50) <= TARGET_CACHED_P50_MS),
        ("no failed request", not (uncached.failures or cached.failures or load.series.failures)),
        (f"one broadcast per uncached request ({requests})", len(in_uncached) == len(uncached.times_ms)),
        (f"broadcasts under load <= ceil({load.seconds:.0f}/{cache_seconds}) + 1 = {allowed}", len(in_load) <= allowed),
        (f"at most 1 broadcast per {cache_seconds} s", all(gap >= cache_seconds for gap in gaps)),
    ]
    for label, met in checks:
        print(f"target {label}: {'MET' if met else 'NOT MET'}")
    return all(met for _label, met in checks) and not (uncached.note or cached.note)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=200, help="measured requests per phase (default 200)")
    parser.add_argument("--workers", type=int, default=8, help="celery workers to start (default 8)")
    parser.add_argument("--clients", type=int, default=50, help="concurrent clients under load (default 50)")
    parser.add_argument("--seconds", type=float, default=12.0, help="duration of the load (default 12)")
    parser.add_argument(
        "--cache-seconds", type=int, default=5, help="DD_CELERY_STATUS_CACHE_SECONDS for the server (default 5)"
    )
    args = parser.parse_args(argv)
    if min(args.requests, args.workers, args.clients, args.cache_seconds) < 1 or not 1 <= args.seconds <= 600:
        parser.error("counts must be at least 1, --seconds between 1 and 600")

    def on_term(signum: int, _frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)  # unwinds through the finally that stops everything

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGHUP, on_term)
    return 0 if run(args.requests, args.workers, args.clients, args.seconds, args.cache_seconds) else 1


if __name__ == "__main__":
    sys.exit(main())
