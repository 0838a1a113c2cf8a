"""The dashboard's queues table and a queue's break down (staff, read only). Thin: the service
(dojo.ops.read_models.queue_table, .breakdown) does the work; these views map its errors to HTTP."""

from dataclasses import replace

from drf_spectacular.utils import OpenApiResponse
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from dojo.api_v2.backends import BackendField, query_of
from dojo.api_v2.fields import TextField
from dojo.api_v2.schema import BROKER_DOWN, staff_read_schema
from dojo.api_v2.serializers import ErrorSerializer
from dojo.api_v2.throttling import ScopedRateThrottle
from dojo.ops.brokers.connection import BrokerUnavailable
from dojo.ops.brokers.registry import get_broker
from dojo.ops.brokers.transport import PeekUnsupported
from dojo.ops.read_models.breakdown import FIRST_DEFAULT, QueueNotFound, breakdown
from dojo.ops.read_models.budget import broker_budget
from dojo.ops.read_models.queue_table import queue_table, with_latency
from dojo.permissions import IsStaff, may_see_task_data

FIRST_MAX = 1000
LIMIT_MAX = 500  # rows of one page: their latency is read with them


class QueueRowSerializer(serializers.Serializer):
    name = serializers.CharField()
    ready_count = serializers.IntegerField(allow_null=True, help_text="Ready in the broker; null if unreadable.")
    claimed_count = serializers.IntegerField(
        allow_null=True, help_text="Reserved (prefetched) plus active on live workers; null when one did not say."
    )
    scheduled_count = serializers.IntegerField(
        allow_null=True, help_text="ETA/countdown tasks held by live workers; null when one did not say in time."
    )
    blocked_count = serializers.IntegerField(help_text="Tasks waiting for a concurrency (semaphore) slot.")
    failed_count = serializers.IntegerField(help_text="FAILURE results stored in the last 24 h.")
    finished_count = serializers.IntegerField(help_text="SUCCESS results stored in the last 24 h.")
    paused = serializers.BooleanField()
    latency_seconds = serializers.FloatField(
        allow_null=True,
        help_text="Age of the oldest ready message (the next to be consumed), from its publish stamp; "
        "null when the broker cannot show it (RabbitMQ), it has no stamp, or the queue is empty, and when it "
        "was not read: a table of more than 500 queues asked for whole (no `limit`) is read with its counts "
        "only; ask it a page at a time with `limit` and `offset` for the latency of each row.",
    )
    live_worker_count = serializers.IntegerField(
        allow_null=True, help_text="Answering workers consuming the queue now; null when one did not say in time."
    )
    oldest_scheduled_at = serializers.DateTimeField(allow_null=True)
    oldest_blocked_at = serializers.DateTimeField(allow_null=True)
    sources = serializers.ListField(
        child=serializers.ChoiceField(["configuration", "worker", "pause", "periodic"]),
        help_text="Where the queue is known from.",
    )


class QueueTableQuerySerializer(serializers.Serializer):
    limit = serializers.IntegerField(
        required=False,
        min_value=1,
        max_value=LIMIT_MAX,
        help_text="Rows to return, from `offset`, in the table's order (configured queues first, the default "
        "queue first, then the others by name), with their latency read. Without it every row is returned, "
        "as fast (one broker round trip), but a table of more than 500 queues then has no latency.",
    )
    offset = serializers.IntegerField(
        required=False, default=0, min_value=0, max_value=10_000_000, help_text="Rows skipped before the first one."
    )
    backend = BackendField()


class QueueTableSerializer(serializers.Serializer):
    backend = serializers.CharField()
    total = serializers.IntegerField(help_text="Rows of the whole table (`rows` is a slice of them with `limit`).")
    rows = QueueRowSerializer(many=True)
    shared_rows = QueueRowSerializer(many=True, help_text="Queues known only from a pause or a periodic entry.")
    broker_error = serializers.CharField(allow_null=True, help_text="Why the broker columns are empty, if they are.")
    results_error = serializers.CharField(allow_null=True, help_text="Why failed/finished read 0, if uncounted.")
    read_at = serializers.DateTimeField()


