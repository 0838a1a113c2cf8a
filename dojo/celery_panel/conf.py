"""DJ_CELERY_PANEL_SETTINGS: which backend class serves each page, read when called."""

from django.conf import settings
from django.utils.module_loading import import_string

from dojo.celery import app

DEFAULT_BACKENDS = {
    "tasks_backend": "dojo.celery_panel.backends.tasks.DjangoCeleryResultsTasksBackend",
    "workers_backend": "dojo.celery_panel.backends.workers.InspectWorkersBackend",
    "queues_backend": "dojo.celery_panel.backends.queues.InspectQueuesBackend",
    "periodic_tasks_backend": "dojo.celery_panel.backends.periodic.BeatAndDatabasePeriodicTasksBackend",
}


def panel_settings() -> dict[str, str]:
    return {**DEFAULT_BACKENDS, **getattr(settings, "DJ_CELERY_PANEL_SETTINGS", {})}


def backend(kind: str):
    """An instance of the backend class configured for `kind` ("tasks", "workers", ...)."""
    return import_string(panel_settings()[f"{kind}_backend"])(app)
