"""A small Celery app that imports nothing of the project: the fleets operators run that the
project did not write (and, in a rolling deploy, the workers that do not know its commands yet).

Started by `LiveBroker.start_plain_worker` as `celery -A plain_app worker` with this folder as its
only import path; the broker comes from PLAIN_BROKER_URL and PLAIN_TRANSPORT_OPTIONS (JSON).
"""

import json
import os
import time

from celery import Celery

app = Celery(
    "plain",
    broker=os.environ["PLAIN_BROKER_URL"],
    backend=os.environ.get("PLAIN_RESULT_BACKEND") or None,
)
app.conf.update(
    broker_transport_options=json.loads(os.environ.get("PLAIN_TRANSPORT_OPTIONS") or "{}"),
    task_default_queue="celery",
    worker_hijack_root_logger=False,
)


@app.task(name="plain.sleep")
def sleep(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@app.task(name="plain.add")
def add(x: int, y: int) -> int:
    return x + y


@app.task(name="plain.fail")
def fail(message: str) -> None:
    raise ValueError(message)
