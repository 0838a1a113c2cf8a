"""The Celery configuration for the panel's Configuration page, grouped and with every secret masked.

Values are read from Django's CELERY_* settings when called (Celery's own default where a
setting is absent), and masked by dojo.ops.redaction.mask (the project's one rule for secrets).
"""

from dataclasses import dataclass
from pprint import pformat
from typing import Any

from celery.app.defaults import DEFAULTS
from django.conf import settings

from dojo.ops.redaction import mask

GROUPS: dict[str, list[str]] = {
    "Broker": [
        "broker_url",
        "broker_read_url",
        "broker_write_url",
        "broker_transport_options",
        "broker_connection_retry_on_startup",
        "broker_connection_timeout",
        "broker_heartbeat",
        "broker_pool_limit",
        "broker_use_ssl",
        "broker_login_method",
    ],
    "Result backend": [
        "result_backend",
        "result_backend_transport_options",
        "result_extended",
        "result_serializer",
        "result_compression",
        "result_expires",
        "result_persistent",
    ],
    "Tasks": [
        "task_serializer",
        "accept_content",
        "task_compression",
        "task_time_limit",
        "task_soft_time_limit",
        "task_acks_late",
        "task_acks_on_failure_or_timeout",
        "task_reject_on_worker_lost",
        "task_track_started",
        "task_ignore_result",
        "task_always_eager",
        "task_default_rate_limit",
        "task_annotations",
    ],
    "Workers": [
        "worker_pool",
        "worker_concurrency",
        "worker_prefetch_multiplier",
        "worker_max_tasks_per_child",
        "worker_max_memory_per_child",
        "worker_send_task_events",
        "worker_enable_remote_control",
    ],
    "Beat": [
        "beat_scheduler",
        "beat_schedule",
        "beat_schedule_filename",
        "beat_max_loop_interval",
        "timezone",
        "enable_utc",
    ],
    "Queues and routing": [
        "task_default_queue",
        "task_queues",
        "task_routes",
        "task_create_missing_queues",
        "task_default_exchange",
        "task_default_exchange_type",
        "task_default_routing_key",
        "task_default_priority",
        "task_queue_max_priority",
        "task_inherit_parent_priority",
    ],
}


@dataclass(frozen=True)
class Setting:
    name: str  # Celery's name (broker_url) or the Django setting's
    value: str  # masked, pretty-printed
    is_default: bool = False


def _show(value: Any) -> str:
    return value if isinstance(value, str) else pformat(value, width=100, sort_dicts=True)


def celery_settings() -> dict[str, list[Setting]]:
    """The grouped Celery settings, then "Other" for every further CELERY_* Django setting."""
    grouped: dict[str, list[Setting]] = {}
    listed: set[str] = set()
    for group, keys in GROUPS.items():
        grouped[group] = []
        for key in keys:
            django_name = f"CELERY_{key.upper()}"
            listed.add(django_name)
            is_default = not hasattr(settings, django_name)
            value = DEFAULTS.get(key) if is_default else getattr(settings, django_name)
            grouped[group].append(Setting(key, _show(mask(value, key)), is_default))
    other = sorted(name for name in dir(settings) if name.startswith("CELERY_") and name not in listed)
    grouped["Other (project settings)"] = [
        Setting(name, _show(mask(getattr(settings, name), name.removeprefix("CELERY_")))) for name in other
    ]
    return grouped
