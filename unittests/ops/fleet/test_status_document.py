"""The full status document against a real Redis and a real worker with known tasks: two long
tasks running, one prefetched, one held with a countdown. Also the seed's consumers, run as written."""

import base64
import json
import pickle
import threading
import time

import pytest
import redis
from django.urls import reverse
from rest_framework.renderers import JSONRenderer as DRFJSONRenderer
from rest_framework.serializers import Serializer

from dojo.api_v2.dict_serializer import DictSerializer
from dojo.api_v2.renderers import JSONRenderer
from dojo.api_v2.serializers import CeleryStatusSerializer
from dojo.ops.fleet.status import read_status
from dojo.ops.fleet.worker_reply import INSPECT_COMMANDS
from unittests.api_v2.test_status_and_purge import publish

STATUS = reverse("celery_status")


def wait_for_status(api, predicate, timeout: float = 20) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        body = api.get(STATUS, {"refresh": "1"}).json()
        if predicate(body) or time.monotonic() > deadline:
            return body
        time.sleep(0.2)


@pytest.fixture
def busy_worker(redis_only, api, settings):
    """One worker (concurrency 2) running two long tasks, with one prefetched and one on a countdown."""
    settings.CELERY_TASK_QUEUES = {"celery": {}, "reports": {}}
    worker = redis_only.start_worker("busy")
    client = redis_only.client()
    running = [client.send_task("dojo.tasks.sleep", args=(60,), kwargs={}) for _ in range(2)]
    waiting = client.send_task("dojo.tasks.add", args=("eval-456", "x"))
    later = client.send_task("dojo.tasks.add", args=(1, 2), countdown=300)
    body = wait_for_status(api, lambda b: b["active_tasks"] == 2 and b["reserved_tasks"] == 1 and b["scheduled_tasks"])
    return {"worker": worker, "running": running, "waiting": waiting, "later": later, "body": body}


@pytest.mark.django_db
def test_every_field_of_the_document(busy_worker, redis_only):
    body, worker = busy_worker["body"], busy_worker["worker"]
    publish(redis_only, 3, queue="reports")

    assert body["enabled"] is body["connected"] is body["broker_status"] is True
    assert body["workers"] == 1 and body["worker_names"] == [worker]
    assert (body["active_tasks"], body["reserved_tasks"], body["scheduled_tasks"]) == (2, 1, 1)
    assert {"dojo.tasks.add", "dojo.tasks.sleep", "dojo.tasks.prune_broker_files"} <= set(body["registered_tasks"])
    assert body["registered_tasks"] == sorted(body["registered_tasks"])

    stats = body["worker_stats"][worker]
    assert stats["pool"]["max-concurrency"] == 2
    assert len(stats["pool"]["processes"]) == 2
    assert stats["pool"]["max-tasks-per-child"] is None
    assert stats["total"] >= 2 and stats["pid"] > 0

    active = body["queue_details"]["active"][worker]
    assert sorted(task["id"] for task in active) == sorted(r.id for r in busy_worker["running"])
    assert all(task["name"] == "dojo.tasks.sleep" and task["args"] == [60] for task in active)
    assert all(0 < time.time() - task["time_start"] < 60 for task in active)
    reserved = body["queue_details"]["reserved"][worker]
    assert [(task["id"], task["args"]) for task in reserved] == [(busy_worker["waiting"].id, ["eval-456", "x"])]
    scheduled = body["queue_details"]["scheduled"][worker]
    assert [task["id"] for task in scheduled] == [busy_worker["later"].id]
    assert scheduled[0]["eta"]

    assert body["queues"]["celery"] == {"ready": 0, "consumers": 1}
    assert body["queues"]["reports"]["consumers"] == 0
    assert body["queue"] == "celery" and body["queue_length"] == 0
    codes = {alert["code"] for alert in body["alerts"]}
    assert "worker_saturated" in codes and "no_workers" not in codes


