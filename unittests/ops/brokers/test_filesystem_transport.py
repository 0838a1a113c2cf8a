"""The embedded broker: message files appear whole, and stale control messages are pruned.

kombu's own filesystem transport creates a message's final file and then writes it, so a
consumer polling meanwhile can take the empty file: JSONDecodeError, which stops a worker
("Unrecoverable error"; seen in this suite, and in about 2 runs of 3 of this race with kombu's
transport). With dojo.ops.brokers.filesystem_transport a consumer racing a producer gets every message.
"""

import os
import threading
import time

from kombu import Connection

from dojo.ops.brokers.filesystem_transport import Transport
from dojo.worker.tasks import prune_broker_files

MESSAGES = 3000


def test_filesystem_urls_use_the_atomic_transport(tmp_path) -> None:
    with Connection("filesystem://", transport_options={"data_folder_in": str(tmp_path)}) as conn:
        assert isinstance(conn.transport, Transport)


def test_a_consumer_racing_a_producer_gets_every_message_whole(tmp_path) -> None:
    options = {"data_folder_in": str(tmp_path), "data_folder_out": str(tmp_path), "polling_interval": 0}
    received: list[int] = []
    errors: list[str] = []

    def consume() -> None:
        with Connection("filesystem://", transport_options=options) as conn:
            queue = conn.SimpleQueue("race")
            while len(received) + len(errors) < MESSAGES:
                try:
                    message = queue.get(timeout=0.5)
                except queue.Empty:
                    continue
                except ValueError as exc:  # a half-written file
                    errors.append(repr(exc))
                    continue
                message.ack()
                received.append(message.payload["i"])

    consumer = threading.Thread(target=consume, daemon=True)
    consumer.start()
    with Connection("filesystem://", transport_options=options) as conn:
        queue = conn.SimpleQueue("race")
        for i in range(MESSAGES):
            queue.put({"i": i, "padding": "x" * 20_000})
    consumer.join(60)

    assert errors == []
    assert sorted(received) == list(range(MESSAGES))
    assert not list(tmp_path.glob("*.partial"))


def test_prune_broker_files_removes_only_stale_control_messages(filesystem_only, settings):
    settings.CELERY_BROKER_URL = filesystem_only.url
    data = filesystem_only.tmp / "broker" / "data"
    old = time.time() - 3600
    stale_reply = data / "1_a.1234.reply.celery.pidbox.msg"
    stale_task = data / "2_b.celery.msg"
    fresh_reply = data / "3_c.1234.reply.celery.pidbox.msg"
    for path in (stale_reply, stale_task, fresh_reply):
        path.write_text("{}")
    os.utime(stale_reply, (old, old))
    os.utime(stale_task, (old, old))

    assert prune_broker_files(max_age_seconds=600) == 1
    assert sorted(p.name for p in data.iterdir()) == [stale_task.name, fresh_reply.name]


def test_prune_broker_files_does_nothing_on_other_brokers(settings):
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:1/0"
    assert prune_broker_files() == 0
