"""Who may see and do what, in one place: the REST API's permission classes and the pages' buttons
(dojo.celery_panel.controls) both use these rules. Hiding a button is a courtesy; the API is the guard."""

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from rest_framework.permissions import BasePermission


class IsSuperUser(BasePermission):
    """Only authenticated superusers."""

    def has_permission(self, request, view) -> bool:
        return bool(request.user and request.user.is_authenticated and request.user.is_superuser)


def controls_enabled() -> bool:
    """False when DD_CELERY_READ_ONLY turns every Celery control off."""
    return not settings.CELERY_READ_ONLY


def may_control(user: AbstractBaseUser | AnonymousUser | None, codename: str) -> bool:
    """Whether `user` may take the Celery control `codename` (a codename of dojo.CeleryAuditLog's
    Meta permissions; superusers hold them all), with the controls on."""
    return bool(controls_enabled() and user and user.is_authenticated and user.has_perm(f"dojo.{codename}"))


class CanControlCelery(BasePermission):
    """A Celery control: refused in read-only mode, else needs the view's `celery_permission`
    (a codename of dojo.CeleryAuditLog's Meta permissions); superusers hold them all."""

    def has_permission(self, request, view) -> bool:
        if not controls_enabled():
            self.message = "Celery controls are turned off (DD_CELERY_READ_ONLY=true)."
            return False
        self.message = f"You need the permission dojo.{view.celery_permission}."
        return may_control(request.user, view.celery_permission)


class IsStaff(BasePermission):
    """Staff users: what the admin's Celery pages show (no task arguments beyond truncated previews)."""

    def has_permission(self, request, view) -> bool:
        return bool(request.user and request.user.is_authenticated and request.user.is_staff)
