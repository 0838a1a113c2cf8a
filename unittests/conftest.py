"""Fixtures that start real services: a private redis-server, the embedded filesystem broker,
a private vhost on the machine's RabbitMQ, and real `celery -A dojo worker` processes. Each is
stopped (or deleted) when its test is done.

In CI (CI=true) a missing redis-server, RabbitMQ or browser fails the run instead of skipping.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from celery import Celery
from django.contrib.auth.models import User
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

ROOT = Path(__file__).resolve().parent.parent
PLAIN_FLEET = ROOT / "unittests" / "plain_fleet"  # plain_app.py: a Celery app that imports nothing of ours
IN_CI = os.environ.get("CI", "").lower() == "true"


@pytest.fixture(autouse=True)
def clear_cache() -> None:
    """What one test's web process learned (silent workers) must not leak into the next."""
    from django.core.cache import cache

    cache.clear()


def require(tool: str) -> str:
    """Path of `tool`; skips the test when it is missing, fails in CI."""
    path = shutil.which(tool)
    if path is None:
        message = f"{tool} is not installed"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise TimeoutError(f"timed out waiting for {what}")


def stop_process(proc: subprocess.Popen, grace: float = 10) -> None:
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A TCP server that accepts connections and never sends a byte."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept_forever() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept_forever, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join()
    for conn in [*accepted, server]:
        conn.close()


@dataclass
class RedisServer:
    port: int
    proc: subprocess.Popen

    def url(self, db: int) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory) -> Iterator[RedisServer]:
    binary = require("redis-server")
    port = free_port()
    workdir = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(workdir)],
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )

    def answers() -> bool:
        with socket.socket() as sock:
            return sock.connect_ex(("127.0.0.1", port)) == 0

    wait_for(answers, 10, "redis-server")
    yield RedisServer(port, proc)
    stop_process(proc)


