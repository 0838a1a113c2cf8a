"""Signal handlers of the worker and beat processes: what each task run keeps with its result,
the heartbeats of the worker, its pool children and beat (dojo/worker/heartbeat.py), and the
concurrency slots the worker's main process gives back for runs it killed or lost
(dojo/worker/concurrency.py)."""

from celery.signals import beat_init, task_failure, task_prerun, task_revoked, worker_ready, worker_shutdown

from dojo.ops.brokers.registry import broker_alias_of
from dojo.worker.concurrency import release_lost_run, release_revoked_run
from dojo.worker.heartbeat import on_beat_init, on_worker_ready, on_worker_shutdown

worker_ready.connect(on_worker_ready)
worker_shutdown.connect(on_worker_shutdown)
beat_init.connect(on_beat_init)
task_revoked.connect(release_revoked_run)
task_failure.connect(release_lost_run)


@task_prerun.connect
def remember_queue(task, **_kwargs) -> None:
    """Keep the queue a task came from, the broker (DD_CELERY_BACKENDS alias) whose worker ran
    it and its publish options (priority, per-call time limits) with its stored result.

    django-celery-results stores `request.meta` with each result and nothing else about
    the delivery, so without this the panel could not say which queue ran a task, the
    dashboard could not count one broker's results apart from another's, and a retry
    (dojo.ops.controls.retry) could not publish the task with its original options.
    """
    request = task.request
    delivery_info = request.delivery_info or {}
    hard_limit, soft_limit = request.timelimit or (None, None)
    options = {"priority": delivery_info.get("priority"), "time_limit": hard_limit, "soft_time_limit": soft_limit}
    request.meta = {
        **(getattr(request, "meta", None) or {}),
        "queue": delivery_info.get("routing_key"),
        "backend": broker_alias_of(task.app.conf.broker_url),
        "options": {name: value for name, value in options.items() if value is not None},
    }
