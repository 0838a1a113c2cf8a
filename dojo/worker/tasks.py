"""The project's own Celery tasks."""

import os
import time
from pathlib import Path

from celery import Task, shared_task
from celery.exceptions import SoftTimeLimitExceeded

from dojo.ops.brokers.registry import get_broker
from dojo.ops.observe.history import record_snapshot
from dojo.ops.observe.rollups import prune as prune_rollups
from dojo.worker.concurrency import ConcurrencyLimitedTask


@shared_task(name="dojo.tasks.add")
def add(x: int, y: int) -> int:
    """Add two numbers: the smallest round trip through broker, worker and result backend."""
    return x + y


@shared_task(name="dojo.tasks.sleep")
def sleep(seconds: float) -> dict:
    """Sleep for `seconds`; report whether the soft time limit interrupted the sleep.

    Used to check that the configured time limits take effect on a real worker:
    past the soft limit this returns early, past the hard limit the worker kills it.
    """
    started = time.monotonic()
    try:
        time.sleep(seconds)
    except SoftTimeLimitExceeded:
        return {"slept": round(time.monotonic() - started, 2), "soft_time_limit_exceeded": True}
    return {"slept": round(time.monotonic() - started, 2), "soft_time_limit_exceeded": False}


@shared_task(name="dojo.tasks.prune_broker_files")
def prune_broker_files(max_age_seconds: int = 600) -> int:
    """Remove stale remote-control messages the embedded filesystem broker never cleans up
    (dojo.ops.brokers.filesystem); task messages are never touched. How many files were removed;
    0 on other brokers."""
    return get_broker().transport.prune_control_messages(max_age_seconds)


@shared_task(name="dojo.tasks.record_celery_snapshot", ignore_result=True)
def record_celery_snapshot() -> None:
    """Record the Celery status for the history and the alerts; drop what is older than the kept days."""
    record_snapshot()


@shared_task(name="dojo.tasks.append_line")
def append_line(path: str, line: str) -> int:
    """Append `line` to the file `path`, which must exist: the run fails while it does not.

    The controls' tests use it as a task that fails or succeeds on a condition they control, and
    whose runs leave a trace (retry runs the original arguments again; a revoked run leaves none).
    Returns how many lines the file has.
    """
    with Path(path).open("r+") as file:  # no create: a missing file is the failure
        lines = file.read().splitlines()
        file.write(line + "\n")
    return len(lines) + 1


@shared_task(
    name="dojo.tasks.limited_sleep",
    bind=True,
    base=ConcurrencyLimitedTask,
    concurrency_limit=2,
    concurrency_key="limited_sleep:{key}",
)
def limited_sleep(self, seconds: float, key: str = "demo") -> dict:
    """Sleep for `seconds`, at most 2 runs per `key` at once across the fleet (dojo.worker.concurrency).

    Returns when it ran and where, so a test can check that runs never overlapped beyond the limit.
    """
    return _timed_sleep(self, seconds)


def _timed_sleep(task: Task, seconds: float) -> dict:
    started = time.time()
    time.sleep(seconds)
    return {"started": started, "ended": time.time(), "hostname": task.request.hostname, "pid": os.getpid()}


@shared_task(name="dojo.tasks.back_off", bind=True)
def back_off(self, countdowns: list[float]) -> dict:
    """Retry itself once per entry of `countdowns`, waiting that many seconds each time, then
    succeed: a task that backs off, for the tests of the default expiry on retries.

    Returns how many retries it took and the ETA and expiry its last attempt ran with.
    """
    if self.request.retries < len(countdowns):
        raise self.retry(countdown=countdowns[self.request.retries], max_retries=len(countdowns))
    return {"retries": self.request.retries, "eta": self.request.eta, "expires": self.request.expires}


@shared_task(
    name="dojo.tasks.limited_sleep_one",
    bind=True,
    base=ConcurrencyLimitedTask,
    concurrency_limit=1,
    concurrency_key="limited_sleep_one:{key}",
)
def limited_sleep_one(self, seconds: float, key: str = "demo") -> dict:
    """limited_sleep with at most one run per `key` at once: on a worker with two pool processes,
    a second run with the same key waits for the slot (re-sending itself)."""
    return _timed_sleep(self, seconds)


@shared_task(name="dojo.tasks.fail_times", bind=True)
def fail_times(self, path: str, times: int, max_retries: int = 3) -> int:
    """Fail the first `times` runs (each retried at once, up to `max_retries`), then succeed:
    runs are counted as lines of the file `path` (made when missing). The analytics tests use it
    for RECOVERED (succeeds after retries) and CRITICAL (fails after its last retry). Returns
    the runs so far."""
    file = Path(path)
    with file.open("a+") as handle:
        handle.seek(0)
        runs = len(handle.read().splitlines())
        handle.write("run\n")
    if runs < times:
        raise self.retry(exc=ValueError(f"run {runs + 1} of {times} failing"), countdown=0, max_retries=max_retries)
    return runs + 1


@shared_task(name="dojo.tasks.prune_analytics", ignore_result=True)
def prune_analytics() -> dict[str, int]:
    """Delete the task analytics rows past their tier's retention (never the totals tier)."""
    return prune_rollups()
