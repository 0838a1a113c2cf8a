"""A fleet of simulated Celery workers in one process, for status reads at a scale no test machine runs.

Each simulated worker is its own kombu pidbox node (`kombu.pidbox.Node`, the class a real worker's
`celery.worker.pidbox.Pidbox` uses), with Celery's own control mailbox settings (exchange
`celery.pidbox`, fanout, its queue TTL and expiry): it declares and consumes its control queue
`<name>.celery.pidbox` bound to that exchange, so on Redis the binding table the project reads
(`bound_workers`) lists it, and on RabbitMQ its queue has a consumer. It answers, in the shapes
Celery 5.7 gives them:

- `ping`, `enable_events`, `disable_events`, `add_consumer`, `cancel_consumer` (which change the
  queues it reports);
- the six built-in inspect commands: `stats` (pid, pool with max-concurrency and the processes'
  pids, prefetch_count, rusage, total, broker, uptime), `active`/`reserved` (Request.info()
  dicts), `scheduled` (eta, priority, request), `registered` and `active_queues` (Queue.as_dict);
- for a fraction of the nodes, `dojo_status`: the reply `dojo.ops.fleet.worker_reply.describe_worker`
  builds from the same answers, and `dojo_status_version` in their stats, as dojo/worker/commands.py.
  A node that does not speak it answers it as a real worker does, with an error (counted in
  `unknown_commands`).

Efficiency: nodes are grouped, `--per-connection` (default 250) to one kombu Connection, each group
drained by one thread. On Redis a group consumes all its nodes' control queues on one channel (so
one PSUBSCRIBE per group, not per node); stock kombu delivers a fanout message to only one queue per
channel and exchange, so the channel here hands each broadcast, decoded once, to every node of the
group it is addressed to, as each worker's own subscription would. Replies go out one by one from
the node, as a worker's do. On other brokers (RabbitMQ) each node consumes its own queue on the
group's channel, and the broker copies each broadcast to each queue. Optional worker heartbeats
(`--heartbeats`) go out every 2 s per node from one more connection, as worker-online/-heartbeat/-offline.

Use: `python bench/fleet_simulator.py --workers 200 --broker redis://127.0.0.1:6379/0 --dojo-fraction 0.5`
(runs until SIGINT/SIGTERM or `--duration`), or in a test:

    with FleetSimulator(broker_url, workers=50, dojo_fraction=0.5) as fleet:
        fleet.workers["sim0001@host"].active  # what that node holds
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import platform
import random
import signal
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from celery import Celery
from celery import __version__ as celery_version
from celery.events.event import Event, get_exchange
from kombu import Connection, Consumer, Exchange, Producer, Queue
from kombu.pidbox import Mailbox, Node
from kombu.serialization import loads, prepare_accept_content
from kombu.transport import redis as kombu_redis
from kombu.utils.url import maybe_sanitize_url

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere
from dojo.ops.fleet.worker_reply import (
    INSPECT_COMMANDS,
    STATUS_COMMAND,
    STATUS_MARKER,
    STATUS_VERSION,
    describe_worker,
)

logger = logging.getLogger("fleet_simulator")

HEARTBEAT_SECONDS = 2.0  # Celery's default worker heartbeat
DRAIN_SECONDS = 0.5  # each group's drain wakes at least this often to see a stop
STATUS_REPLY_SECONDS = 30.0  # how long a node keeps the dojo_status reply it built (see SimulatedWorker.dojo_status)
TASK_NAMES = ("sim.add", "sim.sleep", "sim.report", "sim.resize_image", "sim.send_mail", "sim.sync_account")
EXTRA_QUEUES = ("images", "mail", "reports")


def _pool_implementation() -> str:
    return "celery.concurrency.prefork:TaskPool"


def _queue_dict(name: str) -> dict[str, Any]:
    """A queue as a worker's active_queues gives it (kombu's Queue.as_dict(recurse=True))."""
    return dict(Queue(name, Exchange(name), routing_key=name).as_dict(recurse=True))


@dataclass
class SimulatedWorker:
    """What one simulated worker holds and answers: the same data feeds every command."""

    name: str
    pid: int
    concurrency: int
    speaks_status: bool
    broker: dict[str, Any]
    broker_url: str
    queues: list[str]
    registered: list[str]
    total: dict[str, int]
    active: list[dict[str, Any]] = field(default_factory=list)
    reserved: list[dict[str, Any]] = field(default_factory=list)
    scheduled: list[dict[str, Any]] = field(default_factory=list)
    started_at: float = field(default_factory=time.time)
    task_events: bool = False
    commands: dict[str, int] = field(default_factory=dict)  # answered, by command
    status_reply: tuple[float, dict[str, Any]] | None = field(default=None, repr=False)  # (built at, reply)
    unknown_commands: dict[str, int] = field(default_factory=dict)  # not known to this worker

    @property
    def processes(self) -> list[int]:
        return [self.pid + 1 + index for index in range(self.concurrency)]

    def stats(self) -> dict[str, Any]:
        uptime = int(time.time() - self.started_at)
        answer: dict[str, Any] = {
            "total": dict(self.total),
            "pid": self.pid,
            "clock": str(sum(self.commands.values())),
            "uptime": uptime,
            "pool": {
                "implementation": _pool_implementation(),
                "max-concurrency": self.concurrency,
                "processes": self.processes,
                "max-tasks-per-child": "N/A",
                "put-guarded-by-semaphore": False,
                "timeouts": [0, 0],
                "writes": {
                    "total": sum(self.total.values()),
                    "avg": "0.50",
                    "all": ", ".join("0.50" for _ in range(self.concurrency)),
                    "raw": ", ".join("1" for _ in range(self.concurrency)),
                    "strategy": "fair",
                    "inqueues": {"total": self.concurrency, "active": len(self.active)},
                },
            },
            "broker": dict(self.broker),
            "prefetch_count": self.concurrency * 4,
            "rusage": {
                "utime": 0.5 + uptime * 0.01,
                "stime": 0.09 + uptime * 0.002,
                "maxrss": 55460,
                "ixrss": 0,
                "idrss": 0,
                "isrss": 0,
                "minflt": 19636,
                "majflt": 1,
                "nswap": 0,
                "inblock": 872,
                "oublock": 32,
                "msgsnd": 0,
                "msgrcv": 0,
                "nsignals": 0,
                "nvcsw": 84,
                "nivcsw": 138,
            },
        }
        if self.speaks_status:
            answer[STATUS_MARKER] = STATUS_VERSION  # what dojo.worker.commands.StatusMarker adds
        return answer

    def answer(self, command: str) -> Any:
        """This worker's answer to one of the six built-in inspect commands."""
        if command == "stats":
            return self.stats()
        if command in ("active", "reserved", "scheduled"):
            return [dict(entry) for entry in getattr(self, command)]
        if command == "registered":
            return list(self.registered)
        if command == "active_queues":
            return [_queue_dict(name) for name in self.queues]
        raise KeyError(command)

    def dojo_status(self) -> dict[str, Any]:
        """What dojo/worker/commands.py's dojo_status answers: describe_worker of the six answers.

        Built when the fleet starts, then at most once every STATUS_REPLY_SECONDS per node (its
        uptime and rusage that old) and again after its queues change: in a fleet each worker
        builds its own reply on its own CPU at the same time as the others, while this one process
        would build them all in turn (about 175 us each), bounding every reader by the simulator's
        own CPU rather than the reader's cost, and a read within a second of another by less."""
        now = time.monotonic()
        if self.status_reply is None or now - self.status_reply[0] >= STATUS_REPLY_SECONDS:
            answers = {command: self.answer(command) for command in INSPECT_COMMANDS}
            self.status_reply = (now, describe_worker(answers, self.broker_url))
        return self.status_reply[1]

    def heartbeat_fields(self) -> dict[str, Any]:
        return {
            "freq": HEARTBEAT_SECONDS,
            "active": len(self.active),
            "processed": sum(self.total.values()),
            "loadavg": [0.25, 0.2, 0.1],
            "sw_ident": "py-celery",
            "sw_ver": celery_version,
            "sw_sys": platform.system(),
        }


