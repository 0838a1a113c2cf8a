"""The remote-control mailbox: broadcasts to the workers that stop as soon as every live worker
has answered, on the bounded connection given (never the app's own producer pool)."""

import contextlib
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Collection
from datetime import timedelta
from typing import Any

import orjson
from django.core.cache import cache
from django.db import DatabaseError
from kombu import Connection, Consumer, Producer
from kombu.exceptions import ChannelError, ContentDisallowed, DecodeError
from kombu.message import Message
from kombu.pidbox import Mailbox
from kombu.serialization import prepare_accept_content
from kombu.transport.redis import Channel as RedisChannel
from kombu.utils.json import loads

from dojo.celery import app
from dojo.models import CeleryProcess, MonitoredWorker, MonitorHeartbeat
from dojo.ops.brokers.connection import broker_connection, broker_timeout
from dojo.ops.brokers.registry import Broker
from dojo.ops.fleet.clock import database_now
from dojo.ops.fleet.worker_reply import INSPECT_COMMANDS, STATUS_COMMAND, describe_worker, speaks_status

BEAT_PREFIX = "celerybeat@"
SILENT_CACHE_KEY = "dojo.ops.silent_workers"
SILENT_RECHECK_SECONDS = 60
KNOWN_CACHE_KEY = "dojo.ops.known_workers"
KNOWN_SECONDS = 600
EVENTS_LIVE_SECONDS = 4.0  # two of Celery's default heartbeat intervals
SPEAKERS_CACHE_KEY = "dojo.ops.status_speakers"  # workers whose stats announced dojo_status
# AMQP: how long the remembered set answers for everyone before the next round asks every worker
# and waits the whole timeout. RabbitMQ lists no queues over AMQP, so a new worker that consumes
# only queues outside DD_CELERY_QUEUES changes no count the read can see; this bounds how long it
# goes unseen (with no event monitor running) at the cost of one slow round per period and process.
FULL_ROUND_CACHE_KEY = "dojo.ops.full_round"
FULL_ROUND_SECONDS = 30
# Redis / filesystem: a bound worker silent in this many consecutive rounds it was asked in (one
# every SILENT_RECHECK_SECONDS) and without a heartbeat (database or events) for DEAD_AFTER_SECONDS
# is dead: its binding is removed, so its stale binding stops costing a slow round a minute.
SILENT_ROUNDS_CACHE_KEY = "dojo.ops.silent_rounds"
DEAD_AFTER_SILENT_ROUNDS = 3
DEAD_AFTER_SECONDS = 60.0  # no heartbeat (database or events) for this long: the worker is gone
# Plain workers (no dojo_status) answer the built-in commands one broadcast each. What they
# register and consume changes rarely, so RARE_COMMANDS go only to a worker not answered before,
# and to all of them once every FULL_ROUND_SECONDS; otherwise their last answers are reused.
RARE_COMMANDS = ("registered", "active_queues")
FREQUENT_COMMANDS = tuple(command for command in INSPECT_COMMANDS if command not in RARE_COMMANDS)
RARE_ANSWERS_CACHE_KEY = "dojo.ops.rare_answers"
RARE_ROUND_CACHE_KEY = "dojo.ops.rare_round"
RARE_ANSWERS_MAX_WORKERS = 5000  # the remembered answers are bounded per fleet
# Redis: replies are popped this many at a time per priority list (RPOP with a count), waiting at
# most REPLY_WAIT_SECONDS per BRPOP when none is there (well within the bounded socket timeout).
REPLY_BATCH = 500
REPLY_WAIT_SECONDS = 0.1
JSON_TYPE = "application/json"
# A text's digits as "0", everything else as " ": a 19-digit run (2**63 has 19 digits; a shorter
# integer fits orjson's 64 bits) is then one substring search, far cheaper than a regex.
DIGITS_ONLY = bytes(ord("0") if chr(byte) in "0123456789" else ord(" ") for byte in range(256))
LONG_DIGIT_RUN = b"0" * 19

logger = logging.getLogger(__name__)


class _ThreadMailbox(Mailbox):
    """Celery's control mailbox with one stable reply queue per process thread.

    Celery's own `app.control` publishes through the app's producer pool, which is
    bound to the broker the app was configured with at first use; here everything
    goes through the connection given. Celery also names a new reply queue on every
    call, which the filesystem broker never cleans up; this one reuses its queue.
    """

    @property
    def oid(self) -> str:
        return str(uuid.uuid3(uuid.NAMESPACE_OID, f"{os.uname().nodename}-{os.getpid()}-{threading.get_ident()}"))


