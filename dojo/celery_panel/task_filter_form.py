"""The TaskFilter as a GET form on a panel page: read from the URL, shown in the form
(celery_panel/_task_filter_form.html, the same field names as the bulk page's), refused with the
field's message.

The tasks page also keeps its older parameters working, so old bookmarks show the same set:
`filter=<link>` is a backend's filter link (for the stored results, `filter=failure` is
state=FAILURE) and `q=` is an exact task id or, when the backend takes the TaskFilter, the task
name's beginning (task_name_prefix). A backend says which TaskFilter fields it applies in
TASK_FILTER_FIELDS (docs/celery_panel_backends.md); a field it does not apply is refused, naming it,
rather than silently ignored.
"""

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlencode

from dojo.celery_panel.backends.tasks import looks_like_task_id
from dojo.ops.brokers.registry import configured_brokers
from dojo.ops.read_models.task_filter import (
    FILTER_FIELDS,
    MAX_ARGS_TEXT,
    MAX_TEXT,
    STORED_STATES,
    FilterError,
    TaskFilter,
)

TASK_DATA_REFUSAL = "filters on task data; it needs the permission to see task data."


@dataclass(frozen=True)
class FormField:
    name: str
    label: str
    kind: str = "text"  # or "state" (a select of the stored states) or "backend" (a select of the aliases)
    maxlength: int = MAX_TEXT
    placeholder: str = ""


FORM_FIELDS = (
    FormField("task_name", "Task name (exact)"),
    FormField("task_name_prefix", "or its beginning"),
    FormField("state", "State", "state"),
    FormField("exception_type", "Exception type", placeholder="ValueError or smtplib.SMTPServerDisconnected"),
    FormField("done_after", "Done at or after", maxlength=64, placeholder="2026-01-31T12:00:00Z"),
    FormField("done_before", "Done before", maxlength=64, placeholder="2026-01-31T14:00:00Z"),
    FormField("queue", "Queue"),
    FormField("worker", "Worker"),
    FormField("backend", "Backend", "backend"),
    FormField("args_contain", "Arguments contain", maxlength=MAX_ARGS_TEXT),
)
FORM_FIELD_NAMES = tuple(form_field.name for form_field in FORM_FIELDS)
assert FORM_FIELD_NAMES == FILTER_FIELDS, "the form shows every TaskFilter field, in its order"


def read_filter(query: Mapping[str, Any], task_data: bool) -> TaskFilter:
    """TaskFilter.from_query, and args_contain only for a user who may see task data."""
    task_filter = TaskFilter.from_query(query)
    if task_filter.args_contain and not task_data:
        raise FilterError("args_contain", TASK_DATA_REFUSAL)
    return task_filter


def form_context(
    values: Mapping[str, str], *, task_data: bool, applies: Collection[str], error: FilterError | None = None
) -> dict[str, Any]:
    """What _task_filter_form.html renders: the fields `applies` names (args_contain only with the
    task-data right), each with its value from `values` and the error's message if it is the one."""
    shown = [
        form_field
        for form_field in FORM_FIELDS
        if form_field.name in applies and (form_field.name != "args_contain" or task_data)
    ]
    return {
        "fields": [
            {
                "field": form_field,
                "value": values.get(form_field.name) or "",
                "error": error.message if error and error.field == form_field.name else "",
            }
            for form_field in shown
        ],
        "states": STORED_STATES,
        "backends": list(configured_brokers()),
        "error": error,
        "applied_labels": [form_field.label for form_field in shown],
        "other_labels": [form_field.label for form_field in FORM_FIELDS if form_field.name not in applies],
    }


@dataclass(frozen=True)
class TasksPageQuery:
    """The tasks page's URL, read: what the backend is asked and what the page links to."""

    values: dict[str, str]  # for the form: the filter's fields as text (the URL's own on an error)
    task_filter: TaskFilter | None = None  # None on an error, or when the backend takes no TaskFilter
    error: FilterError | None = None
    search: str = ""  # the search the backend gets: an exact task id, or q as given to an older backend
    filter_type: str | None = None  # a filter link that is no TaskFilter condition (a live list, a custom one)
    applies: tuple[str, ...] = ()
    links: list[dict[str, Any]] = field(default_factory=list)

    @property
    def extra_query(self) -> dict[str, str]:
        """The parameters besides the TaskFilter fields that the page's own links keep."""
        extra = {"filter": self.filter_type or "", "q": self.search}
        return {name: value for name, value in extra.items() if value}

    @property
    def query(self) -> str:
        """The page's set as a URL query (no page number): the filter's to_query() and the rest."""
        parts = [self.task_filter.to_query() if self.task_filter else "", urlencode(self.extra_query)]
        return "&".join(part for part in parts if part)

    @property
    def lists_stored_results(self) -> bool:
        """The listed set is `stored_results(task_filter)`: a bulk action on it means the same set."""
        return bool(self.task_filter is not None and set(FILTER_FIELDS) <= set(self.applies) and not self.search)


