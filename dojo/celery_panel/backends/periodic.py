"""Periodic tasks: the static CELERY_BEAT_SCHEDULE and django-celery-beat's database entries,
read by dojo.ops.read_models.recurring."""

from typing import ClassVar

from dojo.celery_panel.backends.base import PeriodicTasksBackend
from dojo.celery_panel.pages import PeriodicTaskListPage
from dojo.ops.read_models.recurring import all_entries, database_entries, static_entries


class BeatScheduleBackend(PeriodicTasksBackend):
    """The static schedule from settings; beat keeps the last runs elsewhere (file or database)."""

    BACKEND_DESCRIPTION = "the static beat schedule"
    DATA_SOURCE: ClassVar[str] = "settings.CELERY_BEAT_SCHEDULE"

    def get_periodic_tasks(self) -> PeriodicTaskListPage:
        return PeriodicTaskListPage(tasks=static_entries())


class DjangoCeleryBeatBackend(PeriodicTasksBackend):
    """Entries stored by django-celery-beat (edited in the admin, run by its DatabaseScheduler)."""

    BACKEND_DESCRIPTION = "django-celery-beat's periodic tasks"
    DATA_SOURCE: ClassVar[str] = "django_celery_beat.models.PeriodicTask (database)"

    def get_periodic_tasks(self) -> PeriodicTaskListPage:
        return PeriodicTaskListPage(tasks=database_entries())


class BeatAndDatabasePeriodicTasksBackend(PeriodicTasksBackend):
    """Both sources, by name (a static entry beat's DatabaseScheduler copied keeps "static")."""

    BACKEND_DESCRIPTION = "the static beat schedule and django-celery-beat's entries, by name"
    DATA_SOURCE: ClassVar[str] = "settings.CELERY_BEAT_SCHEDULE and django_celery_beat.models.PeriodicTask"

    def get_periodic_tasks(self) -> PeriodicTaskListPage:
        return PeriodicTaskListPage(tasks=all_entries())