def mailbox(conn: Connection) -> Mailbox:
    conf = app.conf
    box = _ThreadMailbox(
        conf.control_exchange,
        type="fanout",
        accept=conf.accept_content,
        serializer=conf.task_serializer,
        reply_queue_ttl=conf.control_queue_ttl,
        reply_queue_expires=conf.control_queue_expires,
    )
    return box(conn)


def query_workers(
    conn: Connection,
    broker: Broker,
    timeout: float,
    queue_consumers: dict[str, int | None] | None = None,
) -> dict[str, dict]:
    """Every answering worker's part of the status document (worker_reply.describe_worker), by
    worker name, in one round on `conn`: `dojo_status` to the workers known to answer it, the six
    built-in inspect commands to every other one, all published at once and collected in one drain.

    The commands go to the expected workers by name, so the round ends as soon as all of them
    answered instead of always waiting `timeout` (design.md). On Redis and the filesystem broker
    the expected workers are the bound ones; a bound worker that did not answer (killed, or a busy
    solo pool) is left out for SILENT_RECHECK_SECONDS, so a dead worker's stale binding costs one
    slow round a minute, not every one, and once silent DEAD_AFTER_SILENT_ROUNDS times in a row and
    without a heartbeat for DEAD_AFTER_SECONDS its binding is removed (`_forget_the_dead`). On
    brokers that list no bindings (AMQP) see
    `_remembered_expected`; when it cannot tell, the built-in commands go to everyone and the round
    waits the whole timeout. Beat answers when its remote control is on: it is not a worker.
    """
    if timeout <= 0:
        return {}
    started = time.monotonic()
    broker_key = fleet_key(conn)
    bound = broker.transport.bound_workers(conn, app.conf.control_exchange)
    silent_key = f"{SILENT_CACHE_KEY}:{broker_key}"
    speakers_key = f"{SPEAKERS_CACHE_KEY}:{broker_key}"
    if bound is None:
        expected = _remembered_expected(conn, broker, broker_key, queue_consumers or {})
    elif not bound:
        return {}
    else:
        silent = cache.get(silent_key, set()) & bound
        expected = (bound - silent) or bound
    if expected == set():
        return {}
    # Finding the expected workers (AMQP: one passive declare per known worker) does not eat the
    # round: it keeps at least half of `timeout` (the read's bound: status.read_status).
    deadline = max(started + timeout, time.monotonic() + timeout / 2)
    speakers: set[str] = cache.get(speakers_key, set())
    status_to = sorted(speakers & expected) if expected is not None else sorted(speakers)
    inspect_to = sorted(expected - speakers) if expected is not None else None  # None: everyone
    rare_key, rare_round_key = f"{RARE_ANSWERS_CACHE_KEY}:{broker_key}", f"{RARE_ROUND_CACHE_KEY}:{broker_key}"
    full_rare_round = inspect_to is None or cache.get(rare_round_key) is None
    remembered: dict[str, dict] = {} if full_rare_round or not inspect_to else cache.get(rare_key, {})
    rare_to = inspect_to if full_rare_round else [name for name in inspect_to if name not in remembered]
    # When every bound worker is sent dojo_status, it goes without a destination list: the list
    # names every worker, and Redis copies the message to each of them (19 KB to each of 1,000).
    status_to_all = bound is not None and not inspect_to and set(status_to) == bound
    answers, rare_answers = _round(conn, status_to, inspect_to, deadline, rare_to, remembered, status_to_all)
    workers = {name: answer for name, answer in answers.items() if not name.startswith(BEAT_PREFIX)}
    if expected is not None and bound is not None:
        newly_silent = expected - set(answers)
        if newly_silent:
            cache.set(silent_key, (cache.get(silent_key, set()) & bound) | newly_silent, SILENT_RECHECK_SECONDS)
        _forget_the_dead(conn, broker, broker_key, bound, expected, set(answers))
    learnt = {name for name, answer in workers.items() if answer.pop("speaks_status", False)}
    if inspect_to is None or inspect_to:
        _remember_rare(rare_key, remembered, rare_answers, set(workers) - learnt)
        if full_rare_round:
            cache.set(rare_round_key, True, FULL_ROUND_SECONDS)
    if workers:  # written every round, so it expires only KNOWN_SECONDS after a worker last answered
        cache.set(speakers_key, (speakers - set(workers)) | learnt, KNOWN_SECONDS)
    if bound is None:
        known = {name: answer.get("active_queues") for name, answer in workers.items()}
        cache.set(f"{KNOWN_CACHE_KEY}:{broker_key}", known, KNOWN_SECONDS)
        if expected is None:  # everyone was asked
            cache.set(f"{FULL_ROUND_CACHE_KEY}:{broker_key}", True, FULL_ROUND_SECONDS)
    return dict(sorted(workers.items()))


