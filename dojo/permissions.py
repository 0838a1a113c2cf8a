"""Who may see and do what, in one place: the REST API's permission classes and the pages' buttons
(dojo.celery_panel.controls) both use these rules. Hiding a button is a courtesy; the API is the guard."""

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from rest_framework.permissions import BasePermission


class IsSuperUser(BasePermission):
    """Only authenticated superusers."""

    def has_permission(self, request, view) -> bool:
        return bool(request.user and request.user.is_authenticated and request.user.is_superuser)


# Django's own permission on stored results; the project asks it for task data on every page.
TASK_DATA_PERMISSION = "django_celery_results.view_taskresult"
TASK_DATA_HIDDEN = (
    "Arguments, results, tracebacks and meta are hidden: they need the permission "
    f"{TASK_DATA_PERMISSION} (or a superuser)."
)


def may_see_task_data(user: AbstractBaseUser | AnonymousUser | None) -> bool:
    """Whether `user` may see task arguments, keyword arguments, results, tracebacks and meta:
    superusers and holders of django-celery-results' own view permission. Everyone else sees a
    task's id, name, state, times, worker and queue."""
    return bool(user and user.is_authenticated and (user.is_superuser or user.has_perm(TASK_DATA_PERMISSION)))


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
