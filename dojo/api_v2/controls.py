"""The Celery controls: pause/resume a queue, purge it whole or by task name, retry, revoke and
terminate a task. Each is a POST (CSRF-checked on session auth) needing its own permission
(CanControlCelery), and leaves one audit row per request: ok, refused (bad input, no permission,
nothing to act on) or failed (the broker did not answer: 503 with the reason).

Anonymous requests are turned away without an audit row, so they cannot fill the log.
"""

import json
from collections.abc import Mapping
from typing import Any

from django.conf import settings
from drf_spectacular.utils import OpenApiResponse, extend_schema_view
from rest_framework import serializers, status
from rest_framework.exceptions import ParseError, UnsupportedMediaType, ValidationError
from rest_framework.parsers import JSONParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from dojo.api_v2.control_serializers import (
    QueuePauseRequestSerializer,
    QueuePauseSerializer,
    TaskApplyRequestSerializer,
    TaskApplySerializer,
    TaskIdRequestSerializer,
    TaskPurgeRequestSerializer,
    TaskPurgeSerializer,
    TaskRetrySerializer,
    TaskRevokeManyRequestSerializer,
    TaskRevokeManySerializer,
    TaskRevokeSerializer,
    TaskTerminateRequestSerializer,
)
from dojo.api_v2.exceptions import error_body
from dojo.api_v2.schema import control_schema
from dojo.api_v2.serializers import CeleryQueuePurgeRequestSerializer, CeleryQueuePurgeSerializer, ErrorSerializer
from dojo.api_v2.throttling import ScopedRateThrottle
from dojo.models import SystemSettings
from dojo.ops.brokers.connection import BrokerUnavailable
from dojo.ops.brokers.queues import UnknownQueue, default_queue
from dojo.ops.brokers.registry import Broker, get_broker
from dojo.ops.brokers.transport import PurgeByNameUnsupported
from dojo.ops.controls.apply import ApplyResult, BadArguments, NotRegistered, apply_task
from dojo.ops.controls.apply import UnknownQueue as ApplyUnknownQueue
from dojo.ops.controls.audit import Result, record_action
from dojo.ops.controls.pauses import InvalidQueueName, PauseResult, pause_queue, resume_queue
from dojo.ops.controls.purge import PurgeInterrupted, PurgeResult, TaskPurgeResult, purge_queue, purge_task_name
from dojo.ops.controls.retry import NotRetryable, RetryResult, UnknownTask, retry_task
from dojo.ops.controls.revocations import (
    RevokeManyResult,
    RevokeResult,
    TaskNotRunning,
    revoke_task,
    revoke_tasks,
    terminate_task,
)
from dojo.permissions import CanControlCelery

CELERY_OFF = "Celery is not enabled (DD_CELERY_ENABLED=false)."


class PurgeDisabled(PermissionError):
    """System Settings turn queue purge off."""


