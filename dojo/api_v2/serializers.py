from datetime import UTC, datetime
from typing import Any

from django.utils import timezone
from rest_framework import serializers

from dojo.api_v2.backends import BackendField
from dojo.api_v2.dict_serializer import DictSerializer
from dojo.api_v2.fields import TextField
from dojo.ops.brokers.queues import configured_queues
from dojo.ops.fleet.status import CeleryStatus
from dojo.ops.read_models.task_filter import MAX_ARGS_TEXT, MAX_TEXT, FilterError, TaskFilter


class TaskSummarySerializer(DictSerializer):
    id = serializers.CharField()
    name = serializers.CharField(allow_null=True)
    args = serializers.JSONField(help_text="Positional arguments as the worker received them.")
    kwargs = serializers.JSONField(allow_null=True)
    time_start = serializers.FloatField(allow_null=True, help_text="Epoch seconds the task started; null if not.")
    worker_pid = serializers.IntegerField(allow_null=True)
    eta = serializers.CharField(required=False, allow_null=True, help_text="Scheduled tasks: when it is due.")
    priority = serializers.IntegerField(required=False, allow_null=True)


PoolSerializer = type(
    "PoolSerializer",
    (DictSerializer,),
    {
        "max-concurrency": serializers.IntegerField(allow_null=True),
        "processes": serializers.ListField(child=serializers.IntegerField(), allow_null=True),
        "max-tasks-per-child": serializers.IntegerField(allow_null=True),
    },
)


class WorkerStatsSerializer(DictSerializer):
    total = serializers.IntegerField(help_text="Tasks this worker has accepted since it started.")
    total_by_task = serializers.DictField(child=serializers.IntegerField())
    pool = PoolSerializer()
    pool_implementation = serializers.CharField(allow_null=True)
    pid = serializers.IntegerField(allow_null=True)
    uptime = serializers.IntegerField(allow_null=True, help_text="Seconds.")
    prefetch_count = serializers.IntegerField(allow_null=True)
    rusage = serializers.DictField(allow_null=True, help_text="getrusage() of the worker's main process.")


def _by_worker(help_text: str) -> serializers.DictField:
    return serializers.DictField(child=serializers.ListField(child=TaskSummarySerializer()), help_text=help_text)


class QueueDetailsSerializer(serializers.Serializer):
    active = _by_worker("Tasks running now, by worker.")
    reserved = _by_worker("Tasks a worker has prefetched and not started, by worker.")
    scheduled = _by_worker("ETA/countdown tasks a worker holds until they are due, by worker.")


class QueueStateSerializer(serializers.Serializer):
    ready = serializers.IntegerField(allow_null=True, help_text="Ready messages, priority sub-queues included.")
    consumers = serializers.IntegerField(
        allow_null=True,
        help_text="Consumers the broker counts (AMQP); elsewhere the answering workers consuming the queue.",
    )


class AlertSerializer(serializers.Serializer):
    code = serializers.ChoiceField(
        choices=[
            "broker_unreachable",
            "no_workers",
            "too_few_workers",
            "queue_too_long",
            "queue_growing",
            "worker_saturated",
        ]
    )
    severity = serializers.ChoiceField(choices=["critical", "warning"])
    message = serializers.CharField()


