"""The OpenAPI descriptions the Celery endpoints share (drf-spectacular).

`ErrorsAutoSchema` (REST_FRAMEWORK's DEFAULT_SCHEMA_CLASS) adds, in one place, every error answer an
operation can give (bad input, not signed in, refused, throttled, the database down, ...) with the
one error body of the API (the `Error` component, dojo.api_v2.exceptions), so each view documents
only its own answers.
"""

from collections.abc import Mapping, Sequence
from typing import Any

from drf_spectacular.extensions import OpenApiSerializerExtension
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.permissions import AllowAny

from dojo.api_v2.backends import BACKEND_PARAMETER
from dojo.api_v2.serializers import ErrorSerializer

NOT_STAFF = OpenApiResponse(ErrorSerializer, description="Not authenticated, or not a staff user.")
UNKNOWN_BACKEND = OpenApiResponse(ErrorSerializer, description="A bad parameter (the body names the field).")
BROKER_DOWN = OpenApiResponse(ErrorSerializer, description="The broker is unreachable.")

BAD_INPUT = "Bad input: the body names each bad field and why; nothing was done."
NOT_ACCEPTABLE = "The Accept header does not allow application/json."
UNSUPPORTED = "The body is not JSON (nor a form)."
THROTTLED = "Too many requests (DD_CELERY_API_THROTTLE_RATE, DD_CELERY_CONTROL_THROTTLE_RATE); see Retry-After."
DATABASE_DOWN = "The database did not answer (or the broker, where the operation uses it); nothing was done."
UNAUTHENTICATED = "Not authenticated."
DENIED = "Not allowed (the user's permissions, read-only mode, or a missing CSRF token with a session)."


class ErrorSchema(OpenApiSerializerExtension):
    """The error body: `detail` always; after a validation error, each bad field with its messages."""

    target_class = "dojo.api_v2.serializers.ErrorSerializer"

    def get_name(self, auto_schema: AutoSchema, direction: str) -> str:
        return "Error"

    def map_serializer(self, auto_schema: AutoSchema, direction: str) -> dict:
        return {
            "type": "object",
            "description": "Every non-2xx answer. `detail` says what went wrong; a 400 also names each bad field "
            "(non_field_errors: the body as a whole) with its messages.",
            "properties": {"detail": {"type": "string"}},
            "required": ["detail"],
            "additionalProperties": {"type": "array", "items": {"type": "string"}},
        }


class TaskApplyRequestSchema(OpenApiSerializerExtension):
    """The apply body says in the schema what its validation refuses: a countdown and an ETA together."""

    target_class = "dojo.api_v2.control_serializers.TaskApplyRequestSerializer"

    def map_serializer(self, auto_schema: AutoSchema, direction: str) -> dict:
        schema = auto_schema._map_basic_serializer(self.target, direction)
        return {**schema, "not": {"required": ["countdown", "eta"]}}


class ErrorsAutoSchema(AutoSchema):
    """Documents the error answers DRF and dojo.api_v2.exceptions give for every operation."""

    def _get_response_bodies(self, direction: str = "response") -> dict[str, Any]:
        # Not get_response_serializers: extend_schema overrides that one in a subclass of this class.
        bodies = super()._get_response_bodies(direction)
        for code, description in self._error_answers().items():
            bodies.setdefault(str(code), self._error_body(code, description, direction))
        for code, body in bodies.items():
            if int(code) >= 400 and not body.get("content"):  # documented without a body: it is an Error
                bodies[code] = self._error_body(code, body["description"], direction)
        return bodies

    def _error_body(self, code: int | str, description: str, direction: str) -> dict[str, Any]:
        return self._get_response_for_code(
            OpenApiResponse(ErrorSerializer, description=description), str(code), direction=direction
        )

    def _error_answers(self) -> dict[int, str]:
        takes_input = bool(self.get_override_parameters()) or self.method == "POST"
        signed_in = not all(isinstance(permission, AllowAny) for permission in self.view.get_permissions())
        answers = {406: NOT_ACCEPTABLE}
        if takes_input:
            answers[400] = BAD_INPUT
        if self.method == "POST":
            answers[415] = UNSUPPORTED
        if signed_in:
            answers |= {401: UNAUTHENTICATED, 403: DENIED, 503: DATABASE_DOWN}
        if self.view.get_throttles():
            answers[429] = THROTTLED
        return answers


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
            400: OpenApiResponse(ErrorSerializer, description=BAD_INPUT),
            401: OpenApiResponse(ErrorSerializer, description=UNAUTHENTICATED),
            403: OpenApiResponse(
                ErrorSerializer,
                description="Missing the action's permission, read-only mode (DD_CELERY_READ_ONLY), or no CSRF "
                "token with session authentication.",
            ),
            503: OpenApiResponse(
                ErrorSerializer, description="The broker (or the database) did not answer, or Celery is off."
            ),
            **extra,
        },
    )
