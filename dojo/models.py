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

    Updated on every uncached status read (dojo.celery_ops.registry.record_seen); rows not seen
    for DD_CELERY_WORKER_OFFLINE_HOURS are deleted by the snapshot task.
    """

    name = models.CharField(max_length=255, unique=True)
    first_seen = models.DateTimeField()
    last_seen = models.DateTimeField(db_index=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name} (last seen {self.last_seen:%Y-%m-%d %H:%M:%S})"