class _Handlers(dict):
    """The commands a node knows; an unknown one raises KeyError as in a real worker (kombu's
    Node.dispatch then replies {"error": "KeyError(...)"} and logs it), and is counted."""

    def __init__(self, worker: SimulatedWorker, known: dict[str, Callable[..., Any]]) -> None:
        super().__init__(known)
        self.worker = worker

    def __missing__(self, method: str) -> Any:
        self.worker.unknown_commands[method] = self.worker.unknown_commands.get(method, 0) + 1
        raise KeyError(method)


def _handlers(worker: SimulatedWorker) -> _Handlers:
    """Handlers as kombu's Node calls them: handler(state, **arguments); the state is the worker."""

    def counted(command: str, answer: Callable[..., Any]) -> Callable[..., Any]:
        def handler(state: SimulatedWorker, **arguments: Any) -> Any:
            state.commands[command] = state.commands.get(command, 0) + 1
            return answer(state, **arguments)

        return handler

    def add_consumer(state: SimulatedWorker, queue: str, **_: Any) -> dict:
        if queue not in state.queues:
            state.queues.append(queue)
            state.status_reply = None
        return {"ok": f"add consumer {queue}"}

    def cancel_consumer(state: SimulatedWorker, queue: str, **_: Any) -> dict:
        if queue in state.queues:
            state.queues.remove(queue)
            state.status_reply = None
        return {"ok": f"no longer consuming from {queue}"}

    def enable_events(state: SimulatedWorker, **_: Any) -> dict:
        was, state.task_events = state.task_events, True
        return {"ok": "task events already enabled" if was else "task events enabled"}

    def disable_events(state: SimulatedWorker, **_: Any) -> dict:
        was, state.task_events = state.task_events, False
        return {"ok": "task events disabled" if was else "task events already disabled"}

    known: dict[str, Callable[..., Any]] = {
        "ping": lambda state, **_: {"ok": "pong"},
        "add_consumer": add_consumer,
        "cancel_consumer": cancel_consumer,
        "enable_events": enable_events,
        "disable_events": disable_events,
    }
    for command in INSPECT_COMMANDS:
        known[command] = lambda state, command=command, **_: state.answer(command)
    if worker.speaks_status:
        known[STATUS_COMMAND] = lambda state, **_: state.dojo_status()
    return _Handlers(worker, {command: counted(command, answer) for command, answer in known.items()})


