"""The remote-control mailbox: broadcasts to the workers that stop as soon as every live worker
has answered, on the bounded connection given (never the app's own producer pool)."""

import os
import threading
import uuid
from collections.abc import Collection

from django.core.cache import cache
from kombu import Connection
from kombu.pidbox import Mailbox

from dojo.celery import app
from dojo.ops.brokers.connection import broker_connection, broker_timeout
from dojo.ops.brokers.registry import Broker

BEAT_PREFIX = "celerybeat@"
SILENT_CACHE_KEY = "dojo.ops.silent_workers"
SILENT_RECHECK_SECONDS = 60
KNOWN_CACHE_KEY = "dojo.ops.known_workers"
KNOWN_SECONDS = 600


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
    command: str,
    timeout: float,
    queue_consumers: dict[str, int | None] | None = None,
) -> dict[str, dict]:
    """Send `command` to the workers in one broadcast; their replies by worker name.

    The broadcast goes to the expected workers by name, so it returns as soon as all of
    them answered instead of always waiting `timeout` (design.md). On Redis and the
    filesystem broker the expected workers are the bound ones; a bound worker that did
    not answer (killed, or a busy solo pool) is left out for SILENT_RECHECK_SECONDS, so
    a dead worker's stale binding costs one slow broadcast a minute, not every one.
    On brokers that list no bindings (AMQP) see `_remembered_expected`. Beat answers when its
    remote control is on: it is not a worker.
    """
    if timeout <= 0:
        return {}
    broker_key = conn.as_uri()  # password masked
    bound = broker.transport.bound_workers(conn, app.conf.control_exchange)
    if bound is None:
        expected = _remembered_expected(conn, broker, broker_key, queue_consumers or {})
        replies = [] if expected == set() else _send(conn, command, {}, expected, timeout)
    elif not bound:
        return {}
    else:
        silent_key = f"{SILENT_CACHE_KEY}:{broker_key}"
        silent = cache.get(silent_key, set()) & bound
        expected = (bound - silent) or bound
        replies = _send(conn, command, {}, expected, timeout)
        newly_silent = expected - {name for reply in replies for name in reply}
        if newly_silent:
            cache.set(silent_key, silent | newly_silent, SILENT_RECHECK_SECONDS)
    workers = _workers_of(replies)
    if bound is None:
        known = {name: reply.get("active_queues") for name, reply in workers.items()}
        cache.set(f"{KNOWN_CACHE_KEY}:{broker_key}", known, KNOWN_SECONDS)
    return workers


def _remembered_expected(
    conn: Connection, broker: Broker, broker_key: str, queue_consumers: dict[str, int | None]
) -> set[str] | None:
    """On brokers that list no bindings (AMQP): the workers that answered last time and still
    consume their control queue, when the broker's consumer counts of the configured
    queues are exactly theirs. Anything else (a new worker, a worker whose queues are
    unknown, nothing remembered) returns None: ask everyone and wait the whole timeout.
    """
    known: dict[str, list[str] | None] | None = cache.get(f"{KNOWN_CACHE_KEY}:{broker_key}")
    if known is None:
        return None
    control_queue = f"{{}}.{app.conf.control_exchange}.pidbox"
    live = {
        name: queues
        for name, queues in known.items()
        if broker.transport.consumer_count(conn, control_queue.format(name))
    }
    if any(queues is None for queues in live.values()):
        return None
    for queue, count in queue_consumers.items():
        if count is not None and count != sum(queue in queues for queues in live.values()):
            return None
    return set(live)


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
