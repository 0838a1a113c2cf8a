"""Worker ping that stops as soon as every live worker has answered."""

import os
import threading
import uuid

from django.core.cache import cache
from kombu import Connection
from kombu.pidbox import Mailbox

from dojo.celery import app

BEAT_PREFIX = "celerybeat@"
SILENT_CACHE_KEY = "dojo.celery_ops.silent_workers"
SILENT_RECHECK_SECONDS = 60


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


def query_workers(conn: Connection, command: str, timeout: float) -> dict[str, dict]:
    """Send `command` to the workers in one broadcast; their replies by worker name.

    The broadcast goes to the bound workers by name, so it returns as soon as all of
    them answered instead of always waiting `timeout` (design.md). A bound worker that
    did not answer (killed, or a busy solo pool) is left out of the next broadcasts for
    SILENT_RECHECK_SECONDS, so a dead worker's stale binding costs one slow broadcast a
    minute, not every one. Beat answers when its remote control is on: it is not a worker.
    """
    if timeout <= 0:
        return {}
    bound = bound_worker_names(conn)
    if bound is None:
        replies = _broadcast(conn, command, timeout, destination=None)
    elif not bound:
        return {}
    else:
        silent_key = f"{SILENT_CACHE_KEY}:{conn.as_uri()}"  # one broker's workers, password masked
        silent = cache.get(silent_key, set()) & bound
        expected = (bound - silent) or bound
        replies = _broadcast(conn, command, timeout, destination=sorted(expected))
        newly_silent = expected - {name for reply in replies for name in reply}
        if newly_silent:
            cache.set(silent_key, silent | newly_silent, SILENT_RECHECK_SECONDS)
    answers = {name: answer for reply in replies for name, answer in reply.items()}
    return {name: answers[name] for name in sorted(answers) if not name.startswith(BEAT_PREFIX)}


def _broadcast(conn: Connection, command: str, timeout: float, destination: list[str] | None) -> list[dict]:
    """Send `command` to `destination` (everyone if None); stops once every destination answered."""
    limit = len(destination) if destination else None
    return _mailbox(conn)._broadcast(command, {}, destination, reply=True, timeout=timeout, limit=limit) or []
