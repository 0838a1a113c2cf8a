"""Remote-control broadcasts for the controls (pause, resume, revoke, terminate).

Who is live comes from a fresh status read (one broadcast, cut short once every bound worker
answered); the control itself then goes to every worker of the backend and returns as soon as
the live ones answered, or after the broker time bound.
"""

from kombu import Connection

from dojo.ops.brokers.connection import BrokerUnavailable, broker_connection, broker_timeout
from dojo.ops.brokers.registry import Broker
from dojo.ops.fleet.mailbox import BEAT_PREFIX, _mailbox
from dojo.ops.fleet.status_cache import get_status


def live_workers(backend: Broker) -> dict[str, dict]:
    """Each live worker's dojo_status reply (active tasks, active_queues, ...), read now.

    Raises BrokerUnavailable when the broker does not answer.
    """
    status = get_status(refresh=True, backend=backend)
    if not status.connected:
        raise BrokerUnavailable(status.error or "the broker did not answer")
    return status.worker_replies


def broadcast(
    backend: Broker,
    command: str,
    arguments: dict,
    expected_replies: int,
    destination: list[str] | None = None,
) -> dict[str, dict]:
    """Send remote-control `command` to the workers of `backend` (all of them, or `destination`);
    their replies by worker name.

    Returns once `expected_replies` workers answered, else after the broker time bound. With no
    reply expected the command is still sent, to any worker the status read did not see.
    """
    with broker_connection(backend=backend) as conn:
        if expected_replies <= 0:
            _send(conn, command, arguments, destination, reply=False)
            return {}
        replies = _send(conn, command, arguments, destination, reply=True, limit=expected_replies)
    answers = {name: answer for reply in replies for name, answer in reply.items()}
    return {name: answer for name, answer in answers.items() if not name.startswith(BEAT_PREFIX)}


def _send(
    conn: Connection,
    command: str,
    arguments: dict,
    destination: list[str] | None,
    reply: bool,
    limit: int | None = None,
) -> list[dict]:
    mailbox = _mailbox(conn)
    return mailbox._broadcast(command, arguments, destination, reply=reply, timeout=broker_timeout(), limit=limit) or []
