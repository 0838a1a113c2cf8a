"""Worker ping that stops as soon as every live worker has answered."""

import os
import threading
import uuid

from amqp.exceptions import ResourceLocked
from django.core.cache import cache
from kombu import Connection
from kombu.exceptions import ChannelError
from kombu.pidbox import Mailbox

from dojo.celery import app

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


def _mailbox(conn: Connection) -> Mailbox:
    conf = app.conf
    mailbox = _ThreadMailbox(
        conf.control_exchange,
        type="fanout",
        accept=conf.accept_content,
        serializer=conf.task_serializer,
        reply_queue_ttl=conf.control_queue_ttl,
        reply_queue_expires=conf.control_queue_expires,
    )
    return mailbox(conn)


def bound_worker_names(conn: Connection) -> set[str] | None:
    """Names of the workers bound to the control exchange; None where the broker cannot tell.

    Every worker binds its remote-control queue (``NAME.celery.pidbox``) to the pidbox
    fanout exchange and unbinds on a warm shutdown, so on the virtual transports
    (Redis, filesystem) the bindings name the live workers plus any that were killed.
    AMQP brokers do not list bindings.
    """
    channel = conn.default_channel
    if not hasattr(channel, "get_table"):
        return None
    suffix = f".{app.conf.control_exchange}.pidbox"
    table = channel.get_table(f"{app.conf.control_exchange}.pidbox")
    return {queue.removesuffix(suffix) for _key, _pattern, queue in table}


def query_workers(
    conn: Connection, command: str, timeout: float, queue_consumers: dict[str, int | None] | None = None
) -> dict[str, dict]:
    """Send `command` to the workers in one broadcast; their replies by worker name.

    The broadcast goes to the expected workers by name, so it returns as soon as all of
    them answered instead of always waiting `timeout` (design.md). On Redis and the
    filesystem broker the expected workers are the bound ones; a bound worker that did
    not answer (killed, or a busy solo pool) is left out for SILENT_RECHECK_SECONDS, so
    a dead worker's stale binding costs one slow broadcast a minute, not every one.
    On AMQP see `_amqp_expected`. Beat answers when its remote control is on: it is not
    a worker.
    """
    if timeout <= 0:
        return {}
    broker_key = conn.as_uri()  # password masked
    bound = bound_worker_names(conn)
    if bound is None:
        expected = _amqp_expected(conn, broker_key, queue_consumers or {})
        replies = [] if expected == set() else _broadcast(conn, command, timeout, expected)
    elif not bound:
        return {}
    else:
        silent_key = f"{SILENT_CACHE_KEY}:{broker_key}"
        silent = cache.get(silent_key, set()) & bound
        expected = (bound - silent) or bound
        replies = _broadcast(conn, command, timeout, expected)
        newly_silent = expected - {name for reply in replies for name in reply}
        if newly_silent:
            cache.set(silent_key, silent | newly_silent, SILENT_RECHECK_SECONDS)
    answers = {name: answer for reply in replies for name, answer in reply.items()}
    workers = {name: answers[name] for name in sorted(answers) if not name.startswith(BEAT_PREFIX)}
    if bound is None:
        known = {name: reply.get("active_queues") for name, reply in workers.items()}
        cache.set(f"{KNOWN_CACHE_KEY}:{broker_key}", known, KNOWN_SECONDS)
    return workers


def _amqp_expected(conn: Connection, broker_key: str, queue_consumers: dict[str, int | None]) -> set[str] | None:
    """On AMQP, which lists no bindings: the workers that answered last time and still
    consume their control queue, when the broker's consumer counts of the configured
    queues are exactly theirs. Anything else (a new worker, a worker whose queues are
    unknown, nothing remembered) returns None: ask everyone and wait the whole timeout.
    """
    known: dict[str, list[str] | None] | None = cache.get(f"{KNOWN_CACHE_KEY}:{broker_key}")
    if known is None:
        return None
    control_queue = f"{{}}.{app.conf.control_exchange}.pidbox"
    live = {name: queues for name, queues in known.items() if _consumer_count(conn, control_queue.format(name))}
    if any(queues is None for queues in live.values()):
        return None
    for queue, count in queue_consumers.items():
        if count is not None and count != sum(queue in queues for queues in live.values()):
            return None
    return set(live)


def _consumer_count(conn: Connection, queue: str) -> int:
    """Consumers of `queue`; a worker's control queue is exclusive to its live connection,
    so RESOURCE_LOCKED means it is consumed and NOT_FOUND that its worker is gone."""
    with conn.channel() as channel:  # an error closes the channel
        try:
            return channel.queue_declare(queue=queue, passive=True).consumer_count
        except ResourceLocked:
            return 1
        except ChannelError:
            return 0


def _broadcast(conn: Connection, command: str, timeout: float, destination: set[str] | None) -> list[dict]:
    """Send `command` to `destination` (everyone if None); stops once every destination answered."""
    names = sorted(destination) if destination else None
    limit = len(names) if names else None
    return _mailbox(conn)._broadcast(command, {}, names, reply=True, timeout=timeout, limit=limit) or []
