"""Which queues are paused: stored by the pause control (dojo.ops.controls.pauses), read by workers
as they start (dojo/worker/startup.py) and by the queues table."""

from dojo.models import QueuePause


def paused_queues(broker_alias: str) -> set[str]:
    """Names of the queues paused on the broker `broker_alias`."""
    return set(QueuePause.objects.filter(backend=broker_alias).values_list("queue", flat=True))
