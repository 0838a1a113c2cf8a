"""Health probes: unauthenticated, cheap, and without task data.

Readiness is served from the cached status, so probes cost at most one broadcast
per DD_CELERY_STATUS_CACHE_SECONDS however often they come.
"""

import dataclasses

from django.conf import settings
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from dojo.api_v2.backends import BACKEND_PARAMETER, requested_backend
from dojo.api_v2.serializers import LivenessSerializer, ReadinessSerializer
from dojo.ops.fleet.status_cache import get_summary
from dojo.ops.observe.readiness import readiness


class HealthLiveView(APIView):
    authentication_classes: list = []
    permission_classes = [AllowAny]

    @extend_schema(tags=["health"], summary="200 while the web process works", responses={200: LivenessSerializer})
    def get(self, request: Request) -> Response:
        return Response({"status": "ok"})


class HealthReadyView(APIView):
    authentication_classes: list = []
    permission_classes = [AllowAny]

    @extend_schema(
        tags=["health"],
        summary="200 when the broker answers and at least DD_CELERY_MIN_WORKERS workers are alive, else 503",
        parameters=[BACKEND_PARAMETER],
        responses={
            200: OpenApiResponse(ReadinessSerializer, description="Ready."),
            503: OpenApiResponse(ReadinessSerializer, description="Not ready: `reasons` says why (not an Error body)."),
        },
    )
    def get(self, request: Request) -> Response:
        backend = requested_backend(request)
        result = readiness(get_summary(broker=backend) if settings.CELERY_ENABLED else None)
        return Response(dataclasses.asdict(result), status=200 if result.ready else 503)