def _request_info(worker: SimulatedWorker, rng: random.Random, started: bool, queue: str) -> dict[str, Any]:
    """A task as Celery's Request.info() gives it."""
    name = rng.choice(TASK_NAMES[:4])
    args = [rng.randint(1, 1000), rng.randint(1, 1000)] if name == "sim.add" else [f"item-{rng.randint(1, 99999)}"]
    return {
        "id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        "name": name,
        "args": args,
        "kwargs": {"attempt": 1} if name == "sim.report" else {},
        "type": name,
        "hostname": worker.name,
        "time_start": time.time() - rng.uniform(0, 30) if started else None,
        "acknowledged": started,
        "delivery_info": {"exchange": "", "routing_key": queue, "priority": 0, "redelivered": False},
        "worker_pid": rng.choice(worker.processes) if started else None,
    }


def make_workers(
    count: int, dojo_fraction: float, broker_url: str, hostname: str, seed: int = 0, prefix: str = "sim"
) -> list[SimulatedWorker]:
    """`count` workers named `<prefix>NNNN@<hostname>`, the first round(count * dojo_fraction) of
    them speaking dojo_status. Each has 1-8 processes, up to 3 active tasks (never more than its
    processes), up to 2 reserved and up to 1 scheduled; the same seed gives the same fleet."""
    rng = random.Random(seed)  # noqa: S311 - a reproducible fleet, not a secret
    speakers = round(count * dojo_fraction)
    conn = Connection(broker_url)
    broker_info = {
        "hostname": conn.hostname,
        "userid": conn.userid,
        "virtual_host": conn.virtual_host,
        "port": conn.port,
        "insist": False,
        "ssl": False,
        "transport": conn.transport_cls if isinstance(conn.transport_cls, str) else "redis",
        "connect_timeout": 4,
        "transport_options": {},
        "login_method": None,
        "uri_prefix": None,
        "heartbeat": 120.0,
        "failover_strategy": "round-robin",
        "alternates": [],
        "credential_provider": None,
    }
    safe_url = maybe_sanitize_url(broker_url)
    workers = []
    for index in range(count):
        concurrency = rng.randint(1, 8)
        queues = ["celery", *rng.sample(EXTRA_QUEUES, rng.randint(0, 2))]
        registered = [*TASK_NAMES[:-1], f"{TASK_NAMES[-1]} [rate_limit=10/m]"]
        worker = SimulatedWorker(
            name=f"{prefix}{index:04d}@{hostname}",
            pid=10_000 + index * 10,
            concurrency=concurrency,
            speaks_status=index < speakers,
            broker=broker_info,
            broker_url=safe_url,
            queues=queues,
            registered=registered,
            total={name: rng.randint(0, 5000) for name in rng.sample(TASK_NAMES, 3)},
            started_at=time.time() - rng.randint(60, 86_400),
        )
        worker.active = [
            _request_info(worker, rng, True, rng.choice(queues)) for _ in range(min(concurrency, rng.randint(0, 3)))
        ]
        worker.reserved = [_request_info(worker, rng, False, rng.choice(queues)) for _ in range(rng.randint(0, 2))]
        worker.scheduled = [
            {
                "eta": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(time.time() + rng.randint(60, 3600))),
                "priority": 6,
                "request": _request_info(worker, rng, False, rng.choice(queues)),
            }
            for _ in range(rng.randint(0, 1))
        ]
        workers.append(worker)
    return workers


