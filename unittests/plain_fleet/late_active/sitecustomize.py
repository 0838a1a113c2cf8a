"""Fault injection for the mixed-fleet page tests: a worker started with this folder first on its
PYTHONPATH answers the built-in `active` inspect command LATE_ACTIVE_SECONDS late (3 s by default).

Python imports `sitecustomize` at start-up, before the worker loads any app, so the plain app
(unittests/plain_fleet/plain_app.py) stays as it is. Control commands run one after another in
the worker's main loop, so every command sent after `active` in a round is late too: the status
read, bounded by DD_CELERY_BROKER_TIMEOUT, gets this worker's `stats` and nothing after it, as from
a worker whose main loop is stalled (a blocking call, a CPU-bound thread). Nothing else changes.
"""

import os
import time

from celery.worker.control import Panel, inspect_command

_active = Panel.data["active"]


@inspect_command(name="active")
def active(state, **kwargs):
    time.sleep(float(os.environ.get("LATE_ACTIVE_SECONDS", "3")))
    return _active(state, **kwargs)
