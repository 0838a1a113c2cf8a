"""The API's exception handler (REST_FRAMEWORK["EXCEPTION_HANDLER"]): one error body for every refusal.

Every non-2xx answer of the API is ``{"detail": "<message>"}``; a validation error also names each
bad field with its messages: ``{"detail": "Invalid input: queue.", "queue": ["..."]}`` (the
`Error` component of the schema). A database that does not answer is a 503 with a reason, and
anything unexpected is a JSON 500 (logged with its traceback), never Django's HTML page.
"""

import logging
from typing import Any

from django.db import DatabaseError
from rest_framework import status
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response
from rest_framework.views import exception_handler, set_rollback

from dojo.ops.redaction import redact

logger = logging.getLogger(__name__)

DATABASE_DOWN = "The database did not answer; nothing was done. Try again later."
UNEXPECTED = "Internal error: the request failed unexpectedly (it was logged)."


def error_body(data: Any) -> dict[str, Any]:
    """DRF's error data in the API's one shape: `detail` always, field errors beside it."""
    if isinstance(data, dict) and isinstance(data.get("detail"), str):
        return data
    if isinstance(data, list):
        data = {"non_field_errors": data}
    fields = ", ".join(str(name) for name in data)
    return {"detail": f"Invalid input: {fields}.", **data}


def api_exception_handler(exc: Exception, context: dict) -> Response:
    response = exception_handler(exc, context)
    if response is not None:
        if isinstance(exc, ValidationError) or isinstance(response.data, (dict, list)):
            response.data = error_body(response.data)
        return response
    if isinstance(exc, DatabaseError):
        # Once, without the traceback: the database being down is an operating fact, not a bug.
        set_rollback()
        logger.error(
            "API request answered 503, the database did not answer: %s", redact(f"{type(exc).__name__}: {exc}")
        )
        return _logged(Response({"detail": DATABASE_DOWN}, status=status.HTTP_503_SERVICE_UNAVAILABLE))
    set_rollback()
    logger.exception("API request failed unexpectedly")
    return _logged(Response({"detail": UNEXPECTED}, status=status.HTTP_500_INTERNAL_SERVER_ERROR))


def _logged(response: Response) -> Response:
    """Logged here already: Django's request logger skips it (one line per failure)."""
    response._has_been_logged = True
    return response
