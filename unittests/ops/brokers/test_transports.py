"""One transport class per broker, chosen once from the URL scheme (dojo.ops.brokers.registry).

Before the transports were classes, `rediss://` and `sentinel://` brokers were not recognised as
Redis, so their queues lost the pipelined depth, the break down and purge by name.
"""

import pytest

from dojo.ops.brokers.amqp import AmqpTransport
from dojo.ops.brokers.connection import broker_connection
from dojo.ops.brokers.filesystem import FilesystemTransport
from dojo.ops.brokers.redis import RedisTransport
from dojo.ops.brokers.registry import Broker, get_broker
from dojo.ops.brokers.transport import PeekUnsupported, PurgeByNameUnsupported, Transport
from dojo.ops.controls.purge import purge_task_name
from dojo.ops.read_models.breakdown import breakdown
from unittests.conftest import LiveBroker


@pytest.mark.parametrize(
    ("url", "kind", "slot_store"),
    [
        ("redis://:pw@host:6379/0", RedisTransport, "redis"),
        ("rediss://:pw@host:6380/0", RedisTransport, "redis"),
        ("sentinel://host:26379;sentinel://other:26379", RedisTransport, "redis"),
        ("redis+socket:///tmp/redis.sock", RedisTransport, "redis"),
        ("amqp://guest:guest@host//", AmqpTransport, "database"),
        ("amqps://guest:guest@host//", AmqpTransport, "database"),
        ("pyamqp://guest:guest@host//", AmqpTransport, "database"),
        ("filesystem://localhost/", FilesystemTransport, "database"),
        ("sqs://", Transport, "database"),
    ],
)
def test_the_transport_comes_from_the_url_scheme(url, kind, slot_store):
    transport = Broker("x", url).transport
    assert type(transport) is kind
    assert transport.slot_store == slot_store


def test_amqp_sockets_are_bounded_with_read_and_write_timeouts():
    assert Broker("x", "amqp://h//").transport.bounded_options(2.0) == {"read_timeout": 2.0, "write_timeout": 2.0}
    assert Broker("x", "rediss://h/0").transport.bounded_options(2.0) == {
        "socket_connect_timeout": 2.0,
        "socket_timeout": 2.0,
    }


@pytest.mark.django_db
def test_a_transport_that_cannot_peek_or_edit_a_queue_says_so(settings):
    """The generic transport (kombu's in-process memory broker here; SQS, SQLAlchemy, ...) refuses
    with the errors the API maps to 400, and still counts and purges by passive declare."""
    settings.CELERY_BROKER_URL = "memory://"
    settings.CELERY_BROKER_TRANSPORT_OPTIONS = {}
    broker = get_broker()
    assert type(broker.transport) is Transport
    with pytest.raises(PeekUnsupported, match="memory"):
        breakdown("celery", broker)
    with pytest.raises(PurgeByNameUnsupported, match="only Redis can"):
        purge_task_name("celery", "dojo.tasks.add", broker)
    with broker_connection(broker=broker) as conn:
        assert broker.transport.depths(conn, ["celery"])["celery"].ready == 0
        assert broker.transport.purge(conn, "celery") == 0


@pytest.mark.django_db
def test_the_redis_transport_reads_a_real_redis(redis_only: LiveBroker):
    """Depths, peek and bound workers on a real private Redis (no worker: nobody is bound)."""
    client = redis_only.client()
    for i in range(3):
        client.send_task("dojo.tasks.add", args=(i, i), queue="celery", priority=(0, 6, 9)[i])
    broker = get_broker()
    with broker_connection(broker=broker) as conn:
        depths = broker.transport.depths(conn, ["celery", "absent"])
        assert broker.transport.bound_workers(conn, "celery") == set()
    assert (depths["celery"].ready, depths["absent"].ready) == (3, 0)
    assert depths["celery"].oldest_published_at is not None and depths["absent"].oldest_published_at is None
    assert breakdown("celery").by_task == {"dojo.tasks.add": 3}