def _preset(choices: list[dict[str, Any]], filter_type: str | None) -> dict[str, Any] | None:
    """The backend's filter link named `filter_type` when it is a TaskFilter condition."""
    if not filter_type:
        return None
    for choice in choices:
        value = choice.get("value")
        if isinstance(value, str) and value.lower() == filter_type.lower() and isinstance(choice.get("filter"), dict):
            return choice
    return None


def _merge_preset(values: dict[str, str], preset: dict[str, Any]) -> None:
    for name, value in preset["filter"].items():
        given = (values.get(name) or "").strip()
        if given and given.upper() != str(value).upper():
            raise FilterError(
                "filter", f"the {preset['label']} link means {name}={value or 'any'}; the URL also says {name}={given}."
            )
        values[name] = value


def _refuse_unapplied(task_filter: TaskFilter, applies: tuple[str, ...], backend_name: str) -> None:
    for name in task_filter.to_dict():
        if name not in applies:
            which = ", ".join(applies) if applies else "none of the filter's fields"
            raise FilterError(name, f"{backend_name} does not filter on it (it filters on: {which}).")


def _links(parsed: TasksPageQuery, choices: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The backend's filter links, each keeping the rest of the page's filter."""
    links = []
    for choice in choices:
        condition = choice.get("filter") if isinstance(choice.get("filter"), dict) else None
        if condition is not None and parsed.task_filter is not None:
            linked = replace(parsed, task_filter=replace(parsed.task_filter, **condition), filter_type=None)
            current = not parsed.filter_type and all(
                getattr(parsed.task_filter, name) == value for name, value in condition.items()
            )
        else:
            linked = replace(parsed, filter_type=choice.get("value"))
            current = choice.get("value") == parsed.filter_type
        links.append({"label": choice.get("label"), "query": linked.query, "current": current})
    return links


def tasks_page_query(query: Mapping[str, Any], tasks_backend: Any, task_data: bool) -> TasksPageQuery:
    """The tasks page's URL read for `tasks_backend`; a bad value gives `error` (a FilterError
    naming the field) rather than raising, so the page can show it next to the form."""
    applies = tuple(name for name in getattr(tasks_backend, "TASK_FILTER_FIELDS", ()) if name in FILTER_FIELDS)
    choices = list(getattr(tasks_backend, "AVAILABLE_FILTERS", []) or [])
    filter_type = query.get("filter") or getattr(tasks_backend, "DEFAULT_FILTER", None)
    search = (query.get("q") or "").strip()
    values = {name: query[name] for name in FILTER_FIELDS if isinstance(query.get(name), str)}
    try:
        preset = _preset(choices, filter_type) if applies else None
        if preset:
            _merge_preset(values, preset)
            filter_type = None
        if search and applies and not looks_like_task_id(search):
            # q's older meaning, the task name's beginning, is the filter's task_name_prefix.
            given = (values.get("task_name_prefix") or "").strip()
            if (values.get("task_name") or "").strip() or (given and given != search):
                raise FilterError("q", "a name in q is the task name's beginning: give it there or in the filter.")
            values["task_name_prefix"] = search
            search = ""
        task_filter = read_filter(values, task_data)
        _refuse_unapplied(task_filter, applies, type(tasks_backend).__name__)
    except FilterError as error:
        parsed = TasksPageQuery(values=values, error=error, search=search, filter_type=filter_type, applies=applies)
        return replace(parsed, links=_links(parsed, choices))
    parsed = TasksPageQuery(
        values=task_filter.to_dict(),
        task_filter=task_filter if applies else None,
        search=search,
        filter_type=filter_type,
        applies=applies,
    )
    return replace(parsed, links=_links(parsed, choices))
