"""Task analytics (staff, read only): the per task name table, one task name's detail, the failures
grouped by exception type and the throughput per minute. Thin: dojo.ops.read_models.analytics
reads the event monitor's rollups; these views validate the query and serialize.

The failure groups' latest exception text and traceback are task data: blank for users who may
not see task data (dojo.permissions.may_see_task_data); the task ids are kept.
"""

from dataclasses import fields, replace
from typing import Any

from drf_spectacular.utils import OpenApiResponse
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from dojo.api_v2.backends import BackendField, query_of
from dojo.api_v2.fields import NameField, TextField
from dojo.api_v2.schema import DATABASE_DOWN, staff_read_schema
from dojo.api_v2.serializers import ErrorSerializer
from dojo.ops.brokers.registry import get_broker
from dojo.ops.read_models import analytics
from dojo.ops.read_models.analytics import FailureGroup
from dojo.permissions import IsStaff, may_see_task_data

WINDOW_HELP = (
    "1h and 24h read the minute rollups, 7d and 30d the hour rollups; at most 60 points of 1 min, 30 min, "
    "4 h or 12 h (UTC, aligned on the point width)."
)
SORTS = [*analytics.SORT_KEYS, *(f"-{key}" for key in analytics.SORT_KEYS)]
DATABASE_DOWN_RESPONSE = {503: OpenApiResponse(ErrorSerializer, description=DATABASE_DOWN)}
HIDDEN_HELP = (
    "True when the caller may not see task data (superusers and holders of django_celery_results.view_taskresult "
    "may): every latest_exception and latest_traceback is then blank."
)


class SeriesField(serializers.ListField):
    """A list of numbers (or nulls) answered as it is: a table has thousands of them, and DRF's
    per-item field calls were most of its serialization."""

    def to_representation(self, data: list) -> list:
        return list(data)


def _window_field() -> serializers.ChoiceField:
    return serializers.ChoiceField(
        list(analytics.WINDOWS), required=False, default=analytics.DEFAULT_WINDOW, help_text=WINDOW_HELP
    )


class TaskTableQuerySerializer(serializers.Serializer):
    window = _window_field()
    sort = serializers.ChoiceField(
        SORTS,
        required=False,
        default=analytics.DEFAULT_SORT,
        help_text="A column, '-' first for descending; rows without a value (null) last either way.",
    )
    backend = BackendField()


class TaskDetailQuerySerializer(serializers.Serializer):
    task_name = NameField(max_length=255, help_text="The task's registered name.")
    window = _window_field()
    backend = BackendField()


class FailuresQuerySerializer(serializers.Serializer):
    window = _window_field()
    task_name = TextField(
        required=False, allow_blank=True, max_length=255, help_text="Only this task name's failures; all if blank."
    )
    backend = BackendField()


class ThroughputQuerySerializer(serializers.Serializer):
    minutes = serializers.IntegerField(
        required=False,
        default=60,
        min_value=1,
        max_value=analytics.MAX_THROUGHPUT_MINUTES,
        help_text="Minutes back, the current one last.",
    )
    backend = BackendField()


class TaskStatsSerializer(serializers.Serializer):
    task_name = serializers.CharField()
    runs = serializers.IntegerField(help_text="Succeeded plus failed.")
    succeeded = serializers.IntegerField()
    failed = serializers.IntegerField()
    retried = serializers.IntegerField()
    revoked = serializers.IntegerField()
    recovered = serializers.IntegerField(help_text="Succeeded after one or more retries.")
    critical = serializers.IntegerField(help_text="Failed after its last retry.")
    lost = serializers.IntegerField(help_text="Started on a worker that went away, never ended.")
    failure_percent = serializers.FloatField(allow_null=True, help_text="failed / runs x 100; null without runs.")
    retry_percent = serializers.FloatField(allow_null=True, help_text="retried / runs x 100; null without runs.")
    runtime_p50 = serializers.FloatField(allow_null=True, help_text="Seconds, exact to within one histogram bucket.")
    runtime_p95 = serializers.FloatField(allow_null=True)
    runtime_p99 = serializers.FloatField(allow_null=True)
    wait_p95 = serializers.FloatField(allow_null=True, help_text="Received -> started, seconds.")
    runtime_sum = serializers.FloatField(help_text="Seconds.")
    time_share_percent = serializers.FloatField(
        allow_null=True, help_text="Its share of all task names' runtime in the window; null when none ran."
    )
    runs_series = SeriesField(child=serializers.IntegerField(), help_text="Runs per point.")
    p95_series = SeriesField(
        child=serializers.FloatField(allow_null=True), help_text="p95 runtime per point; null without runs."
    )