class CeleryControlView(APIView):
    """One control: validate, act through the service, map its errors to HTTP, audit."""

    permission_classes = [CanControlCelery]
    # JSON only: a form's absent boolean reads as false, its blank field as absent (DRF's HTML rules),
    # so a form body could mean what the schema does not say.
    parser_classes = [JSONParser]
    # DD_CELERY_CONTROL_THROTTLE_RATE per user; refusals count too (permission_denied), so nobody
    # floods the audit log.
    throttle_classes = [ScopedRateThrottle]
    throttle_scope = "celery_controls"
    celery_permission: str  # a codename of dojo.CeleryAuditLog's Meta permissions
    audit_action: str
    request_serializer: type[serializers.Serializer]
    response_serializer: type[serializers.Serializer]
    target_fields: tuple[str, ...]
    # Service errors that refuse the request: HTTP status, and the body field named (None: "detail").
    refusals: Mapping[type[Exception], tuple[int, str | None]] = {}
    summary: str  # the schema's summary of the POST
    extra_responses: Mapping[int, OpenApiResponse] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Document each control's POST from its own serializers (drf-spectacular)."""
        super().__init_subclass__(**kwargs)
        schema = control_schema(cls.summary, cls.request_serializer, cls.response_serializer, cls.extra_responses)
        extend_schema_view(post=schema)(cls)

    def post(self, request: Request) -> Response:
        return self.control(request)

    def perform(self, request: Request, data: dict, backend: Broker) -> Any:
        raise NotImplementedError

    def counts(self, result: Any) -> dict[str, int]:
        return {}

    def detail(self, result: Any) -> str:
        return ""

    def failure(self, backend: Broker, exc: BrokerUnavailable) -> tuple[str, dict[str, int]]:
        """The answer and the audit counts when the broker failed."""
        return f"Celery broker of backend {backend.alias} unreachable, nothing was done: {exc}", {}

    def target(self, values: Mapping) -> str:
        return " ".join(str(values[name]) for name in self.target_fields if values.get(name) not in (None, ""))

    def control(self, request: Request) -> Response:
        try:
            sent = request.data
        except (ParseError, UnsupportedMediaType) as exc:
            self._audit(request, {}, Result.REFUSED, detail=str(exc))
            raise
        body = self.request_serializer(data=sent)
        if not body.is_valid():
            self._audit(request, _raw_values(request), Result.REFUSED, detail=json.dumps(body.errors))
            raise ValidationError(body.errors)
        data = body.validated_data
        backend = data.get("backend") or get_broker()
        audited = {**data, "backend": backend.alias}
        if not settings.CELERY_ENABLED:
            self._audit(request, audited, Result.FAILED, detail=CELERY_OFF)
            return Response({"detail": CELERY_OFF}, status=status.HTTP_503_SERVICE_UNAVAILABLE)
        try:
            result = self.perform(request, data, backend)
        except BrokerUnavailable as exc:
            message, counts = self.failure(backend, exc)
            self._audit(request, audited, Result.FAILED, counts=counts, detail=message)
            return Response({"detail": message}, status=status.HTTP_503_SERVICE_UNAVAILABLE)
        except tuple(self.refusals) as exc:
            code, field = next(refusal for kind, refusal in self.refusals.items() if isinstance(exc, kind))
            message = str(exc)
            self._audit(request, audited, Result.REFUSED, detail=message)
            return Response(error_body({field: [message]} if field else {"detail": message}), status=code)
        self._audit(request, audited, Result.OK, counts=self.counts(result), detail=self.detail(result))
        return Response(self.response_serializer(result).data)

    def permission_denied(self, request: Request, message: str | None = None, code: str | None = None) -> None:
        """Refused: audited (for a signed-in user) unless over the rate, which answers 429 instead.
        DRF checks permissions before throttles; a refusal checks the throttle first."""
        self.check_throttles(request)
        if request.user and request.user.is_authenticated:
            self._audit(request, _raw_values(request), Result.REFUSED, detail=message or "permission denied")
        super().permission_denied(request, message=message, code=code)

    def _audit(
        self, request: Request, values: Mapping, result: str, counts: dict | None = None, detail: str = ""
    ) -> None:
        backend = values.get("backend")
        record_action(
            request.user,
            backend=str(backend or "default")[:100],
            action=self.audit_action,
            target=self.target(values),
            result=result,
            counts=counts,
            detail=detail,
        )


def _raw_values(request: Request) -> Mapping:
    """The request body as sent, or {} when it is not a JSON object or form (the serializer says why)."""
    try:
        data = request.data
    except (ParseError, UnsupportedMediaType):
        return {}
    return data if isinstance(data, Mapping) else {}


class CeleryQueuePauseView(CeleryControlView):
    celery_permission = "pause_queue"
    audit_action = "pause_queue"
    request_serializer = QueuePauseRequestSerializer
    response_serializer = QueuePauseSerializer
    target_fields = ("queue",)
    refusals = {InvalidQueueName: (400, "queue")}
    summary = "Pause a queue: the live workers stop consuming it, and workers starting later skip it"

    def perform(self, request: Request, data: dict, backend: Broker) -> PauseResult:
        return pause_queue(data["queue"], backend, request.user)

    def counts(self, result: PauseResult) -> dict[str, int]:
        return {"workers": len(result.workers)}

    def detail(self, result: PauseResult) -> str:
        return ", ".join(result.workers)