def fleet_key(conn: Connection) -> str:
    """What names one fleet in the cache keys of what the web process learns about its workers
    (silent ones, speakers, the remembered set): the URL with its database or virtual host (password
    masked) and, on Redis, the transport's `global_keyprefix`, since backends on one server that
    differ in either have separate exchanges and workers. The URL alone keeps the key of a broker
    with no key prefix as it was."""
    prefix = (conn.transport_options or {}).get("global_keyprefix")
    return f"{conn.as_uri()}#keyprefix={prefix}" if prefix else conn.as_uri()


def status_speakers(conn: Connection) -> set[str]:
    """The workers of `conn`'s broker known (from their stats, within KNOWN_SECONDS) to answer
    dojo_status, i.e. to run the project's code: the only ones to send a project command to."""
    return set(cache.get(f"{SPEAKERS_CACHE_KEY}:{fleet_key(conn)}", set()))


def _forget_the_dead(
    conn: Connection, broker: Broker, broker_key: str, bound: set[str], asked: set[str], answered: set[str]
) -> None:
    """Count each asked bound worker's consecutive silent rounds; remove the binding of one silent
    DEAD_AFTER_SILENT_ROUNDS times in a row that a heartbeat also says is gone (`_known_dead`): a
    killed worker's binding is removed by nothing else. Silence alone is never enough: a busy solo
    pool, or a round that ran out of time on a large fleet, does not answer either (design.md).
    A worker that answers starts again at 0."""
    rounds_key = f"{SILENT_ROUNDS_CACHE_KEY}:{broker_key}"
    before: dict[str, int] = cache.get(rounds_key, {})
    rounds = {name: count for name, count in before.items() if name in bound and name not in answered}
    for name in asked - answered:
        rounds[name] = rounds.get(name, 0) + 1
    silent = {name for name, count in rounds.items() if count >= DEAD_AFTER_SILENT_ROUNDS}
    for name in sorted(_known_dead(broker.alias, silent) if silent else ()):
        try:
            removed = broker.transport.remove_binding(conn, app.conf.control_exchange, name)
        except (ChannelError, OSError) as exc:  # left for a later round; the status is read all the same
            logger.warning("The control binding of worker %s was not removed: %s", name, type(exc).__name__)
            continue
        if removed:
            logger.info(
                "Removed the control binding of worker %s (backend %s): silent in %d rounds in a row, "
                "no heartbeat for %g s",
                name,
                broker.alias,
                rounds[name],
                DEAD_AFTER_SECONDS,
            )
        rounds.pop(name)
    if rounds != before:
        cache.set(rounds_key, rounds, KNOWN_SECONDS)


def _remember_rare(key: str, remembered: dict[str, dict], answered: dict[str, dict], plain: set[str]) -> None:
    """Keep the RARE_COMMANDS answers of the plain workers that answered this round: the new
    ones, and the reused ones of those still answering (a worker gone drops out), bounded."""
    kept = {name: answers for name, answers in remembered.items() if name in plain and name not in answered}
    kept.update((name, answers) for name, answers in answered.items() if name in plain)
    if len(kept) > RARE_ANSWERS_MAX_WORKERS:
        kept = dict(sorted(kept.items())[:RARE_ANSWERS_MAX_WORKERS])
    if kept != remembered:
        cache.set(key, kept, KNOWN_SECONDS)


