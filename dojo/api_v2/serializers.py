from rest_framework import serializers

from dojo.celery_ops import configured_queues


class CeleryStatusSerializer(serializers.Serializer):
    enabled = serializers.BooleanField(help_text="Celery is in use by this instance.")
    connected = serializers.BooleanField(help_text="The broker answered (same as broker_status).")
    broker_status = serializers.BooleanField(help_text="The broker answered within the time bound.")
    worker_status = serializers.BooleanField(help_text="At least one worker answered the ping.")
    workers = serializers.IntegerField(help_text="How many workers answered the ping.")
    worker_names = serializers.ListField(child=serializers.CharField(), help_text="Names of the workers that answered.")
    queue = serializers.CharField(help_text="The default queue, whose length is queue_length.")
    queue_length = serializers.IntegerField(
        allow_null=True,
        help_text="Ready messages in the default queue, every priority sub-queue included; "
        "null when the broker is unreachable. Prefetched messages are not counted.",
    )
    task_time_limit = serializers.IntegerField(allow_null=True, help_text="Seconds; null when off.")
    task_soft_time_limit = serializers.IntegerField(allow_null=True, help_text="Seconds; null when off.")
    task_default_expires = serializers.IntegerField(allow_null=True, help_text="Seconds; null when off.")
    broker_url = serializers.CharField(help_text="The broker URL with any password replaced by ****.")
    error = serializers.CharField(allow_null=True, help_text="Why the broker is unreachable; null when it answered.")


class CeleryQueuePurgeRequestSerializer(serializers.Serializer):
    queue = serializers.ChoiceField(
        choices=[], required=False, help_text="A configured queue; the default queue when omitted."
    )

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["queue"].choices = configured_queues()  # read per request, not at import


class CeleryQueuePurgeSerializer(serializers.Serializer):
    queue = serializers.CharField(help_text="The queue that was purged.")
    purged = serializers.IntegerField(help_text="How many ready messages were removed.")


class ErrorSerializer(serializers.Serializer):
    detail = serializers.CharField()
