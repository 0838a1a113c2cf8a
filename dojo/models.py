from django.db import models


class SystemSettings(models.Model):
    """Project-wide settings editable on the System Settings page; a single row (pk=1)."""

    instance_name = models.CharField(max_length=100, default="dojo", help_text="Shown in the page title and header.")
    contact_email = models.EmailField(
        blank=True, help_text="Whom operators should contact about this instance; shown in the footer."
    )
    allow_queue_purge = models.BooleanField(
        default=True, help_text="Allow superusers to purge Celery queues from the page and the API."
    )
    status_refresh_seconds = models.PositiveIntegerField(
        default=0,
        help_text="Reload the Celery status on the System Settings page every this many seconds; 0 = only on demand.",
    )

    class Meta:
        verbose_name = "system settings"
        verbose_name_plural = "system settings"

    def __str__(self) -> str:
        return "System settings"

    def save(self, *args, **kwargs) -> None:
        self.pk = 1
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise ValueError("The system settings row cannot be deleted.")

    @classmethod
    def load(cls) -> "SystemSettings":
        obj, _created = cls.objects.get_or_create(pk=1)
        return obj


class CeleryStatusSnapshot(models.Model):
    """The Celery status at one moment, recorded every minute by beat (dojo.tasks.record_celery_snapshot)."""

    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    backend = models.CharField(max_length=100, default="default", db_index=True)
    broker_status = models.BooleanField()
    workers = models.PositiveIntegerField()
    active_tasks = models.PositiveIntegerField()
    reserved_tasks = models.PositiveIntegerField()
    scheduled_tasks = models.PositiveIntegerField()
    # {queue name: ready messages or null when unknown}
    queue_lengths = models.JSONField(default=dict)
    # {worker name: active task count}
    active_by_worker = models.JSONField(default=dict)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"Celery status at {self.created_at:%Y-%m-%d %H:%M:%S}"


class CeleryWorkerSeen(models.Model):
    """A worker that answered a status read: when first and last, so a silent one shows as offline.

    Updated on every uncached status read (dojo.ops.fleet.seen_workers.record_seen); rows not seen
    for DD_CELERY_WORKER_OFFLINE_HOURS are deleted by the snapshot task.
    """

    name = models.CharField(max_length=255, unique=True)
    first_seen = models.DateTimeField()
    last_seen = models.DateTimeField(db_index=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name} (last seen {self.last_seen:%Y-%m-%d %H:%M:%S})"


class QueuePause(models.Model):
    """A queue the workers of a backend must not consume; read by every worker as it starts."""

    backend = models.CharField(max_length=100, default="default")
    queue = models.CharField(max_length=255)
    paused_at = models.DateTimeField(auto_now_add=True)
    paused_by = models.CharField(max_length=150, blank=True)
    # The workers this pause stopped consuming the queue (by name): the ones that do not run the
    # project's code get the built-in add_consumer on resume, and only they (dojo.ops.controls.pauses).
    stopped_workers = models.JSONField(default=list, blank=True)

    class Meta:
        ordering = ["backend", "queue"]
        constraints = [models.UniqueConstraint(fields=["backend", "queue"], name="unique_queue_pause")]

    def __str__(self) -> str:
        return f"{self.queue} paused on {self.backend}"


class TaskRevocation(models.Model):
    """A revoked task id, loaded by workers that start after the revoke was broadcast."""

    backend = models.CharField(max_length=100, default="default")
    task_id = models.CharField(max_length=255)
    terminate = models.BooleanField(default=False)
    revoked_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-revoked_at"]
        constraints = [models.UniqueConstraint(fields=["backend", "task_id"], name="unique_task_revocation")]

    def __str__(self) -> str:
        return f"{self.task_id} revoked on {self.backend}"


class CeleryProcess(models.Model):
    """A worker, one of its pool children, or beat, with the heartbeat it last wrote."""

    class Kind(models.TextChoices):
        WORKER = "worker"
        POOL = "pool"
        BEAT = "beat"

    backend = models.CharField(max_length=100, default="default")
    name = models.CharField(max_length=255)
    kind = models.CharField(max_length=10, choices=Kind.choices)
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.CASCADE, related_name="children")
    hostname = models.CharField(max_length=255)
    pid = models.PositiveIntegerField()
    started_at = models.DateTimeField()
    last_heartbeat_at = models.DateTimeField(db_index=True)

    class Meta:
        ordering = ["backend", "name"]
        constraints = [models.UniqueConstraint(fields=["backend", "name"], name="unique_celery_process")]
        verbose_name_plural = "celery processes"

    def __str__(self) -> str:
        return f"{self.kind} {self.name}"


