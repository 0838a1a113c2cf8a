import signal
import threading

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from dojo.ops.brokers.registry import configured_brokers
from dojo.ops.controls.late_workers import bring_in_line_soon
from dojo.ops.observe.monitor import run_monitor


class Command(BaseCommand):
    help = (
        "Run the Celery event monitor until SIGTERM or Ctrl-C: one event receiver per configured broker "
        "(DD_CELERY_BROKER_URL and DD_CELERY_BACKENDS) takes every worker's online/heartbeat/offline events, "
        "whether the worker runs this project's code or not, and the task events; once a second it writes the "
        "workers that changed and its own heartbeat to the database, for the processes table and API. Every "
        "DD_CELERY_MONITOR_ENABLE_EVENTS_SECONDS it sends enable_events to the workers (never with "
        "DD_CELERY_READ_ONLY). A worker that comes online is sent the stored pauses and revocations "
        "(dojo.ops.controls.late_workers). Task events are rolled up per minute, hour and in totals "
        "(TaskRollup, FailureRollup), written every DD_ANALYTICS_FLUSH_SECONDS in one transaction, and tasks "
        "that started on a worker which went away are recorded as lost (LostTask) after "
        "DD_ANALYTICS_LOST_GRACE_SECONDS. Memory is bounded by DD_CELERY_MONITOR_MAX_WORKERS and "
        "DD_ANALYTICS_MAX_TRACKED_TASKS. "
        "Run one per deployment."
    )

    def handle(self, *args, **options) -> None:
        if not settings.CELERY_ENABLED:
            raise CommandError("Celery is off (DD_CELERY_ENABLED=false): there is nothing to monitor.")
        stop = threading.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
        aliases = ", ".join(configured_brokers())
        self.stdout.write(f"Celery event monitor watching: {aliases}. Stop with Ctrl-C or SIGTERM.")
        run_monitor(stop, on_worker_online=bring_in_line_soon)
        self.stdout.write("Celery event monitor stopped.")
