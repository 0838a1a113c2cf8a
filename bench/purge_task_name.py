"""Purge by task name on a 1,000,000-message Redis queue: the windowed script against the old way.

What it measures, on a private redis-server (no worker needed: nothing consumes the queue):

1. `dojo.ops.controls.purge.purge_task_name()` removing one task name (10 % of the messages, one
   in ten all through the list) from a 1,000,000-message queue: its wall time, the longest single
   Redis command while it ran (SLOWLOG with slowlog-log-slower-than 0: every command is logged with
   its own duration, a script as one command), and how long a worker's BRPOP waits meanwhile: a
   probe process LPUSHes one message to another queue and BRPOPs it back, again and again, and
   records each round trip (its idle figures are measured first, for reference).
2. The same for the old algorithm (kept here only, as the comparison): scan from the head 1,000 at
   a time and send `LREM key 1 raw` per match, 100 per pipeline. It cannot finish in any sensible
   time on this queue (every LREM walks the list from its head to the message), so it runs for
   `--old-seconds` and its whole run is extrapolated from its rate, which only gets worse deeper
   in the list: a lower bound.

Messages are real Celery protocol 2 envelopes: one is published through the project's app and
cloned with new ids (bench/queues_table.py's template). Everything runs on 127.0.0.1, in
temporary directories, and every process the script starts is stopped when it ends, however it
ends. Helpers come from bench/status_latency.py and bench/queues_table.py.

Usage: python bench/purge_task_name.py [--messages 1000000] [--share 10] [--old-seconds 60]
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from types import FrameType

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ is not a package
from queues_table import message_template, setup_django
from status_latency import ROOT, Series, Started, base_env, start_redis, tail, wait_for

QUEUE = "bulk"
PROBE_QUEUE = "bench-probe"
PURGED = "dojo.tasks.add"
KEPT = "dojo.tasks.sleep"
PUSH_CHUNK = 1000
PIPELINE_MESSAGES = 20_000
# Targets: the new purge at least this many times faster than the old algorithm's lower bound, and
# no script call longer than two LREMs walking the whole list: a call walks at most half of it, and
# its at most 100 LSETs each seek at most half of it node by node (about as much again).
TARGET_SPEED_UP = 5.0
TARGET_CALL_IN_FULL_WALKS = 2.0


def fill(total: int, share_pct: int) -> tuple[int, float]:
    """Push `total` messages into QUEUE, every (100 / share_pct)-th of PURGED; (how many of PURGED, seconds)."""
    from dojo.ops.brokers import redis as redis_lists
    from dojo.ops.brokers.connection import broker_connection

    template = message_template()
    every = round(100 / share_pct)
    started, now = time.monotonic(), time.time()
    purged = 0
    with broker_connection(timeout=60) as conn:
        client = redis_lists.client(conn)
        client.delete(*redis_lists.priority_lists(conn.default_channel, QUEUE))
        pipe = client.pipeline(transaction=False)
        values: list[str] = []
        pending = 0
        for i in range(total):  # oldest first: LPUSH leaves the first pushed at the consuming end
            task = PURGED if i % every == every // 2 else KEPT
            purged += task == PURGED
            fields = {"id": str(uuid.uuid4()), "tag": str(uuid.uuid4()), "task": task, "stamp": now, "priority": 0}
            values.append(template % fields)
            if len(values) >= PUSH_CHUNK or i == total - 1:
                pipe.lpush(QUEUE, *values)
                pending += len(values)
                values = []
                if pending >= PIPELINE_MESSAGES or i == total - 1:
                    pipe.execute()
                    pending = 0
    return purged, time.monotonic() - started


def old_purge(deadline: float) -> int:
    """The algorithm before the windowed script, for comparison only (stops at `deadline`)."""
    from dojo.ops.brokers import redis as redis_lists
    from dojo.ops.brokers.connection import broker_connection
    from dojo.ops.brokers.messages import task_name

    removed = 0
    with broker_connection(timeout=600) as conn:
        redis = redis_lists.client(conn)
        for key in redis_lists.priority_lists(conn.default_channel, QUEUE):
            start = 0
            while time.monotonic() < deadline and (chunk := redis.lrange(key, start, start + 999)):
                needle = PURGED.encode()
                matching = [raw for raw in chunk if needle in raw and task_name(raw) == PURGED]
                removed_here = 0
                for i in range(0, len(matching), 100):
                    pipe = redis.pipeline(transaction=False)
                    for raw in matching[i : i + 100]:
                        pipe.lrem(key, 1, raw)
                    removed_here += sum(pipe.execute())
                    if time.monotonic() >= deadline:
                        break
                removed += removed_here
                start += len(chunk) - removed_here
    return removed


class Probe:
    """A child process doing LPUSH + BRPOP round trips on PROBE_QUEUE, as a worker waits on a queue."""

    def __init__(self, started: Started, port: int, workdir: Path, name: str) -> None:
        self.stop_file = workdir / f"probe-{name}.stop"
        self.log = workdir / f"probe-{name}.log"
        args = [sys.executable, __file__, "--probe-child", str(port), str(self.stop_file)]
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=out, start_new_session=True)
        started.procs.append((f"probe {name}", self.proc))
        time.sleep(0.3)  # connected and looping before the measure starts

    def finish(self, name: str) -> Series:
        self.stop_file.write_text("stop")
        out, _ = self.proc.communicate(timeout=60)
        if self.proc.returncode != 0:
            raise RuntimeError(f"the probe failed:\n{tail(self.log)}")
        return Series(name, json.loads(out))


def probe_child(port: int, stop_file: str) -> int:
    import redis

    client = redis.Redis(port=port, socket_timeout=30)
    times: list[float] = []
    stop = Path(stop_file)
    last_look = 0.0
    while True:
        started = time.perf_counter()
        client.lpush(PROBE_QUEUE, b"x")
        client.brpop([PROBE_QUEUE], timeout=10)
        times.append((time.perf_counter() - started) * 1000)
        if started - last_look > 0.05:
            last_look = started
            if stop.exists():
                break
        time.sleep(0.002)
    print(json.dumps(times))
    return 0


def slowlog(client) -> tuple[float, str, int]:
    """The longest command SLOWLOG holds (ms, its name) and how many it holds, the bench's own
    SLOWLOG and CONFIG calls left out (resetting a long slow log is itself slow)."""
    entries = [e for e in client.slowlog_get(-1) if not e["command"].startswith((b"SLOWLOG", b"CONFIG"))]
    if not entries:
        return 0.0, "", 0
    longest = max(entries, key=lambda entry: entry["duration"])
    return longest["duration"] / 1000, longest["command"][:24].decode(errors="replace"), len(entries)


def script_durations(client) -> list[float]:
    return sorted(e["duration"] / 1000 for e in client.slowlog_get(-1) if e["command"].startswith(b"EVALSHA"))


def run(total: int, share_pct: int, old_seconds: float) -> bool:
    started = Started()
    try:
        workdir = Path(tempfile.mkdtemp(prefix="dojo-bench-purge-"))
        started.dirs.append(workdir)
        port = start_redis(started, workdir)
        env = base_env(port, workdir / "bench.sqlite3")
        env.update(DD_CELERY_QUEUES=QUEUE)
        setup_django(env)
        import redis

        from dojo.ops.controls.purge import purge_task_name

        client = redis.Redis(port=port, socket_timeout=600)
        wait_for(lambda: client.ping(), 10, "redis-server")
        client.config_set("slowlog-max-len", 1_000_000)

        expected, seconds = fill(total, share_pct)
        print(
            f"redis-server on 127.0.0.1:{port}; pushed {total:,} messages ({expected:,} of {PURGED}) in {seconds:.1f} s"
        )
        memory = client.info("memory")["used_memory"] / 2**20
        print(f"queue {QUEUE!r}: {client.llen(QUEUE):,} messages, Redis uses {memory:,.0f} MiB")
        client.config_set("slowlog-log-slower-than", 0)
        client.slowlog_reset()
        client.lrem(QUEUE, 1, f"absent-{uuid.uuid4()}")  # walks every message: what one full walk costs
        full_walk_ms, _, _ = slowlog(client)
        client.config_set("slowlog-log-slower-than", 1_000_000)
        print(f"one LREM walking all {total:,} messages (nothing found): {full_walk_ms:.1f} ms")

        idle = Probe(started, port, workdir, "idle")
        time.sleep(2)
        idle_series = idle.finish("BRPOP round trip, Redis idle")

        client.config_set("slowlog-log-slower-than", 0)
        client.slowlog_reset()
        probe = Probe(started, port, workdir, "new")
        begun = time.monotonic()
        result = purge_task_name(QUEUE, PURGED, seconds=3600)
        new_wall = time.monotonic() - begun
        new_series = probe.finish("BRPOP round trip, during purge_task_name()")
        client.config_set("slowlog-log-slower-than", 1_000_000)
        new_longest = slowlog(client)
        scripts = script_durations(client)
        left = client.llen(QUEUE)
        exact = result.purged == expected and result.complete and left == total - expected
        print(
            f"purge_task_name(): removed {result.purged:,} (expected {expected:,}), complete={result.complete}, "
            f"{left:,} left, in {new_wall:.1f} s; {len(scripts):,} script calls"
        )

        fill(total, share_pct)
        client.config_set("slowlog-log-slower-than", 0)
        client.slowlog_reset()
        probe = Probe(started, port, workdir, "old")
        begun = time.monotonic()
        old_removed = old_purge(begun + old_seconds)
        old_wall = time.monotonic() - begun
        old_series = probe.finish("BRPOP round trip, during the old algorithm")
        client.config_set("slowlog-log-slower-than", 1_000_000)
        old_longest = slowlog(client)
        old_total = old_wall * expected / max(old_removed, 1)
        how = "all" if old_removed == expected else f"stopped at --old-seconds; at that rate all: >= {old_total:,.0f} s"
        print(f"old algorithm: removed {old_removed:,} of {expected:,} in {old_wall:.1f} s ({how})")
        runs = {"purge_task_name()": (new_wall, new_longest), "old algorithm": (old_wall, old_longest)}
        met = report(idle_series, [new_series, old_series], runs, scripts)
        speed_up = old_total / new_wall
        longest_call = scripts[-1] if scripts else 0.0
        call_bound = TARGET_CALL_IN_FULL_WALKS * full_walk_ms
        met = met and exact and speed_up >= TARGET_SPEED_UP and longest_call <= call_bound
        print(
            f"targets: every message of the name removed and nothing else ({'yes' if exact else 'NO'}); "
            f"at least {TARGET_SPEED_UP:.0f}x faster than the old algorithm's lower bound ({speed_up:,.1f}x); "
            f"longest script call <= {TARGET_CALL_IN_FULL_WALKS:.0f} LREMs over the whole list "
            f"({longest_call:.1f} <= {call_bound:.1f} ms): "
            f"{'MET' if met else 'NOT MET'}"
        )
        return met
    finally:
        started.stop_all()


def share(ordered: list[float], pct: float) -> float:
    return ordered[min(len(ordered) - 1, int(pct / 100 * len(ordered)))]


def report(
    idle: Series, during: list[Series], runs: dict[str, tuple[float, tuple[float, str, int]]], scripts: list[float]
) -> bool:
    """Print the figures; True when every measure has samples."""
    print()
    print(f"{'BRPOP latency probe':<48} {'n':>6} {'p50 ms':>9} {'p99 ms':>9} {'max ms':>9}")
    for series in (idle, *during):
        print(
            f"{series.name:<48} {len(series.times_ms):>6} {series.percentile(50):>9.2f} "
            f"{series.percentile(99):>9.2f} {series.percentile(100):>9.2f}"
        )
    print()
    for name, (wall, (longest, command, logged)) in runs.items():
        print(
            f"{name:<18} wall {wall:>7.1f} s, longest Redis command {longest:>8.1f} ms ({command!r}, {logged:,} logged)"
        )
    if scripts:
        print(
            f"script calls ({len(scripts):,}): p50 {share(scripts, 50):.1f} ms, p90 {share(scripts, 90):.1f} ms, "
            f"p99 {share(scripts, 99):.1f} ms, max {scripts[-1]:.1f} ms"
        )
    return bool(scripts) and all(series.times_ms for series in (idle, *during))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--messages", type=int, default=1_000_000, help="messages in the queue (default 1,000,000)")
    parser.add_argument("--share", type=int, default=10, help="percent of them of the purged name (default 10)")
    parser.add_argument("--old-seconds", type=float, default=60.0, help="how long the old algorithm runs (60)")
    parser.add_argument("--probe-child", nargs=2, metavar=("PORT", "STOP_FILE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.probe_child:
        return probe_child(int(args.probe_child[0]), args.probe_child[1])
    if args.messages < 10 or not 1 <= args.share <= 50 or args.old_seconds <= 0:
        parser.error("--messages >= 10, --share between 1 and 50, --old-seconds > 0")

    def on_term(signum: int, _frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)  # unwinds through the finally that stops everything

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGHUP, on_term)
    return 0 if run(args.messages, args.share, args.old_seconds) else 1


if __name__ == "__main__":
    sys.exit(main())