def celery_mailbox(broker_url: str) -> Mailbox:
    """Celery's control mailbox, with the settings a default worker has (celery.app.control),
    but no producer pool: each node replies on its group's channel, from that group's thread."""
    conf = Celery("fleet-simulator", broker=broker_url).conf
    return Mailbox(
        conf.control_exchange,
        type="fanout",
        accept=conf.accept_content,
        serializer=conf.task_serializer,
        queue_ttl=conf.control_queue_ttl,
        reply_queue_ttl=conf.control_queue_ttl,
        queue_expires=conf.control_queue_expires,
        queue_exclusive=conf.control_queue_exclusive,
        queue_durable=conf.control_queue_durable,
        reply_queue_expires=conf.control_queue_expires,
    )


class _FanoutChannel(kombu_redis.Channel):
    """kombu's Redis channel, except that a fanout message reaches every queue this channel
    consumes that is bound to its exchange (stock kombu keeps one queue per exchange and channel):
    the group decodes it once and hands it to each node it is addressed to."""

    reply_routes_seconds = 1.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._reply_routes: dict[tuple[str, str], tuple[list[str], float]] = {}
        self._shared_client: Any = None

    def _deliver_fanout_message(self, message: dict, exchange: str) -> bool:
        self.connection.client.fleet_group.on_broadcast(message, self)
        return True

    @contextlib.contextmanager
    def conn_or_acquire(self, client: Any = None) -> Any:
        """One redis-py client for the channel's pool instead of a new one per call (per reply)."""
        if client is not None:
            yield client
            return
        if self._shared_client is None:
            self._shared_client = self._create_client()
        yield self._shared_client

    def _lookup(self, exchange: str, routing_key: str, default: str | None = None) -> list[str]:
        """The reply queue of a client, remembered for a second: kombu reads the reply exchange's
        whole binding table (SMEMBERS) before every reply, one more round trip per node and
        command. Only found routes are kept, so a client's new reply queue is seen at once."""
        if not exchange.startswith("reply."):
            return super()._lookup(exchange, routing_key, default)
        now = time.monotonic()
        known = self._reply_routes.get((exchange, routing_key))
        if known is not None and known[1] > now:
            return known[0]
        queues = list(super()._lookup(exchange, routing_key, default))
        if queues:
            self._reply_routes[(exchange, routing_key)] = (queues, now + self.reply_routes_seconds)
        return queues


class _FanoutTransport(kombu_redis.Transport):
    Channel = _FanoutChannel


