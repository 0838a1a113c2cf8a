"""Request and response bodies of the Celery controls (dojo/api_v2/controls.py)."""

from rest_framework import serializers

from dojo.api_v2.backends import BackendField
from dojo.api_v2.fields import NameField
from dojo.ops.brokers.queues import configured_queues
from dojo.ops.controls.pauses import QUEUE_NAME_MAX_LENGTH
from dojo.ops.controls.revocations import TERMINATE_SIGNALS

TASK_ID_MAX_LENGTH = 255


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