class CeleryStatusSerializer(serializers.Serializer):
    enabled = serializers.BooleanField(help_text="Celery is in use by this instance.")
    backend = serializers.CharField(help_text="The alias of the backend this status is of.")
    connected = serializers.BooleanField(help_text="The broker answered (same as broker_status).")
    broker_status = serializers.BooleanField(help_text="The broker answered within the time bound.")
    worker_status = serializers.BooleanField(help_text="At least one worker answered.")
    workers = serializers.IntegerField(help_text="How many workers answered.")
    worker_names = serializers.ListField(child=serializers.CharField(), help_text="Names of the workers that answered.")
    queue = serializers.CharField(help_text="The default queue, whose length is queue_length.")
    queue_length = serializers.IntegerField(
        allow_null=True,
        help_text="Ready messages in the default queue, every priority sub-queue included; "
        "null when the broker is unreachable. Prefetched messages are not counted.",
    )
    queues = serializers.DictField(
        child=QueueStateSerializer(),
        help_text="Every queue the dashboard knows, by name: configured, paused, or consumed by an answering worker.",
    )
    active_tasks = serializers.IntegerField(
        allow_null=True, help_text="Tasks running on the answering workers; null when one of them did not say in time."
    )
    reserved_tasks = serializers.IntegerField(
        allow_null=True, help_text="Tasks prefetched by the answering workers, not started; null when one did not say."
    )
    scheduled_tasks = serializers.IntegerField(
        allow_null=True, help_text="ETA/countdown tasks held by the answering workers; null when one did not say."
    )
    registered_tasks = serializers.ListField(child=serializers.CharField(), help_text="Task names, sorted.")
    worker_stats = serializers.DictField(
        child=WorkerStatsSerializer(allow_null=True),
        help_text="By worker, every answering worker (project code or not); null for one that did not give its "
        "stats in time.",
    )
    queue_details = QueueDetailsSerializer()
    tasks_left_out = serializers.DictField(
        child=serializers.DictField(child=serializers.IntegerField()),
        help_text="By list (active, reserved, scheduled), the workers whose list in queue_details was cut to "
        "DD_CELERY_STATUS_MAX_TASKS_PER_WORKER and how many tasks were left out; the counts above stay exact.",
    )
    alerts = serializers.ListField(child=AlertSerializer())
    task_time_limit = serializers.IntegerField(allow_null=True, help_text="Seconds; null when off.")
    task_soft_time_limit = serializers.IntegerField(allow_null=True, help_text="Seconds; null when off.")
    task_default_expires = serializers.IntegerField(allow_null=True, help_text="Seconds; null when off.")
    broker_url = serializers.CharField(help_text="The broker URL with any password replaced by ****.")
    error = serializers.CharField(allow_null=True, help_text="Why the broker is unreachable; null when it answered.")
    read_at = serializers.FloatField(help_text="Epoch seconds when this was read (it may come from the cache).")
    history_available = serializers.BooleanField(
        help_text="The recorded history could be read; when false, alerts lack the history-based ones (queue_growing)."
    )
    seen_workers_recorded = serializers.BooleanField(
        help_text="The answering workers were recorded in the seen-workers registry (false: the database failed)."
    )
    database_error = serializers.CharField(
        allow_null=True, help_text="Why the database parts are missing; null when the database answered."
    )


def status_document(status: CeleryStatus) -> dict[str, Any]:
    """CeleryStatusSerializer(status).data as a plain dict. `.data` keeps the serializer, whose
    fields point back at it, and the serializer keeps the status and its representation: a
    reference cycle that held both (28,000 objects at 1,000 workers) until a garbage collection
    found it, instead of freeing them when the response is sent."""
    return CeleryStatusSerializer().to_representation(status)


class CeleryDisabledSerializer(serializers.Serializer):
    enabled = serializers.BooleanField(help_text="Always false here.")
    message = serializers.CharField()


class CeleryQueuePurgeRequestSerializer(serializers.Serializer):
    queue = serializers.ChoiceField(
        choices=[], required=False, help_text="A configured queue; the default queue when omitted."
    )
    backend = BackendField()

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["queue"].choices = configured_queues()  # read per request, not at import


class CeleryQueuePurgeSerializer(serializers.Serializer):
    queue = serializers.CharField(help_text="The queue that was purged.")
    purged = serializers.IntegerField(help_text="How many ready messages were removed.")
    backend = serializers.CharField(help_text="The backend whose queue was purged.")


class ErrorSerializer(serializers.Serializer):
    """Every error answer (dojo.api_v2.exceptions); its schema is dojo.api_v2.schema.ErrorSchema."""

    detail = serializers.CharField()


class StatusQuerySerializer(serializers.Serializer):
    refresh = serializers.BooleanField(
        required=False, default=False, help_text="Read the broker and workers now instead of answering from the cache."
    )
    backend = BackendField()


class WindowDateTimeField(serializers.DateTimeField):
    """An ISO 8601 date-time, in UTC. One whose UTC value falls outside years 1 to 9999
    ("0001-01-01T00:00:00+01:00", which `format: date-time` allows) reads as the earliest or latest
    one rather than a 400: as a window's end it means the same set."""

    def enforce_timezone(self, value: datetime) -> datetime:
        if timezone.is_naive(value):
            value = value.replace(tzinfo=timezone.get_current_timezone())
        try:
            return value.astimezone(UTC)
        except OverflowError:
            return (datetime.min if value.year == 1 else datetime.max).replace(tzinfo=UTC)


def _filter_text(limit: int, help_text: str) -> TextField:
    """Untrimmed, so maxLength is the schema's (TaskFilter strips the value itself; blank is absent)."""
    return TextField(
        required=False, default="", allow_blank=True, trim_whitespace=False, max_length=limit, help_text=help_text
    )


