"""Counting the results django-celery-results stores, in one grouped query: the queues table's
failed/finished (24 h, by broker and queue), the overview's and dashboard's recent activity
(1 h, by state) and the /metrics results family (1 h, by state and task name).

The broker alias and the queue are read from the JSON text of each result's `meta` (workers keep
them there: dojo.worker.signals.remember_queue); a result without a broker counts for the main
one. `meta` is cast only when a meta key is grouped on: the cast has a cost. date_done is indexed
(django-celery-results' own index), so a count `within` a window reads an index range, not the
table: keep `within` on every frequent count.
"""

import logging
from collections import Counter
from datetime import timedelta

from django.conf import settings
from django.db import DatabaseError
from django.db.models import Count, F, JSONField
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import Cast
from django.utils import timezone

from dojo.ops.brokers.registry import DEFAULT_ALIAS

logger = logging.getLogger(__name__)

ACTIVITY_WINDOW = timedelta(hours=1)
META_KEYS = {"backend": DEFAULT_ALIAS, "queue": ""}  # grouped meta key -> its value when absent
COLUMNS = ("status", "task_name")


def results_stored() -> bool:
    """Whether results are stored by django-celery-results (the project's default), so they can be counted."""
    return settings.CELERY_RESULT_BACKEND == "django-db"


def count_results(
    group_by: tuple[str, ...], within: timedelta | None = None, states: tuple[str, ...] | None = None
) -> Counter:
    """Results done within `within` (all if None) in `states` (all if None), counted by the
    `group_by` keys (meta keys "backend", "queue"; columns "status", "task_name"), keyed by
    the tuple of their values. Raises DatabaseError (a meta that is not JSON, say)."""
    from django_celery_results.models import TaskResult

    rows = TaskResult.objects.all()
    if within is not None:
        rows = rows.filter(date_done__gte=timezone.now() - within)
    if states is not None:
        rows = rows.filter(status__in=states)
    meta = Cast("meta", JSONField())
    grouped = {key: KeyTextTransform(key, meta) if key in META_KEYS else F(key) for key in group_by}
    # The explicit (empty) order replaces the model's -date_done, which would join the GROUP BY.
    rows = rows.annotate(**{f"by_{key}": value for key, value in grouped.items()})
    rows = rows.values_list(*(f"by_{key}" for key in group_by)).annotate(n=Count("id")).order_by()
    counts: Counter = Counter()
    for *values, n in rows:
        counts[tuple(value or META_KEYS.get(key, "") for key, value in zip(group_by, values, strict=True))] += n
    return counts


def recent_activity(broker_alias: str | None = None) -> dict[str, int] | None:
    """Results done in the last ACTIVITY_WINDOW by state; with `broker_alias`, only those run by
    that broker's workers. None when results are not stored here, or could not be counted."""
    if not results_stored():
        return None
    try:
        if broker_alias is None:
            counts = {state: n for (state,), n in count_results(("status",), ACTIVITY_WINDOW).items()}
        else:
            grouped = count_results(("backend", "status"), ACTIVITY_WINDOW)
            counts = {state: n for (alias, state), n in grouped.items() if alias == broker_alias}
    except DatabaseError as exc:  # e.g. a meta that is not JSON
        logger.warning("Counting stored results by state failed: %s", exc)
        return None
    return dict(sorted(counts.items()))
