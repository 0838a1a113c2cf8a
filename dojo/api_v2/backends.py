"""The optional `backend` parameter every Celery endpoint takes: the alias of a configured backend.

The schema lists the configured aliases (read when the schema is generated, like the queues), so
a generated client knows every value the API accepts; blank means the main backend.
"""

from rest_framework import serializers
from rest_framework.request import Request

from dojo.ops.brokers.registry import Broker, UnknownBroker, configured_brokers, get_broker

BACKEND_HELP = "Alias of a configured Celery backend (DD_CELERY_BACKENDS); the main one (default) when blank or absent."


class BackendField(serializers.ChoiceField):
    """A backend alias in a request body or query; validates to the Broker (main one if blank)."""

    def __init__(self, **kwargs) -> None:
        super().__init__(choices=[], required=False, allow_blank=True, help_text=BACKEND_HELP, **kwargs)

    def bind(self, field_name: str, parent: serializers.Serializer) -> None:
        super().bind(field_name, parent)
        self.choices = list(configured_brokers())  # read per request (and per schema), not at import

    def to_internal_value(self, data: object) -> Broker:
        if not isinstance(data, str):
            self.fail("invalid_choice", input=data)
        try:
            return get_broker(data)
        except UnknownBroker as exc:
            raise serializers.ValidationError(str(exc)) from exc

    def run_validation(self, data: object = serializers.empty) -> Broker:
        """A blank alias is the main broker too (DRF returns "" for it without to_internal_value)."""
        value = super().run_validation(data)
        return value or get_broker()


class BackendQuerySerializer(serializers.Serializer):
    """The query of an endpoint whose only parameter is `backend`."""

    backend = BackendField()


# For `extend_schema(parameters=[...])`: drf-spectacular documents a serializer's fields as query parameters.
BACKEND_PARAMETER = BackendQuerySerializer


def query_of(request: Request) -> dict[str, str]:
    """The query parameters as a plain dict (the last value of a repeated one). A plain dict, not the
    QueryDict, so DRF validates a blank value like any other (`since=` is a bad date-time, not "absent")."""
    return request.query_params.dict()


def requested_backend(request: Request) -> Broker:
    """The backend named by the `backend` query parameter; a 400 naming the field if it is unknown."""
    params = BackendQuerySerializer(data=query_of(request))
    params.is_valid(raise_exception=True)
    return params.validated_data.get("backend") or get_broker()
