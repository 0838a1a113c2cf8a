from django.conf import settings
from rest_framework.permissions import BasePermission


class IsSuperUser(BasePermission):
    """Only authenticated superusers."""

    def has_permission(self, request, view) -> bool:
        return bool(request.user and request.user.is_authenticated and request.user.is_superuser)


def controls_enabled() -> bool:
    """False when DD_CELERY_READ_ONLY turns every Celery control off."""
    return not settings.CELERY_READ_ONLY


class CanControlCelery(BasePermission):
    """A Celery control: refused in read-only mode, else needs the view's `celery_permission`
    (a codename of dojo.CeleryAuditLog's Meta permissions); superusers hold them all."""

    def has_permission(self, request, view) -> bool:
        if not controls_enabled():
            self.message = "Celery controls are turned off (DD_CELERY_READ_ONLY=true)."
            return False
        self.message = f"You need the permission dojo.{view.celery_permission}."
        user = request.user
        return bool(user and user.is_authenticated and user.has_perm(f"dojo.{view.celery_permission}"))


class IsStaff(BasePermission):
    """Staff users: what the admin's Celery pages show (no task arguments beyond truncated previews)."""

    def has_permission(self, request, view) -> bool:
        return bool(request.user and request.user.is_authenticated and request.user.is_staff)