def test_the_fast_paths_give_drfs_document(busy_worker, monkeypatch):
    """On a real document: the cache's pickle (replies as one orjson string) gives back an equal
    status, the DictSerializer fields give DRF's own representation, and the orjson renderer DRF's JSON."""
    status = read_status()
    state = status.__getstate__()
    assert isinstance(state["worker_replies"], bytes)
    assert pickle.loads(pickle.dumps(status)) == status  # noqa: S301 - our own document

    fast = CeleryStatusSerializer(status).data
    monkeypatch.setattr(DictSerializer, "to_representation", Serializer.to_representation)
    drf = CeleryStatusSerializer(status).data
    assert fast == drf and fast["queue_details"]["active"][busy_worker["worker"]]
    assert json.loads(JSONRenderer().render(fast)) == json.loads(DRFJSONRenderer().render(drf))


@pytest.mark.django_db
def test_ready_messages_in_every_configured_queue(redis_only, api, settings):
    settings.CELERY_TASK_QUEUES = {"celery": {}, "reports": {}}
    publish(redis_only, 3, queue="reports", priorities=(0, 9))
    body = api.get(STATUS).json()
    assert body["queues"] == {"celery": {"ready": 0, "consumers": 0}, "reports": {"ready": 3, "consumers": 0}}
    assert [alert["code"] for alert in body["alerts"]] == ["no_workers"]


@pytest.mark.django_db
def test_find_stuck_evaluation_walk_from_the_seed(busy_worker, api):
    """The seed's debug script, as written, against the live document."""
    status = api.get(STATUS).json()

    def find_stuck_evaluation(eval_id):
        for worker, tasks in status["queue_details"]["active"].items():
            for task in tasks:
                if eval_id in task["args"]:
                    runtime = time.time() - task["time_start"]
                    return f"Found on {worker}, running for {runtime}s"
        for worker, tasks in status["queue_details"]["scheduled"].items():
            for task in tasks:
                if eval_id in task["args"]:
                    return f"Scheduled on {worker}, waiting to run"
        for worker, tasks in status["queue_details"]["reserved"].items():
            for task in tasks:
                if eval_id in task["args"]:
                    return f"Reserved on {worker}, waiting for a free process"
        return "Not found in Celery queues"

    assert find_stuck_evaluation(60).startswith(f"Found on {busy_worker['worker']}, running for ")
    assert find_stuck_evaluation(1) == f"Scheduled on {busy_worker['worker']}, waiting to run"
    assert find_stuck_evaluation("eval-456") == f"Reserved on {busy_worker['worker']}, waiting for a free process"
    assert find_stuck_evaluation("eval-999") == "Not found in Celery queues"

    found = api.get(reverse("celery_tasks"), {"arg": "eval-456"}).json()
    assert found["count"] == 1
    assert found["results"][0]["state"] == "RESERVED" and found["results"][0]["worker"] == busy_worker["worker"]
    running = api.get(reverse("celery_tasks"), {"name": "sleep", "state": "active"}).json()
    assert running["count"] == 2 and all(task["runtime"] > 0 for task in running["results"])


class BroadcastCounter:
    """Counts the control commands the broker really carries: kombu's Redis transport
    publishes broadcasts on pub/sub, so a subscriber sees each one once."""

    def __init__(self, broker_url: str) -> None:
        self.pubsub = redis.Redis.from_url(broker_url).pubsub()
        self.methods: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._listen, daemon=True)

    def _listen(self) -> None:
        while not self._stop.is_set():
            message = self.pubsub.get_message(timeout=0.1)
            if message and message["type"] == "pmessage":
                body = json.loads(base64.b64decode(json.loads(message["data"])["body"]))
                self.methods.append(body["method"])

    def __enter__(self) -> "BroadcastCounter":
        self.pubsub.psubscribe("*celery.pidbox*")
        self._thread.start()
        time.sleep(0.3)
        return self

    def __exit__(self, *exc) -> None:
        time.sleep(0.3)
        self._stop.set()
        self._thread.join()
        self.pubsub.close()

    def count(self, method: str) -> int:
        return self.methods.count(method)


