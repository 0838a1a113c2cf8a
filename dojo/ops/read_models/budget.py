"""One time budget for the broker reads of one request: each read runs at once in its own thread,
and the request takes what has come back by the deadline.

A read that misses the deadline is not waited for: its thread goes on until its own bound (every
broker call is bounded, dojo.ops.brokers.connection) and its result is dropped. The threads are
daemons of their own, not a shared pool, so reads stuck on one silent broker never queue the
reads of another. A thread closes the database connections it opened when it ends; reads that
need rows the request itself may hold in a transaction (tests) belong in the request's thread.
"""

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import TypeVar

from django.db import connections

from dojo.ops.brokers.connection import broker_timeout

T = TypeVar("T")
# One broker read takes its bound (DD_CELERY_BROKER_TIMEOUT) plus the moments to set it up and
# hand it back: a status read on AMQP waits the whole bound for unknown workers, by design.
GRACE_SECONDS = 0.25


class OutOfTime(Exception):
    """The read did not answer within the request's budget."""


class Budget:
    def __init__(self, seconds: float, what: str = "the broker") -> None:
        self.seconds = seconds
        self.what = what
        self.deadline = time.monotonic() + seconds

    def remaining(self) -> float:
        return max(0.0, self.deadline - time.monotonic())

    @property
    def reason(self) -> str:
        return f"{self.what} did not answer within {self.seconds:g} s"

    def start(self, read: Callable[[], T], name: str = "read") -> "Future[T]":
        """Run `read` in a thread of its own now; its outcome lands in the future returned."""
        future: Future[T] = Future()
        future.set_running_or_notify_cancel()

        def run() -> None:
            try:
                future.set_result(read())
            except Exception as exc:  # handed to whoever takes the result
                future.set_exception(exc)
            finally:
                connections.close_all()  # this thread's own connections only

        threading.Thread(target=run, name=f"dojo-budget-{name}", daemon=True).start()
        return future

    def result(self, future: "Future[T]") -> T:
        """The read's result, waiting at most until the deadline; raises what the read raised, or
        OutOfTime (with `reason`) when it is still running then."""
        try:
            return future.result(timeout=self.remaining())
        except TimeoutError as exc:
            raise OutOfTime(self.reason) from exc


def broker_budget() -> Budget:
    """The budget of a request that reads the broker: one broker bound, from now."""
    return Budget(broker_timeout() + GRACE_SECONDS)


def done(value: T) -> "Future[T]":
    """A read already made, for callers that pass one in."""
    future: Future[T] = Future()
    future.set_result(value)
    return future
