"""Request and response bodies of the Celery controls (dojo/api_v2/controls.py)."""

import math

from rest_framework import serializers

from dojo.api_v2.backends import BackendField
from dojo.api_v2.fields import NameField
from dojo.ops.brokers.queues import configured_queues
from dojo.ops.controls.apply import MAX_PRIORITY, BadArguments, check_arguments
from dojo.ops.controls.pauses import QUEUE_NAME_MAX_LENGTH
from dojo.ops.controls.revocations import REVOKE_MANY_MAX, TERMINATE_SIGNALS

TASK_ID_MAX_LENGTH = 255
MAX_COUNTDOWN_SECONDS = 365 * 86400


class QueuePauseRequestSerializer(serializers.Serializer):
    queue = NameField(
        max_length=QUEUE_NAME_MAX_LENGTH,
        trim_whitespace=False,
        help_text="The queue; it need not be configured nor consumed (a pause may be set ahead of time).",
    )
    backend = BackendField()


class QueuePauseSerializer(serializers.Serializer):
    backend = serializers.CharField()
    queue = serializers.CharField()
    paused = serializers.BooleanField()
    workers = serializers.ListField(
        child=serializers.CharField(),
        help_text="Pause: the live workers that were consuming the queue and stopped. Resume: the live workers "
        "that consume it again (only those whose own queue selection includes it).",
    )


class TaskPurgeRequestSerializer(serializers.Serializer):
    queue = serializers.ChoiceField(choices=[], help_text="A configured queue.")
    task_name = NameField(max_length=255, help_text="The registered task name, e.g. dojo.tasks.add.")
    backend = BackendField()

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["queue"].choices = configured_queues()  # read per request, not at import


class TaskPurgeSerializer(serializers.Serializer):
    backend = serializers.CharField()
    queue = serializers.CharField()
    task_name = serializers.CharField()
    purged = serializers.IntegerField(
        help_text="Ready messages of that task removed, every priority included (so far, when complete is false)."
    )
    complete = serializers.BooleanField(
        help_text="False: the time budget (DD_CELERY_PURGE_TASK_SECONDS) ran out before every message was looked "
        "at; the same request again goes on with the rest."
    )


class TaskIdRequestSerializer(serializers.Serializer):
    task_id = NameField(max_length=TASK_ID_MAX_LENGTH)
    backend = BackendField()


class TaskTerminateRequestSerializer(TaskIdRequestSerializer):
    signal = serializers.ChoiceField(
        choices=TERMINATE_SIGNALS, default="SIGTERM", help_text="Sent to the pool process running the task."
    )


class TaskRetrySerializer(serializers.Serializer):
    backend = serializers.CharField()
    original_task_id = serializers.CharField()
    task_id = serializers.CharField(help_text="The id of the new task.")
    task_name = serializers.CharField()
    queue = serializers.CharField(help_text="Where it was published: the queue the original ran from.")


class TaskRevokeSerializer(serializers.Serializer):
    backend = serializers.CharField()
    task_id = serializers.CharField()
    terminate = serializers.BooleanField()
    signal = serializers.CharField(allow_null=True)
    workers = serializers.ListField(child=serializers.CharField(), help_text="The workers that acknowledged.")


class TaskIdListField(serializers.ListField):
    """A list of task ids whose errors are a list of messages naming each bad item ("item 3: ..."),
    as the API's error body says, not DRF's object keyed by position."""

    def to_internal_value(self, data: object) -> list:
        try:
            return super().to_internal_value(data)
        except serializers.ValidationError as exc:
            if not isinstance(exc.detail, dict):
                raise
            raise serializers.ValidationError(
                [f"item {index}: {' '.join(map(str, errors))}" for index, errors in exc.detail.items()]
            ) from exc


class TaskRevokeManyRequestSerializer(serializers.Serializer):
    task_ids = TaskIdListField(
        child=NameField(max_length=TASK_ID_MAX_LENGTH),
        min_length=1,
        max_length=REVOKE_MANY_MAX,
        help_text=f"1 to {REVOKE_MANY_MAX} task ids, revoked in one broadcast (an id given twice counts once).",
    )
    backend = BackendField()


class TaskRevokeManySerializer(serializers.Serializer):
    backend = serializers.CharField()
    task_ids = serializers.ListField(child=serializers.CharField(), help_text="The ids revoked, each once.")
    revoked = serializers.IntegerField(help_text="How many ids were revoked.")
    workers = serializers.ListField(child=serializers.CharField(), help_text="The workers that acknowledged.")


class TaskApplyRequestSerializer(serializers.Serializer):
    task_name = NameField(max_length=255, help_text="A task name a live worker of the backend has registered.")
    args = serializers.ListField(
        child=serializers.JSONField(allow_null=True), default=list, help_text="Positional arguments (JSON)."
    )
    kwargs = serializers.DictField(
        child=serializers.JSONField(allow_null=True), default=dict, help_text="Keyword arguments (JSON)."
    )
    queue = NameField(
        max_length=QUEUE_NAME_MAX_LENGTH,
        required=False,
        help_text="A configured queue or one a live worker consumes; the default queue when absent.",
    )
    countdown = serializers.FloatField(
        min_value=0, max_value=MAX_COUNTDOWN_SECONDS, required=False, help_text="Run no sooner than this many seconds."
    )
    eta = serializers.DateTimeField(required=False, help_text="Run no sooner than this time (not with countdown).")
    priority = serializers.IntegerField(min_value=0, max_value=MAX_PRIORITY, required=False)
    backend = BackendField()

    def validate_countdown(self, value: float) -> float:
        if not math.isfinite(value):
            raise serializers.ValidationError("A finite number of seconds.")
        return value

    def validate(self, attrs: dict) -> dict:
        if attrs.get("countdown") is not None and attrs.get("eta") is not None:
            raise serializers.ValidationError({"eta": ["Give a countdown or an ETA, not both."]})
        try:
            check_arguments(attrs["args"], attrs["kwargs"])
        except BadArguments as exc:
            raise serializers.ValidationError({"args": [str(exc)]}) from exc
        return attrs


class TaskApplySerializer(serializers.Serializer):
    backend = serializers.CharField()
    task_id = serializers.CharField(help_text="The id of the new task.")
    task_name = serializers.CharField()
    queue = serializers.CharField()
    eta = serializers.DateTimeField(allow_null=True, help_text="When it runs at the earliest; null: now.")
