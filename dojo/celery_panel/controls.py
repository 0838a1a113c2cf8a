"""Which control buttons a page shows: none in read-only mode (DD_CELERY_READ_ONLY), else those of
the actions the user holds the permission for (dojo.CeleryAuditLog's Meta permissions). The
REST API checks the same again; hiding a button is a courtesy, not the guard."""

from dataclasses import dataclass

from celery import states
from django.http import HttpRequest

from dojo.models import SystemSettings
from dojo.ops.controls.retry import RETRYABLE_STATES
from dojo.ops.fleet.status import LIVE_STATES
from dojo.permissions import may_control

# The states a task has not started in (yet, or again): revoking it keeps it from running. Stored
# results use Celery's states; the live tasks backend the worker's lists (dojo.ops.fleet.status).
REVOCABLE_STATES = (states.PENDING, states.RECEIVED, states.RETRY, LIVE_STATES["reserved"], LIVE_STATES["scheduled"])
RUNNING_STATES = (states.STARTED, LIVE_STATES["active"])


@dataclass(frozen=True)
class Controls:
    pause: bool
    purge: bool
    run_periodic: bool
    toggle_periodic: bool
    retry: bool
    revoke: bool
    terminate: bool


def _allowed(request: HttpRequest, codename: str) -> bool:
    return may_control(request.user, codename)


def user_controls(request: HttpRequest) -> Controls:
    return Controls(
        pause=_allowed(request, "pause_queue"),
        purge=_allowed(request, "purge_queue") and SystemSettings.load().allow_queue_purge,
        run_periodic=_allowed(request, "run_periodic_task"),
        toggle_periodic=_allowed(request, "toggle_periodic_task"),
        retry=_allowed(request, "retry_task"),
        revoke=_allowed(request, "revoke_task"),
        terminate=_allowed(request, "terminate_task"),
    )


@dataclass(frozen=True)
class TaskControls:
    """The buttons of one task's page: each needs its permission and a state it applies to."""

    retry: bool
    revoke: bool
    terminate: bool

    @property
    def any(self) -> bool:
        return self.retry or self.revoke or self.terminate


def task_controls(request: HttpRequest, state: str) -> TaskControls:
    allowed = user_controls(request)
    return TaskControls(
        retry=allowed.retry and state in RETRYABLE_STATES,
        revoke=allowed.revoke and state in REVOCABLE_STATES,
        terminate=allowed.terminate and state in RUNNING_STATES,
    )
