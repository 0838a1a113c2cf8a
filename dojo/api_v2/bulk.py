"""Bulk operations over a filter of stored results (dojo.ops.controls.bulk), thin:

- POST /api/v2/celery/bulk/preview/: the filter, the action and `all` -> the exact count, the first
  20 matches and the fingerprint the start needs back;
- POST /api/v2/celery/bulk/: start what a preview showed; 409 with a fresh preview when the set grew
  beyond DD_BULK_GROWTH_PERCENT or the fingerprint is another filter's;
- GET /api/v2/celery/bulk/<id>/: progress (done / total, rate, time left, state, failures);
- POST /api/v2/celery/bulk/<id>/cancel/: stop before the next batch;
- GET /api/v2/celery/bulk/: the operations, newest first (their audit).

Actions on stored results: retry and delete_results; on one configured queue's messages (Redis):
revoke and purge (dojo.ops.controls.bulk_messages), whose filter names the queue and may narrow it
by task name and arguments only. Each action needs its own permission (retry_task,
delete_results, revoke_task, purge_queue; purge also System Settings' queue purge), read-only
mode refuses them all, CSRF is checked with session auth (the controls' CeleryControlView).
`args_contain` filters on task data: it needs the task-data right, and the filter's text and the
failures' reasons are shown only to users who have it.
"""

import json
import re
from collections.abc import Mapping
from typing import Any

from django.conf import settings
from drf_spectacular.extensions import OpenApiSerializerExtension
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import ParseError, UnsupportedMediaType, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from dojo.api_v2.backends import BackendField
from dojo.api_v2.controls import CELERY_OFF, CeleryControlView, _raw_values
from dojo.api_v2.exceptions import error_body
from dojo.api_v2.fields import NameField
from dojo.api_v2.schema import BAD_INPUT
from dojo.api_v2.serializers import ErrorSerializer
from dojo.api_v2.throttling import ScopedRateThrottle
from dojo.api_v2.views import query_of
from dojo.models import BulkOperation
from dojo.ops.brokers.connection import BrokerUnavailable
from dojo.ops.brokers.queues import configured_queues
from dojo.ops.brokers.transport import SelectUnsupported
from dojo.ops.controls import bulk, bulk_messages
from dojo.ops.controls.audit import Result
from dojo.ops.read_models.task_filter import MAX_ARGS_TEXT, MAX_TEXT, STORED_STATES, FilterError, TaskFilter
from dojo.permissions import IsStaff, may_see_task_data

NARROWING = ("task_name", "task_name_prefix", "state", "exception_type", "done_after", "done_before")
NARROWING += ("queue", "worker", "args_contain")
MAX_ID = 2**63 - 1
ID_PATTERN = re.compile(r"[0-9]{1,19}")
FAILURES_SHOWN = 20
HIDDEN = "hidden: needs the task-data permission"
# What a revoke's or purge's preview (or start) may meet on the broker side: HTTP status and field.
MESSAGE_REFUSALS: Mapping[type[Exception], tuple[int, str | None]] = {
    bulk_messages.PurgeDisabled: (403, None),
    SelectUnsupported: (400, "filter.backend"),
    bulk_messages.ScanTooLong: (503, None),
    BrokerUnavailable: (503, None),
}


# --- serializers -----------------------------------------------------------------------------


class BulkFilterSerializer(serializers.Serializer):
    """dojo.ops.read_models.task_filter.TaskFilter as JSON: every field optional, all of them must match."""

    task_name = NameField(max_length=MAX_TEXT, required=False, help_text="Exactly this task name.")
    task_name_prefix = NameField(max_length=MAX_TEXT, required=False, help_text="Task names starting with this.")
    state = serializers.ChoiceField(
        STORED_STATES,
        required=False,
        help_text="A stored state. RECOVERED and CRITICAL cannot be told from a stored result (its retries "
        "are not stored): see the task analytics.",
    )
    exception_type = NameField(
        max_length=MAX_TEXT, required=False, help_text='"ValueError" or qualified: "smtplib.SMTPServerDisconnected".'
    )
    done_after = serializers.DateTimeField(required=False, help_text="Done at or after this time.")
    done_before = serializers.DateTimeField(
        required=False, help_text="Done before this time (a window that ends before it starts matches nothing)."
    )
    queue = NameField(max_length=MAX_TEXT, required=False, help_text="The queue the task came from.")
    worker = NameField(max_length=MAX_TEXT, required=False, help_text="The worker's full name.")
    backend = BackendField()
    args_contain = NameField(
        max_length=MAX_ARGS_TEXT,
        required=False,
        help_text="Text found in the stored args or kwargs (needs the permission to see task data).",
    )

    def validate(self, attrs: dict) -> TaskFilter:
        values = {name: value.isoformat() if hasattr(value, "isoformat") else value for name, value in attrs.items()}
        if "backend" in attrs:
            values["backend"] = attrs["backend"].alias
        try:
            return TaskFilter.from_query(values)
        except FilterError as exc:
            raise serializers.ValidationError({exc.field: [exc.message]}) from exc


