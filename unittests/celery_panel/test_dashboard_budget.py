"""The dashboard's one budget for the broker: on a broker that accepts connections and never
answers (the `silent_port` fixture, a real socket) and on a real Redis behind a proxy that delays
every reply (each read answers within the bound, a whole part does not), the page answers within
one broker bound and names each part it could not read; on a healthy Redis every part is there
and none is named."""

import re
import socket
import threading
import time
from collections.abc import Iterator

import pytest
from django.urls import reverse

from unittests.conftest import make_user

DASHBOARD = reverse("celery_panel:dashboard")
BOUND = 1.0  # DD_CELERY_BROKER_TIMEOUT of these tests


def unavailable(html: str) -> dict[str, str]:
    """The parts the page says it could not read, with their reasons."""
    return dict(re.findall(r'data-unavailable="([a-z]+)">([^<]*)<', html))


@pytest.fixture
def slow_redis_port(redis_server) -> Iterator[int]:
    """A TCP proxy to the test's Redis that holds every chunk of the reply DELAY seconds."""
    delay = 0.4
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    stop = threading.Event()
    opened: list[socket.socket] = [server]

    def pump(source: socket.socket, target: socket.socket, wait: float) -> None:
        try:
            while chunk := source.recv(65536):
                time.sleep(wait)
                target.sendall(chunk)
        except OSError:
            pass  # either side closed
        for side in (source, target):
            side.close()

    def accept() -> None:
        while not stop.is_set():
            try:
                client = server.accept()[0]
            except TimeoutError:
                continue
            upstream = socket.create_connection(("127.0.0.1", redis_server.port))
            opened.extend([client, upstream])
            threading.Thread(target=pump, args=(client, upstream, 0), daemon=True).start()
            threading.Thread(target=pump, args=(upstream, client, delay), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join()
    for conn in opened:
        conn.close()


@pytest.fixture
def root_client(client, db):
    client.force_login(make_user("root", superuser=True))
    return client


@pytest.mark.django_db
@pytest.mark.parametrize("scheme", ["redis", "amqp"])
def test_a_silent_broker_costs_one_bound_and_every_unread_part_is_named(root_client, settings, silent_port, scheme):
    url = f"redis://127.0.0.1:{silent_port}/0" if scheme == "redis" else f"amqp://guest:guest@127.0.0.1:{silent_port}//"
    settings.CELERY_BROKER_URL = url
    settings.CELERY_BROKER_TIMEOUT = BOUND
    root_client.get(reverse("admin:index"))  # the first request's imports and URLconf are not the page's

    started = time.monotonic()
    response = root_client.get(DASHBOARD)
    elapsed = time.monotonic() - started

    html = response.content.decode()
    assert response.status_code == 200
    assert elapsed < BOUND + 0.5, f"{elapsed:.2f} s"
    parts = unavailable(html)
    # On AMQP the slots live in this project's database: that part is read.
    assert set(parts) == ({"status", "queues", "semaphores"} if scheme == "redis" else {"status", "queues"}), parts
    assert all(re.search(r"did not answer within|[Tt]imeout|timed out", reason) for reason in parts.values()), parts
    assert 'data-fact="workers-answering">-<' in html
    assert re.search(r'id="card-ready".*?card-value">-<', html, re.S)  # unknown, not 0
    semaphores = html.split('id="semaphores"')[1].split('id="raw-rows"')[0]
    assert ('class="errornote">' in semaphores) == (scheme == "redis")


@pytest.mark.django_db
def test_a_healthy_broker_shows_every_part_and_names_none(redis_only, root_client, settings):
    from dojo.ops.brokers.registry import get_broker
    from dojo.ops.limits.semaphores import Slot, acquire_slot

    settings.CELERY_BROKER_TIMEOUT = BOUND
    client = redis_only.client()
    client.send_task("dojo.tasks.add", args=(1, 2), queue="celery")
    client.close()
    assert acquire_slot(Slot(get_broker(), "report:1", "run-1", limit=2, expires=600))

    started = time.monotonic()
    html = root_client.get(DASHBOARD).content.decode()
    elapsed = time.monotonic() - started

    assert unavailable(html) == {}
    assert 'id="unavailable-parts"' not in html
    assert elapsed < BOUND, f"{elapsed:.2f} s"
    assert 'data-fact="workers-answering">0<' in html
    row = html.split('data-queue="celery"')[1].split("</tr>")[0]
    assert 'class="ready">1<' in row
    assert 'data-key="report:1"' in html and 'class="available">1<' in html


@pytest.mark.django_db
def test_a_slow_broker_is_cut_at_the_deadline_and_the_late_parts_are_named(
    redis_only, root_client, settings, slow_redis_port
):
    settings.CELERY_BROKER_URL = f"redis://127.0.0.1:{slow_redis_port}/0"
    settings.CELERY_BROKER_TIMEOUT = BOUND
    root_client.get(reverse("admin:index"))

    started = time.monotonic()
    response = root_client.get(DASHBOARD)
    elapsed = time.monotonic() - started

    assert response.status_code == 200
    assert elapsed < BOUND + 0.5, f"{elapsed:.2f} s"
    parts = unavailable(response.content.decode())
    assert set(parts) == {"status", "queues", "semaphores"}, parts
    assert all("did not answer within 1.25 s" in reason for reason in parts.values()), parts
