"""Remote-control commands the project's workers answer.

`dojo_status` answers in one reply what the six built-in inspect commands (stats, active,
reserved, scheduled, registered, active_queues) answer in six; the StatusMarker step tells the
web side, in the built-in `stats` answer, that this worker knows it (dojo.ops.fleet.worker_reply).
"""

from celery import bootsteps
from celery.worker import control
from celery.worker.control import control_command, inspect_command

from dojo.ops.controls.pauses import RESUME_COMMAND
from dojo.ops.fleet.worker_reply import INSPECT_COMMANDS, STATUS_COMMAND, STATUS_MARKER, STATUS_VERSION, describe_worker
from dojo.ops.redaction import mask_url
from dojo.worker.startup import consumes_by_configuration


class StatusMarker(bootsteps.StartStopStep):
    """Adds STATUS_MARKER to the built-in `stats` answer (Celery merges the `info` of each worker
    StartStopStep into it), so the web side learns that this worker answers dojo_status before it
    sends it. Added to the worker's steps in dojo/celery.py by name (the web side never imports it)."""

    def info(self, worker) -> dict:
        return {STATUS_MARKER: STATUS_VERSION}


@inspect_command(name=STATUS_COMMAND)
def dojo_status(state, **kwargs) -> dict:
    """This worker's answers to the six built-in inspect commands, in one reply
    (dojo.ops.fleet.worker_reply.describe_worker), and its broker URL with secrets masked."""
    answers = {command: getattr(control, command)(state) for command in INSPECT_COMMANDS}
    return describe_worker(answers, mask_url(state.consumer.connection.as_uri(include_password=True)))


@control_command(name=RESUME_COMMAND, args=[("queue", str)], signature="<queue>")
def dojo_resume_queue(state, queue: str, **kwargs) -> dict:
    """Consume `queue` again, only if this worker's own configuration selects it: the built-in
    add_consumer would make every worker that gets it consume the queue."""
    if not consumes_by_configuration(queue):
        return {"resumed": False}
    state.consumer.add_task_queue(queue)
    return {"resumed": True}