class BulkFilterSchema(OpenApiSerializerExtension):
    """The schema says what validation refuses: task_name and task_name_prefix together."""

    target_class = "dojo.api_v2.bulk.BulkFilterSerializer"

    def map_serializer(self, auto_schema: AutoSchema, direction: str) -> dict:
        schema = auto_schema._map_basic_serializer(self.target, direction)
        if direction == "request":
            return {**schema, "not": {"required": ["task_name", "task_name_prefix"]}}
        return schema


class BulkPreviewRequestSerializer(serializers.Serializer):
    action = serializers.ChoiceField(bulk.SUPPORTED_ACTIONS)
    filter = BulkFilterSerializer(required=False)
    all = serializers.BooleanField(
        default=False, help_text="Required (true) when the filter narrows nothing: the action is on every result."
    )
    include_retried = serializers.BooleanField(
        default=False, help_text="retry: also the results an earlier bulk retry already retried."
    )

    def validate(self, attrs: dict) -> dict:
        attrs["filter"] = attrs.get("filter") or TaskFilter()
        if attrs["filter"].is_empty and not attrs["all"]:
            raise serializers.ValidationError({"all": ['The filter narrows nothing: say "all": true to act on all.']})
        if attrs["action"] in bulk.MESSAGE_ACTIONS:
            try:
                bulk_messages.check_filter(attrs["filter"])
            except FilterError as exc:
                raise serializers.ValidationError({"filter": {exc.field: [exc.message]}}) from exc
        return attrs


class BulkStartRequestSerializer(BulkPreviewRequestSerializer):
    confirmed_count = serializers.IntegerField(min_value=0, max_value=MAX_ID, help_text="The preview's count.")
    fingerprint = serializers.RegexField(
        r"^[0-9a-f]{40}\.[0-9]{1,19}\.[0-9]{1,19}$", max_length=100, help_text="The preview's fingerprint."
    )


class BulkRequestSchema(OpenApiSerializerExtension):
    """An empty filter needs "all": true, and a revoke or purge a configured queue and only the
    fields a message has (bulk_messages.MESSAGE_FIELDS), in the schema too."""

    target_class = "dojo.api_v2.bulk.BulkPreviewRequestSerializer"
    match_subclasses = True

    def map_serializer(self, auto_schema: AutoSchema, direction: str) -> dict:
        schema = auto_schema._map_basic_serializer(self.target, direction)
        if direction != "request":
            return schema
        narrowed = {"type": "object", "anyOf": [{"required": [name]} for name in NARROWING]}
        message_filter = {
            "type": "object",
            "required": ["queue"],
            "properties": {"queue": {"enum": configured_queues()}},
            "not": {"anyOf": [{"required": [name]} for name in NARROWING if name not in bulk_messages.MESSAGE_FIELDS]},
        }
        return {
            **schema,
            "allOf": [
                {
                    "anyOf": [
                        {"required": ["all"], "properties": {"all": {"enum": [True]}}},
                        {"required": ["filter"], "properties": {"filter": narrowed}},
                    ]
                },
                {
                    "anyOf": [
                        # "not enum", so the schema's enum components hold only the action field's own choices
                        {"properties": {"action": {"not": {"enum": list(bulk.MESSAGE_ACTIONS)}}}},
                        {"required": ["filter"], "properties": {"filter": message_filter}},
                    ]
                },
            ],
        }


class SampleSerializer(serializers.Serializer):
    task_id = serializers.CharField()
    task_name = serializers.CharField(allow_null=True)
    state = serializers.CharField()
    date_done = serializers.DateTimeField(allow_null=True)


class BulkPreviewSerializer(serializers.Serializer):
    action = serializers.CharField()
    filter = serializers.DictField(child=serializers.CharField(), help_text="The filter as the server applies it.")
    all = serializers.BooleanField()
    include_retried = serializers.BooleanField()
    count = serializers.IntegerField(
        help_text="Exactly how many stored results (revoke, purge: queued messages) the action would act on."
    )
    max_id = serializers.IntegerField(
        help_text="The largest of their ids: results stored later are left alone (0 for queued messages: the "
        "operation acts on at most `count` of them)."
    )
    sample = SampleSerializer(many=True, help_text="The first 20, in the order the runner takes them.")
    fingerprint = serializers.CharField(help_text="Send it back with confirmed_count to start.")