def _round(
    conn: Connection,
    status_to: list[str],
    inspect_to: list[str] | None,
    deadline: float,
    rare_to: list[str] | None = None,
    remembered: dict[str, dict] | None = None,
    status_to_all: bool = False,
) -> tuple[dict[str, dict], dict[str, dict]]:
    """Publish dojo_status to `status_to` (with no destination when `status_to_all`: they are all
    the workers) and the built-in commands to `inspect_to` (None: to every worker; RARE_COMMANDS
    only to `rare_to`, the others' answers taken from `remembered`), then
    drain the replies until every addressed worker answered every command it was sent, or
    `deadline`. Each worker's answer is described (worker_reply.describe_worker), with
    `speaks_status` saying whether its answer came from, or its stats announce, dojo_status.
    Also returns the RARE_COMMANDS answers received now, by worker (both commands, no error)."""
    remembered = remembered or {}
    if inspect_to is None:
        rare_to = None
    box = mailbox(conn)
    timeout = max(0.0, deadline - time.monotonic())
    sent: dict[str, tuple[str, set[str] | None]] = {}  # ticket -> (command, workers addressed, None: all)
    plan = [(STATUS_COMMAND, status_to)] if status_to else []
    if inspect_to is None or inspect_to:
        plan += [(command, inspect_to) for command in FREQUENT_COMMANDS]
        if rare_to is None or rare_to:
            plan += [(command, rare_to) for command in RARE_COMMANDS]
    channel = conn.default_channel
    reply_queue = box.reply_queue(channel)
    reply_queue.declare()  # once: kombu's _publish declares it again for every command
    reply_queue.purge()  # late replies of an earlier round that ran out of time would eat this one's
    with Producer(channel) as producer:
        for command, destination in plan:
            ticket = uuid.uuid4().hex
            producer.publish(
                {
                    "method": command,
                    "arguments": {},
                    "destination": None if command == STATUS_COMMAND and status_to_all else destination,
                    "pattern": None,
                    "matcher": None,
                    "ticket": ticket,
                    "reply_to": {"exchange": box.reply_exchange.name, "routing_key": box.oid},
                },
                exchange=box.exchange.name,
                declare=[box.exchange],
                headers={"clock": box.clock.forward(), "expires": time.time() + timeout},
                serializer=box.serializer,
            )
            sent[ticket] = (command, set(destination) if destination is not None else None)
    replies = _drain(conn, box, sent, deadline)
    by_worker: dict[str, dict[str, object]] = {}
    for ticket, bodies in replies.items():
        command = sent[ticket][0]
        for body in bodies:
            for name, answer in body.items():
                by_worker.setdefault(name, {})[command] = answer
    fresh = {
        name: {command: answers[command] for command in RARE_COMMANDS}
        for name, answers in by_worker.items()
        if all(command in answers and not _is_error(answers[command]) for command in RARE_COMMANDS)
    }
    for name, answers in by_worker.items():
        if STATUS_COMMAND not in answers and name in remembered and name not in fresh:
            answers.update({command: answer for command, answer in remembered[name].items() if command not in answers})
    return {name: _described(answers, conn) for name, answers in by_worker.items()}, fresh


def _described(answers: dict[str, object], conn: Connection) -> dict:
    """One worker's answers as its part of the document. A worker that was sent dojo_status but
    answered it with an error (it no longer runs this release) is forgotten as a speaker."""
    status = answers.get(STATUS_COMMAND)
    if isinstance(status, dict) and "error" not in status:
        return {**status, "speaks_status": True}
    if status is not None:
        return {"error": status.get("error") if isinstance(status, dict) else repr(status), "speaks_status": False}
    own = {command: answer for command, answer in answers.items() if not _is_error(answer)}
    stats = own.get("stats")
    described = describe_worker(own, _broker_of(stats, conn))
    described["speaks_status"] = speaks_status(stats if isinstance(stats, dict) else None)
    return described


def _is_error(answer: object) -> bool:
    return isinstance(answer, dict) and set(answer) == {"error"}


def _broker_of(stats: object, conn: Connection) -> str | None:
    """The broker a worker consumes from, as its stats describe it, without credentials."""
    info = stats.get("broker") if isinstance(stats, dict) else None
    if not isinstance(info, dict) or not info.get("hostname"):
        return None
    port = f":{info['port']}" if info.get("port") else ""
    vhost = info.get("virtual_host") or ""
    return f"{info.get('transport') or conn.transport_cls}://{info['hostname']}{port}/{vhost.lstrip('/')}"


