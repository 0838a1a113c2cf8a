"""One filter vocabulary for stored task results: the tasks page's URL, the API and bulk actions
all read a `TaskFilter` the same way, so a bookmarked or reloaded page and a bulk operation's
preview mean exactly the same set.

What the stored results (django-celery-results' TaskResult) can be filtered on:
- task_name (exact) or task_name_prefix;
- state: a stored Celery state (PENDING, RECEIVED, STARTED, SUCCESS, FAILURE, RETRY, REVOKED). The
  derived RECOVERED and CRITICAL are refused with a ValueError: a stored result does not keep how
  many retries came before it (django-celery-results has no such column and the workers' meta
  does not record it), so neither can be told from a plain SUCCESS or FAILURE here; the task
  analytics (TaskRollup) count them from events instead;
- exception_type: the stored failure's exception class, "ValueError" or qualified with its module
  ("smtplib.SMTPServerDisconnected"), matched on the JSON the backend stores;
- done_after / done_before: date_done in [after, before) (a window that ends before it starts
  matches nothing: the preview says 0). There is no received window: a stored
  result does not keep when its task was received (date_created is when the row was written);
- queue and backend: from the meta the project's workers store (dojo.worker.signals.remember_queue);
  a result without a backend in its meta counts for the main one;
- worker: the worker's full name, exact;
- args_contain: text found in the stored args or kwargs (task data: callers check the right).

A live task (active, reserved or scheduled on a worker) is matched by `matches_live` on the fields
it has (LIVE_FIELDS: its name, worker, queue when the worker said, arguments); it has no stored
state, exception or done time, so a filter that sets one of those matches no live task.

`backend` alone does not narrow anything (`is_empty` says so): "everything on this backend" is
still everything.
"""

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from django.db.models import JSONField, Q, QuerySet, TextField, Value
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import Cast, Coalesce
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from dojo.ops.brokers.registry import DEFAULT_ALIAS, UnknownBroker, get_broker

STORED_STATES = ("PENDING", "RECEIVED", "STARTED", "SUCCESS", "FAILURE", "RETRY", "REVOKED")
DERIVED_STATES = ("RECOVERED", "CRITICAL")
MAX_TEXT = 255  # task names, queues, workers, backends and exception types are at most this long
MAX_ARGS_TEXT = 1000  # "arguments contain": stored args are cut at 1024 characters anyway
TEXT_FIELDS = ("task_name", "task_name_prefix", "state", "exception_type", "queue", "worker", "backend")
TIME_FIELDS = ("done_after", "done_before")
LIVE_FIELDS = ("task_name", "task_name_prefix", "queue", "worker", "args_contain")