class TaskSearchQuerySerializer(serializers.Serializer):
    """name, state, worker and arg as before; the TaskFilter fields (dojo.ops.read_models.task_filter)
    besides. All conditions must match. A live task has no exception type or done time: when
    exception_type, done_after or done_before is given, only stored results are found."""

    name = TextField(required=False, default="", allow_blank=True, help_text="Part of the task name.")
    state = TextField(
        required=False,
        default="",
        allow_blank=True,
        help_text="ACTIVE, RESERVED or SCHEDULED (live), or a stored state: PENDING, STARTED, SUCCESS, FAILURE, "
        "RETRY, REVOKED.",
    )
    worker = TextField(required=False, default="", allow_blank=True, help_text="The worker's full name.")
    arg = TextField(required=False, default="", allow_blank=True, help_text="Text found in the args or kwargs.")
    task_name = _filter_text(MAX_TEXT, "Exactly this task name.")
    task_name_prefix = _filter_text(MAX_TEXT, "Task names starting with this (given with task_name, both must match).")
    exception_type = _filter_text(
        MAX_TEXT, 'Stored failures of this exception: "ValueError" or qualified: "smtplib.SMTPServerDisconnected".'
    )
    done_after = WindowDateTimeField(required=False, help_text="Stored results done at or after this time.")
    done_before = WindowDateTimeField(
        required=False, help_text="Stored results done before this time (a window that ends before it starts: none)."
    )
    queue = _filter_text(MAX_TEXT, "The queue the task came from (a live task's when its worker says it).")
    args_contain = _filter_text(MAX_ARGS_TEXT, "Text found in the args or kwargs (the stored text, or a live task's).")
    limit = serializers.IntegerField(required=False, default=100, min_value=1, max_value=1000)
    refresh = serializers.BooleanField(required=False, default=False, help_text="Read the live tasks now.")
    backend = BackendField()

    def validate_state(self, value: str) -> str:
        return value.upper()

    def validate(self, attrs: dict) -> dict:
        """The TaskFilter fields as `task_filter` (a 400 naming the field if one is refused) and, when
        task_name and task_name_prefix are both given, the prefix as `name_prefix`: both must match."""
        values = {name: attrs.pop(name) for name in TASK_FILTER_PARAMETERS if name in attrs}
        attrs["name_prefix"] = values.pop("task_name_prefix", "") if values.get("task_name") else ""
        texts = {name: value.isoformat() if isinstance(value, datetime) else value for name, value in values.items()}
        try:
            attrs["task_filter"] = TaskFilter.from_query(texts)
        except FilterError as exc:
            raise serializers.ValidationError({exc.field: [exc.message]}) from exc
        return attrs


# The TaskFilter fields the task search takes besides its own name, state, worker, arg and backend.
TASK_FILTER_PARAMETERS = (
    "task_name",
    "task_name_prefix",
    "exception_type",
    "done_after",
    "done_before",
    "queue",
    "args_contain",
)


class TaskFoundSerializer(serializers.Serializer):
    id = serializers.CharField()
    name = serializers.CharField(allow_null=True)
    state = serializers.CharField()
    source = serializers.ChoiceField(choices=["live", "stored"])
    worker = serializers.CharField(allow_null=True)
    args = serializers.JSONField(allow_null=True)
    kwargs = serializers.JSONField(allow_null=True)
    time_start = serializers.FloatField(allow_null=True, help_text="Epoch seconds (running tasks).")
    runtime = serializers.FloatField(allow_null=True, help_text="Seconds it has been running (running tasks).")
    eta = serializers.CharField(allow_null=True, help_text="When a scheduled task is due.")
    date_done = serializers.CharField(allow_null=True, help_text="When a stored task finished.")


class TaskSearchSerializer(serializers.Serializer):
    count = serializers.IntegerField()
    results = TaskFoundSerializer(many=True)


class HistoryQuerySerializer(serializers.Serializer):
    since = serializers.DateTimeField(
        required=False, help_text="ISO 8601 date and time; default: one hour ago. Kept: DD_CELERY_HISTORY_DAYS."
    )
    backend = BackendField()


class SnapshotSerializer(serializers.Serializer):
    created_at = serializers.DateTimeField()
    broker_status = serializers.BooleanField()
    workers = serializers.IntegerField()
    active_tasks = serializers.IntegerField()
    reserved_tasks = serializers.IntegerField()
    scheduled_tasks = serializers.IntegerField()
    queue_lengths = serializers.DictField(child=serializers.IntegerField(allow_null=True))
    active_by_worker = serializers.DictField(child=serializers.IntegerField())


class HistorySerializer(serializers.Serializer):
    backend = serializers.CharField()
    since = serializers.DateTimeField()
    points = SnapshotSerializer(many=True)


class ReadinessSerializer(serializers.Serializer):
    ready = serializers.BooleanField()
    reasons = serializers.ListField(child=serializers.CharField(), help_text="Why not ready; empty when ready.")
    workers = serializers.IntegerField()
    min_workers = serializers.IntegerField()
    broker_status = serializers.BooleanField()


class LivenessSerializer(serializers.Serializer):
    status = serializers.CharField()
