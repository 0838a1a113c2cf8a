"""Celery status and queue purge. Thin: the service does the work, views map its errors to HTTP."""

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from dojo.api_v2.serializers import (
    CeleryQueuePurgeRequestSerializer,
    CeleryQueuePurgeSerializer,
    CeleryStatusSerializer,
    ErrorSerializer,
)
from dojo.celery_ops import BrokerUnavailable, get_status, purge_queue
from dojo.models import SystemSettings

DENIED = OpenApiResponse(ErrorSerializer, description="Not authenticated, or not a superuser.")


class CeleryStatusView(APIView):
    @extend_schema(
        tags=["celery"],
        summary="Celery workers, broker and default queue status",
        responses={200: CeleryStatusSerializer, 401: DENIED, 403: DENIED},
    )
    def get(self, request: Request) -> Response:
        return Response(CeleryStatusSerializer(get_status()).data)


class CeleryQueuePurgeView(APIView):
    @extend_schema(
        tags=["celery"],
        summary="Remove every ready message from a configured queue",
        request=CeleryQueuePurgeRequestSerializer,
        responses={
            200: CeleryQueuePurgeSerializer,
            400: OpenApiResponse(description="The queue is not one of the configured queues; nothing was purged."),
            401: DENIED,
            403: OpenApiResponse(ErrorSerializer, description="Not a superuser, or purge is disabled."),
            503: OpenApiResponse(ErrorSerializer, description="The broker is unreachable; nothing was purged."),
        },
    )
    def post(self, request: Request) -> Response:
        body = CeleryQueuePurgeRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        if not SystemSettings.load().allow_queue_purge:
            return Response({"detail": "Queue purge is disabled in System Settings."}, status=status.HTTP_403_FORBIDDEN)
        try:
            result = purge_queue(body.validated_data.get("queue"))
        except BrokerUnavailable as exc:
            return Response(
                {"detail": f"Celery broker unreachable, nothing was purged: {exc}"},
                status=status.HTTP_503_SERVICE_UNAVAILABLE,
            )
        return Response(CeleryQueuePurgeSerializer(result).data)