def _drain(conn: Connection, box: Mailbox, sent: dict[str, tuple[str, set[str] | None]], deadline: float) -> dict:
    """The reply bodies by ticket, until every worker a ticket addressed answered it (a ticket to
    all workers waits for `deadline`). Replies to other tickets (late ones of an earlier round) and
    from workers a ticket did not address (one that started after the round was planned, answering
    a command sent with no destination) are dropped."""
    replies: dict[str, list[dict]] = {ticket: [] for ticket in sent}
    waiting = {ticket: set(addressed) for ticket, (_, addressed) in sent.items() if addressed is not None}

    def on_message(body: dict, message) -> None:
        headers = message.headers or {}
        box.clock.adjust(headers.get("clock") or 0)
        expires = headers.get("expires")
        if expires and time.time() > expires:
            return
        ticket = headers.get("ticket")
        bodies = replies.get(ticket)
        if bodies is None or not isinstance(body, dict):
            return
        addressed = sent[ticket][1]
        if addressed is None or addressed.issuperset(body):
            bodies.append(body)
            waiting.get(ticket, set()).difference_update(body)

    def complete() -> bool:
        return len(waiting) == len(sent) and not any(waiting.values())

    channel = conn.default_channel
    queue = box.reply_queue
    try:
        if isinstance(channel, RedisChannel):
            _pop_replies(channel, queue.name, box.accept, on_message, complete, deadline)
            return replies
        with Consumer(channel, [queue], accept=box.accept, no_ack=True, callbacks=[on_message]):
            while not complete():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    conn.drain_events(timeout=remaining)
                except TimeoutError:
                    break
    finally:
        channel.after_reply_message_received(queue.name)
    return replies


def _pop_replies(
    channel: RedisChannel,
    queue_name: str,
    accept: Collection[str],
    on_message: Callable[[dict, Message], None],
    complete: Callable[[], bool],
    deadline: float,
) -> None:
    """Redis: the reply queue's messages popped in batches (every priority list in one pipeline)
    rather than one BRPOP round trip per reply as kombu's consumer takes them: a round of a large
    fleet drains thousands of replies. A reply that cannot be decoded (a content type not in
    `accept`) is dropped."""
    keys = [channel._q_for_pri(queue_name, priority) for priority in channel.priority_steps]
    content_types = prepare_accept_content(accept)  # as kombu's Consumer takes `accept`
    with channel.conn_or_acquire() as client:
        while not complete():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            with client.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.rpop(key, REPLY_BATCH)
                popped = [raw for batch in pipe.execute() if batch for raw in batch]
            if not popped:
                item = client.brpop(keys, timeout=max(0.01, min(remaining, REPLY_WAIT_SECONDS)))
                popped = [item[1]] if item else []
            for raw in popped:
                message = channel.message_to_python(json_loads(raw))
                message.accept = content_types
                try:
                    body = _decoded(message)
                except (ContentDisallowed, DecodeError) as exc:
                    logger.warning("Dropped a control reply that could not be decoded: %s", type(exc).__name__)
                    continue
                on_message(body, message)


def _decoded(message: Message) -> Any:
    """The reply's body as kombu's `message.decode()` gives it: a JSON body (the content type kombu
    writes control replies in) read by `json_loads`, any other through kombu's serializers."""
    if message.content_type == JSON_TYPE and message.content_encoding == "utf-8" and JSON_TYPE in message.accept:
        return json_loads(message.body)
    return message.decode()


def json_loads(raw: bytes | str) -> Any:
    """kombu's JSON reader, by orjson (a round of 1,000 workers decodes 1.7 MB: a fifth of the CPU)
    wherever it reads the same. A text holding kombu's typed values (`"__type__"`), one orjson
    refuses (NaN, a lone surrogate) and one with a run of 19 digits or more (orjson reads an
    integer past 64 bits as a float; such a run elsewhere only costs the slower reader) are read
    by kombu's own `loads`."""
    data = raw.encode() if isinstance(raw, str) else raw
    if b'"__type__"' not in data and LONG_DIGIT_RUN not in data.translate(DIGITS_ONLY):
        with contextlib.suppress(orjson.JSONDecodeError):
            return orjson.loads(data)
    return loads(raw)


def _remembered_expected(
    conn: Connection, broker: Broker, broker_key: str, queue_consumers: dict[str, int | None]
) -> set[str] | None:
    """On brokers that list no bindings (AMQP): the workers that answered last time and still
    consume their control queue, when the broker's consumer counts of the configured
    queues are exactly theirs and the event monitor knows no other live worker (a new worker
    that consumes only paused queues changes no count). Anything else (a new worker, a worker
    whose queues are unknown, nothing remembered) returns None: ask everyone and wait the whole
    timeout; so does a round FULL_ROUND_SECONDS after everyone was last asked, which finds a new
    worker that consumes only queues outside DD_CELERY_QUEUES (no count the read sees changes).
    The control queues' consumer counts are read on one channel (AmqpTransport.consumer_counts).
    """
    known: dict[str, list[str] | None] | None = cache.get(f"{KNOWN_CACHE_KEY}:{broker_key}")
    if known is None or cache.get(f"{FULL_ROUND_CACHE_KEY}:{broker_key}") is None:
        return None  # nothing remembered, or FULL_ROUND_SECONDS since everyone was last asked
    if not _seen_by_events(broker.alias) <= set(known):
        return None
    control_queue = f"{{}}.{app.conf.control_exchange}.pidbox"
    counts = broker.transport.consumer_counts(conn, [control_queue.format(name) for name in known])
    live = {name: queues for name, queues in known.items() if counts[control_queue.format(name)]}
    if any(queues is None for queues in live.values()):
        return None
    for queue, count in queue_consumers.items():
        if count is not None and count != sum(queue in queues for queues in live.values()):
            return None
    return set(live)


