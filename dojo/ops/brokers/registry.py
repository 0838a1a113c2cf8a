"""The brokers this project operates: the main one and any from DD_CELERY_BACKENDS (the setting
keeps its name; the API calls the alias `backend`).

Every service call takes an optional broker; None means the main one. A broker is a URL, its
transport options and its transport; queue names, the result backend and the task settings are
the project's own and shared by all of them.
"""

from dataclasses import dataclass, field

from django.conf import settings

from dojo.ops.brokers.amqp import AmqpTransport
from dojo.ops.brokers.filesystem import FilesystemTransport
from dojo.ops.brokers.redis import RedisTransport
from dojo.ops.brokers.transport import Transport

DEFAULT_ALIAS = "default"
# URL scheme (before any "+") -> transport. sentinel:// is kombu's Redis Sentinel transport.
TRANSPORTS: dict[str, type[Transport]] = {
    **dict.fromkeys(("redis", "rediss", "sentinel"), RedisTransport),
    **dict.fromkeys(("amqp", "amqps", "pyamqp", "librabbitmq"), AmqpTransport),
    "filesystem": FilesystemTransport,
}


class UnknownBroker(ValueError):
    """The alias names no configured broker."""


@dataclass(frozen=True)
class Broker:
    alias: str
    broker_url: str
    transport_options: dict = field(default_factory=dict, hash=False)

    @property
    def transport(self) -> Transport:
        """What this broker's transport can tell and do (dojo.ops.brokers.transport), by URL scheme."""
        scheme = self.broker_url.split("://", 1)[0].split("+", 1)[0]
        return TRANSPORTS.get(scheme, Transport)(self)


def configured_brokers() -> dict[str, Broker]:
    """Every configured broker by alias, the main one (DEFAULT_ALIAS) first."""
    main = Broker(DEFAULT_ALIAS, settings.CELERY_BROKER_URL, settings.CELERY_BROKER_TRANSPORT_OPTIONS)
    extra = {
        alias: Broker(alias, spec["broker_url"], spec.get("transport_options", {}))
        for alias, spec in settings.CELERY_BACKENDS.items()
        if alias != DEFAULT_ALIAS
    }
    return {DEFAULT_ALIAS: main, **extra}


def get_broker(alias: str | None = None) -> Broker:
    """The broker called `alias`; the main one for None or ""."""
    brokers = configured_brokers()
    try:
        return brokers[alias or DEFAULT_ALIAS]
    except KeyError:
        raise UnknownBroker(f"Unknown Celery backend {alias!r}; configured: {', '.join(brokers)}.") from None


def broker_alias_of(broker_url: str) -> str:
    """The alias of the broker a worker with broker `broker_url` belongs to.

    A worker of another broker runs with that broker's URL as its own
    (DD_CELERY_BROKER_URL) and the same DD_CELERY_BACKENDS as the web, so its URL is both
    its "default" and one of the others: the other one names it. Otherwise it is the main one.
    """
    for broker in configured_brokers().values():
        if broker.alias != DEFAULT_ALIAS and broker.broker_url == broker_url:
            return broker.alias
    return DEFAULT_ALIAS