class WindowSerializer(serializers.Serializer):
    backend = serializers.CharField()
    window = serializers.ChoiceField(list(analytics.WINDOWS))
    since = serializers.DateTimeField(help_text="The first point's start.")
    until = serializers.DateTimeField(help_text="Now, by the database's clock.")
    point_seconds = serializers.IntegerField()


class TaskTableSerializer(WindowSerializer):
    sort = serializers.ChoiceField(SORTS)
    points = serializers.ListField(child=serializers.DateTimeField(), help_text="Each point's start.")
    rows = TaskStatsSerializer(many=True, help_text="Every task name with rollups in the window.")


class SeriesPointSerializer(serializers.Serializer):
    start = serializers.DateTimeField()
    succeeded = serializers.IntegerField()
    failed = serializers.IntegerField()
    retried = serializers.IntegerField()
    revoked = serializers.IntegerField()
    runtime_p50 = serializers.FloatField(allow_null=True)
    runtime_p95 = serializers.FloatField(allow_null=True)
    runtime_p99 = serializers.FloatField(allow_null=True)
    wait_p95 = serializers.FloatField(allow_null=True)


class FailureGroupSerializer(serializers.Serializer):
    task_name = serializers.CharField()
    exception_type = serializers.CharField()
    count = serializers.IntegerField()
    first_seen = serializers.DateTimeField()
    last_seen = serializers.DateTimeField()
    latest_task_id = serializers.CharField(allow_blank=True)
    latest_exception = serializers.CharField(allow_blank=True, help_text="Redacted; blank without task data rights.")
    latest_traceback = serializers.CharField(allow_blank=True, help_text="Redacted; blank without task data rights.")


class SlowRunSerializer(serializers.Serializer):
    task_id = serializers.CharField()
    runtime = serializers.FloatField(help_text="Seconds, started -> done, from the stored result.")
    worker = serializers.CharField(allow_blank=True)
    done_at = serializers.DateTimeField()
    state = serializers.CharField()


class TaskDetailSerializer(WindowSerializer):
    stats = TaskStatsSerializer()
    series = SeriesPointSerializer(many=True)
    failures = FailureGroupSerializer(many=True, help_text="Grouped by exception type, most failures first.")
    slowest = SlowRunSerializer(
        many=True,
        help_text=f"The slowest of its latest {analytics.SLOWEST_SCAN} stored results done in the window "
        f"(at most {analytics.MAX_SLOWEST}), slowest first.",
    )
    task_data_hidden = serializers.BooleanField(help_text=HIDDEN_HELP)


class FailuresSerializer(serializers.Serializer):
    backend = serializers.CharField()
    window = serializers.ChoiceField(list(analytics.WINDOWS))
    task_name = serializers.CharField(allow_blank=True)
    limit = serializers.IntegerField(help_text="At most this many groups.")
    groups = FailureGroupSerializer(many=True, help_text="Most failures first.")
    task_data_hidden = serializers.BooleanField(help_text=HIDDEN_HELP)


class ThroughputPointSerializer(serializers.Serializer):
    start = serializers.DateTimeField()
    succeeded = serializers.IntegerField()
    failed = serializers.IntegerField()


class ThroughputSerializer(serializers.Serializer):
    backend = serializers.CharField()
    minutes = serializers.IntegerField()
    points = ThroughputPointSerializer(many=True, help_text="One per minute, oldest first, zeros for empty minutes.")


