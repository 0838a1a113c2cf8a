"""Figures for the panel's Overview page that are not in the status document."""

import logging
from collections import Counter
from datetime import timedelta

from django.conf import settings
from django.db import DatabaseError
from django.db.models import CharField, Count, JSONField, Value
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import Cast
from django.utils import timezone

from dojo.ops.brokers.registry import DEFAULT_ALIAS

logger = logging.getLogger(__name__)

ACTIVITY_WINDOW = timedelta(hours=1)


def task_activity(backend: str | None = None) -> dict[str, int] | None:
    """Stored task results updated in the last hour, counted by state in one GROUP BY query;
    with `backend` (an alias), only those run by that backend's workers (the backend is kept in
    each result's meta by dojo.celery.remember_queue; a result without one is the main one's).

    None when results are not stored by django-celery-results, or could not be counted.
    """
    if settings.CELERY_RESULT_BACKEND != "django-db":
        return None
    from django_celery_results.models import TaskResult

    # The backend is read from the JSON text of meta only when asked for: the cast has a cost.
    ran_on = KeyTextTransform("backend", Cast("meta", JSONField())) if backend else Value(None, CharField())
    rows = (
        TaskResult.objects.filter(date_done__gte=timezone.now() - ACTIVITY_WINDOW)
        .annotate(ran_on=ran_on)
        .values_list("ran_on", "status")
        .annotate(n=Count("id"))
        .order_by()
    )
    activity: Counter = Counter()
    try:
        for ran_on, state, n in rows:
            if backend is None or (ran_on or DEFAULT_ALIAS) == backend:
                activity[state] += n
    except DatabaseError as exc:  # e.g. a meta that is not JSON
        logger.warning("Counting stored results by state failed: %s", exc)
        return None
    return dict(sorted(activity.items()))
