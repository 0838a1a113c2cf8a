"""The detections (staff, read only) and the retry of a lost task (a control). Thin:
dojo.ops.fleet.detections finds them, dojo.ops.controls.lost_tasks retries.

GET /api/v2/celery/analytics/detections/?backend= lists every detection with its items; the long
runners come from the status document's active tasks (read through the status cache). POST
/api/v2/celery/analytics/detections/lost-tasks/retry/ retries one lost task by its task id and
records it on the lost task's row (the plain POST /api/v2/celery/tasks/retry/ retries only
failed or revoked results, and records nothing on the lost task).
"""

from django.conf import settings
from drf_spectacular.utils import OpenApiResponse
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from dojo.api_v2.backends import requested_backend
from dojo.api_v2.control_serializers import TaskIdRequestSerializer, TaskRetrySerializer
from dojo.api_v2.controls import CeleryControlView
from dojo.api_v2.schema import DATABASE_DOWN, staff_read_schema
from dojo.api_v2.serializers import ErrorSerializer
from dojo.ops.brokers.registry import Broker
from dojo.ops.controls.lost_tasks import LostTaskConflict, UnknownLostTask, retry_lost_task
from dojo.ops.controls.retry import NotRetryable, RetryResult
from dojo.ops.fleet.detections import MAX_ITEMS, detect
from dojo.ops.fleet.status_cache import get_status
from dojo.permissions import IsStaff


class LostTaskSerializer(serializers.Serializer):
    task_id = serializers.CharField()
    task_name = serializers.CharField()
    queue = serializers.CharField(allow_blank=True)
    worker = serializers.CharField(help_text="The worker it started on, which then went away.")
    started_at = serializers.DateTimeField()
    worker_gone_at = serializers.DateTimeField()
    detected_at = serializers.DateTimeField()


class LateEntrySerializer(serializers.Serializer):
    name = serializers.CharField(help_text="The django-celery-beat entry's name.")
    task = serializers.CharField()
    schedule = serializers.ChoiceField(["interval", "crontab"])
    last_run_at = serializers.DateTimeField(allow_null=True)
    due_at = serializers.DateTimeField(help_text="When it should have run after its last run.")
    late_seconds = serializers.FloatField(help_text="Seconds past due_at plus DD_ANALYTICS_PERIODIC_GRACE_SECONDS.")


class LongRunnerSerializer(serializers.Serializer):
    task_id = serializers.CharField()
    task_name = serializers.CharField()
    worker = serializers.CharField()
    running_seconds = serializers.FloatField()
    p95_seconds = serializers.FloatField(help_text="The task name's p95 runtime over the last 24 h.")
    runs = serializers.IntegerField(help_text="The runs of the last 24 h the p95 is read from.")


class FailureRateSerializer(serializers.Serializer):
    task_name = serializers.CharField()
    runs = serializers.IntegerField(help_text="Finished (succeeded or failed) in the last 15 minutes.")
    failed = serializers.IntegerField()
    percent = serializers.FloatField()
    baseline_percent = serializers.FloatField(help_text="Its failure % over the rest of the last 24 h.")


class DetectionsSerializer(serializers.Serializer):
    backend = serializers.CharField()
    max_items = serializers.IntegerField(help_text="Each list holds at most this many items.")
    lost_tasks = LostTaskSerializer(many=True, help_text="Detected in the last 24 h and not retried, newest first.")
    lost_total = serializers.IntegerField()
    late_entries = LateEntrySerializer(many=True, help_text="Most late first (main backend only).")
    late_total = serializers.IntegerField()
    beat_expected = serializers.BooleanField(help_text="Enabled interval or crontab entries exist.")
    beat_down = serializers.BooleanField(help_text="Beat is expected and wrote no heartbeat in the last 30 s.")
    beat_last_heartbeat_at = serializers.DateTimeField(allow_null=True)
    long_runners = LongRunnerSerializer(
        many=True, help_text="Active tasks running more than DD_ANALYTICS_SLOW_FACTOR x their p95, longest first."
    )
    slow_factor = serializers.FloatField()
    failure_rates = FailureRateSerializer(many=True, help_text="Failure rate up, highest first.")
    failure_rate_percent = serializers.FloatField(help_text="DD_ANALYTICS_FAILURE_RATE_PERCENT.")
    broker_connected = serializers.BooleanField(
        help_text="False: the workers' active tasks were not read, so long_runners is empty."
    )


class CeleryDetectionsView(APIView):
    permission_classes = [IsStaff]

    @staff_read_schema(
        "Lost tasks, late periodic tasks and beat down, tasks running far longer than usual, failure rates up",
        DetectionsSerializer,
        extra={503: OpenApiResponse(ErrorSerializer, description=DATABASE_DOWN)},
    )
    def get(self, request: Request) -> Response:
        backend = requested_backend(request)
        status = get_status(broker=backend) if settings.CELERY_ENABLED else None
        found = detect(backend.alias, status.worker_replies if status else None, status.read_at if status else None)
        document = {
            **found.__dict__,
            "max_items": MAX_ITEMS,
            "slow_factor": settings.ANALYTICS_SLOW_FACTOR,
            "failure_rate_percent": settings.ANALYTICS_FAILURE_RATE_PERCENT,
            "broker_connected": bool(status and status.connected),
        }
        return Response(DetectionsSerializer(document).data)


class CeleryLostTaskRetryView(CeleryControlView):
    celery_permission = "retry_task"
    audit_action = "retry_lost_task"
    request_serializer = TaskIdRequestSerializer
    response_serializer = TaskRetrySerializer
    target_fields = ("task_id",)
    refusals = {UnknownLostTask: (404, None), LostTaskConflict: (409, None), NotRetryable: (409, None)}
    summary = (
        "Publish a lost task again with its stored name, arguments and queue, and record the new task on the lost "
        "task; 409 when it was retried already or its stored result is absent, finished or incomplete"
    )
    extra_responses = {
        404: OpenApiResponse(ErrorSerializer, description="No lost task of this backend has this task id."),
        409: OpenApiResponse(
            ErrorSerializer,
            description="Retried already, or no retryable stored result (absent, finished, incomplete).",
        ),
    }

    def perform(self, request: Request, data: dict, backend: Broker) -> RetryResult:
        return retry_lost_task(data["task_id"], backend)

    def detail(self, result: RetryResult) -> str:
        return f"new task {result.task_id} ({result.task_name}) on queue {result.queue}"
