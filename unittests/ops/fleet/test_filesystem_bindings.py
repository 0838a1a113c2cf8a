"""On the filesystem broker a SIGKILLed worker's pidbox binding (its row in the control folder's
celery.pidbox.exchange table) is removed once it is known dead, by the same rule as on Redis
(mailbox._known_dead: silent rounds and a database heartbeat older than DEAD_AFTER_SECONDS), so
later rounds stop waiting for it. Real workers on the embedded broker, sharing the test database."""

import json
import os
import signal
import time
from pathlib import Path

import pytest

from dojo.ops.brokers.connection import broker_connection
from dojo.ops.brokers.registry import get_broker
from dojo.ops.fleet import mailbox
from dojo.ops.fleet.status import read_status


def _table(broker) -> list[str]:
    path = Path(broker.transport_options["control_folder"]) / "celery.pidbox.exchange"
    return [row[-1] for row in json.loads(path.read_text())]


@pytest.mark.django_db
def test_a_killed_workers_binding_is_removed_on_the_filesystem_broker(
    filesystem_only, shared_database, settings, monkeypatch
):
    settings.CELERY_BROKER_TIMEOUT = 1.0
    monkeypatch.setattr(mailbox, "SILENT_RECHECK_SECONDS", 0)  # ask the silent worker every round
    monkeypatch.setattr(mailbox, "DEAD_AFTER_SECONDS", 6.0)
    alive = filesystem_only.start_worker("alive", DD_DATABASE_URL=shared_database)
    doomed = filesystem_only.start_worker("doomed", DD_DATABASE_URL=shared_database)
    assert read_status().worker_names == sorted([alive, doomed])
    victim = filesystem_only.workers[1]
    os.killpg(victim.pid, signal.SIGKILL)
    killed_at = time.monotonic()
    victim.wait()
    before = _table(filesystem_only)
    assert f"{doomed}.celery.pidbox" in before

    for _ in range(mailbox.DEAD_AFTER_SILENT_ROUNDS):
        assert read_status().worker_names == [alive]
    assert _table(filesystem_only) == before  # silent, but its heartbeat is not that old yet
    time.sleep(max(0.0, killed_at + mailbox.DEAD_AFTER_SECONDS + 0.5 - time.monotonic()))
    assert read_status().worker_names == [alive]  # silent once more, and its heartbeat is now too old

    assert _table(filesystem_only) == [row for row in before if row != f"{doomed}.celery.pidbox"]
    with broker_connection() as conn:
        assert get_broker().transport.bound_workers(conn, "celery") == {alive}
    fast = []
    for _ in range(3):
        started = time.monotonic()
        assert read_status().worker_names == [alive]
        fast.append(time.monotonic() - started)
    assert max(fast) < 0.5, fast  # no round waits for the dead worker any more
