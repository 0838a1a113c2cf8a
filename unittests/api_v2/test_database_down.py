"""The API when PostgreSQL, or the cache, does not answer: real faults, real processes.

The web process is the production command (`gunicorn dojo.wsgi:application`, gunicorn.conf.py)
with DEBUG off and a private Redis broker. Its database is a private PostgreSQL cluster the test
starts (initdb, pg_ctl) and migrates, then stops with `pg_ctl stop -m immediate` (the port closes)
or freezes with SIGSTOP (the kernel still accepts connections); or a TCP server that accepts
connections and never sends a byte (the `silent_port` fixture). A token request then answers 503
with a reason (the token is looked up in the database) within the database's bound, never a hang;
/health/live/ stays 200 and fast; the status read still answers without its database parts
(/health/ready/ with DD_CELERY_MIN_WORKERS=0; the degraded document itself, history_available
false and the database_unavailable alert, is asserted in unittests/ops/fleet/test_status_cache_faults.py).
Checked to fail without connect_timeout (settings.dist.py): the silent server held the request.

The throttled endpoints (ScopedRateThrottle keeps its counts in Django's cache) on a Redis cache
that never answers: DRF's throttle raised redis' TimeoutError, a JSON 500 (checked on the code
before dojo/api_v2/throttling.py); the throttle now lets the request through, as the status read
goes on uncached (DD_CACHE_TIMEOUT), so the endpoints answer as usual.

Known limit: a PostgreSQL frozen mid-query on an already open connection (SIGSTOP of the
postmaster and its backends) is not bounded client-side. The kernel still ACKs the bytes, so
neither TCP keepalives nor tcp_user_timeout fire, statement_timeout is enforced by the frozen
server, and psycopg has no client-side query timeout (checked: a `select 1` with keepalives_idle=1,
keepalives_count=1, tcp_user_timeout=1000 waited until SIGCONT), so no such option is set. A new
request is bounded, and tested here: with CONN_MAX_AGE 0 it opens a new connection, whose startup
the frozen postmaster never answers, and connect_timeout (DD_DATABASE_CONNECT_TIMEOUT) ends it.
"""

import glob
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pytest
from django.urls import reverse

from unittests.conftest import IN_CI, ROOT, RedisServer, free_port, stop_process
from unittests.test_web_tier import LIVE, STATUS, WebTier, start_gunicorn, web_environment

CONNECT_TIMEOUT = 2  # DD_DATABASE_CONNECT_TIMEOUT of these tests: libpq's least
BROKER_TIMEOUT = 1.0  # DD_CELERY_BROKER_TIMEOUT
MARGIN = 1.0  # a loaded two-core machine
FAST = 0.5  # /health/live/ touches neither the database nor the broker
READY = "/api/v2/celery/health/ready/"
DEGRADED = "Status of backend default without the database parts"


def postgres_binary(name: str) -> str:
    """The newest installed PostgreSQL's `name` (Debian keeps them in /usr/lib/postgresql/N/bin)."""
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=lambda p: int(Path(p).parts[-3]))
    path = found[-1] if found else shutil.which(name)
    if path is None:
        message = f"PostgreSQL's {name} is not installed (/usr/lib/postgresql/*/bin)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return path


@dataclass
class Cluster:
    """A private PostgreSQL cluster: its own data directory, port and socket directory."""

    directory: Path
    port: int
    as_owner: list[str]  # root runs the server as postgres (initdb refuses root)

    @property
    def url(self) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/dojo"

    def processes(self) -> list[int]:
        """The postmaster and its children (checkpointer, walwriter, ...)."""
        postmaster = int((self.directory / "data" / "postmaster.pid").read_text().split()[0])
        children = subprocess.run(["pgrep", "-P", str(postmaster)], capture_output=True, text=True, check=False)
        return [postmaster, *map(int, children.stdout.split())]

    def pg_ctl(self, *args: str) -> None:
        options = f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 -c fsync=off"
        command = [*self.as_owner, postgres_binary("pg_ctl"), "-D", str(self.directory / "data"), "-w"]
        subprocess.run(
            [*command, "-o", options, "-l", str(self.directory / "server.log"), *args],
            check=True,
            capture_output=True,
            timeout=60,
        )