class BreakdownQuerySerializer(serializers.Serializer):
    queue = TextField(max_length=255, help_text="The queue to look into.")
    first = serializers.IntegerField(
        required=False, default=FIRST_DEFAULT, min_value=0, max_value=FIRST_MAX, help_text="Messages to list."
    )
    backend = BackendField()


class MessageSummarySerializer(serializers.Serializer):
    id = serializers.CharField(allow_null=True)
    task = serializers.CharField(allow_null=True)
    priority = serializers.IntegerField(allow_null=True)
    eta = serializers.CharField(allow_null=True)
    age_seconds = serializers.FloatField(allow_null=True, help_text="Since publish; null without a publish stamp.")
    args_preview = serializers.CharField(help_text="Arguments, truncated, secret values masked.")


class QueueBreakdownSerializer(serializers.Serializer):
    backend = serializers.CharField()
    queue = serializers.CharField()
    total = serializers.IntegerField(help_text="Ready messages scanned.")
    by_task = serializers.DictField(child=serializers.IntegerField(), help_text="Message count by task name.")
    messages = MessageSummarySerializer(many=True, help_text="The first messages, in the order workers take them.")
    complete = serializers.BooleanField(
        help_text="False when the scan stopped at DD_CELERY_BREAKDOWN_SECONDS: the counts cover the messages scanned."
    )
    arguments_hidden = serializers.BooleanField(
        help_text="True when the caller may not see task arguments (superusers and holders of "
        "django_celery_results.view_taskresult may): every args_preview is then empty."
    )


class CeleryQueuesView(APIView):
    permission_classes = [IsStaff]

    @staff_read_schema(
        "The queues table: ready, claimed, scheduled, blocked, failed, finished, paused, latency per queue",
        QueueTableSerializer,
        parameters=[QueueTableQuerySerializer],
    )
    def get(self, request: Request) -> Response:
        params = QueueTableQuerySerializer(data=query_of(request))
        params.is_valid(raise_exception=True)
        query = params.validated_data
        broker = query.get("backend") or get_broker()
        # An unreachable broker is not an error here: the table says so in broker_error.
        budget = broker_budget()
        table = queue_table(broker, budget=budget)
        total = len(table.rows)
        if "limit" in query:
            shown = table.rows[query["offset"] : query["offset"] + query["limit"]]
            if len(shown) < total:  # a slice of the table: only its rows' latency is read
                table = with_latency(broker, replace(table, rows=shown), [row.name for row in shown], budget)
            else:
                table = replace(table, rows=shown)
        elif query["offset"]:
            table = replace(table, rows=table.rows[query["offset"] :])
        return Response(QueueTableSerializer({**vars(table), "total": total}).data)


class CeleryQueueBreakdownView(APIView):
    permission_classes = [IsStaff]
    throttle_classes = [ScopedRateThrottle]  # a scan of the whole queue
    throttle_scope = "celery"

    @staff_read_schema(
        "Break a queue down: counts by task name and the first messages, without consuming them",
        QueueBreakdownSerializer,
        parameters=[BreakdownQuerySerializer],
        extra={
            400: OpenApiResponse(
                ErrorSerializer, description="A missing or bad parameter, or a broker (RabbitMQ) that cannot do it."
            ),
            404: OpenApiResponse(ErrorSerializer, description="An empty queue that nothing names (a mistyped name?)."),
            503: BROKER_DOWN,
        },
    )
    def get(self, request: Request) -> Response:
        params = BreakdownQuerySerializer(data=query_of(request))
        params.is_valid(raise_exception=True)
        query = params.validated_data
        try:
            found = breakdown(query["queue"], query.get("backend"), query["first"])
        except PeekUnsupported as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_400_BAD_REQUEST)
        except QueueNotFound as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_404_NOT_FOUND)
        except BrokerUnavailable as exc:
            return Response({"detail": f"Celery broker unreachable: {exc}"}, status=status.HTTP_503_SERVICE_UNAVAILABLE)
        hidden = not may_see_task_data(request.user)
        if hidden:
            found = replace(found, messages=[replace(message, args_preview="") for message in found.messages])
        return Response(QueueBreakdownSerializer({**vars(found), "arguments_hidden": hidden}).data)
