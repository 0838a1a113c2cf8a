"""The dashboard's processes (staff, read only): workers with their pool children, and beat, from
the heartbeats in the database and the event monitor's rows (every worker, project code or not),
with the monitor's own state. Thin: dojo.ops.fleet.processes does the work. The broker is not
involved, so a broker that is down does not change this answer."""

from django.utils import timezone
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from dojo.api_v2.backends import requested_backend
from dojo.api_v2.schema import staff_read_schema
from dojo.ops.fleet.processes import STALE_AFTER_SECONDS, list_processes, monitor_state, pool_pids
from dojo.ops.fleet.status_cache import cached_status
from dojo.permissions import IsStaff


class ProcessRowSerializer(serializers.Serializer):
    name = serializers.CharField(help_text="Worker: its hostname (w1@host); pool child: worker/ForkPoolWorker-N.")
    kind = serializers.ChoiceField(["worker", "pool", "beat"])
    parent_name = serializers.CharField(allow_null=True, help_text="The worker of a pool child; null otherwise.")
    is_live = serializers.BooleanField(
        help_text="Last heartbeat at most stale_after_seconds ago (and, for a pool child, its worker is live); "
        "from events: not said worker-offline and last event heartbeat at most two heartbeat intervals ago."
    )
    last_heartbeat_at = serializers.DateTimeField()
    heartbeat_age_seconds = serializers.FloatField()
    hostname = serializers.CharField()
    pid = serializers.IntegerField(allow_null=True)
    source = serializers.ChoiceField(
        ["heartbeat", "events", "both"],
        help_text="heartbeat: the row this project's worker or beat writes; events: Celery's worker events, "
        "read by the event monitor (any worker); both: a project worker seen both ways.",
    )


class MonitorStateSerializer(serializers.Serializer):
    state = serializers.ChoiceField(
        ["live", "down", "never"],
        help_text="live: the event monitor (manage.py celery_monitor) beats; down: it stopped or its heartbeat is "
        "older than 3 s; never: no monitor ever ran for this backend, so only this project's workers are listed.",
    )
    since = serializers.DateTimeField(allow_null=True, help_text="live: when it started; down: when it stopped.")
    last_beat_at = serializers.DateTimeField(allow_null=True)
    hostname = serializers.CharField(allow_blank=True)
    pid = serializers.IntegerField(allow_null=True)
    broker_connected = serializers.BooleanField(help_text="Its event receiver is connected to this backend's broker.")
    last_error = serializers.CharField(allow_blank=True)
    events_seen = serializers.IntegerField(help_text="Events received since it started.")
    task_event_counts = serializers.DictField(
        child=serializers.IntegerField(), allow_null=True, help_text="Task events by type since it started."
    )


class ProcessListSerializer(serializers.Serializer):
    backend = serializers.CharField()
    stale_after_seconds = serializers.FloatField(help_text="A heartbeat older than this makes a process stale.")
    read_at = serializers.DateTimeField()
    processes = ProcessRowSerializer(many=True, help_text="Each worker followed by its pool children, then beat.")
    monitor = MonitorStateSerializer(help_text="The event monitor of this backend.")


class CeleryProcessesView(APIView):
    permission_classes = [IsStaff]

    @staff_read_schema(
        "Workers, their pool children and beat, live or stale from their heartbeats", ProcessListSerializer
    )
    def get(self, request: Request) -> Response:
        backend = requested_backend(request)
        document = {
            "backend": backend.alias,
            "stale_after_seconds": STALE_AFTER_SECONDS,
            "read_at": timezone.now(),
            "processes": list_processes(backend.alias, pool_pids(cached_status(backend))),
            "monitor": monitor_state(backend.alias),
        }
        return Response(ProcessListSerializer(document).data)