class SemaphoreSlot(models.Model):
    """A held slot of a concurrency limit, for brokers without a server-side store (Redis keeps its own)."""

    backend = models.CharField(max_length=100, default="default")
    key = models.CharField(max_length=255)
    holder = models.CharField(max_length=255)  # the task id
    limit = models.PositiveIntegerField()
    expires_at = models.DateTimeField(db_index=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["backend", "key", "holder"], name="unique_semaphore_slot")]

    def __str__(self) -> str:
        return f"{self.key}: {self.holder}"


class SemaphoreWaiter(models.Model):
    """A task that found no free slot and was retried later: it counts as blocked on its queue."""

    backend = models.CharField(max_length=100, default="default")
    key = models.CharField(max_length=255)
    task_id = models.CharField(max_length=255)
    task_name = models.CharField(max_length=255)
    queue = models.CharField(max_length=255)
    blocked_since = models.DateTimeField()
    retry_at = models.DateTimeField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["backend", "key", "task_id"], name="unique_semaphore_waiter")]

    def __str__(self) -> str:
        return f"{self.key}: {self.task_id} waiting"


class CeleryAuditLog(models.Model):
    """One Celery control an operator asked for: who, when, where, what, and what came of it.

    Its Meta permissions are the per-action rights; superusers hold them all.
    """

    class Result(models.TextChoices):
        OK = "ok"
        REFUSED = "refused"
        FAILED = "failed"

    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    user = models.ForeignKey("auth.User", null=True, blank=True, on_delete=models.SET_NULL)
    username = models.CharField(max_length=150)
    backend = models.CharField(max_length=100)
    action = models.CharField(max_length=50, db_index=True)
    target = models.CharField(max_length=255)
    result = models.CharField(max_length=10, choices=Result.choices)
    counts = models.JSONField(default=dict, blank=True)
    detail = models.TextField(blank=True)

    class Meta:
        ordering = ["-created_at"]
        default_permissions = ("view",)
        permissions = [
            ("purge_queue", "Can purge Celery queues"),
            ("pause_queue", "Can pause and resume Celery queues"),
            ("retry_task", "Can retry failed Celery tasks"),
            ("revoke_task", "Can revoke queued Celery tasks"),
            ("terminate_task", "Can terminate running Celery tasks"),
            ("run_periodic_task", "Can run periodic tasks now"),
            ("toggle_periodic_task", "Can enable and disable periodic tasks"),
            ("apply_task", "Can enqueue any registered Celery task"),
            ("delete_results", "Can delete stored Celery task results"),
        ]

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M:%S} {self.username} {self.action} {self.target}: {self.result}"


class MonitoredWorker(models.Model):
    """A worker as Celery's own events describe it (worker-online/heartbeat/offline), written by
    `manage.py celery_monitor` (dojo.ops.observe.monitor) at most once a second per worker.

    Every worker sends these events, whether it runs this project's code or not, so this is how
    the processes table shows the workers that write no CeleryProcess heartbeat. The times are
    the monitor's clock when it received the event.
    """

    backend = models.CharField(max_length=100, default="default")
    hostname = models.CharField(max_length=255)  # the worker's node name, w1@host
    online = models.BooleanField(default=True)  # False once it sent worker-offline
    first_seen = models.DateTimeField()
    last_heartbeat_at = models.DateTimeField(db_index=True)
    pid = models.PositiveIntegerField(null=True, blank=True)
    freq = models.FloatField(default=2.0)  # its heartbeat interval, seconds
    sw_ident = models.CharField(max_length=100, blank=True)
    sw_ver = models.CharField(max_length=100, blank=True)
    sw_sys = models.CharField(max_length=100, blank=True)
    processed = models.PositiveBigIntegerField(default=0)
    active = models.PositiveIntegerField(default=0)
    loadavg = models.JSONField(default=list, blank=True)

    class Meta:
        ordering = ["backend", "hostname"]
        constraints = [models.UniqueConstraint(fields=["backend", "hostname"], name="unique_monitored_worker")]

    def __str__(self) -> str:
        return f"{self.hostname} on {self.backend} (events)"


class MonitorHeartbeat(models.Model):
    """The event monitor of one backend, written every second while it runs, so the pages can
    say "monitor down since ..." instead of silently showing workers as stale."""

    backend = models.CharField(max_length=100, unique=True)
    hostname = models.CharField(max_length=255)
    pid = models.PositiveIntegerField()
    started_at = models.DateTimeField()
    last_beat_at = models.DateTimeField()
    stopped_at = models.DateTimeField(null=True, blank=True)  # set by a clean shutdown
    broker_connected = models.BooleanField(default=False)
    last_error = models.TextField(blank=True)  # redacted
    events_seen = models.PositiveBigIntegerField(default=0)  # since started_at
    # Task events by type since started_at ({"received": 3, "succeeded": 2, ...}).
    task_event_counts = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["backend"]

    def __str__(self) -> str:
        return f"Event monitor of {self.backend}"


