"""Worker ping that stops as soon as every live worker has answered."""

import os
import threading
import uuid

from kombu import Connection
from kombu.pidbox import Mailbox

from dojo.celery import app

BEAT_PREFIX = "celerybeat@"


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


def live_worker_bound(conn: Connection) -> int | None:
    """An upper bound on the number of live workers, from the broker alone; None if unknown.

    Every worker binds its remote-control queue to the pidbox fanout exchange, so
    on the virtual transports (Redis, filesystem) the bindings count the workers,
    plus any that died without unbinding. AMQP brokers do not list bindings.
    """
    channel = conn.default_channel
    if not hasattr(channel, "get_table"):
        return None
    pidbox_exchange = f"{app.conf.control_exchange}.pidbox"
    return len({queue for _key, _pattern, queue in channel.get_table(pidbox_exchange)})


def ping_workers(conn: Connection, timeout: float) -> list[str]:
    """Names of the workers that answered a ping within `timeout` seconds.

    With a known bound the ping returns as soon as that many replies arrived instead
    of always waiting `timeout` (design.md); with a bound of 0 nothing is sent. Beat
    answers pings when its remote control is on: it is not a worker.
    """
    bound = live_worker_bound(conn)
    if bound == 0 or timeout <= 0:
        return []
    replies = _mailbox(conn)._broadcast("ping", {}, reply=True, timeout=timeout, limit=bound) or []
    names = sorted(name for reply in replies for name in reply)
    return [name for name in names if not name.startswith(BEAT_PREFIX)]
