"""Task analytics ingest: the real event monitor (`manage.py celery_monitor`, rollups on) taking
synthetic Celery task events from a private Redis at increasing rates, beside Flower on the same
stream.

The generator publishes with Celery's own EventDispatcher, as a prefork worker does (task events
buffered and sent as lists of up to 24, worker-heartbeats every 2 s), so the wire format is the
real one: for each task a task-received, task-started and task-succeeded (every tenth failed),
over 100 task names and 10 worker hostnames. Each step runs at a target rate for --step-seconds;
the consumer's figure is read from what it says it handled: the monitor's MonitorHeartbeat
events_seen (written every second), Flower's flower_events_total in its /metrics. A step is
sustained when the consumer handled (nearly) all that was sent within two seconds of the step's
end. RSS (VmRSS of the consumer's process) is sampled each second; "flat" is max - min after the
first 100,000 events.

The consumers run one after the other (2 cores: the generator already takes one), each over the
same steps and at least --events events in all. Redis' pubsub output buffer limit is lifted so a
slow consumer shows as lag, not as a disconnect.

Flower is installed by this script into var/bench-venvs/flower (never into the project's
requirements); pass --no-flower to skip it.

Measured (2 cores shared with the generator and Redis, Python 3.11, celery 5.7, SQLite, default
DD_ANALYTICS_* settings, steps of 10 s): the monitor handled every event sent, 1,171,359 in all,
at every step up to what the one generator process could send (19,032, 26,331 and 30,634
events/s: the generator, not the monitor, was the limit), using one CPU second per 37,588 events at
the top step; RSS 102.0 MB after the first step and 103.4 MB at the end of the last, samples
within 103.3-145.3 MB after 100,000 events (a transient peak mid-step, not growth). Flower 2.2.0 on
the same stream: kept up to 8,337 events/s, lagged at 9,771/s (8,007 events per CPU second), its
RSS 149.9 MB after 48,000 events and 674 MB after 357,000 (it keeps every task it saw up to
its max_tasks of 10,000, with their events).

Usage: python bench/analytics_ingest.py [--rates 5000,10000,20000,30000,40000] [--events 1000000]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FLOWER_VENV = ROOT / "var" / "bench-venvs" / "flower"
NAMES = [f"bench.tasks.t{i:03d}" for i in range(100)]
WORKERS = [f"bw{i}@bench-host" for i in range(10)]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except FileNotFoundError:
        pass
    return float("nan")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of the process so far (its threads included)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except FileNotFoundError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"nothing on port {port}")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


class Generator:
    """Publishes the stream with one EventDispatcher per simulated worker, on one connection."""

    def __init__(self, url: str) -> None:
        from celery import Celery

        self.app = Celery("bench-generator", broker=url)
        self.conn = self.app.connection_for_write()
        self.dispatchers = [
            self.app.events.Dispatcher(self.conn, hostname=name, buffer_group=["task"], buffer_limit=24)
            for name in WORKERS
        ]
        self.sent = 0
        self.tasks = 0
        self._next_beat = 0.0

    def heartbeats(self) -> None:
        now = time.monotonic()
        if now < self._next_beat:
            return
        self._next_beat = now + 2.0
        for dispatcher in self.dispatchers:
            dispatcher.send("worker-heartbeat", freq=2.0, active=0, processed=self.tasks, loadavg=[0.1, 0.1, 0.1])
            self.sent += 1

    def task(self) -> None:
        index = self.tasks
        self.tasks += 1
        dispatcher = self.dispatchers[index % len(self.dispatchers)]
        task_id = uuid.uuid4().hex
        name = NAMES[index % len(NAMES)]
        dispatcher.send(
            "task-received",
            uuid=task_id,
            name=name,
            args="(1, 2)",
            kwargs="{}",
            root_id=task_id,
            parent_id=None,
            retries=0,
            eta=None,
            expires=None,
        )
        dispatcher.send("task-started", uuid=task_id)
        runtime = 0.001 * (1 + index % 50)
        if index % 10 == 0:
            dispatcher.send(
                "task-failed", uuid=task_id, exception="ValueError('boom')", traceback="Traceback\nValueError: boom\n"
            )
        else:
            dispatcher.send("task-succeeded", uuid=task_id, result="3", runtime=runtime)
        self.sent += 3

    def flush(self) -> None:
        for dispatcher in self.dispatchers:
            dispatcher.flush()

    def run_step(self, rate: int, seconds: float) -> float:
        """Send at `rate` events/s for `seconds`; returns the rate actually sent."""
        began = time.monotonic()
        start_sent = self.sent
        tick = 0.01
        next_tick = began
        while (now := time.monotonic()) < began + seconds:
            due = int((now - began + tick) * rate) - (self.sent - start_sent)
            for _ in range(max(0, due // 3)):
                self.task()
            self.flush()
            self.heartbeats()
            next_tick += tick
            delay = next_tick - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        self.flush()
        return (self.sent - start_sent) / (time.monotonic() - began)

    def close(self) -> None:
        self.conn.release()


def monitor_consumer(url: str, tmp: Path) -> tuple[subprocess.Popen, callable]:
    database = tmp / "bench.sqlite3"
    env = {k: v for k, v in os.environ.items() if not k.startswith("DD_")}
    env.update(
        DD_DATABASE_URL=f"sqlite:///{database}",
        DD_CELERY_BROKER_URL=url,
        DD_CELERY_MONITOR_ENABLE_EVENTS_SECONDS="0",
        PYTHONPATH=str(ROOT),
    )
    subprocess.run([sys.executable, "manage.py", "migrate", "-v", "0"], cwd=ROOT, env=env, check=True)
    log = open(tmp / "monitor.log", "w")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen(
        [sys.executable, "manage.py", "celery_monitor"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )

    def seen() -> int:
        try:
            with sqlite3.connect(database, timeout=5) as db:
                row = db.execute("select events_seen from dojo_monitorheartbeat where backend='default'").fetchone()
        except sqlite3.Error:
            return -1
        return int(row[0]) if row else -1

    return proc, seen


def flower_consumer(url: str, tmp: Path) -> tuple[subprocess.Popen, callable]:
    if not (FLOWER_VENV / "bin" / "celery").exists():
        subprocess.run([sys.executable, "-m", "venv", str(FLOWER_VENV)], check=True)
        subprocess.run([str(FLOWER_VENV / "bin" / "pip"), "install", "-q", "flower", "celery[redis]"], check=True)
    port = free_port()
    log = open(tmp / "flower.log", "w")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen(
        [str(FLOWER_VENV / "bin" / "celery"), "--broker", url, "flower", f"--port={port}", "--address=127.0.0.1"],
        cwd=tmp,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env={k: v for k, v in os.environ.items() if not k.startswith(("DD_", "DJANGO"))},
    )
    wait_port(port)

    def seen() -> int:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
                text = answer.read().decode()
        except OSError:
            return -1
        return int(
            sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith("flower_events_total{"))
        )

    return proc, seen


def run(kind: str, url: str, tmp: Path, rates: list[int], step_seconds: float, events: int) -> dict:
    proc, seen = (monitor_consumer if kind == "monitor" else flower_consumer)(url, tmp)
    deadline = time.monotonic() + 60
    while seen() < 0:
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{kind} did not start: {(tmp / (kind + '.log')).read_text()[-2000:]}")
        time.sleep(0.5)
    time.sleep(2)  # its event consumer is bound
    generator = Generator(url)
    base = seen()
    result: dict = {"consumer": kind, "steps": [], "rss": []}
    rss_samples: list[tuple[int, float]] = []
    try:
        step_index, best, climbing = 0, 0, True
        while generator.sent < events or (climbing and step_index < len(rates)):
            # Up the rates until one is not kept up; then the best kept-up rate until --events.
            rate = rates[step_index] if climbing and step_index < len(rates) else (best or rates[0])
            before_sent, before_seen, t0 = generator.sent, seen() - base, time.monotonic()
            cpu0 = cpu_seconds(proc.pid)
            ends = t0 + step_seconds
            sent_rate = 0.0
            while time.monotonic() < ends:  # one second at a time, sampling RSS
                sent_rate = generator.run_step(rate, min(1.0, ends - time.monotonic()))
                rss_samples.append((seen() - base, rss_mb(proc.pid)))
            sent_in_step = generator.sent - before_sent
            time.sleep(2)
            handled = seen() - base - before_seen
            cpu = cpu_seconds(proc.pid) - cpu0
            step = {
                "target": rate,
                "sent_per_s": round(sent_in_step / step_seconds),
                "handled_per_s": round(handled / step_seconds),
                # what one core of the consumer handles: events per CPU second it used
                "per_cpu_second": round(handled / cpu) if cpu > 0 else None,
                "handled": handled,
                "sent": sent_in_step,
                "kept_up": handled >= 0.98 * sent_in_step,
                "rss_mb": round(rss_mb(proc.pid), 1),
            }
            result["steps"].append(step)
            print(
                f"  {kind:8} target {rate:>6,}/s sent {step['sent_per_s']:>6,}/s "
                f"handled {handled:>8,} of {sent_in_step:>8,} "
                f"({'kept up' if step['kept_up'] else 'LAGGING'}), {step['per_cpu_second'] or 0:>7,} events per CPU s, "
                f"RSS {step['rss_mb']:.1f} MB",
                flush=True,
            )
            del sent_rate
            step_index += 1
            if step["kept_up"] and climbing:
                best = max(best, rate)
            elif not step["kept_up"]:
                climbing = False
        time.sleep(3)
        total_seen = seen() - base
        result.update(sent=generator.sent, handled=total_seen)
        warm = [rss for count, rss in rss_samples if count >= 100_000]
        result["rss_after_warmup"] = (round(min(warm), 1), round(max(warm), 1)) if warm else None
        sustained = [s["handled_per_s"] for s in result["steps"] if s["kept_up"]]
        result["sustained_per_s"] = max(sustained) if sustained else 0
    finally:
        generator.close()
        stop(proc)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="5000,10000,20000,30000,40000")
    parser.add_argument("--step-seconds", type=float, default=10.0)
    parser.add_argument("--events", type=int, default=1_000_000, help="events sent to each consumer, at least")
    parser.add_argument("--flower-events", type=int, default=300_000, help="events sent to Flower, at least")
    parser.add_argument("--no-flower", action="store_true")
    args = parser.parse_args()
    rates = [int(r) for r in args.rates.split(",")]
    redis_server = shutil.which("redis-server")
    if not redis_server:
        sys.exit("redis-server is not installed")
    results = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        port = free_port()
        redis = subprocess.Popen(
            [
                redis_server,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--client-output-buffer-limit",
                "pubsub 0 0 0",
                "--dir",
                str(tmp),
            ],
            stdout=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            wait_port(port)
            url = f"redis://127.0.0.1:{port}/0"
            for kind in ["monitor"] + ([] if args.no_flower else ["flower"]):
                print(
                    f"{kind}: steps of {args.step_seconds:.0f} s at {rates} events/s, at least {args.events:,} events"
                )
                events = args.events if kind == "monitor" else args.flower_events
                results.append(run(kind, url, tmp, rates, args.step_seconds, events))
                summary(results[-1])
        finally:
            stop(redis)
    print(json.dumps(results))


def summary(result: dict) -> None:
    print(
        f"{result['consumer']}: sustained {result['sustained_per_s']:,} events/s; handled {result['handled']:,} of "
        f"{result['sent']:,} sent; RSS after 100,000 events min/max {result['rss_after_warmup']} MB; "
        f"events per CPU second (best step) {max((s['per_cpu_second'] or 0) for s in result['steps']):,}",
        flush=True,
    )


if __name__ == "__main__":
    main()
