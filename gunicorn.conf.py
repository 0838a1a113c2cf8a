"""gunicorn settings of the dojo web server, read from DD_ environment variables.

gunicorn reads ./gunicorn.conf.py from its working directory, so the production command
is plain `gunicorn dojo.wsgi:application` run from the project root (/app in the image,
as in the Dockerfile's CMD and docker-compose.yml's web service; scripts/run.sh too).

    DD_WEB_WORKERS           processes (default 2). With more than one, give them a shared
                             DD_CACHE_URL (redis://): the status cache and its single flight
                             live in Django's cache, and a per-process one reads the broker
                             once per process and cache period.
    DD_WEB_THREADS           threads per process (default 4, gthread worker): requests served
                             at once = workers x threads, so a request waiting on a silent
                             broker (up to DD_CELERY_BROKER_TIMEOUT) or a queue's break down
                             (up to DD_CELERY_BREAKDOWN_SECONDS) does not hold the others,
                             the health probes included.
    DD_WEB_BIND              address to listen on, host:port (default 127.0.0.1:DD_PORT; the
                             image sets 0.0.0.0:8080).
    DD_PORT                  port of the default bind (default 8080).
    DD_WEB_TIMEOUT           seconds a process may stay silent before it is killed and
                             replaced (default 30; above the longest bounded request, 10 s
                             break down plus broker bounds).
    DD_WEB_GRACEFUL_TIMEOUT  seconds a stopping process has to finish its requests (default 15).

A bad value stops gunicorn at once with a message naming the variable. The access log
goes to stdout, errors to stderr.
"""

import os


def _whole_number(name: str, default: int, *, minimum: int = 1) -> int:
    """The DD_ variable `name` as a whole number >= minimum; exits with a message naming it otherwise."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = minimum - 1
    if value < minimum:
        raise SystemExit(f"gunicorn.conf.py: {name} must be a whole number >= {minimum}, got {raw!r}")
    return value


def _bind() -> str:
    bind = os.environ.get("DD_WEB_BIND", "").strip()
    if bind:
        if ":" not in bind and not bind.startswith(("unix:", "fd://")):
            raise SystemExit(f"gunicorn.conf.py: DD_WEB_BIND must be host:port (or unix:PATH), got {bind!r}")
        return bind
    port = _whole_number("DD_PORT", 8080)
    if port > 65535:
        raise SystemExit(f"gunicorn.conf.py: DD_PORT must be a port number (1-65535), got {port}")
    return f"127.0.0.1:{port}"


wsgi_app = "dojo.wsgi:application"
bind = [_bind()]
worker_class = "gthread"
workers = _whole_number("DD_WEB_WORKERS", 2)
threads = _whole_number("DD_WEB_THREADS", 4)
timeout = _whole_number("DD_WEB_TIMEOUT", 30)
graceful_timeout = _whole_number("DD_WEB_GRACEFUL_TIMEOUT", 15, minimum=0)
accesslog = "-"
errorlog = "-"

_PER_PROCESS_CACHES = ("", "locmemcache://", "dummycache://")


def on_starting(server) -> None:
    """Warn when several processes each keep their own status cache."""
    cache_url = os.environ.get("DD_CACHE_URL", "").strip()
    if workers > 1 and cache_url in _PER_PROCESS_CACHES:
        server.log.warning(
            "DD_WEB_WORKERS=%s with a per-process DD_CACHE_URL (%s): each process reads the broker "
            "for the status on its own; set DD_CACHE_URL=redis://... to share one cache",
            workers,
            cache_url or "locmemcache://",
        )


def post_worker_init(worker) -> None:
    """Import the URLconf (every view, serializer and DRF) before the first request, so a new
    process answers its first health probe as fast as the others (it costs ~0.3 s otherwise)."""
    from django.urls import get_resolver

    get_resolver().url_patterns  # noqa: B018 - the import is the point
