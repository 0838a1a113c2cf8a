"""Queues: the configured ones (Celery's declarations) and every queue a worker consumes."""

from typing import ClassVar

from django.conf import settings
from kombu import Queue

from dojo.celery_panel.backends.base import QueuesBackend
from dojo.celery_panel.backends.workers import unanswered
from dojo.celery_panel.pages import QueueDetailPage, QueueListPage, QueueRow
from dojo.ops.brokers.connection import BrokerUnavailable, broker_connection
from dojo.ops.brokers.queues import configured_queues
from dojo.ops.brokers.registry import get_broker
from dojo.ops.fleet.load import worker_loads
from dojo.ops.fleet.status import CeleryStatus
from dojo.ops.fleet.status_cache import get_status


class InspectQueuesBackend(QueuesBackend):
    """Bindings from Celery's queue declarations and the workers' answers; counts from the broker."""

    BACKEND_DESCRIPTION = "configured queues and the queues workers consume, with broker counts"
    DATA_SOURCE: ClassVar[str] = "Celery's app.amqp.queues, one dojo_status broadcast (cached) and the broker"

    def get_queues(self) -> QueueListPage:
        status = get_status()
        consumed = {
            name: load.consumed_by for name, load in worker_loads(status.worker_replies).items() if load.consumers
        }
        # A worker that did not say which queues it consumes may consume any: no count is known.
        counted = not any("active_queues" in unanswered(reply) for reply in status.worker_replies.values())
        rows = [self._configured_row(name, status, consumed.get(name, {}), counted) for name in configured_queues()]
        extra = {name: seen for name, seen in consumed.items() if name not in {row.name for row in rows}}
        ready = self._read_ready(sorted(extra)) if extra and status.broker_status else {}
        for name, by_worker in sorted(extra.items()):
            first = next(iter(by_worker.values()))
            rows.append(
                QueueRow(
                    name=name,
                    exchange=first.get("exchange"),
                    exchange_type=first.get("exchange_type"),
                    routing_key=first.get("routing_key"),
                    durable=first.get("durable"),
                    consumers=len(by_worker) if counted else None,
                    ready=ready.get(name),
                    configured=False,
                    consumed_by=sorted(by_worker),
                )
            )
        return QueueListPage(queues=rows, error=None if status.broker_status else status.error)

    def get_queue_detail(self, queue_name: str) -> QueueDetailPage:
        page = self.get_queues()
        queue = next((row for row in page.queues if row.name == queue_name), None)
        return QueueDetailPage(queue=queue, error=page.error if queue else f"No queue {queue_name!r} is known.")

    def _declaration(self, name: str) -> Queue:
        """Celery's declaration of the configured queue `name` (exchange, type, routing key, durability)."""
        declared = self.app.amqp.queues.get(name)
        if declared is None:  # configured after the app first read its settings (tests, reloads)
            declared = self.app.amqp.Queues(settings.CELERY_TASK_QUEUES or {})[name]
        return declared

    def _configured_row(self, name: str, status: CeleryStatus, by_worker: dict[str, dict], counted: bool) -> QueueRow:
        declared = self._declaration(name)
        state = status.queues.get(name)
        return QueueRow(
            name=name,
            exchange=declared.exchange.name if declared.exchange else None,
            exchange_type=declared.exchange.type if declared.exchange else None,
            routing_key=declared.routing_key,
            durable=declared.durable,
            consumers=(state.consumers if state else len(by_worker)) if counted else None,
            ready=state.ready if state else None,
            configured=True,
            consumed_by=sorted(by_worker),
        )

    @staticmethod
    def _read_ready(names: list[str]) -> dict[str, int]:
        """Ready messages of queues the status did not read (consumed but not configured)."""
        try:
            with broker_connection() as conn:
                return {name: depth.ready for name, depth in get_broker().transport.depths(conn, names).items()}
        except BrokerUnavailable:
            return {}