class BulkConflictSerializer(serializers.Serializer):
    detail = serializers.CharField()
    preview = BulkPreviewSerializer(help_text="The set as it is now: confirm this one.")


class ProgressSerializer(serializers.Serializer):
    processed = serializers.IntegerField(help_text="done + failed")
    total = serializers.IntegerField()
    percent = serializers.FloatField()
    rate_per_second = serializers.FloatField(allow_null=True)
    seconds_left = serializers.FloatField(allow_null=True)


class FailureSerializer(serializers.Serializer):
    task_id = serializers.CharField()
    reason = serializers.CharField()


class BulkOperationSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    created_at = serializers.DateTimeField()
    username = serializers.CharField(allow_blank=True)
    action = serializers.CharField()
    backend = serializers.CharField()
    filter = serializers.DictField(child=serializers.CharField())
    include_retried = serializers.BooleanField()
    confirmed_count = serializers.IntegerField()
    state = serializers.ChoiceField(BulkOperation.State.choices)
    done_count = serializers.IntegerField()
    failed_count = serializers.IntegerField()
    cancel_requested = serializers.BooleanField()
    started_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)
    updated_at = serializers.DateTimeField()
    detail = serializers.CharField(allow_blank=True)
    audit_id = serializers.IntegerField(allow_null=True, help_text="Its row in the controls' audit log.")
    progress = ProgressSerializer()
    failures = FailureSerializer(many=True, help_text="The first 20 kept (of failed_count).")


class BulkListQuerySerializer(serializers.Serializer):
    limit = serializers.IntegerField(min_value=1, max_value=100, default=50)
    before = serializers.IntegerField(
        min_value=1, max_value=MAX_ID, required=False, help_text="Only operations with a smaller id (the next page)."
    )


class BulkListSerializer(serializers.Serializer):
    results = BulkOperationSerializer(many=True)
    next_before = serializers.IntegerField(allow_null=True, help_text="`before` for the next page; null: none left.")


def operation_document(operation: BulkOperation, user: Any, with_failures: bool = True) -> dict[str, Any]:
    """The operation as the API shows it; task data (args_contain, reasons) only for users who may see it."""
    task_data = may_see_task_data(user)
    shown_filter = dict(operation.filter)
    if "args_contain" in shown_filter and not task_data:
        shown_filter["args_contain"] = HIDDEN
    failures = []
    if with_failures:
        rows = operation.failures.order_by("id").values_list("task_id", "reason")[:FAILURES_SHOWN]
        failures = [{"task_id": task_id, "reason": reason if task_data else HIDDEN} for task_id, reason in rows]
    return {
        **{name: getattr(operation, name) for name in BulkOperationSerializer().fields if hasattr(operation, name)},
        "filter": shown_filter,
        "progress": bulk.progress(operation),
        "failures": failures,
    }


# --- views -----------------------------------------------------------------------------------

OPERATION_ID = OpenApiParameter(
    "operation_id",
    {"type": "integer", "minimum": 1, "maximum": MAX_ID},
    OpenApiParameter.PATH,
    description="The operation's id.",
)
NOT_FOUND = OpenApiResponse(ErrorSerializer, description="No bulk operation has this id.")
CONFLICT = OpenApiResponse(BulkConflictSerializer, description="The set changed since the preview: a fresh one.")
ERRORS = {
    400: OpenApiResponse(ErrorSerializer, description=BAD_INPUT),
    403: OpenApiResponse(
        ErrorSerializer,
        description="Missing the action's permission (or the task-data right for args_contain), read-only mode "
        "(DD_CELERY_READ_ONLY), or no CSRF token with session authentication.",
    ),
    503: OpenApiResponse(
        ErrorSerializer,
        description="The broker (or the database) did not answer, Celery is off, or (revoke, purge) the queue could "
        "not be read to its end within DD_BULK_SCAN_SECONDS.",
    ),
}


def flat_errors(errors: Mapping) -> dict[str, list[str]]:
    """The filter's field errors as `filter.<field>`: the API's error body has one list of
    messages per field, never a nested object."""
    flat: dict[str, list[str]] = {}
    for name, messages in errors.items():
        if isinstance(messages, Mapping):
            for inner, inner_messages in flat_errors(messages).items():
                flat[f"{name}.{inner}" if inner != "non_field_errors" else name] = inner_messages
        else:
            flat[name] = [str(message) for message in messages]
    return flat