@dataclass
class LiveBroker:
    """One broker as seen by the web process (Django settings) and by workers (DD_ env)."""

    kind: str
    url: str
    transport_options: dict = field(default_factory=dict)
    result_backend: str = ""
    workers: list[subprocess.Popen] = field(default_factory=list)
    tmp: Path = ROOT / "var"

    def env(self, **overrides: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DD_")}
        env.update(
            DD_CELERY_BROKER_URL=self.url,
            DD_CELERY_BROKER_TRANSPORT_OPTIONS=json.dumps(self.transport_options),
            DD_CELERY_RESULT_BACKEND=self.result_backend,
            DD_DATABASE_URL=f"sqlite:///{self.tmp / 'worker.sqlite3'}",
            PYTHONPATH=str(ROOT),
        )
        env.update(overrides)
        return env

    def client(self) -> Celery:
        """A Celery app for the test itself: publishes to this broker and reads results."""
        return Celery(
            "test-client",
            broker=self.url,
            backend=self.result_backend,
            broker_transport_options=self.transport_options,
            task_default_queue="celery",
        )

    def start_worker(self, name: str, queues: str = "celery", **env: str) -> str:
        """Start `celery -A dojo worker` and wait until it answers a ping; returns its name."""
        return self._start(name, queues, ["-A", "dojo"], ROOT, self.env(**env))

    def start_plain_worker(
        self, name: str, queues: str = "celery", python: str = sys.executable, concurrency: int = 2, **env: str
    ) -> str:
        """Start a worker of unittests/plain_fleet/plain_app.py, which imports nothing of the project
        (`python` may be another virtualenv's, for an older Celery); returns its name."""
        plain_env = {k: v for k, v in os.environ.items() if not k.startswith(("DD_", "DJANGO"))}
        plain_env.update(
            PLAIN_BROKER_URL=self.url,
            PLAIN_TRANSPORT_OPTIONS=json.dumps(self.transport_options),
            PLAIN_RESULT_BACKEND=self.result_backend,
            PYTHONPATH=str(PLAIN_FLEET),
        )
        plain_env.update(env)  # PYTHONPATH too, e.g. to put a folder before the app's
        return self._start(name, queues, ["-A", "plain_app"], PLAIN_FLEET, plain_env, python, concurrency)

    def _start(
        self,
        name: str,
        queues: str,
        app: list[str],
        cwd: Path,
        env: dict[str, str],
        python: str = sys.executable,
        concurrency: int = 2,
    ) -> str:
        hostname = f"{name}@{socket.gethostname()}"
        log = open(self.tmp / f"{name}.log", "w")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(
            [
                python,
                "-m",
                "celery",
                *app,
                "worker",
                "-n",
                hostname,
                "-Q",
                queues,
                "-c",
                str(concurrency),
                "-P",
                "prefork",
                "-l",
                "info",
                "--without-mingle",
                "--without-gossip",
            ],
            cwd=cwd,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.workers.append(proc)
        client = self.client()

        def answers() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"worker {name} exited: {(self.tmp / f'{name}.log').read_text()[-2000:]}")
            return bool(client.control.ping(destination=[hostname], timeout=1))

        wait_for(answers, 60, f"worker {hostname}")
        return hostname

    def stop_workers(self) -> None:
        for proc in self.workers:
            stop_process(proc)
        self.workers.clear()


def redis_broker(redis_server: RedisServer, tmp_path: Path) -> LiveBroker:
    import redis

    redis.Redis(port=redis_server.port).flushall()
    return LiveBroker(
        kind="redis",
        url=redis_server.url(0),
        transport_options={"priority_steps": [0, 3, 6, 9]},
        result_backend=redis_server.url(1),
        tmp=tmp_path,
    )


def filesystem_broker(tmp_path: Path) -> LiveBroker:
    folders = {name: tmp_path / "broker" / name for name in ("data", "control", "processed")}
    for folder in [*folders.values(), tmp_path / "results"]:
        folder.mkdir(parents=True)
    return LiveBroker(
        kind="filesystem",
        url="filesystem://localhost/",
        transport_options={
            "data_folder_in": str(folders["data"]),
            "data_folder_out": str(folders["data"]),
            "control_folder": str(folders["control"]),
            "processed_folder": str(folders["processed"]),
            "polling_interval": 0.1,
        },
        result_backend=f"file://{tmp_path / 'results'}",
        tmp=tmp_path,
    )


def use_broker(settings, broker: LiveBroker) -> LiveBroker:
    settings.CELERY_BROKER_URL = broker.url
    settings.CELERY_BROKER_TRANSPORT_OPTIONS = broker.transport_options
    return broker


@pytest.fixture(params=["redis", "filesystem"])
def broker(request, settings, tmp_path) -> Iterator[LiveBroker]:
    """The web process and any worker a test starts use this broker: Redis, then the embedded one."""
    if request.param == "redis":
        chosen = redis_broker(request.getfixturevalue("redis_server"), tmp_path)
    else:
        chosen = filesystem_broker(tmp_path)
    use_broker(settings, chosen)
    yield chosen
    chosen.stop_workers()


@pytest.fixture
def filesystem_only(settings, tmp_path) -> Iterator[LiveBroker]:
    chosen = use_broker(settings, filesystem_broker(tmp_path))
    yield chosen
    chosen.stop_workers()


@pytest.fixture
def redis_only(redis_server, settings, tmp_path) -> Iterator[LiveBroker]:
    chosen = use_broker(settings, redis_broker(redis_server, tmp_path))
    yield chosen
    chosen.stop_workers()


RABBITMQ_PORT = 5672


def rabbitmqctl(*args: str) -> str:
    """Run `rabbitmqctl ARGS` on the local node (needs root or the rabbitmq user); its stdout."""
    done = subprocess.run(
        [require("rabbitmqctl"), "-q", *args], capture_output=True, text=True, timeout=60, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"rabbitmqctl {' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


@pytest.fixture
def rabbitmq_broker(settings, tmp_path) -> Iterator[LiveBroker]:
    """A private vhost on the RabbitMQ at 127.0.0.1:5672 (guest/guest), deleted with everything in it.

    Skipped when RabbitMQ is not installed or not answering, failed instead in CI.
    """
    require("rabbitmqctl")
    with socket.socket() as sock:
        sock.settimeout(2)
        if sock.connect_ex(("127.0.0.1", RABBITMQ_PORT)) != 0:
            message = f"RabbitMQ is not answering on 127.0.0.1:{RABBITMQ_PORT}"
            if IN_CI:
                pytest.fail(message)
            pytest.skip(message)
    vhost = f"dojo-test-{uuid.uuid4().hex}"
    rabbitmqctl("add_vhost", vhost)
    try:
        rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
        chosen = LiveBroker(
            kind="rabbitmq",
            url=f"amqp://guest:guest@127.0.0.1:{RABBITMQ_PORT}/{vhost}",
            result_backend="rpc://",
            tmp=tmp_path,
        )
        use_broker(settings, chosen)
        try:
            yield chosen
        finally:
            chosen.stop_workers()
    finally:
        rabbitmqctl("delete_vhost", vhost)


@pytest.fixture(scope="session")
def django_db_modify_db_settings(django_db_modify_db_settings, tmp_path_factory) -> None:
    """The test database is a SQLite file (not memory), so real workers can share it (see shared_database)."""
    from django.conf import settings

    database = settings.DATABASES["default"]
    if database["ENGINE"] == "django.db.backends.sqlite3":
        database.setdefault("TEST", {})["NAME"] = str(tmp_path_factory.mktemp("db") / "test.sqlite3")


@pytest.fixture
def shared_database(transactional_db) -> str:
    """DD_DATABASE_URL of the test database, for workers that must see and write the test's rows
    (pauses, revocations, heartbeats, results). Rows are committed, hence transactional_db."""
    from django.db import connection

    return f"sqlite:///{connection.settings_dict['NAME']}"


def make_user(username: str, *, staff: bool = False, superuser: bool = False, permissions: tuple = ()) -> User:
    """A user; `permissions` are codenames (view_taskresult lets a staff user see task data)."""
    user = User.objects.create_user(
        username, password="pw-" + username, is_staff=staff or superuser, is_superuser=superuser
    )
    if permissions:
        from django.contrib.auth.models import Permission

        user.user_permissions.add(*Permission.objects.filter(codename__in=permissions))
    return user


@pytest.fixture
def superuser(db) -> User:
    return make_user("admin", superuser=True)


@pytest.fixture
def api(superuser) -> APIClient:
    """An API client authenticated as a superuser with a DRF token."""
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=superuser).key}")
    return client


CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]


@pytest.fixture
def browser_page() -> Iterator:
    """A page in Debian's headless Chromium driven by Playwright; `page.console_errors` collects errors."""
    chromium = require("chromium")
    from playwright.sync_api import sync_playwright

    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"  # Playwright's sync API runs an event loop
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        errors: list[str] = []
        page.on("console", lambda msg: msg.type == "error" and errors.append(msg.text))
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.console_errors = errors
        # The admin links no favicon, so Chromium asks for /favicon.ico; that 404 is not ours to report.
        page.route("**/favicon.ico", lambda route: route.fulfill(status=204))
        yield page
        browser.close()
