"""Recurring (periodic) task controls: run now, enable/disable. Thin: dojo.celery_ops.recurring does
the work and writes the audit rows; these views map its errors to HTTP."""

from django.conf import settings
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from dojo.api_v2.backends import BackendField
from dojo.api_v2.permissions import CanControlCelery
from dojo.api_v2.serializers import ErrorSerializer
from dojo.celery_ops import BrokerUnavailable
from dojo.celery_ops.backends import DEFAULT_ALIAS
from dojo.celery_ops.recurring import RecurringTaskRefused, UnknownRecurringTask, run_now, set_enabled

KEY_HELP = "The recurring task's key: its name in CELERY_BEAT_SCHEDULE or in django-celery-beat."
BAD_KEY = OpenApiResponse(description="Unknown key, or an entry that cannot take this action (the body says why).")
DENIED = OpenApiResponse(
    ErrorSerializer, description="Not authenticated, without this action's permission, or DD_CELERY_READ_ONLY is on."
)


class PeriodicRunRequestSerializer(serializers.Serializer):
    key = serializers.CharField(help_text=KEY_HELP)
    backend = BackendField()


class PeriodicRunSerializer(serializers.Serializer):
    key = serializers.CharField()
    task_id = serializers.CharField(help_text="The id of the task just published.")
    task_name = serializers.CharField()
    queue = serializers.CharField(help_text="The queue it was published to.")
    backend = serializers.CharField(help_text="The backend whose broker it was published to.")


class PeriodicEnabledRequestSerializer(serializers.Serializer):
    key = serializers.CharField(help_text=KEY_HELP + " Database entries only.")
    enabled = serializers.BooleanField()
    backend = BackendField()


class RecurringTaskSerializer(serializers.Serializer):
    key = serializers.CharField()
    task_path = serializers.CharField()
    queue_name = serializers.CharField()
    schedule = serializers.CharField(help_text="In words.")
    static = serializers.BooleanField(help_text="From settings (CELERY_BEAT_SCHEDULE) rather than the database.")
    enabled = serializers.BooleanField()
    last_run_at = serializers.DateTimeField(allow_null=True)
    next_run_at = serializers.DateTimeField(allow_null=True)


def _bad_key(exc: Exception) -> serializers.ValidationError:
    return serializers.ValidationError({"key": [str(exc)]})


class PeriodicTaskRunView(APIView):
    permission_classes = [CanControlCelery]
    celery_permission = "run_periodic_task"

    @extend_schema(
        tags=["celery"],
        summary="Run a recurring task now, with its args, kwargs and queue",
        request=PeriodicRunRequestSerializer,
        responses={
            200: PeriodicRunSerializer,
            400: BAD_KEY,
            401: DENIED,
            403: DENIED,
            503: OpenApiResponse(ErrorSerializer, description="The broker is unreachable, or Celery is off."),
        },
    )
    def post(self, request: Request) -> Response:
        body = PeriodicRunRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        if not settings.CELERY_ENABLED:
            return Response({"detail": "Celery is not enabled."}, status=status.HTTP_503_SERVICE_UNAVAILABLE)
        try:
            result = run_now(body.validated_data["key"], body.validated_data.get("backend"), request.user)
        except (UnknownRecurringTask, RecurringTaskRefused) as exc:
            raise _bad_key(exc) from exc
        except BrokerUnavailable as exc:
            return Response(
                {"detail": f"Celery broker unreachable, nothing was sent: {exc}"},
                status=status.HTTP_503_SERVICE_UNAVAILABLE,
            )
        return Response(PeriodicRunSerializer(result).data)


class PeriodicTaskEnabledView(APIView):
    permission_classes = [CanControlCelery]
    celery_permission = "toggle_periodic_task"

    @extend_schema(
        tags=["celery"],
        summary="Enable or disable a django-celery-beat entry (beat is told to reload)",
        request=PeriodicEnabledRequestSerializer,
        responses={200: RecurringTaskSerializer, 400: BAD_KEY, 401: DENIED, 403: DENIED},
    )
    def post(self, request: Request) -> Response:
        body = PeriodicEnabledRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        backend = body.validated_data.get("backend")
        try:
            entry = set_enabled(
                body.validated_data["key"],
                body.validated_data["enabled"],
                request.user,
                backend.alias if backend else DEFAULT_ALIAS,
            )
        except (UnknownRecurringTask, RecurringTaskRefused) as exc:
            raise _bad_key(exc) from exc
        return Response(RecurringTaskSerializer(entry).data)
