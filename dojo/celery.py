"""The project's Celery app: `celery -A dojo worker` and `celery -A dojo beat`.

This module only wires things up. The worker side (signal handlers, remote-control commands,
start-up controls, heartbeats, the project's tasks) is `dojo.worker`, which Celery imports in
worker and beat processes only (`include`), once Django is set up; the web side uses the app
object and nothing of dojo.worker.
"""

import os

from celery import Celery
from kombu.transport import TRANSPORT_ALIASES

from dojo import publishing  # noqa: F401  (stamps expiry and publish time on every message)

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dojo.settings.settings")
# The embedded broker, without kombu's half-written message files (every process writes messages).
TRANSPORT_ALIASES["filesystem"] = "dojo.ops.brokers.filesystem_transport:Transport"

app = Celery("dojo", include=["dojo.worker"])
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
# Announces dojo_status in the built-in `stats` answer (dojo.ops.fleet.worker_reply).
app.steps["worker"].add("dojo.worker.commands:StatusMarker")
