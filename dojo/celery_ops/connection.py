"""Bounded broker connections for the web process, and masking of broker URLs."""

import re
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

from django.conf import settings
from kombu import Connection
from kombu.exceptions import OperationalError

from dojo.celery_ops.backends import CeleryBackend, celery_backends, get_backend

MASK = "****"
# Query parameters that carry credentials in some transports' URLs.
SECRET_QUERY_KEY = re.compile(r"pass|secret|token|key|credential", re.IGNORECASE)


class BrokerUnavailable(Exception):
    """The broker did not answer within the time bound, refused, or failed."""


def mask_url(url: str) -> str:
    """Return `url` with any password (userinfo or query parameter) replaced by ``****``.

    Handles kombu's failover lists (``url1;url2``).
    """
    return ";".join(_mask_one(part) for part in url.split(";"))


def _mask_one(url: str) -> str:
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return MASK  # unparseable: show nothing rather than risk a secret
    query_secret = any(SECRET_QUERY_KEY.search(key) for key, _ in parse_qsl(parts.query))
    if not password and not query_secret:
        return url
    netloc = parts.netloc
    if password:
        userinfo, _, hostinfo = netloc.rpartition("@")
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:{MASK}@{hostinfo}"
    query = parts.query
    if query_secret:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode([(k, MASK if SECRET_QUERY_KEY.search(k) else v) for k, v in pairs], safe="*")
    masked = f"{parts.scheme}://{netloc}{parts.path}"
    return masked + (f"?{query}" if query else "") + (f"#{parts.fragment}" if parts.fragment else "")


def redact(text: str) -> str:
    """Remove every configured broker's password from `text` (an exception message, say)."""
    urls = ";".join(backend.broker_url for backend in celery_backends().values())
    for part in urls.split(";"):
        try:
            password = urlsplit(part).password
        except ValueError:
            continue
        if not password:
            continue
        for secret in {password, unquote(password)}:
            text = text.replace(secret, MASK)
    return text


def broker_timeout() -> float:
    return float(settings.CELERY_BROKER_TIMEOUT)


def _bounded_transport_options(backend: CeleryBackend, timeout: float) -> dict:
    """Transport options that put a time bound on connecting, reading and retrying.

    Library defaults retry forever or wait on sockets with no timeout (see design.md).
    """
    if backend.is_amqp:
        sockets = {"read_timeout": timeout, "write_timeout": timeout}
    else:
        sockets = {"socket_connect_timeout": timeout, "socket_timeout": timeout}
    # max_retries/interval_start bound kombu's own retry loop around the default channel.
    return {**backend.transport_options, **sockets, "max_retries": 1, "interval_start": 0}


@contextmanager
def broker_connection(timeout: float | None = None, backend: CeleryBackend | None = None) -> Iterator[Connection]:
    """Yield a connected kombu Connection to `backend` (the main one if None) whose every
    call is bounded by `timeout`.

    Any broker failure inside the block is raised as BrokerUnavailable, with the
    password removed from the message.
    """
    timeout = broker_timeout() if timeout is None else timeout
    backend = backend or get_backend()
    options = _bounded_transport_options(backend, timeout)
    conn = Connection(backend.broker_url, connect_timeout=timeout, transport_options=options)
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