class _Group:
    """Up to a few hundred nodes on one kombu Connection, drained by one thread."""

    def __init__(self, broker_url: str, box: Mailbox, workers: list[SimulatedWorker]) -> None:
        self.redis = broker_url.startswith(("redis://", "rediss://"))
        self.conn = Connection(broker_url, transport=_FanoutTransport if self.redis else None)
        self.conn.fleet_group = self  # type: ignore[attr-defined]  # _FanoutChannel finds its group here
        self.conn.ensure_connection(max_retries=3)
        self.channel = self.conn.channel()
        self.box = box(self.conn)
        self.accept = prepare_accept_content(self.box.accept)
        self.nodes: dict[str, Node] = {}
        self.consumers: list[Consumer] = []
        for worker in workers:
            node = self.box.Node(worker.name, state=worker, channel=self.channel, handlers=_handlers(worker))
            self.nodes[worker.name] = node
            # Declares the queue, binds it to celery.pidbox and consumes it, as a worker's Pidbox.start.
            self.consumers.append(node.listen(channel=self.channel))
        self.silent: set[str] = set()
        self.stopping = threading.Event()
        self.ready = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name=f"fleet-{workers[0].name}", daemon=True)

    def on_broadcast(self, payload: dict, channel: kombu_redis.Channel) -> None:
        message = channel.Message(payload, channel=channel)
        try:
            body = loads(message.body, message.content_type, message.content_encoding, accept=self.accept)
        except Exception:
            logger.exception("cannot decode a control message")
            return
        if not isinstance(body, dict):
            return
        destination = body.get("destination")
        if destination:
            addressed: Iterable[str] = (name for name in destination if name in self.nodes)
        else:
            addressed = list(self.nodes)
        for name in addressed:
            if name in self.silent:
                continue
            try:
                self.nodes[name].handle_message(body, message)
            except Exception:
                logger.exception("control command error on %s", name)

    def _run(self) -> None:
        try:
            while not self.stopping.is_set():
                with contextlib.suppress(TimeoutError, socket.timeout):
                    self.conn.drain_events(timeout=DRAIN_SECONDS if self.ready.is_set() else 0.05)
                self.ready.set()  # the first poll subscribed the channel
        except BaseException as exc:
            self.error = exc
            self.ready.set()
            logger.exception("fleet group stopped")

    def close(self) -> None:
        """Cancel the consumers (on Redis this unbinds the auto-delete control queues, as a warm
        worker shutdown does) and close the connection; from the main thread once _run ended."""
        for consumer in self.consumers:
            with contextlib.suppress(Exception):
                consumer.cancel()
        with contextlib.suppress(Exception):
            self.channel.close()
        with contextlib.suppress(Exception):
            self.conn.release()