def operation_of(operation_id: str) -> BulkOperation | None:
    """The operation of a path's id (any text: a JSON 404 rather than Django's HTML one), or None."""
    if not ID_PATTERN.fullmatch(operation_id) or not 0 < int(operation_id) <= MAX_ID:
        return None
    return BulkOperation.objects.filter(pk=int(operation_id)).first()


class TaskDataRequired(PermissionError):
    """args_contain without the right to see task data."""


class BulkControlView(CeleryControlView):
    """A bulk POST: the permission is the action's (from the body, or the operation's)."""

    summary = ""
    request_serializer = BulkPreviewRequestSerializer
    response_serializer = BulkPreviewSerializer
    target_fields = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Not CeleryControlView's schema: each view below documents its own methods."""
        super(CeleryControlView, cls).__init_subclass__(**kwargs)

    def action_asked(self) -> str:
        try:
            data = self.request.data
        except (ParseError, UnsupportedMediaType):
            return ""
        action = data.get("action") if isinstance(data, Mapping) else None
        return action if isinstance(action, str) else ""

    @property
    def celery_permission(self) -> str:  # type: ignore[override]
        return bulk.ACTION_PERMISSIONS.get(self.action_asked(), "retry_task")

    @property
    def audit_action(self) -> str:  # type: ignore[override]
        action = self.action_asked()
        return f"bulk_{action}" if action in bulk.ACTION_PERMISSIONS else "bulk"

    def target(self, values: Mapping) -> str:
        shown = values.get("filter")
        if isinstance(shown, TaskFilter):
            return shown.to_query() or "all"
        return json.dumps(shown, default=str)[:255] if shown else "all"

    def validated(self, request: Request) -> dict:
        """The body, validated; a refusal is audited and raised."""
        body = self.request_serializer(data=request.data)
        if not body.is_valid():
            errors = flat_errors(body.errors)
            self._audit(request, _raw_values(request), Result.REFUSED, detail=json.dumps(errors))
            raise ValidationError(errors)
        data = body.validated_data
        if data["filter"].args_contain and not may_see_task_data(request.user):
            raise TaskDataRequired("args_contain filters on task data: it needs the permission to see task data.")
        return data

    def refuse(self, request: Request, values: Mapping, code: int, body: dict, message: str) -> Response:
        self._audit(request, values, Result.REFUSED, detail=message)
        return Response(body, status=code)

    def message_refusal(self, request: Request, values: Mapping, exc: Exception) -> Response:
        """A revoke's or purge's refusal by the broker side (see MESSAGE_REFUSALS)."""
        code, field = next(refusal for kind, refusal in MESSAGE_REFUSALS.items() if isinstance(exc, kind))
        message = str(exc)
        if isinstance(exc, BrokerUnavailable):
            message = f"The Celery broker did not answer, nothing was done: {exc}"
        body = error_body({field: [message]}) if field else {"detail": message}
        return self.refuse(request, values, code, body, message)


class CeleryBulkPreviewView(BulkControlView):
    @extend_schema(
        tags=["celery"],
        summary="Preview a bulk action: the exact count and the first 20 stored results it would act on, and the "
        "fingerprint to start it with",
        request=BulkPreviewRequestSerializer,
        responses={200: BulkPreviewSerializer, **ERRORS},
    )
    def post(self, request: Request) -> Response:
        try:
            data = self.validated(request)
        except TaskDataRequired as exc:
            return self.refuse(request, {}, 403, {"detail": str(exc)}, str(exc))
        try:
            shown = bulk.preview(data["filter"], data["action"], data["all"], data["include_retried"])
        except tuple(MESSAGE_REFUSALS) as exc:
            return self.message_refusal(request, {"backend": data["filter"].backend_alias, **data}, exc)
        return Response(BulkPreviewSerializer(shown).data)


class CeleryBulkCancelView(BulkControlView):
    request_serializer = serializers.Serializer

    def operation(self) -> BulkOperation | None:
        return operation_of(self.kwargs.get("operation_id", ""))

    def action_asked(self) -> str:
        operation = self.operation()
        return operation.action if operation else ""

    @property
    def audit_action(self) -> str:  # type: ignore[override]
        return "bulk_cancel"  # the operation's own row (bulk_<action>) says it ended cancelled

    def target(self, values: Mapping) -> str:
        return f"operation {self.kwargs.get('operation_id')}"

    @extend_schema(
        tags=["celery"],
        summary="Cancel a bulk operation: its runner stops before the next batch",
        request=None,
        parameters=[OPERATION_ID],
        responses={
            200: BulkOperationSerializer,
            404: NOT_FOUND,
            409: OpenApiResponse(ErrorSerializer, description="The operation has already ended."),
            **ERRORS,
        },
    )
    def post(self, request: Request, operation_id: str) -> Response:
        operation = self.operation()
        if operation is None:
            return Response({"detail": f"No bulk operation has the id {operation_id[:30]!r}."}, status=404)
        try:
            operation = bulk.cancel(operation.pk)
        except bulk.NotCancellable as exc:
            return self.refuse(request, {"backend": operation.backend}, 409, {"detail": str(exc)}, str(exc))
        self._audit(request, {"backend": operation.backend}, Result.OK, detail="cancel asked")
        return Response(BulkOperationSerializer(operation_document(operation, request.user)).data)


