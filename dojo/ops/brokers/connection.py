"""Bounded broker connections: every call the project makes to a broker goes through one."""

from collections.abc import Iterator
from contextlib import contextmanager, suppress

from django.conf import settings
from kombu import Connection
from kombu.exceptions import OperationalError

from dojo.ops.brokers.registry import Broker, get_broker
from dojo.ops.redaction import redact


class BrokerUnavailable(Exception):
    """The broker did not answer within the time bound, refused, or failed."""


def broker_timeout() -> float:
    return float(settings.CELERY_BROKER_TIMEOUT)


def _bounded_transport_options(broker: Broker, timeout: float) -> dict:
    """Transport options that put a time bound on connecting, reading and retrying.

    Library defaults retry forever or wait on sockets with no timeout (see design.md).
    max_retries/interval_start bound kombu's own retry loop around the default channel.
    """
    sockets = broker.transport.bounded_options(timeout)
    return {**broker.transport_options, **sockets, "max_retries": 1, "interval_start": 0}


@contextmanager
def broker_connection(timeout: float | None = None, broker: Broker | None = None) -> Iterator[Connection]:
    """Yield a connected kombu Connection to `broker` (the main one if None) whose every
    call is bounded by `timeout`.

    Any broker failure inside the block is raised as BrokerUnavailable, with the
    password removed from the message.
    """
    timeout = broker_timeout() if timeout is None else timeout
    broker = broker or get_broker()
    options = _bounded_transport_options(broker, timeout)
    try:
        conn = Connection(broker.broker_url, connect_timeout=timeout, transport_options=options)
    except (TypeError, ValueError) as exc:  # kombu cannot parse the URL (a query key it also sets, say)
        raise BrokerUnavailable(f"The broker URL of backend {broker.alias} cannot be used: {redact(str(exc))}") from exc
    # Channel errors that reach here are refusals (a wrong password, no permission): the
    # broker cannot be used. NOT_FOUND on a passive declare is handled where it is expected.
    errors = (OSError, OperationalError, *conn.connection_errors, *conn.channel_errors)
    try:
        conn.ensure_connection(max_retries=0, timeout=timeout)
        yield conn
    except errors as exc:
        raise BrokerUnavailable(redact(f"{type(exc).__name__}: {exc}")) from exc
    finally:
        with suppress(*errors):  # the broker is gone; nothing to close cleanly
            conn.release()