def _known_dead(backend_alias: str, names: set[str]) -> set[str]:
    """Of `names`, the workers a heartbeat says are gone: their own database heartbeat
    (CeleryProcess, the project's workers) is older than DEAD_AFTER_SECONDS, or the event monitor,
    live and running for longer than that, saw them go offline or heard nothing from them for that
    long. A fresh heartbeat of either kind, or no monitor and no heartbeat row, proves nothing.
    Ages are against the database's clock (clock.database_now), not this server's."""
    try:
        now = database_now()
        cutoff = now - timedelta(seconds=DEAD_AFTER_SECONDS)
        processes = CeleryProcess.objects.filter(backend=backend_alias, kind=CeleryProcess.Kind.WORKER, name__in=names)
        beats = dict(processes.values_list("name", "last_heartbeat_at"))
        events = dict(
            MonitoredWorker.objects.filter(backend=backend_alias, hostname__in=names, online=True).values_list(
                "hostname", "last_heartbeat_at"
            )
        )
        monitor_watching = MonitorHeartbeat.objects.filter(
            backend=backend_alias,
            stopped_at__isnull=True,
            started_at__lte=cutoff,
            last_beat_at__gte=now - timedelta(seconds=EVENTS_LIVE_SECONDS),
        ).exists()
    except DatabaseError:
        return set()
    dead = {name for name, beat in beats.items() if beat < cutoff}
    if monitor_watching:
        dead |= {name for name in names if events.get(name, cutoff) <= cutoff}
    return {name for name in dead if beats.get(name, cutoff) <= cutoff and events.get(name, cutoff) <= cutoff}


def _seen_by_events(backend_alias: str) -> set[str]:
    """The workers of the backend the event monitor saw live within the last EVENTS_LIVE_SECONDS
    (none when no monitor runs, or the database does not answer)."""
    try:
        since = database_now() - timedelta(seconds=EVENTS_LIVE_SECONDS)
        rows = MonitoredWorker.objects.filter(backend=backend_alias, online=True, last_heartbeat_at__gte=since)
        return {name for name in rows.values_list("hostname", flat=True) if not name.startswith(BEAT_PREFIX)}
    except DatabaseError:
        return set()


def broadcast(
    broker: Broker,
    command: str,
    arguments: dict,
    expected_replies: int,
    destination: list[str] | None = None,
) -> dict[str, dict]:
    """Send remote-control `command` to the workers of `broker` (all of them, or `destination`);
    their replies by worker name.

    Returns once `expected_replies` workers answered, else after the broker time bound. With no
    reply expected the command is still sent, to any worker the status read did not see.
    """
    with broker_connection(broker=broker) as conn:
        if expected_replies <= 0:
            _send(conn, command, arguments, destination, broker_timeout(), reply=False)
            return {}
        replies = _send(conn, command, arguments, destination, broker_timeout(), limit=expected_replies)
    return _workers_of(replies)


def _send(
    conn: Connection,
    command: str,
    arguments: dict,
    destination: Collection[str] | None,
    timeout: float,
    reply: bool = True,
    limit: int | None = None,
) -> list[dict]:
    """Send `command` to `destination` (everyone if None); with a reply, stop once `limit` (by
    default every destination) answered, else after `timeout`."""
    names = sorted(destination) if destination else None
    if limit is None and names:
        limit = len(names)
    return mailbox(conn)._broadcast(command, arguments, names, reply=reply, timeout=timeout, limit=limit) or []


def _workers_of(replies: list[dict]) -> dict[str, dict]:
    """The replies by worker name, sorted. Beat answers when its remote control is on: not a worker."""
    answers = {name: answer for reply in replies for name, answer in reply.items()}
    return {name: answers[name] for name in sorted(answers) if not name.startswith(BEAT_PREFIX)}