def _query(serializer: type[serializers.Serializer], request: Request) -> dict[str, Any]:
    params = serializer(data=query_of(request))
    params.is_valid(raise_exception=True)
    query = dict(params.validated_data)
    query["backend"] = query.get("backend") or get_broker()
    return query


def _shallow(item: Any) -> dict[str, Any]:
    """A slotted dataclass's fields as a dict (no deep copy: the serializers read the nested items)."""
    return {field.name: getattr(item, field.name) for field in fields(item)}


def _visible(groups: list[FailureGroup], hidden: bool) -> list[FailureGroup]:
    return [replace(group, latest_exception="", latest_traceback="") for group in groups] if hidden else groups


class CeleryTaskAnalyticsView(APIView):
    permission_classes = [IsStaff]

    @staff_read_schema(
        "Task analytics per task name: runs, failure and retry %, p50/p95/p99 runtime, p95 wait, time share, "
        "sparklines",
        TaskTableSerializer,
        parameters=[TaskTableQuerySerializer],
        extra=DATABASE_DOWN_RESPONSE,
    )
    def get(self, request: Request) -> Response:
        query = _query(TaskTableQuerySerializer, request)
        table = analytics.task_table(query["backend"].alias, query["window"], query["sort"])
        document = {**_shallow(table), "backend": query["backend"].alias, "sort": query["sort"]}
        return Response(TaskTableSerializer(document).data)


class CeleryTaskDetailAnalyticsView(APIView):
    permission_classes = [IsStaff]

    @staff_read_schema(
        "One task name's analytics: stats, series per point, failures by exception type, slowest stored runs",
        TaskDetailSerializer,
        parameters=[TaskDetailQuerySerializer],
        extra={
            404: OpenApiResponse(
                ErrorSerializer, description="No rollups of this task name in the window and no stored results."
            ),
            **DATABASE_DOWN_RESPONSE,
        },
    )
    def get(self, request: Request) -> Response:
        query = _query(TaskDetailQuerySerializer, request)
        try:
            detail = analytics.task_detail(query["backend"].alias, query["task_name"], query["window"])
        except LookupError as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_404_NOT_FOUND)
        hidden = not may_see_task_data(request.user)
        detail = replace(detail, failures=_visible(detail.failures, hidden))
        document = {**_shallow(detail), "backend": query["backend"].alias, "task_data_hidden": hidden}
        return Response(TaskDetailSerializer(document).data)


class CeleryFailureGroupsView(APIView):
    permission_classes = [IsStaff]

    @staff_read_schema(
        "Failures grouped by task name and exception type over a window, most first, with the latest failure",
        FailuresSerializer,
        parameters=[FailuresQuerySerializer],
        extra=DATABASE_DOWN_RESPONSE,
    )
    def get(self, request: Request) -> Response:
        query = _query(FailuresQuerySerializer, request)
        task_name = query.get("task_name") or None
        groups = analytics.failure_groups(query["backend"].alias, query["window"], task_name)
        hidden = not may_see_task_data(request.user)
        document = {
            "backend": query["backend"].alias,
            "window": query["window"],
            "task_name": task_name or "",
            "limit": analytics.FAILURE_GROUPS_LIMIT,
            "groups": _visible(groups, hidden),
            "task_data_hidden": hidden,
        }
        return Response(FailuresSerializer(document).data)


class CeleryThroughputView(APIView):
    permission_classes = [IsStaff]

    @staff_read_schema(
        "Tasks succeeded and failed per minute (from the minute rollups)",
        ThroughputSerializer,
        parameters=[ThroughputQuerySerializer],
        extra=DATABASE_DOWN_RESPONSE,
    )
    def get(self, request: Request) -> Response:
        query = _query(ThroughputQuerySerializer, request)
        points = analytics.throughput(query["backend"].alias, query["minutes"])
        document = {"backend": query["backend"].alias, "minutes": query["minutes"], "points": points}
        return Response(ThroughputSerializer(document).data)
