"""The optional `backend` parameter every Celery endpoint takes: the alias of a configured backend."""

from drf_spectacular.utils import OpenApiParameter
from rest_framework import serializers
from rest_framework.request import Request

from dojo.ops.brokers.registry import Broker, UnknownBroker, get_broker

BACKEND_HELP = "Alias of a configured Celery backend (DD_CELERY_BACKENDS); the main one (default) when absent."
BACKEND_PARAMETER = OpenApiParameter("backend", str, description=BACKEND_HELP)


class BackendField(serializers.CharField):
    """A backend alias in a request body or query; validates to the Broker (main one if blank)."""

    def __init__(self, **kwargs) -> None:
        super().__init__(required=False, allow_blank=True, help_text=BACKEND_HELP, **kwargs)

    def to_internal_value(self, data: object) -> Broker:
        try:
            return get_broker(super().to_internal_value(data))
        except UnknownBroker as exc:
            raise serializers.ValidationError(str(exc)) from exc

    def run_validation(self, data: object = serializers.empty) -> Broker:
        """A blank alias is the main broker too (DRF returns "" for it without to_internal_value)."""
        value = super().run_validation(data)
        return value or get_broker()


def requested_backend(request: Request) -> Broker:
    """The backend named by the `backend` query parameter; a 400 naming the field if it is unknown."""
    try:
        return get_broker(request.query_params.get("backend"))
    except UnknownBroker as exc:
        raise serializers.ValidationError({"backend": [str(exc)]}) from exc