# TaskRollup's counts by outcome, in the order the event monitor keeps them (dojo.ops.observe.rollups).
TASK_COUNT_FIELDS = (
    "received",
    "started",
    "succeeded",
    "failed",
    "retried",
    "revoked",
    "rejected",
    "recovered",
    "critical",
    "lost",
)


class TaskRollup(models.Model):
    """Task events of one (period, task name, queue, backend) counted by the event monitor
    (`manage.py celery_monitor`): counts by outcome and histograms of runtime and wait, with the
    bounds of dojo.ops.histograms (lists of dojo.ops.histograms.SIZE counts).

    Three tiers, written together from the same events in one transaction per flush: minute rows
    (kept DD_ANALYTICS_MINUTE_HOURS), hour rows (kept DD_ANALYTICS_HOUR_DAYS) and one row per key
    with period 0 holding the totals since the first event (never pruned: the Prometheus counters
    and histograms, which must only grow). `worker` is blank except in the totals tier with
    DD_ANALYTICS_METRICS_BY_WORKER.
    """

    class Period(models.IntegerChoices):
        TOTAL = 0, "since the start"
        MINUTE = 60, "minute"
        HOUR = 3600, "hour"

    period = models.PositiveIntegerField(choices=Period.choices)
    bucket_start = models.DateTimeField()  # the period's first second (the epoch for TOTAL)
    backend = models.CharField(max_length=100)
    task_name = models.CharField(max_length=255)
    queue = models.CharField(max_length=255, blank=True)
    worker = models.CharField(max_length=255, blank=True)
    received = models.PositiveBigIntegerField(default=0)
    started = models.PositiveBigIntegerField(default=0)
    succeeded = models.PositiveBigIntegerField(default=0)
    failed = models.PositiveBigIntegerField(default=0)
    retried = models.PositiveBigIntegerField(default=0)
    revoked = models.PositiveBigIntegerField(default=0)
    rejected = models.PositiveBigIntegerField(default=0)
    recovered = models.PositiveBigIntegerField(default=0)  # succeeded after one or more retries
    critical = models.PositiveBigIntegerField(default=0)  # failed after its last retry
    lost = models.PositiveBigIntegerField(default=0)  # started on a worker that went away, never ended
    runtime_sum = models.FloatField(default=0.0)  # seconds
    runtime_max = models.FloatField(default=0.0)
    runtime_buckets = models.JSONField(default=list)
    wait_sum = models.FloatField(default=0.0)  # received -> started, seconds
    wait_buckets = models.JSONField(default=list)
    publish_wait_sum = models.FloatField(default=0.0)  # published -> started, where the publish time is known
    publish_wait_buckets = models.JSONField(default=list)

    class Meta:
        ordering = ["period", "bucket_start", "task_name"]
        constraints = [
            models.UniqueConstraint(
                fields=["period", "bucket_start", "backend", "task_name", "queue", "worker"],
                name="unique_task_rollup",
            )
        ]
        indexes = [models.Index(fields=["period", "backend", "bucket_start"], name="task_rollup_window")]

    def __str__(self) -> str:
        return f"{self.task_name} on {self.backend} ({self.get_period_display()} {self.bucket_start:%Y-%m-%d %H:%M})"


class FailureRollup(models.Model):
    """Failures of one task name with one exception type in one period (minute, hour or period
    0 for the totals), from task-failed events: the failures grouped page reads these. The
    latest failure's exception text and traceback are kept redacted and cut to 10,000 characters;
    they are task data (shown only to users who may see task results)."""

    period = models.PositiveIntegerField(choices=TaskRollup.Period.choices)
    bucket_start = models.DateTimeField()
    backend = models.CharField(max_length=100)
    task_name = models.CharField(max_length=255)
    exception_type = models.CharField(max_length=255)  # "ValueError", "smtplib.SMTPServerDisconnected"
    count = models.PositiveBigIntegerField(default=0)
    first_seen = models.DateTimeField()
    last_seen = models.DateTimeField()
    latest_task_id = models.CharField(max_length=255, blank=True)
    latest_exception = models.TextField(blank=True)
    latest_traceback = models.TextField(blank=True)

    class Meta:
        ordering = ["period", "bucket_start", "task_name", "exception_type"]
        constraints = [
            models.UniqueConstraint(
                fields=["period", "bucket_start", "backend", "task_name", "exception_type"],
                name="unique_failure_rollup",
            )
        ]
        indexes = [models.Index(fields=["period", "backend", "bucket_start"], name="failure_rollup_window")]

    def __str__(self) -> str:
        return f"{self.task_name}: {self.exception_type} x{self.count}"