class CeleryBulkOperationView(APIView):
    permission_classes = [IsStaff]
    throttle_classes = [ScopedRateThrottle]
    throttle_scope = "celery"

    @extend_schema(
        tags=["celery"],
        operation_id="celery_bulk_operation",
        summary="A bulk operation's progress: done / total, rate, time left, state and the first failures",
        parameters=[OPERATION_ID],
        responses={200: BulkOperationSerializer, 404: NOT_FOUND},
    )
    def get(self, request: Request, operation_id: str) -> Response:
        operation = operation_of(operation_id)
        if operation is None:
            return Response({"detail": f"No bulk operation has the id {operation_id[:30]!r}."}, status=404)
        return Response(BulkOperationSerializer(operation_document(operation, request.user)).data)


class CeleryBulkView(BulkControlView):
    """POST: start a previewed operation (its action's permission); GET: the operations, newest
    first (staff, the API's read rate)."""

    request_serializer = BulkStartRequestSerializer

    def get_permissions(self) -> list:
        if self.request is not None and self.request.method == "GET":
            return [IsStaff()]
        return super().get_permissions()

    @property
    def throttle_scope(self) -> str:  # type: ignore[override]
        return "celery" if self.request is not None and self.request.method == "GET" else "celery_controls"

    @extend_schema(
        tags=["celery"],
        summary="Start a previewed bulk action in the background (409 with a fresh preview when the set changed)",
        request=BulkStartRequestSerializer,
        responses={201: BulkOperationSerializer, 409: CONFLICT, **ERRORS},
    )
    def post(self, request: Request) -> Response:
        try:
            data = self.validated(request)
        except TaskDataRequired as exc:
            return self.refuse(request, {}, 403, {"detail": str(exc)}, str(exc))
        values = {**data, "backend": data["filter"].backend_alias}
        if not settings.CELERY_ENABLED:
            self._audit(request, values, Result.FAILED, detail=CELERY_OFF)
            return Response({"detail": CELERY_OFF}, status=status.HTTP_503_SERVICE_UNAVAILABLE)
        try:
            operation = bulk.start(
                data["filter"],
                data["action"],
                data["confirmed_count"],
                data["fingerprint"],
                request.user,
                all_=data["all"],
                include_retried=data["include_retried"],
            )
        except bulk.Conflict as exc:
            body = {"detail": str(exc), "preview": BulkPreviewSerializer(exc.preview).data}
            return self.refuse(request, values, 409, body, str(exc))
        except bulk.BadFingerprint as exc:
            return self.refuse(request, values, 400, error_body({"fingerprint": [str(exc)]}), str(exc))
        except bulk.RunnerUnsent as exc:  # the operation is written as failed; its audit row says why
            message = f"The runner could not be sent, nothing was done: {exc}"
            return Response({"detail": message}, status=status.HTTP_503_SERVICE_UNAVAILABLE)
        except tuple(MESSAGE_REFUSALS) as exc:
            return self.message_refusal(request, values, exc)
        return Response(BulkOperationSerializer(operation_document(operation, request.user)).data, status=201)

    @extend_schema(
        tags=["celery"],
        operation_id="celery_bulk_list",
        summary="The bulk operations, newest first: who, when, filter, confirmed and done counts, state",
        parameters=[BulkListQuerySerializer],
        responses={200: BulkListSerializer},
    )
    def get(self, request: Request) -> Response:
        params = BulkListQuerySerializer(data=query_of(request))
        params.is_valid(raise_exception=True)
        rows = BulkOperation.objects.order_by("-id")
        if params.validated_data.get("before"):
            rows = rows.filter(id__lt=params.validated_data["before"])
        limit = params.validated_data["limit"]
        page = list(rows[: limit + 1])
        results = [operation_document(operation, request.user, with_failures=False) for operation in page[:limit]]
        next_before = page[limit - 1].pk if len(page) > limit else None
        return Response(BulkListSerializer({"results": results, "next_before": next_before}).data)