@pytest.mark.django_db(transaction=True)
def test_one_broadcast_per_read_and_single_flight(redis_only, settings):
    from dojo.ops.fleet.status_cache import get_status

    settings.CELERY_STATUS_CACHE_SECONDS = 30
    names = [redis_only.start_worker("w1"), redis_only.start_worker("w2")]
    with BroadcastCounter(redis_only.url) as counter:
        read_status()  # uncached: learns from the built-in stats that both answer dojo_status
    assert counter.methods == list(INSPECT_COMMANDS)  # once, together; never dojo_status to an unknown worker
    statuses = []
    barrier = threading.Barrier(20)

    def request() -> None:
        barrier.wait()
        statuses.append(get_status())

    with BroadcastCounter(redis_only.url) as counter:
        threads = [threading.Thread(target=request) for _ in range(20)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=10)
    assert len(statuses) == 20 and all(status.worker_names == names for status in statuses)
    assert len({status.read_at for status in statuses}) == 1
    assert counter.count("dojo_status") == 1  # twenty requests, one broadcast
    assert counter.methods == ["dojo_status"]  # and no built-in inspect command

    with BroadcastCounter(redis_only.url) as counter:
        get_status(refresh=True)
        get_status(refresh=True)
        get_status()
    assert counter.count("dojo_status") == 2  # each refresh reads once; the plain call is served from the cache


@pytest.mark.django_db
def test_celery_disabled_touches_no_broker(api, settings):
    settings.CELERY_ENABLED = False
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:1/0"
    started = time.monotonic()
    assert api.get(STATUS).json() == {"enabled": False, "message": "Celery is not enabled (DD_CELERY_ENABLED=false)."}
    assert time.monotonic() - started < 0.3
    assert api.post(reverse("celery_queue_purge"), {}, format="json").status_code == 503


@pytest.mark.django_db
def test_health_probes_flip(redis_only, client, settings):
    settings.CELERY_STATUS_CACHE_SECONDS = 0
    ready, live = reverse("celery_health_ready"), reverse("celery_health_live")
    assert client.get(live).json() == {"status": "ok"}

    no_worker = client.get(ready)
    assert no_worker.status_code == 503
    assert no_worker.json()["reasons"] == ["0 worker(s) alive, 1 required"]

    redis_only.start_worker("w1")
    answer = client.get(ready)
    assert answer.status_code == 200 and answer.json()["ready"] is True
    assert set(answer.json()) == {"ready", "reasons", "workers", "min_workers", "broker_status"}  # no task data

    redis_only.stop_workers()
    assert client.get(ready).status_code == 503

    settings.CELERY_BROKER_URL = "redis://127.0.0.1:1/0"
    gone = client.get(ready)
    assert gone.status_code == 503 and gone.json()["reasons"] == ["broker unreachable"]
    assert client.get(live).status_code == 200


@pytest.mark.django_db
def test_expensive_endpoints_are_throttled_per_user(filesystem_only, api, monkeypatch):
    """DD_CELERY_API_THROTTLE_RATE feeds DRF's scoped throttle; here a low rate is set directly."""
    from rest_framework.test import APIClient
    from rest_framework.throttling import ScopedRateThrottle

    from unittests.conftest import make_user

    monkeypatch.setattr(ScopedRateThrottle, "THROTTLE_RATES", {"celery": "3/min"})
    assert [api.get(STATUS).status_code for _ in range(4)] == [200, 200, 200, 429]
    assert api.get(reverse("celery_tasks")).status_code == 429  # one budget for the expensive endpoints

    other = APIClient()
    other.force_authenticate(make_user("other-admin", superuser=True))
    assert other.get(STATUS).status_code == 200  # per user