class CeleryQueueResumeView(CeleryQueuePauseView):
    audit_action = "resume_queue"
    summary = "Resume a queue: the live workers whose own queue selection includes it consume it again"

    def perform(self, request: Request, data: dict, backend: Broker) -> PauseResult:
        return resume_queue(data["queue"], backend, request.user)


class CeleryQueuePurgeView(CeleryControlView):
    celery_permission = "purge_queue"
    audit_action = "purge_queue"
    request_serializer = CeleryQueuePurgeRequestSerializer
    response_serializer = CeleryQueuePurgeSerializer
    target_fields = ("queue",)
    refusals = {UnknownQueue: (400, "queue"), PurgeDisabled: (403, None)}
    summary = "Remove every ready message from a configured queue"

    def target(self, values: Mapping) -> str:
        return super().target(values) or default_queue()

    def perform(self, request: Request, data: dict, backend: Broker) -> PurgeResult:
        if not SystemSettings.load().allow_queue_purge:
            raise PurgeDisabled("Queue purge is disabled in System Settings.")
        return purge_queue(data.get("queue"), backend)

    def counts(self, result: PurgeResult) -> dict[str, int]:
        return {"purged": result.purged}


class CeleryQueuePurgeTaskView(CeleryControlView):
    celery_permission = "purge_queue"
    audit_action = "purge_task"
    request_serializer = TaskPurgeRequestSerializer
    response_serializer = TaskPurgeSerializer
    target_fields = ("queue", "task_name")
    refusals = {UnknownQueue: (400, "queue"), PurgeByNameUnsupported: (400, "backend"), PurgeDisabled: (403, None)}
    summary = (
        "Remove the ready messages of one task name from a configured queue (Redis only; 400 on other brokers), "
        "for at most DD_CELERY_PURGE_TASK_SECONDS: complete is false when that ran out"
    )

    def perform(self, request: Request, data: dict, backend: Broker) -> TaskPurgeResult:
        if not SystemSettings.load().allow_queue_purge:
            raise PurgeDisabled("Queue purge is disabled in System Settings.")
        return purge_task_name(data["queue"], data["task_name"], backend)

    def counts(self, result: TaskPurgeResult) -> dict[str, int]:
        return {"purged": result.purged}

    def detail(self, result: TaskPurgeResult) -> str:
        if result.complete:
            return ""
        return (
            f"partial: the time budget (DD_CELERY_PURGE_TASK_SECONDS) ran out after {result.purged} removed; "
            "the same request again goes on with the rest"
        )

    def failure(self, backend: Broker, exc: BrokerUnavailable) -> tuple[str, dict[str, int]]:
        if not isinstance(exc, PurgeInterrupted):
            return super().failure(backend, exc)
        message = (
            f"Celery broker of backend {backend.alias} failed after {exc.purged} messages were removed (the "
            f"window in flight may have been removed too, uncounted); the request again goes on: {exc}"
        )
        return message, {"purged": exc.purged}


class CeleryTaskRetryView(CeleryControlView):
    celery_permission = "retry_task"
    audit_action = "retry_task"
    request_serializer = TaskIdRequestSerializer
    response_serializer = TaskRetrySerializer
    target_fields = ("task_id",)
    refusals = {UnknownTask: (404, None), NotRetryable: (400, "task_id")}
    summary = (
        "Publish a failed (or revoked) task again with its stored name, arguments and queue; refused when the "
        "stored arguments are incomplete"
    )
    extra_responses = {404: OpenApiResponse(ErrorSerializer, description="No stored result has this task id.")}

    def perform(self, request: Request, data: dict, backend: Broker) -> RetryResult:
        return retry_task(data["task_id"], backend)

    def detail(self, result: RetryResult) -> str:
        return f"new task {result.task_id} ({result.task_name}) on queue {result.queue}"