def manage(*args: str, database: str) -> str:
    """`manage.py ARGS` on `database`; its stdout."""
    done = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=web_environment(DD_DATABASE_URL=database, DD_SECRET_KEY="database-down-test-" + "x7Pq2" * 10),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"manage.py {' '.join(args)} failed: {done.stderr[-3000:]}")
    return done.stdout


CREATE_TOKEN = (
    "from django.contrib.auth.models import User; from rest_framework.authtoken.models import Token; "
    "print(Token.objects.create(user=User.objects.create_superuser('admin', 'admin@example.com', 'pw')).key)"
)


@pytest.fixture(scope="module")
def cluster() -> Iterator[tuple[Cluster, str]]:
    """A migrated private cluster with a superuser; (cluster, the superuser's token). Stopped and
    deleted at the end."""
    initdb = postgres_binary("initdb")
    as_owner = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    directory = Path(tempfile.mkdtemp(prefix="dojo-pg-"))  # not under pytest's 0700 root-owned tmp
    if as_owner:
        shutil.chown(directory, "postgres")
    server = Cluster(directory, free_port(), as_owner)
    try:
        subprocess.run(
            [*as_owner, initdb, "-D", str(directory / "data"), "-A", "trust", "-U", "postgres", "--no-sync"],
            check=True,
            capture_output=True,
            timeout=60,
        )
        server.pg_ctl("start")
        createdb = postgres_binary("createdb")
        subprocess.run([createdb, "-h", "127.0.0.1", "-p", str(server.port), "-U", "postgres", "dojo"], check=True)
        manage("migrate", "-v0", database=server.url)
        token = manage("shell", "-c", CREATE_TOKEN, database=server.url).split()[-1]  # after the banner
        yield server, token
    finally:
        subprocess.run(
            [*as_owner, postgres_binary("pg_ctl"), "-D", str(directory / "data"), "stop", "-m", "immediate"],
            capture_output=True,
            check=False,
        )
        shutil.rmtree(directory, ignore_errors=True)


def start_web(database: str, token: str, broker_url: str, tmp_path: Path, **variables: str) -> tuple:
    """The production command on `database`; (WebTier, process). The caller stops the process."""
    port = free_port()
    environment = web_environment(
        DD_PORT=str(port),
        DD_SECRET_KEY="database-down-test-" + "x7Pq2" * 10,
        DD_DEBUG="False",
        DD_DATABASE_URL=database,
        DD_DATABASE_CONNECT_TIMEOUT=str(CONNECT_TIMEOUT),
        DD_CELERY_BROKER_URL=broker_url,
        DD_CELERY_BROKER_TIMEOUT=str(BROKER_TIMEOUT),
        DD_CELERY_MIN_WORKERS="0",  # ready means "the status read answered, broker up"
        DD_CELERY_STATUS_CACHE_SECONDS="0",  # every read is a fresh one
        DD_STATIC_ROOT=str(tmp_path / "static"),
        HOME=str(tmp_path),
        **variables,
    )
    return start_gunicorn(environment, port, token, tmp_path / "gunicorn.log")


@pytest.fixture
def broker_url(redis_server: RedisServer) -> str:
    import redis

    url = redis_server.url(13)
    redis.Redis.from_url(url).flushdb()
    return url


def assert_unavailable(answer: tuple[int, bytes, float], bound: float) -> None:
    import json

    status, body, seconds = answer
    assert status == 503, body
    assert json.loads(body) == {"detail": "The database did not answer; nothing was done. Try again later."}
    assert seconds < bound, seconds


def assert_degraded_status_read(tier: WebTier, bound: float) -> None:
    """/health/ready/ reads the status: it answers with the broker's part, without the database's."""
    import json

    status, body, seconds = tier.get(READY)
    assert status == 200, body
    assert json.loads(body)["broker_status"] is True
    assert seconds < bound, seconds
    assert DEGRADED in tier.log.read_text()


