"""The Celery backends this project operates: the main broker and any from DD_CELERY_BACKENDS.

Every service call takes an optional backend; None means the main one. A backend is a
broker (URL and transport options); queue names, the result backend and the task
settings are the project's own and shared by all of them.
"""

from dataclasses import dataclass, field

from django.conf import settings

DEFAULT_ALIAS = "default"


class UnknownBroker(ValueError):
    """The alias names no configured backend."""


@dataclass(frozen=True)
class Broker:
    alias: str
    broker_url: str
    transport_options: dict = field(default_factory=dict, hash=False)

    @property
    def transport(self) -> str:
        """The URL scheme: redis, amqp, filesystem, ..."""
        return self.broker_url.split("://", 1)[0].split("+", 1)[0]

    @property
    def is_redis(self) -> bool:
        return self.transport in ("redis", "rediss")

    @property
    def is_amqp(self) -> bool:
        return self.transport in ("amqp", "amqps", "pyamqp")


def configured_brokers() -> dict[str, Broker]:
    """Every configured backend by alias, the main one (DEFAULT_ALIAS) first."""
    main = Broker(DEFAULT_ALIAS, settings.CELERY_BROKER_URL, settings.CELERY_BROKER_TRANSPORT_OPTIONS)
    extra = {
        alias: Broker(alias, spec["broker_url"], spec.get("transport_options", {}))
        for alias, spec in settings.CELERY_BACKENDS.items()
        if alias != DEFAULT_ALIAS
    }
    return {DEFAULT_ALIAS: main, **extra}


def get_broker(alias: str | None = None) -> Broker:
    """The backend called `alias`; the main one for None or ""."""
    backends = configured_brokers()
    try:
        return backends[alias or DEFAULT_ALIAS]
    except KeyError:
        raise UnknownBroker(f"Unknown Celery backend {alias!r}; configured: {', '.join(backends)}.") from None


def broker_alias_of(broker_url: str) -> str:
    """The alias of the backend a worker with broker `broker_url` belongs to.

    A worker of another backend runs with that backend's URL as its own broker
    (DD_CELERY_BROKER_URL) and the same DD_CELERY_BACKENDS as the web, so its URL is both
    its "default" and one of the others: the other one names it. Otherwise it is the main one.
    """
    for backend in configured_brokers().values():
        if backend.alias != DEFAULT_ALIAS and backend.broker_url == broker_url:
            return backend.alias
    return DEFAULT_ALIAS
