"""The OpenAPI descriptions the Celery endpoints share (drf-spectacular): one place for the answers
every staff read and every control can give."""

from collections.abc import Mapping, Sequence
from typing import Any

from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema

from dojo.api_v2.backends import BACKEND_PARAMETER
from dojo.api_v2.serializers import ErrorSerializer

NOT_STAFF = OpenApiResponse(ErrorSerializer, description="Not authenticated, or not a staff user.")
UNKNOWN_BACKEND = OpenApiResponse(description="Unknown backend (the body names the field).")
BROKER_DOWN = OpenApiResponse(ErrorSerializer, description="The broker is unreachable.")


def staff_read_schema(
    summary: str,
    response: Any,
    parameters: Sequence[OpenApiParameter | type] = (BACKEND_PARAMETER,),
    extra: Mapping[int, OpenApiResponse] | None = None,
) -> Any:
    """A GET for staff users that takes the `backend` parameter."""
    responses = {200: response, 400: UNKNOWN_BACKEND, 401: NOT_STAFF, 403: NOT_STAFF, **(extra or {})}
    return extend_schema(tags=["celery"], summary=summary, parameters=list(parameters), responses=responses)


def control_schema(summary: str, request: type, response: type, extra: Mapping[int, OpenApiResponse]) -> Any:
    """A control's POST (dojo.api_v2.controls.CeleryControlView)."""
    return extend_schema(
        tags=["celery"],
        summary=summary,
        request=request,
        responses={
            200: response,
            400: OpenApiResponse(description="Bad input: the body names the field and why; nothing was done."),
            401: OpenApiResponse(ErrorSerializer, description="Not authenticated."),
            403: OpenApiResponse(
                ErrorSerializer,
                description="Missing the action's permission, read-only mode (DD_CELERY_READ_ONLY), or no CSRF "
                "token with session authentication.",
            ),
            503: OpenApiResponse(ErrorSerializer, description="The broker is unreachable (or Celery is off)."),
            **extra,
        },
    )
