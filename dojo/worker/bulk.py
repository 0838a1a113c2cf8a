"""The runner of bulk operations (dojo.ops.controls.bulk) and beat's resume of those whose runner died."""

from celery import shared_task

from dojo.ops.controls.bulk import resume_stale, run_operation


@shared_task(name="dojo.tasks.run_bulk_operation", bind=True, ignore_result=True)
def run_bulk_operation(self, operation_id: int) -> str:
    """Run the bulk operation `operation_id` batch by batch until done, cancelled or failed.

    Not acks_late: a runner that dies is found by resume_bulk_operations (its operation's row is
    no longer updated) and sent again; it goes on from the operation's cursor.
    """
    return run_operation(operation_id, self.request.id or f"eager-{operation_id}")


@shared_task(name="dojo.tasks.resume_bulk_operations", ignore_result=True)
def resume_bulk_operations() -> list[int]:
    """Send a runner again for the pending or running operations not updated for DD_BULK_STALE_SECONDS."""
    return resume_stale()
