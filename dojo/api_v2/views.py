"""Celery status, task search and history (the controls are in controls.py).

Thin: the service does the work, views map its errors to HTTP.
"""

from datetime import timedelta

from django.conf import settings
from django.utils import timezone
from drf_spectacular.utils import OpenApiResponse, PolymorphicProxySerializer, extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from dojo.api_v2.backends import query_of
from dojo.api_v2.serializers import (
    CeleryDisabledSerializer,
    CeleryStatusSerializer,
    ErrorSerializer,
    HistoryQuerySerializer,
    HistorySerializer,
    StatusQuerySerializer,
    TaskSearchQuerySerializer,
    TaskSearchSerializer,
    status_document,
)
from dojo.api_v2.throttling import ScopedRateThrottle
from dojo.ops.fleet.status_cache import get_status
from dojo.ops.observe.history import snapshots_since
from dojo.ops.read_models.task_search import TaskQuery, find_tasks

DENIED = OpenApiResponse(ErrorSerializer, description="Not authenticated, or not a superuser.")


CELERY_DISABLED = {"enabled": False, "message": "Celery is not enabled (DD_CELERY_ENABLED=false)."}


class CeleryStatusView(APIView):
    throttle_classes = [ScopedRateThrottle]
    throttle_scope = "celery"

    @extend_schema(
        tags=["celery"],
        summary="The Celery cluster status: broker, queues, workers, their tasks and alerts",
        parameters=[StatusQuerySerializer],
        responses={
            200: PolymorphicProxySerializer(
                "CeleryStatusOrDisabled",
                serializers=[CeleryStatusSerializer, CeleryDisabledSerializer],
                resource_type_field_name=None,
            ),
            401: DENIED,
            403: DENIED,
        },
    )
    def get(self, request: Request) -> Response:
        if not settings.CELERY_ENABLED:
            return Response(CELERY_DISABLED)
        params = StatusQuerySerializer(data=query_of(request))
        params.is_valid(raise_exception=True)
        query = params.validated_data
        return Response(status_document(get_status(refresh=query["refresh"], broker=query.get("backend"))))


class CeleryTaskSearchView(APIView):
    throttle_classes = [ScopedRateThrottle]
    throttle_scope = "celery"

    @extend_schema(
        tags=["celery"],
        summary="Find tasks among the live ones (active, reserved, scheduled) and the stored results",
        parameters=[TaskSearchQuerySerializer],
        responses={200: TaskSearchSerializer, 401: DENIED},
    )
    def get(self, request: Request) -> Response:
        if not settings.CELERY_ENABLED:
            return Response({"detail": CELERY_DISABLED["message"]}, status=status.HTTP_503_SERVICE_UNAVAILABLE)
        params = TaskSearchQuerySerializer(data=query_of(request))
        params.is_valid(raise_exception=True)
        query = dict(params.validated_data)
        refresh = query.pop("refresh")
        backend = query.pop("backend", None)
        found = find_tasks(get_status(refresh=refresh, broker=backend), TaskQuery(**query))
        return Response(TaskSearchSerializer({"count": len(found), "results": found}).data)


class CeleryHistoryView(APIView):
    throttle_classes = [ScopedRateThrottle]
    throttle_scope = "celery"

    @extend_schema(
        tags=["celery"],
        summary="Recorded status snapshots (one a minute): workers, queue lengths, tasks",
        parameters=[HistoryQuerySerializer],
        responses={200: HistorySerializer, 401: DENIED},
    )
    def get(self, request: Request) -> Response:
        params = HistoryQuerySerializer(data=query_of(request))
        params.is_valid(raise_exception=True)
        since = params.validated_data.get("since") or timezone.now() - timedelta(hours=1)
        alias = params.validated_data["backend"].alias if "backend" in params.validated_data else "default"
        points = snapshots_since(since, alias)
        return Response(HistorySerializer({"backend": alias, "since": since, "points": points}).data)
