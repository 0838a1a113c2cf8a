"""The queues the project is configured with (CELERY_TASK_QUEUES and the default queue)."""

from django.conf import settings


class UnknownQueue(ValueError):
    """The queue name is not one of the configured queues (a purge names configured queues only)."""


def configured_queues() -> list[str]:
    """Names of the configured queues, the default queue first."""
    default = settings.CELERY_TASK_DEFAULT_QUEUE
    names = [default, *(settings.CELERY_TASK_QUEUES or {})]
    return list(dict.fromkeys(names))


def default_queue() -> str:
    return settings.CELERY_TASK_DEFAULT_QUEUE
