"""Figures for the panel's Overview page that are not in the status document."""

from datetime import timedelta

from django.conf import settings
from django.db.models import Count
from django.utils import timezone

ACTIVITY_WINDOW = timedelta(hours=1)


def task_activity() -> dict[str, int] | None:
    """Stored task results updated in the last hour, counted by state in one GROUP BY query.

    None when results are not stored by django-celery-results.
    """
    if settings.CELERY_RESULT_BACKEND != "django-db":
        return None
    from django_celery_results.models import TaskResult

    since = timezone.now() - ACTIVITY_WINDOW
    rows = TaskResult.objects.filter(date_done__gte=since).values("status").annotate(n=Count("id")).order_by("status")
    return {row["status"]: row["n"] for row in rows}
