from datetime import UTC, datetime

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser
from rest_framework.renderers import JSONRenderer

from dojo.api_v2.serializers import status_document
from dojo.api_v2.views import CELERY_DISABLED
from dojo.ops.durations import duration_words
from dojo.ops.fleet.status import CeleryStatus
from dojo.ops.fleet.status_cache import get_status
from dojo.ops.observe.readiness import Readiness, readiness


def table(rows: list[list[str]], indent: str = "  ") -> list[str]:
    """Rows as left-aligned columns."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [indent + "  ".join(map(str.ljust, row, widths)).rstrip() for row in rows]


class Command(BaseCommand):
    help = (
        "Show the Celery status: broker, workers, queues, alerts and task limits. Exits 0 when ready "
        "(the broker answers and at least DD_CELERY_MIN_WORKERS workers do), else 1: for cron jobs and scripts."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--json", action="store_true", help="Print the API's status document as JSON.")
        parser.add_argument("--refresh", action="store_true", help="Read the broker now instead of the cache.")
        parser.add_argument(
            "--min-workers", type=int, metavar="N", help="Workers needed to be ready (default DD_CELERY_MIN_WORKERS)."
        )

    def handle(self, *args, json: bool, refresh: bool, min_workers: int | None, **options) -> None:
        status = get_status(refresh=refresh) if settings.CELERY_ENABLED else None
        result = readiness(status, min_workers)
        if json:
            document = status_document(status) if status else CELERY_DISABLED
            self.stdout.write(JSONRenderer().render(document, renderer_context={"indent": 2}).decode())
            if not result.ready:  # stdout stays parseable; the reason goes to stderr
                self.stderr.write(f"Not ready: {'; '.join(result.reasons)}")
        else:
            self.stdout.write("\n".join(self.summary(status, result)))
        if not result.ready:
            raise SystemExit(1)

    def summary(self, status: CeleryStatus | None, result: Readiness) -> list[str]:
        if status is None:
            return [CELERY_DISABLED["message"], self.ready_line(result)]
        if status.broker_status:
            lines = [f"Broker: reachable, {status.broker_url}"]
        else:
            lines = [f"Broker: UNREACHABLE, {status.broker_url}", f"  error: {status.error}"]
        lines.append(f"Workers: {status.workers} answering (ready needs {result.min_workers})")
        details = status.queue_details
        rows = [
            [
                name,
                f"active {len(details['active'][name])}",
                f"reserved {len(details['reserved'][name])}",
                f"scheduled {len(details['scheduled'][name])}",
                f"concurrency {self.concurrency(status, name)}",
            ]
            for name in status.worker_names
        ]
        lines += table(rows) if rows else []
        lines.append("Queues:")
        if status.queues:
            lines += table(
                [
                    [name, f"ready {self.count(queue.ready)}", f"consumers {self.count(queue.consumers)}"]
                    for name, queue in status.queues.items()
                ]
            )
        else:
            lines.append("  unknown (the broker did not answer)")
        ready_messages = sum(queue.ready or 0 for queue in status.queues.values())
        lines.append(
            f"Totals: {status.workers} worker(s), {self.count(status.active_tasks)} active, "
            f"{self.count(status.reserved_tasks)} reserved, {self.count(status.scheduled_tasks)} scheduled, "
            f"{ready_messages} ready in queues"
        )
        lines.append(f"Alerts: {len(status.alerts) or 'none'}")
        lines += [f"  {alert.severity.upper()}: {alert.message}" for alert in status.alerts]
        if status.database_error:
            lines.append(f"  database error: {status.database_error}")
        lines.append(
            f"Task limits: time limit {duration_words(status.task_time_limit)}, "
            f"soft time limit {duration_words(status.task_soft_time_limit)}, "
            f"default expiry {duration_words(status.task_default_expires)}"
        )
        read_at = datetime.fromtimestamp(status.read_at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        lines.append(f"Read at: {read_at}")
        lines.append(self.ready_line(result))
        return lines

    @staticmethod
    def ready_line(result: Readiness) -> str:
        return "Ready: yes" if result.ready else f"Ready: NO ({'; '.join(result.reasons)})"

    @staticmethod
    def concurrency(status: CeleryStatus, worker: str) -> str:
        pool = (status.worker_stats.get(worker) or {}).get("pool") or {}
        return str(pool.get("max-concurrency") or "?")

    @staticmethod
    def count(value: int | None) -> str:
        return "?" if value is None else str(value)
