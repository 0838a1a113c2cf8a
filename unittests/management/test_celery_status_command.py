"""`manage.py celery_status` as cron jobs and shell scripts run it: a real subprocess against a
real Redis and real workers, or a broker that is down for real.
"""

import json
import shutil
import subprocess
import sys
import time

import pytest

from dojo.api_v2.serializers import CeleryStatusSerializer
from unittests.conftest import IN_CI, ROOT, LiveBroker, free_port, wait_for

SECRET = "s3cret-cli-pw"
# The status-document consumer from seed 002, with the alert hooks replaced by echo and the
# expansions quoted; the JSON comes from the CLI instead of curl.
MONITOR_SCRIPT = """
CELERY_STATUS=$("$PYTHON" manage.py celery_status --json)
CONNECTED=$(echo "$CELERY_STATUS" | jq -r '.connected')
WORKERS=$(echo "$CELERY_STATUS" | jq -r '.workers')
ACTIVE_TASKS=$(echo "$CELERY_STATUS" | jq -r '.active_tasks')

if [ "$CONNECTED" != "true" ]; then
  echo "ALERT pagerduty: Celery disconnected from broker"
fi

if [ "$WORKERS" -lt 2 ]; then
  echo "ALERT slack: Low Celery workers: $WORKERS"
fi

if [ "$ACTIVE_TASKS" -gt 100 ]; then
  echo "ALERT slack: High active tasks: $ACTIVE_TASKS"
fi
echo "connected=$CONNECTED workers=$WORKERS active=$ACTIVE_TASKS"
"""


@pytest.fixture(scope="module")
def database(tmp_path_factory) -> str:
    """A migrated SQLite database for the CLI processes (the status reads the history table)."""
    url = f"sqlite:///{tmp_path_factory.mktemp('cli') / 'cli.sqlite3'}"
    env = LiveBroker(kind="none", url="memory://").env(DD_DATABASE_URL=url)
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True, timeout=120)
    return url


def run_cli(broker: LiveBroker, database: str, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", "celery_status", *args],
        cwd=ROOT,
        env=broker.env(DD_DATABASE_URL=database, **env),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_ready_with_one_worker(redis_only, database):
    name = redis_only.start_worker("w1")

    result = run_cli(redis_only, database)

    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "Broker: reachable, redis://127.0.0.1:" in out
    assert "Workers: 1 answering (ready needs 1)" in out
    worker_line = next(line for line in out.splitlines() if name in line)
    for expected in ("active 0", "reserved 0", "scheduled 0", "concurrency 2"):
        assert expected in worker_line
    assert "celery  ready 0  consumers 1" in out
    assert "Alerts: none" in out
    assert "Task limits: time limit 12 hours, soft time limit off, default expiry 12 hours" in out
    assert out.rstrip().endswith("Ready: yes")


def test_json_is_the_api_document(redis_only, database):
    name = redis_only.start_worker("w1")
    client = redis_only.client()
    running = client.send_task("dojo.tasks.sleep", args=(30,))
    with client.connection_for_write() as conn:
        for i in range(3):
            client.send_task("dojo.tasks.add", args=(i, i), queue="other", connection=conn)

    def running_now() -> bool:
        return bool((client.control.inspect(destination=[name], timeout=1).active() or {}).get(name))

    wait_for(running_now, 20, "the sleep task to start")
    try:
        result = run_cli(redis_only, database, "--json", "--refresh", DD_CELERY_QUEUES="celery,other")
    finally:
        client.control.revoke(running.id, terminate=True)

    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)
    assert body["enabled"] is body["connected"] is body["broker_status"] is body["worker_status"] is True
    assert body["workers"] == 1
    assert body["worker_names"] == [name]
    assert body["queue"] == "celery"
    assert body["queue_length"] == 0
    assert body["queues"] == {"celery": {"ready": 0, "consumers": 1}, "other": {"ready": 3, "consumers": 0}}
    assert body["active_tasks"] == 1
    assert body["reserved_tasks"] == body["scheduled_tasks"] == 0
    [task] = body["queue_details"]["active"][name]
    assert task["id"] == running.id
    assert task["name"] == "dojo.tasks.sleep"
    assert "dojo.tasks.sleep" in body["registered_tasks"]
    assert body["worker_stats"][name]["pool"]["max-concurrency"] == 2
    assert body["alerts"] == []
    assert body["task_time_limit"] == body["task_default_expires"] == 43200
    assert body["task_soft_time_limit"] is None
    assert body["broker_url"] == redis_only.url
    assert body["error"] is None
    assert abs(body["read_at"] - time.time()) < 30
    # Exactly the API document: the same fields, nothing added.
    assert list(body) == list(CeleryStatusSerializer().fields)


