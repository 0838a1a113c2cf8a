"""The dashboard's concurrency limits (staff, read only). Thin: dojo.ops.limits.semaphores does the work."""

from django.utils import timezone
from drf_spectacular.utils import OpenApiResponse
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from dojo.api_v2.backends import requested_backend
from dojo.api_v2.schema import staff_read_schema
from dojo.api_v2.serializers import ErrorSerializer
from dojo.ops.brokers.connection import BrokerUnavailable
from dojo.ops.limits.semaphores import list_semaphores
from dojo.permissions import IsStaff


class SemaphoreSerializer(serializers.Serializer):
    key = serializers.CharField(help_text="The concurrency key runs count against (formatted from their arguments).")
    limit = serializers.IntegerField(help_text="Runs with this key allowed at once across the fleet.")
    available_slots = serializers.IntegerField(help_text="limit minus the slots held and not expired.")
    blocked_waiters = serializers.IntegerField(help_text="Runs that found no free slot and will retry.")
    expires_at = serializers.DateTimeField(
        allow_null=True,
        help_text="When the last held slot's lease ends: a live run renews it (DD_CELERY_SLOT_LEASE_SECONDS), "
        "so this moves on while it runs and frees a dead run's slot; null when no slot is held.",
    )


class SemaphoreListSerializer(serializers.Serializer):
    backend = serializers.CharField()
    store = serializers.ChoiceField(
        ["redis", "database"],
        help_text="Where the slots live: the broker's Redis or "
        "this project's database (brokers without a server-side store).",
    )
    read_at = serializers.DateTimeField()
    semaphores = SemaphoreSerializer(many=True, help_text="Every key used within the last hour, by key.")


class CelerySemaphoresView(APIView):
    permission_classes = [IsStaff]

    @staff_read_schema(
        "Concurrency limits: each key's limit, available slots, blocked waiters and expiry",
        SemaphoreListSerializer,
        extra={503: OpenApiResponse(ErrorSerializer, description="The broker's Redis (the slots) is unreachable.")},
    )
    def get(self, request: Request) -> Response:
        backend = requested_backend(request)
        try:
            states = list_semaphores(backend)
        except BrokerUnavailable as exc:
            return Response({"detail": f"Celery broker unreachable: {exc}"}, status=status.HTTP_503_SERVICE_UNAVAILABLE)
        document = {
            "backend": backend.alias,
            "store": backend.transport.slot_store,
            "read_at": timezone.now(),
            "semaphores": states,
        }
        return Response(SemaphoreListSerializer(document).data)