class CeleryTaskRevokeView(CeleryControlView):
    celery_permission = "revoke_task"
    audit_action = "revoke_task"
    request_serializer = TaskIdRequestSerializer
    response_serializer = TaskRevokeSerializer
    target_fields = ("task_id",)
    summary = "Revoke a task: workers discard it when it arrives; workers starting later know it too"

    def perform(self, request: Request, data: dict, backend: Broker) -> RevokeResult:
        return revoke_task(data["task_id"], backend)

    def counts(self, result: RevokeResult) -> dict[str, int]:
        return {"workers": len(result.workers)}


class CeleryTaskRevokeManyView(CeleryControlView):
    """Many ids in one request: one status read, one broadcast and one audit row with the count."""

    celery_permission = "revoke_task"
    audit_action = "revoke_tasks"
    request_serializer = TaskRevokeManyRequestSerializer
    response_serializer = TaskRevokeManySerializer
    target_fields = ()
    summary = (
        "Revoke up to 500 tasks in one broadcast: workers discard them when they arrive or fall due; "
        "workers starting later know them too"
    )

    def target(self, values: Mapping) -> str:
        given = values.get("task_ids")
        if not isinstance(given, list):
            return ""
        ids = list(dict.fromkeys(str(task_id) for task_id in given))  # as revoked: each id once
        shown = ", ".join(str(task_id) for task_id in ids[:5])
        return f"{len(ids)} task ids: {shown}{', ...' if len(ids) > 5 else ''}"

    def perform(self, request: Request, data: dict, backend: Broker) -> dict[str, Any]:
        result: RevokeManyResult = revoke_tasks(data["task_ids"], backend)
        return {**result.__dict__, "revoked": len(result.task_ids)}

    def counts(self, result: dict[str, Any]) -> dict[str, int]:
        return {"tasks": result["revoked"], "workers": len(result["workers"])}

    def detail(self, result: dict[str, Any]) -> str:
        return " ".join(result["task_ids"])


class CeleryTaskTerminateView(CeleryControlView):
    celery_permission = "terminate_task"
    audit_action = "terminate_task"
    request_serializer = TaskTerminateRequestSerializer
    response_serializer = TaskRevokeSerializer
    target_fields = ("task_id",)
    refusals = {TaskNotRunning: (404, None)}
    summary = "Terminate a running task: revoke it and signal its pool process on the worker running it"
    extra_responses = {404: OpenApiResponse(ErrorSerializer, description="No live worker is running this task.")}

    def perform(self, request: Request, data: dict, backend: Broker) -> RevokeResult:
        return terminate_task(data["task_id"], data["signal"], backend)

    def counts(self, result: RevokeResult) -> dict[str, int]:
        return {"workers": len(result.workers)}

    def detail(self, result: RevokeResult) -> str:
        return f"{result.signal} on {', '.join(result.workers) or 'no worker answered'}"


class CeleryTaskApplyView(CeleryControlView):
    celery_permission = "apply_task"
    audit_action = "apply_task"
    request_serializer = TaskApplyRequestSerializer
    response_serializer = TaskApplySerializer
    target_fields = ("task_name", "queue")  # never the arguments: task data
    # A name no live worker registered, a queue nobody configured or consumes: not found (the body names which).
    refusals = {NotRegistered: (404, "task_name"), ApplyUnknownQueue: (404, "queue"), BadArguments: (400, "args")}
    summary = "Enqueue a registered task: JSON args and kwargs, a queue, a countdown or ETA, a priority"
    extra_responses = {
        404: OpenApiResponse(
            ErrorSerializer, description="No live worker registered the task name, or no such queue (the body says)."
        )
    }

    def perform(self, request: Request, data: dict, backend: Broker) -> ApplyResult:
        return apply_task(
            data["task_name"],
            data["args"],
            data["kwargs"],
            queue=data.get("queue"),
            countdown=data.get("countdown"),
            eta=data.get("eta"),
            priority=data.get("priority"),
            broker=backend,
        )

    def detail(self, result: ApplyResult) -> str:
        return f"new task {result.task_id}"
