"""Health probes: unauthenticated, cheap, and without task data.

Readiness is served from the cached status, so probes cost at most one broadcast
per DD_CELERY_STATUS_CACHE_SECONDS however often they come.
"""

from django.conf import settings
from drf_spectacular.utils import extend_schema
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from dojo.api_v2.serializers import LivenessSerializer, ReadinessSerializer
from dojo.celery_ops import get_status


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
        responses={200: ReadinessSerializer, 503: ReadinessSerializer},
    )
    def get(self, request: Request) -> Response:
        min_workers = settings.CELERY_MIN_WORKERS
        if not settings.CELERY_ENABLED:
            body = {
                "ready": False,
                "reasons": ["Celery is not enabled"],
                "workers": 0,
                "min_workers": min_workers,
                "broker_status": False,
            }
            return Response(body, status=503)
        status = get_status()
        reasons = []
        if not status.broker_status:
            reasons.append("broker unreachable")
        elif status.workers < min_workers:
            reasons.append(f"{status.workers} worker(s) alive, {min_workers} required")
        body = {
            "ready": not reasons,
            "reasons": reasons,
            "workers": status.workers,
            "min_workers": min_workers,
            "broker_status": status.broker_status,
        }
        return Response(body, status=503 if reasons else 200)
