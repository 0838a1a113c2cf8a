from django.contrib import admin

from dojo.models import CeleryAuditLog, CeleryProcess, QueuePause, SystemSettings, TaskRevocation


@admin.register(SystemSettings)
class SystemSettingsAdmin(admin.ModelAdmin):
    list_display = ("instance_name", "contact_email", "allow_queue_purge", "status_refresh_seconds")

    def has_add_permission(self, request) -> bool:
        return not SystemSettings.objects.exists()

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


class ReadOnlyAdmin(admin.ModelAdmin):
    """Rows written by the Celery controls: shown, never edited here. Deleting a pause would not make
    the workers consume the queue again (resume does), and the audit log must not be rewritten."""

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(QueuePause)
class QueuePauseAdmin(ReadOnlyAdmin):
    list_display = ("queue", "backend", "paused_at", "paused_by")
    list_filter = ("backend",)
    search_fields = ("queue", "paused_by")


@admin.register(TaskRevocation)
class TaskRevocationAdmin(ReadOnlyAdmin):
    list_display = ("task_id", "backend", "terminate", "revoked_at")
    list_filter = ("backend", "terminate")
    search_fields = ("task_id",)
    date_hierarchy = "revoked_at"


@admin.register(CeleryAuditLog)
class CeleryAuditLogAdmin(ReadOnlyAdmin):
    list_display = ("created_at", "username", "backend", "action", "target", "result", "counts")
    list_filter = ("action", "result", "backend")
    search_fields = ("username", "target", "detail")
    date_hierarchy = "created_at"


@admin.register(CeleryProcess)
class CeleryProcessAdmin(ReadOnlyAdmin):
    list_display = ("name", "kind", "backend", "hostname", "pid", "parent", "started_at", "last_heartbeat_at")
    list_filter = ("backend", "kind")
    search_fields = ("name", "hostname")