class FilterError(ValueError):
    """A filter value that cannot be used; `field` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True)
class TaskFilter:
    task_name: str = ""
    task_name_prefix: str = ""
    state: str = ""
    exception_type: str = ""
    done_after: datetime | None = None
    done_before: datetime | None = None
    queue: str = ""
    worker: str = ""
    backend: str = ""
    args_contain: str = ""

    @classmethod
    def from_query(cls, query: Mapping[str, Any]) -> "TaskFilter":
        """The filter in `query` (a QueryDict, a dict of strings, or the API's JSON object);
        other keys are ignored. Raises FilterError (a ValueError) naming the field."""
        values: dict[str, Any] = {}
        for name in (*TEXT_FIELDS, "args_contain"):
            values[name] = _text(query, name, MAX_ARGS_TEXT if name == "args_contain" else MAX_TEXT)
        for name in TIME_FIELDS:
            values[name] = _time(query, name)
        if values["task_name"] and values["task_name_prefix"]:
            raise FilterError("task_name_prefix", "give task_name (exact) or task_name_prefix, not both.")
        state = values["state"].upper()
        if state in DERIVED_STATES:
            raise FilterError(
                "state", f"{state} cannot be told from a stored result (its retries are not stored); use the analytics."
            )
        if state and state not in STORED_STATES:
            raise FilterError("state", f"must be one of {', '.join(STORED_STATES)}.")
        values["state"] = state
        if values["backend"]:
            try:
                get_broker(values["backend"])
            except UnknownBroker as exc:
                raise FilterError("backend", str(exc)) from None
        return cls(**values)

    def to_dict(self) -> dict[str, str]:
        """The set fields as strings, in field order (times in ISO 8601 UTC): JSON and URLs."""
        out = {}
        for name, value in asdict(self).items():
            if isinstance(value, datetime):
                out[name] = value.astimezone(UTC).isoformat()
            elif value:
                out[name] = value
        return out

    def to_query(self) -> str:
        """The filter as a URL query string, stable: the same filter always gives the same text."""
        return urlencode(self.to_dict())

    @property
    def is_empty(self) -> bool:
        """Nothing narrows the set (a backend alone does not)."""
        return not any(value for name, value in asdict(self).items() if name != "backend")

    @property
    def backend_alias(self) -> str:
        return self.backend or DEFAULT_ALIAS

    def digest(self, *extra: str) -> str:
        """sha256 of the normalized filter (and `extra`, e.g. the action): the same set of
        conditions always gives the same digest, whatever order or spelling they came in."""
        normalized = json.dumps([self.to_dict(), list(extra)], sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(normalized.encode()).hexdigest()


def live_text(value: Any) -> str:
    """A live task's args or kwargs as text to look in: a repr string as it came (argsrepr), any
    other value as its repr, which is how the stored argsrepr spells it."""
    return value if isinstance(value, str) else repr(value)


def matches_live(
    task_filter: TaskFilter, *, name: str | None, worker: str | None, queue: str | None, args: Any, kwargs: Any
) -> bool:
    """Whether a live task matches `task_filter`. The fields a live task has not (state, exception
    type, done window, backend) match nothing when set; a queue the worker did not say is no match."""
    f = task_filter
    if f.state or f.exception_type or f.done_after or f.done_before or f.backend:
        return False
    name = name or ""
    if (f.task_name and name != f.task_name) or (f.task_name_prefix and not name.startswith(f.task_name_prefix)):
        return False
    if (f.worker and worker != f.worker) or (f.queue and queue != f.queue):
        return False
    return not f.args_contain or f.args_contain in live_text(args) or f.args_contain in live_text(kwargs)


def _text(query: Mapping[str, Any], name: str, limit: int) -> str:
    value = query.get(name)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise FilterError(name, "must be a string.")
    value = value.strip()
    if len(value) > limit:
        raise FilterError(name, f"at most {limit} characters.")
    if "\x00" in value:
        raise FilterError(name, "must not contain NUL characters.")
    return value


def _time(query: Mapping[str, Any], name: str) -> datetime | None:
    text = _text(query, name, 64)
    if not text:
        return None
    try:
        parsed = parse_datetime(text)
    except ValueError:
        parsed = None
    if parsed is None:
        raise FilterError(name, "must be an ISO 8601 date and time, e.g. 2026-01-31T12:00:00Z.")
    if timezone.is_naive(parsed):
        parsed = timezone.make_aware(parsed)  # in the project's time zone, as the pages show times
    return parsed


def stored_results(task_filter: TaskFilter) -> QuerySet:
    """The TaskResult rows `task_filter` matches, unordered and unsliced: callers bound it (a
    count, a keyset page on (date_done, id) or on id). Conditions on indexed columns (task_name,
    status, worker, date_done) come first; queue and backend read the meta's JSON text."""
    from django_celery_results.models import TaskResult

    rows = TaskResult.objects.order_by()
    f = task_filter
    if f.task_name:
        rows = rows.filter(task_name=f.task_name)
    if f.task_name_prefix:
        rows = rows.filter(task_name__startswith=f.task_name_prefix)
    if f.state:
        rows = rows.filter(status=f.state)
    if f.worker:
        rows = rows.filter(worker=f.worker)
    if f.done_after:
        rows = rows.filter(date_done__gte=f.done_after)
    if f.done_before:
        rows = rows.filter(date_done__lt=f.done_before)
    if f.exception_type:
        module, _, name = f.exception_type.rpartition(".")
        rows = rows.filter(result__contains=json.dumps({"exc_type": name})[1:-1])
        if module:
            rows = rows.filter(result__contains=json.dumps({"exc_module": module})[1:-1])
    if f.args_contain:
        rows = rows.filter(Q(task_args__contains=f.args_contain) | Q(task_kwargs__contains=f.args_contain))
    if f.queue or f.backend:
        # Coalesce makes them plain text: a key transform compared as such would read the value as JSON.
        meta = Cast("meta", JSONField())
        rows = rows.annotate(
            meta_queue=Coalesce(KeyTextTransform("queue", meta), Value(""), output_field=TextField()),
            meta_backend=Coalesce(KeyTextTransform("backend", meta), Value(DEFAULT_ALIAS), output_field=TextField()),
        )
        if f.queue:
            rows = rows.filter(meta_queue=f.queue)
        if f.backend:
            rows = rows.filter(meta_backend=f.backend)
    return rows


FILTER_FIELDS = tuple(field.name for field in fields(TaskFilter))