def test_no_worker_is_not_ready(redis_only, database):
    result = run_cli(redis_only, database)

    assert result.returncode == 1
    assert "Workers: 0 answering" in result.stdout
    assert "CRITICAL: No Celery worker answered." in result.stdout
    assert "Ready: NO (0 worker(s) alive, 1 required)" in result.stdout

    result = run_cli(redis_only, database, "--json")
    assert result.returncode == 1
    assert json.loads(result.stdout)["workers"] == 0
    assert "Not ready: 0 worker(s) alive, 1 required" in result.stderr


def test_min_workers_overrides_the_setting(redis_only, database):
    redis_only.start_worker("w1")

    result = run_cli(redis_only, database, "--min-workers", "2")
    assert result.returncode == 1
    assert "Ready: NO (1 worker(s) alive, 2 required)" in result.stdout

    assert run_cli(redis_only, database, "--min-workers", "1", DD_CELERY_MIN_WORKERS="2").returncode == 0
    assert run_cli(redis_only, database, DD_CELERY_MIN_WORKERS="2").returncode == 1


# `manage.py celery_status` run by a real interpreter that times the command alone, after
# Python's and Django's start-up (which a loaded 2-core machine stretches by seconds).
TIMED_CLI = """
import os, sys, time
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dojo.settings.settings")
import django
django.setup()
from django.core.management import call_command
started = time.monotonic()
try:
    call_command("celery_status", *sys.argv[2:])
finally:
    with open(sys.argv[1], "w") as seconds:
        seconds.write(str(time.monotonic() - started))
"""


@pytest.mark.parametrize("which", ["closed port", "accepts, never answers"])
@pytest.mark.parametrize("args", [[], ["--json"]])
def test_broker_down_is_not_ready_within_the_bound(tmp_path, database, silent_port, which, args):
    port = free_port() if which == "closed port" else silent_port
    bound = 1.0
    broker = LiveBroker(kind="redis", url=f"redis://:{SECRET}@127.0.0.1:{port}/0", tmp=tmp_path)
    timing = tmp_path / "seconds"

    result = subprocess.run(
        [sys.executable, "-c", TIMED_CLI, str(timing), *args],
        cwd=ROOT,
        env=broker.env(DD_DATABASE_URL=database, DD_CELERY_BROKER_TIMEOUT=str(bound)),
        capture_output=True,
        text=True,
        timeout=60,
    )
    elapsed = float(timing.read_text())

    assert result.returncode == 1
    assert SECRET not in result.stdout + result.stderr
    if args:
        body = json.loads(result.stdout)
        assert body["connected"] is False
        assert body["broker_url"] == f"redis://:****@127.0.0.1:{port}/0"
        assert body["error"]
        assert "Not ready: broker unreachable" in result.stderr
    else:
        assert f"Broker: UNREACHABLE, redis://:****@127.0.0.1:{port}/0" in result.stdout
        assert "Ready: NO (broker unreachable)" in result.stdout
    assert elapsed < bound + 0.5, f"the command took {elapsed:.2f} s against a {bound} s bound"


def test_celery_disabled_is_not_ready(tmp_path, database):
    broker = LiveBroker(kind="redis", url=f"redis://:{SECRET}@127.0.0.1:{free_port()}/0", tmp=tmp_path)

    result = run_cli(broker, database, DD_CELERY_ENABLED="false")
    assert result.returncode == 1
    assert "Celery is not enabled (DD_CELERY_ENABLED=false)." in result.stdout
    assert "Ready: NO (Celery is not enabled)" in result.stdout

    result = run_cli(broker, database, "--json", DD_CELERY_ENABLED="false")
    assert result.returncode == 1
    disabled = {"enabled": False, "message": "Celery is not enabled (DD_CELERY_ENABLED=false)."}
    assert json.loads(result.stdout) == disabled
    assert SECRET not in result.stdout + result.stderr


def jq() -> str:
    path = shutil.which("jq")
    if path is None:
        message = "jq is not installed (Debian: apt-get install jq)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return path


def run_monitor(broker: LiveBroker, database: str) -> list[str]:
    jq()
    env = broker.env(DD_DATABASE_URL=database, PYTHON=sys.executable)
    result = subprocess.run(
        ["bash", "-c", MONITOR_SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stderr == "" or "Not ready" in result.stderr, result.stderr
    return result.stdout.splitlines()


def test_seed_monitoring_script_reads_the_json(redis_only, database):
    redis_only.start_worker("w1")

    assert run_monitor(redis_only, database) == [
        "ALERT slack: Low Celery workers: 1",
        "connected=true workers=1 active=0",
    ]


def test_seed_monitoring_script_sees_a_broker_down(tmp_path, database):
    broker = LiveBroker(kind="redis", url=f"redis://:{SECRET}@127.0.0.1:{free_port()}/0", tmp=tmp_path)

    assert run_monitor(broker, database) == [
        "ALERT pagerduty: Celery disconnected from broker",
        "ALERT slack: Low Celery workers: 0",
        "connected=false workers=0 active=0",
    ]


def test_help_lists_the_options():
    result = subprocess.run(
        [sys.executable, "manage.py", "celery_status", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0
    for option in ("--json", "--refresh", "--min-workers"):
        assert option in result.stdout