class FleetSimulator:
    """N simulated workers on `broker_url`; `start()` returns once every node answers a ping."""

    def __init__(
        self,
        broker_url: str,
        workers: int = 50,
        dojo_fraction: float = 0.5,
        per_connection: int = 250,
        heartbeats: bool = False,
        hostname: str | None = None,
        seed: int = 0,
        prefix: str = "sim",
    ) -> None:
        if workers < 1 or per_connection < 1 or not 0 <= dojo_fraction <= 1:
            raise ValueError("workers and per_connection must be at least 1, dojo_fraction within 0..1")
        self.broker_url = broker_url
        self.per_connection = per_connection
        self.heartbeats = heartbeats
        host = hostname or socket.gethostname()
        self.workers: dict[str, SimulatedWorker] = {
            worker.name: worker for worker in make_workers(workers, dojo_fraction, broker_url, host, seed, prefix)
        }
        self.groups: list[_Group] = []
        self._beat_stop = threading.Event()
        self._beat_thread: threading.Thread | None = None

    # What the fleet holds, for the checks of a test or a bench.
    @property
    def names(self) -> list[str]:
        return sorted(self.workers)

    @property
    def speakers(self) -> set[str]:
        return {name for name, worker in self.workers.items() if worker.speaks_status}

    def totals(self) -> dict[str, int]:
        """Tasks held across the fleet, by list."""
        kinds = ("active", "reserved", "scheduled")
        return {kind: sum(len(getattr(worker, kind)) for worker in self.workers.values()) for kind in kinds}

    def silence(self, *names: str) -> None:
        """Stop answering as `names` while keeping their bindings: a killed worker, or a busy solo pool."""
        for group in self.groups:
            group.silent.update(name for name in names if name in group.nodes)

    def start(self, timeout: float = 60.0) -> FleetSimulator:
        started = time.monotonic()
        box = celery_mailbox(self.broker_url)
        workers = [self.workers[name] for name in self.names]
        for worker in workers:
            if worker.speaks_status:
                worker.dojo_status()
        try:
            for first in range(0, len(workers), self.per_connection):
                self.groups.append(_Group(self.broker_url, box, workers[first : first + self.per_connection]))
            for group in self.groups:
                group.thread.start()
            for group in self.groups:
                group.ready.wait(timeout)
            self.check()
            if self.heartbeats:
                self._beat_thread = threading.Thread(target=self._beat, name="fleet-heartbeats", daemon=True)
                self._beat_thread.start()
            self._wait_answering(max(1.0, timeout - (time.monotonic() - started)))
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_answering(self, timeout: float) -> None:
        """Ping until every node answered one (a subscription made in a first poll may not be
        in place for a broadcast sent at once)."""
        client = Celery("fleet-simulator-check", broker=self.broker_url)
        deadline = time.monotonic() + timeout
        answered: set[str] = set()
        try:
            while time.monotonic() < deadline:
                missing = sorted(set(self.workers) - answered)
                replies = client.control.ping(destination=missing, timeout=2.0) or []
                answered |= {name for reply in replies for name in reply}
                if answered >= set(self.workers):
                    return
                self.check()
            raise TimeoutError(f"{len(self.workers) - len(answered)} simulated workers did not answer a ping")
        finally:
            client.close()

    def check(self) -> None:
        """Raise the error that stopped a group's drain loop, if one did."""
        for group in self.groups:
            if group.error is not None:
                raise RuntimeError(f"a fleet group stopped: {group.error!r}") from group.error

    def _beat(self) -> None:
        """worker-online, then a worker-heartbeat per node every HEARTBEAT_SECONDS, then worker-offline."""
        conf = Celery("fleet-simulator-events", broker=self.broker_url).conf
        with Connection(self.broker_url) as conn:
            exchange = get_exchange(conn, name=conf.event_exchange)  # fanout on Redis, as Celery's
            producer = Producer(conn.default_channel, exchange=exchange, serializer=conf.event_serializer)
            clock = 0

            def send(kind: str) -> None:
                nonlocal clock
                for worker in self.workers.values():
                    clock += 1
                    event = Event(
                        kind,
                        hostname=worker.name,
                        utcoffset=-time.timezone // 3600,
                        pid=worker.pid,
                        clock=clock,
                        **worker.heartbeat_fields(),
                    )
                    producer.publish(event, routing_key=kind.replace("-", "."), declare=[exchange], delivery_mode=1)

            send("worker-online")
            while not self._beat_stop.wait(HEARTBEAT_SECONDS):
                send("worker-heartbeat")
            send("worker-offline")

    def stop(self) -> None:
        self._beat_stop.set()
        if self._beat_thread is not None:
            self._beat_thread.join(10)
        for group in self.groups:
            group.stopping.set()
        for group in self.groups:
            group.thread.join(DRAIN_SECONDS * 4 + 5)
            group.close()
        self.groups.clear()

    def __enter__(self) -> FleetSimulator:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--workers", type=int, default=200, help="simulated workers (default 200)")
    parser.add_argument("--broker", default=os.environ.get("DD_CELERY_BROKER_URL", "redis://127.0.0.1:6379/0"))
    parser.add_argument("--dojo-fraction", type=float, default=0.5, help="share of nodes that speak dojo_status")
    parser.add_argument("--per-connection", type=int, default=250, help="nodes per kombu connection and thread")
    parser.add_argument("--heartbeats", action="store_true", help="send worker-heartbeat events every 2 s per node")
    parser.add_argument("--hostname", default=None, help="the part after @ in node names (default: this host)")
    parser.add_argument("--prefix", default="sim", help="the part before the number in node names")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--duration", type=float, default=0.0, help="stop after this many seconds (0: on a signal)")
    args = parser.parse_args(argv)
    if args.workers < 1 or args.per_connection < 1 or not 0 <= args.dojo_fraction <= 1:
        parser.error("--workers and --per-connection must be at least 1, --dojo-fraction within 0..1")
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    stop = threading.Event()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    began = time.monotonic()
    fleet = FleetSimulator(
        args.broker,
        workers=args.workers,
        dojo_fraction=args.dojo_fraction,
        per_connection=args.per_connection,
        heartbeats=args.heartbeats,
        hostname=args.hostname,
        seed=args.seed,
        prefix=args.prefix,
    ).start()
    try:
        totals = fleet.totals()
        print(
            f"ready: {len(fleet.workers)} simulated workers ({len(fleet.speakers)} speak dojo_status) on "
            f"{maybe_sanitize_url(args.broker)} in {len(fleet.groups)} connections, "
            f"{totals['active']} active / {totals['reserved']} reserved / {totals['scheduled']} scheduled tasks, "
            f"{time.monotonic() - began:.1f} s",
            flush=True,
        )
        deadline = time.monotonic() + args.duration if args.duration > 0 else None
        while not stop.wait(0.5):
            fleet.check()
            if deadline is not None and time.monotonic() > deadline:
                break
    finally:
        fleet.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
