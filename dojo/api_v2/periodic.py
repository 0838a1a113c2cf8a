"""Recurring (periodic) task controls: run now, enable/disable. Thin: dojo.ops.controls.recurring does
the work; CeleryControlView checks the permission, maps the errors to HTTP and writes the audit row."""

from collections.abc import Mapping

from drf_spectacular.utils import OpenApiResponse
from rest_framework import serializers
from rest_framework.request import Request

from dojo.api_v2.backends import BackendField
from dojo.api_v2.controls import CeleryControlView
from dojo.api_v2.fields import NameField
from dojo.api_v2.serializers import ErrorSerializer
from dojo.ops.brokers.registry import Broker
from dojo.ops.controls.recurring import (
    RecurringTask,
    RecurringTaskRefused,
    RunResult,
    UnknownRecurringTask,
    run_now,
    set_enabled,
)

KEY_HELP = "The recurring task's key: its name in CELERY_BEAT_SCHEDULE or in django-celery-beat."
# An unknown key is a 404; an entry that cannot take the action (from settings, odd stored args) a 409.
KEY_REFUSALS = {UnknownRecurringTask: (404, None), RecurringTaskRefused: (409, None)}
KEY_ANSWERS = {
    404: OpenApiResponse(ErrorSerializer, description="No recurring task has this key."),
    409: OpenApiResponse(ErrorSerializer, description="The entry cannot take this action (the body says why)."),
}


class PeriodicRunRequestSerializer(serializers.Serializer):
    key = NameField(help_text=KEY_HELP)
    backend = BackendField()


class PeriodicRunSerializer(serializers.Serializer):
    key = serializers.CharField()
    task_id = serializers.CharField(help_text="The id of the task just published.")
    task_name = serializers.CharField()
    queue = serializers.CharField(help_text="The queue it was published to.")
    backend = serializers.CharField(help_text="The backend whose broker it was published to.")


class PeriodicEnabledRequestSerializer(serializers.Serializer):
    key = NameField(help_text=KEY_HELP + " Database entries only.")
    enabled = serializers.BooleanField()
    backend = BackendField()


class RecurringTaskSerializer(serializers.Serializer):
    key = serializers.CharField()
    task_path = serializers.CharField()
    queue_name = serializers.CharField()
    schedule = serializers.CharField(help_text="In words.")
    static = serializers.BooleanField(help_text="From settings (CELERY_BEAT_SCHEDULE) rather than the database.")
    enabled = serializers.BooleanField()
    last_run_at = serializers.DateTimeField(allow_null=True)
    next_run_at = serializers.DateTimeField(allow_null=True)


class PeriodicTaskRunView(CeleryControlView):
    celery_permission = "run_periodic_task"
    audit_action = "run_periodic_task"
    request_serializer = PeriodicRunRequestSerializer
    response_serializer = PeriodicRunSerializer
    target_fields = ("key",)
    refusals = KEY_REFUSALS
    extra_responses = KEY_ANSWERS
    summary = "Run a recurring task now, with its args, kwargs and queue"

    def perform(self, request: Request, data: dict, backend: Broker) -> RunResult:
        return run_now(data["key"], backend)

    def detail(self, result: RunResult) -> str:
        return f"task {result.task_id} on queue {result.queue}"


class PeriodicTaskEnabledView(CeleryControlView):
    celery_permission = "toggle_periodic_task"
    audit_action = "toggle_periodic_task"
    request_serializer = PeriodicEnabledRequestSerializer
    response_serializer = RecurringTaskSerializer
    target_fields = ("key",)
    refusals = KEY_REFUSALS
    extra_responses = KEY_ANSWERS
    summary = "Enable or disable a django-celery-beat entry (beat is told to reload)"

    def perform(self, request: Request, data: dict, backend: Broker) -> RecurringTask:
        return set_enabled(data["key"], data["enabled"])

    def target(self, values: Mapping) -> str:
        """The key and what was asked: "nightly (disable)"."""
        enabled = values.get("enabled")
        asked = "enable" if enabled is True else "disable" if enabled is False else None
        return " ".join(part for part in (super().target(values), f"({asked})" if asked else "") if part)

    def counts(self, result: RecurringTask) -> dict[str, int]:
        return {"enabled": int(result.enabled)}