def test_a_stopped_postgresql_gives_a_503_with_its_reason_and_the_probe_stays_up(cluster, broker_url, tmp_path):
    server, token = cluster
    tier, proc = start_web(server.url, token, broker_url, tmp_path)
    try:
        status, body, _ = tier.get(STATUS, token=True)
        assert status == 200, body
        assert DEGRADED not in tier.log.read_text()

        server.pg_ctl("stop", "-m", "immediate")
        bound = CONNECT_TIMEOUT + BROKER_TIMEOUT + MARGIN
        for path in (STATUS, STATUS + "?refresh=1", "/api/v2/celery/history/"):
            assert_unavailable(tier.get(path, token=True, timeout=30), bound)
        status, _, seconds = tier.get(LIVE)
        assert status == 200 and seconds < FAST, seconds
        assert_degraded_status_read(tier, bound)

        server.pg_ctl("start")  # and back: the next request connects again
        status, body, _ = tier.get(STATUS, token=True)
        assert status == 200, body

        # Frozen: the kernel completes the TCP handshake, the postmaster never answers it.
        frozen = server.processes()
        try:
            for pid in frozen:
                os.kill(pid, signal.SIGSTOP)
            assert_unavailable(tier.get(STATUS, token=True, timeout=30), bound)
            status, _, seconds = tier.get(LIVE)
            assert status == 200 and seconds < FAST, seconds
        finally:
            for pid in frozen:
                os.kill(pid, signal.SIGCONT)
    finally:
        stop_process(proc)


def test_a_postgresql_that_never_answers_costs_the_connect_timeout(silent_port, broker_url, tmp_path):
    """While a token request waits on the silent server, the probe answers at once (on another
    thread of the web process)."""
    database = f"postgres://dojo:db-pw-5e2c@127.0.0.1:{silent_port}/dojo"
    tier, proc = start_web(database, "no-such-token", broker_url, tmp_path)
    try:
        answers: list = []

        def token_request() -> None:
            try:
                answers.append(tier.get(STATUS, token=True, timeout=20))
            except OSError as exc:  # no answer within 20 s: asserted below
                answers.append(exc)

        request = threading.Thread(target=token_request)
        request.start()
        time.sleep(0.3)
        probe = tier.get(LIVE)
        request.join(30)
        assert probe[0] == 200 and probe[2] < FAST, probe
        assert isinstance(answers[0], tuple), answers
        assert_unavailable(answers[0], CONNECT_TIMEOUT + BROKER_TIMEOUT + MARGIN)
        assert answers[0][2] > CONNECT_TIMEOUT - 0.5  # it did wait on the silent server
        assert_degraded_status_read(tier, CONNECT_TIMEOUT + BROKER_TIMEOUT + MARGIN)
        assert "db-pw-5e2c" not in tier.log.read_text()
    finally:
        stop_process(proc)


THROTTLED = [
    ("get", "celery_status", {}),
    ("get", "celery_tasks", {}),
    ("get", "celery_history", {}),
    ("get", "celery_queue_breakdown", {"queue": "celery"}),
    ("post", "celery_queue_purge", {"queue": "no-such-queue"}),  # refused by the service: 400
]


@pytest.mark.django_db
@pytest.mark.parametrize(("method", "name", "params"), THROTTLED, ids=[name for _, name, _ in THROTTLED])
def test_throttled_endpoints_answer_on_a_cache_that_never_answers(
    redis_only, silent_port, settings, api, method, name, params
):
    """ScopedRateThrottle's cache call waits DD_CACHE_TIMEOUT, then the request goes on unthrottled
    (before: redis' TimeoutError, a JSON 500)."""
    settings.CELERY_BROKER_TIMEOUT = BROKER_TIMEOUT
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": f"redis://127.0.0.1:{silent_port}/0",
            "OPTIONS": {"socket_connect_timeout": BROKER_TIMEOUT, "socket_timeout": BROKER_TIMEOUT},
        }
    }
    started = time.monotonic()
    call = api.get if method == "get" else partial(api.post, format="json")
    response = call(reverse(name), params)
    elapsed = time.monotonic() - started
    assert response.status_code == (400 if method == "post" else 200), response.content
    # the throttle's cache call, the status read's own, the broker
    assert elapsed < 2 * BROKER_TIMEOUT + BROKER_TIMEOUT + MARGIN, elapsed