class LostTask(models.Model):
    """A task that started on a worker which then went away (worker-offline, or its heartbeat
    expired) with no terminal event within the grace period: found by the event monitor."""

    backend = models.CharField(max_length=100)
    task_id = models.CharField(max_length=255)
    task_name = models.CharField(max_length=255)
    queue = models.CharField(max_length=255, blank=True)
    worker = models.CharField(max_length=255)
    started_at = models.DateTimeField()
    worker_gone_at = models.DateTimeField()
    detected_at = models.DateTimeField(db_index=True)
    # Set when an operator retried it from the panel or the API (the new task's id).
    retried_at = models.DateTimeField(null=True, blank=True)
    retried_task_id = models.CharField(max_length=255, blank=True)

    class Meta:
        ordering = ["-detected_at"]
        constraints = [models.UniqueConstraint(fields=["backend", "task_id"], name="unique_lost_task")]

    def __str__(self) -> str:
        return f"{self.task_name} {self.task_id} lost on {self.worker}"


class BulkOperation(models.Model):
    """One bulk action over the stored results a filter matched (dojo.ops.controls.bulk): who asked,
    what they confirmed (the preview's count and fingerprint) and how far the background runner got.

    The runner (dojo.tasks.run_bulk_operation) works by keyset on the result id from `cursor`, up to
    `max_id` (the largest matching id at preview time: results stored later are never touched; for
    queued messages, a position in the queue and at most `message_limit` messages), and
    writes each batch's progress in the batch's own transaction, so a restarted runner goes on from
    `cursor` without repeating a done batch.
    """

    class Action(models.TextChoices):
        RETRY = "retry"
        REVOKE = "revoke"
        PURGE = "purge"
        DELETE_RESULTS = "delete_results"

    class State(models.TextChoices):
        PENDING = "pending"
        RUNNING = "running"
        DONE = "done"
        CANCELLED = "cancelled"
        FAILED = "failed"

    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    user = models.ForeignKey("auth.User", null=True, blank=True, on_delete=models.SET_NULL)
    username = models.CharField(max_length=150)
    action = models.CharField(max_length=20, choices=Action.choices)
    backend = models.CharField(max_length=100)
    filter = models.JSONField(default=dict, blank=True)  # TaskFilter.to_dict()
    include_retried = models.BooleanField(default=False)  # retry: also results an earlier operation retried
    confirmed_count = models.PositiveBigIntegerField()
    fingerprint = models.CharField(max_length=200)
    max_id = models.BigIntegerField()
    # revoke and purge: at most this many messages (the count the start found); cursor is then a position in the queue
    message_limit = models.PositiveBigIntegerField(null=True, blank=True)
    state = models.CharField(max_length=10, choices=State.choices, default=State.PENDING)
    done_count = models.PositiveBigIntegerField(default=0)
    failed_count = models.PositiveBigIntegerField(default=0)
    cursor = models.BigIntegerField(default=0)  # the last result id done
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField()
    cancel_requested = models.BooleanField(default=False)
    runner = models.CharField(max_length=255, blank=True)  # the task id of the runner holding it
    detail = models.TextField(blank=True)  # why it failed (redacted)
    audit = models.ForeignKey("CeleryAuditLog", null=True, blank=True, on_delete=models.SET_NULL)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["state", "updated_at"], name="bulk_operation_state")]

    def __str__(self) -> str:
        return f"{self.action} #{self.pk} by {self.username}: {self.state}"


class BulkOperationFailure(models.Model):
    """A result a bulk operation could not act on, and why (the first DD_BULK_MAX_FAILURES kept)."""

    operation = models.ForeignKey(BulkOperation, on_delete=models.CASCADE, related_name="failures")
    task_id = models.CharField(max_length=255)
    reason = models.TextField()  # redacted, cut to 1,000 characters
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.task_id}: {self.reason[:50]}"


class BulkRetriedTask(models.Model):
    """A stored result a bulk retry published again, and the new task's id: a result is retried
    at most once per operation, and a later operation leaves it out unless told otherwise.
    Written `sending` before its batch is published, `sent` after; a runner that died in between
    leaves `sending`, which its successor settles as `unknown` (never sent again: see
    dojo.ops.controls.bulk)."""

    class State(models.TextChoices):
        SENDING = "sending"
        SENT = "sent"
        UNKNOWN = "unknown"

    operation = models.ForeignKey(BulkOperation, on_delete=models.CASCADE, related_name="retried")
    task_id = models.CharField(max_length=255, db_index=True)
    new_task_id = models.CharField(max_length=255)
    state = models.CharField(max_length=10, choices=State.choices, default=State.SENDING)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["operation", "task_id"], name="unique_bulk_retried_task")]

    def __str__(self) -> str:
        return f"{self.task_id} -> {self.new_task_id}"
