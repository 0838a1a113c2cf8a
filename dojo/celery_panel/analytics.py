"""The task analytics pages (/admin/celery/analytics/...): the task table, one task name's page
and the failures grouped, for the backend chosen with ?backend= and the window chosen with
?window= (1h, 24h, 7d, 30d).

Thin views over dojo.ops.read_models.analytics, the read model the REST API serves too: this
module checks the parameters (a bad one is a 400 page naming it), blanks the task data the user
may not see (exception text and tracebacks, dojo.permissions.may_see_task_data), formats the
figures and draws the sparklines. The charts are drawn in the browser by celery_chart.js from the
read model's own series, embedded in the page with json_script (no second request, so the chart
shows exactly the figures of the page's tables).
"""

import dataclasses
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.contrib import admin
from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse, QueryDict
from django.shortcuts import render
from django.urls import reverse

from dojo.celery_panel.sorting import Header, SortedTable
from dojo.ops.brokers.registry import DEFAULT_ALIAS, Broker, UnknownBroker, configured_brokers, get_broker
from dojo.ops.durations import duration_words
from dojo.ops.read_models import analytics as read_model
from dojo.ops.redaction import mask_repr, redact
from dojo.permissions import may_control, may_see_task_data

WINDOW_LABELS = {"1h": "1 h", "24h": "24 h", "7d": "7 d", "30d": "30 d"}
DEFAULT_SORT = "-runs"
TASK_NAME_MAX = 255  # TaskRollup.task_name's length: a longer name has no rows
DATA_HIDDEN = "hidden: you may not see task data"
SPARK_WIDTH = 120
SPARK_HEIGHT = 22
OUTCOMES = ("succeeded", "failed", "retried", "revoked")  # the task page's runs chart


class BadParameter(ValueError):
    def __init__(self, name: str, message: str) -> None:
        super().__init__(f"{name}: {message}")
        self.name = name


@dataclass(frozen=True)
class TableColumn:
    label: str
    key: str  # a read_models.analytics.SORT_KEYS key
    help: str = ""

    @property
    def first_descending(self) -> bool:
        """Figures sort largest first on the first click, names from A."""
        return self.key != "task_name"


COLUMNS = [
    TableColumn("Task name", "task_name"),
    TableColumn("Runs", "runs", "Terminal runs (succeeded + failed) in the window; the line: runs per point."),
    TableColumn("Failure %", "failure_percent", "Failed runs of all runs."),
    TableColumn("Retry %", "retry_percent", "Retries of all runs."),
    TableColumn("p50", "runtime_p50", "Median runtime (to within one histogram bucket)."),
    TableColumn("p95", "runtime_p95", "95th percentile runtime; the line: p95 per point."),
    TableColumn("p99", "runtime_p99", "99th percentile runtime."),
    TableColumn("p95 wait", "wait_p95", "95th percentile of received -> started."),
    TableColumn("Worker time", "time_share_percent", "Share of all task names' runtime in the window."),
]


@dataclass(frozen=True)
class Figures:
    """A task name's figures (read_models.analytics.TaskStats) as the pages show them."""

    stats: Any

    @property
    def failure(self) -> str:
        return percent_text(self.stats.failure_percent)

    @property
    def retry(self) -> str:
        return percent_text(self.stats.retry_percent)

    @property
    def share(self) -> str:
        return percent_text(self.stats.time_share_percent)

    @property
    def p50(self) -> str:
        return seconds_text(self.stats.runtime_p50)

    @property
    def p95(self) -> str:
        return seconds_text(self.stats.runtime_p95)

    @property
    def p99(self) -> str:
        return seconds_text(self.stats.runtime_p99)

    @property
    def wait(self) -> str:
        return seconds_text(self.stats.wait_p95)


@dataclass(frozen=True)
class TableRow(Figures):
    """A row of the task table, with its link and its sparklines."""

    url: str = ""
    runs_path: str = ""
    p95_path: str = ""


@dataclass(frozen=True)
class SlowRunRow:
    run: Any  # read_models.analytics.SlowRun
    url: str

    @property
    def runtime_text(self) -> str:
        return seconds_text(self.run.runtime)


# --- parameters -------------------------------------------------------------------------------


def _choice(query: QueryDict, name: str, allowed: tuple[str, ...] | list[str], default: str) -> str:
    value = query.get(name, "") or default
    if value not in allowed:
        raise BadParameter(name, f"{value[:60]!r} is not one of {', '.join(allowed)}.")
    return value


def _window(query: QueryDict) -> str:
    return _choice(query, "window", list(read_model.WINDOWS), "24h")


def _sort(query: QueryDict) -> str:
    return _choice(query, "sort", [f"{sign}{key}" for key in read_model.SORT_KEYS for sign in ("", "-")], DEFAULT_SORT)


def _broker(query: QueryDict) -> Broker:
    try:
        return get_broker(query.get("backend"))
    except UnknownBroker as exc:
        raise BadParameter("backend", str(exc)) from None


def _task_name(query: QueryDict, required: bool) -> str:
    name = query.get("task_name", "").strip()
    if required and not name:
        raise BadParameter("task_name", "a task name is required.")
    if len(name) > TASK_NAME_MAX:
        raise BadParameter("task_name", f"longer than {TASK_NAME_MAX} characters.")
    if "\x00" in name:
        raise BadParameter("task_name", "must not contain NUL characters.")
    return name


# --- formatting -------------------------------------------------------------------------------


def seconds_text(value: float | None) -> str:
    """A runtime or wait for a table cell: "-" when unknown, ms below a second."""
    if value is None:
        return "-"
    if value < 1:
        return f"{value * 1000:.3g} ms"
    if value < 120:
        return f"{value:.3g} s"
    return f"{value / 60:.3g} min"


def percent_text(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} %"


def spark_path(values: list[float | int | None], width: int = SPARK_WIDTH, height: int = SPARK_HEIGHT) -> str:
    """An SVG path of `values` scaled to `width` x `height` (the largest at the top, 0 at the
    bottom); an unknown value breaks the line and a value alone between unknown ones is a dot
    (a zero-length segment, drawn with round caps). "" when no value is known."""
    known = [value for value in values if value is not None]
    if not known:
        return ""
    top = max(known) or 1
    step = width / max(1, len(values) - 1)
    runs: list[list[str]] = [[]]
    for index, value in enumerate(values):
        if value is None:
            runs.append([])
            continue
        runs[-1].append(f"{index * step:.1f} {height - 1 - (value / top) * (height - 2):.1f}")
    return " ".join(
        f"M{run[0]} " + (" ".join(f"L{point}" for point in run[1:]) if len(run) > 1 else "h0.01") for run in runs if run
    )


def _times(points: list[datetime]) -> list[str]:
    return [point.isoformat() for point in points]


def chart_data(detail: Any) -> dict[str, Any]:
    """The task page's charts: the read model's series as celery_analytics.js draws them."""
    series = detail.series
    return {
        "since": detail.since.isoformat(),
        "until": detail.until.isoformat(),
        "point_seconds": detail.point_seconds,
        "times": _times([point.start for point in series]),
        "runs": {key: [getattr(point, key) for point in series] for key in OUTCOMES},
        "runtime": {key: [getattr(point, f"runtime_{key}") for point in series] for key in ("p50", "p95", "p99")},
        "wait": {"p95": [point.wait_p95 for point in series]},
    }


def throughput_data(points: list[Any]) -> dict[str, Any]:
    """The overview's throughput chart: succeeded and failed per minute, oldest first."""
    return {
        "times": _times([point.start for point in points]),
        "succeeded": [point.succeeded for point in points],
        "failed": [point.failed for point in points],
    }


# --- rendering --------------------------------------------------------------------------------


def _url(name: str, **params: str) -> str:
    query = QueryDict(mutable=True)
    query.update({key: value for key, value in params.items() if value})
    return f"{reverse(name)}?{query.urlencode()}" if query else reverse(name)


def _with(query: QueryDict, **changes: str | None) -> str:
    """`query` with `changes` (None drops the parameter), as a link to the same page."""
    query = query.copy()
    for key, value in changes.items():
        if value is None:
            query.pop(key, None)
        else:
            query[key] = value
    return f"?{query.urlencode()}"


def _render(
    request: HttpRequest, template: str, title: str, broker: Broker | None, status: int = 200, **context: Any
) -> HttpResponse:
    page = {
        **admin.site.each_context(request),
        "title": title,
        "backend_name": "Task analytics",
        "data_source": "the event monitor's rollups (TaskRollup, FailureRollup) and django-celery-results",
        "backend": broker,
        "backends": [
            {"alias": alias, "url": _with(request.GET, backend=alias), "current": broker and alias == broker.alias}
            for alias in configured_brokers()
        ],
        "task_data_hidden": not may_see_task_data(request.user),
        "data_hidden_note": DATA_HIDDEN,
        "may_bulk_retry": may_control(request.user, "retry_task"),
        **context,
    }
    return render(request, template, page, status=status)


def _bad_request(request: HttpRequest, title: str, error: BadParameter) -> HttpResponse:
    return _render(
        request,
        "celery_panel/analytics_error.html",
        title,
        None,
        status=400,
        error=str(error),
        field=error.name,
        default_url=reverse("celery_panel:analytics"),
    )


def _reason(exc: DatabaseError) -> str:
    """Why the database did not answer, without a broker's or a key=value secret."""
    return mask_repr(redact(f"{type(exc).__name__}: {exc}"))


def _unavailable(request: HttpRequest, title: str, broker: Broker, exc: DatabaseError) -> HttpResponse:
    """The database did not answer: the page says so (like the dashboard's parts not read)."""
    return _render(
        request,
        "celery_panel/analytics_error.html",
        title,
        broker,
        status=503,
        unavailable=_reason(exc),
        default_url=reverse("celery_panel:analytics"),
    )


def _windows(request: HttpRequest, current: str) -> list[dict[str, Any]]:
    return [
        {"key": key, "label": label, "url": _with(request.GET, window=key), "current": key == current}
        for key, label in WINDOW_LABELS.items()
    ]


def _headers(query: QueryDict, sort: str) -> SortedTable:
    """The table head for `sort` with the panel's sort links (_sortable_headers.html): one key at a
    time in ?sort=, the first click sorts figures largest first; removing it goes back to -runs."""
    current, descending = sort.lstrip("-"), sort.startswith("-")
    headers = []
    for column in COLUMNS:
        is_sorted = column.key == current
        if is_sorted:
            primary = column.key if descending else f"-{column.key}"
        else:
            primary = f"-{column.key}" if column.first_descending else column.key
        headers.append(
            Header(
                column.label,
                column.help,
                sortable=True,
                sorted=is_sorted,
                ascending=is_sorted and not descending,
                sort_priority=1 if is_sorted else 0,
                url_primary=_with(query, sort=primary) + "#analytics",
                url_toggle=_with(query, sort=primary) + "#analytics",
                url_remove=_with(query, sort=None) + "#analytics",
            )
        )
    return SortedTable(param="sort", headers=headers, rows=[])


def _visible(request: HttpRequest, groups: list[Any]) -> list[Any]:
    """Failure groups without their exception text and traceback for a user who may not see task data."""
    if may_see_task_data(request.user):
        return groups
    return [dataclasses.replace(group, latest_exception="", latest_traceback="") for group in groups]


def _failure_links(broker: Broker, groups: list[Any]) -> list[dict[str, Any]]:
    """Each group with the links to its stored results: the tasks page filtered by state FAILURE
    and task name (that page has no exception type filter), and the latest failed task's page."""
    return [
        {
            "group": group,
            "results_url": _url("celery_panel:tasks", filter="failure", q=group.task_name),
            "task_url": reverse("celery_panel:task_detail", args=[group.latest_task_id])
            if group.latest_task_id
            else "",
            "analytics_url": _url(
                "celery_panel:analytics_task", task_name=group.task_name, backend=_backend_param(broker)
            ),
            "retry_url": _url(
                "celery_panel:bulk",
                task_name=group.task_name,
                state="FAILURE",
                exception_type=group.exception_type,
                backend=_backend_param(broker),
                action="retry",
            ),
        }
        for group in groups
    ]


def _backend_param(broker: Broker) -> str:
    """?backend= for links: empty for the main backend."""
    return "" if broker.alias == DEFAULT_ALIAS else broker.alias


# --- views ------------------------------------------------------------------------------------


def analytics(request: HttpRequest) -> HttpResponse:
    """One row per task name over the window, sorted as ?sort= says."""
    title = "Task analytics"
    try:
        broker, window, sort = _broker(request.GET), _window(request.GET), _sort(request.GET)
    except BadParameter as exc:
        return _bad_request(request, title, exc)
    try:
        table = read_model.task_table(broker.alias, window, sort)
    except DatabaseError as exc:
        return _unavailable(request, title, broker, exc)
    backend = _backend_param(broker)
    rows = [
        TableRow(
            stats=stats,
            url=_url("celery_panel:analytics_task", task_name=stats.task_name, window=window, backend=backend),
            runs_path=spark_path(stats.runs_series),
            p95_path=spark_path(stats.p95_series),
        )
        for stats in table.rows
    ]
    return _render(
        request,
        "celery_panel/analytics.html",
        title,
        broker,
        table=table,
        point_words=duration_words(table.point_seconds),
        headers=_headers(request.GET, sort),
        rows=rows,
        window=window,
        sort=sort,
        window_label=WINDOW_LABELS[window],
        windows=_windows(request, window),
        failures_url=_url("celery_panel:analytics_failures", window=window, backend=backend),
        spark_width=SPARK_WIDTH,
        spark_height=SPARK_HEIGHT,
        is_nav_sidebar_enabled=False,  # nine columns with sparklines need the page's width
    )


def analytics_task(request: HttpRequest) -> HttpResponse:
    """One task name over the window: charts, counts, slowest recent runs, failures grouped."""
    try:
        broker, window, name = _broker(request.GET), _window(request.GET), _task_name(request.GET, required=True)
    except BadParameter as exc:
        return _bad_request(request, "Task analytics", exc)
    title = f"Task {name}"
    context: dict[str, Any] = {
        "task_name": name,
        "window": window,
        "window_label": WINDOW_LABELS[window],
        "windows": _windows(request, window),
        "table_url": _url("celery_panel:analytics", window=window, backend=_backend_param(broker)),
    }
    try:
        detail = read_model.task_detail(broker.alias, name, window)
    except LookupError:
        return _render(request, "celery_panel/analytics_task.html", title, broker, status=404, missing=True, **context)
    except DatabaseError as exc:
        return _unavailable(request, title, broker, exc)
    return _render(
        request,
        "celery_panel/analytics_task.html",
        title,
        broker,
        detail=detail,
        point_words=duration_words(detail.point_seconds),
        stats=detail.stats,
        figures=Figures(detail.stats),
        runtime_sum=seconds_text(detail.stats.runtime_sum),
        slowest=[SlowRunRow(run, reverse("celery_panel:task_detail", args=[run.task_id])) for run in detail.slowest],
        chart=chart_data(detail),
        failures=_failure_links(broker, _visible(request, detail.failures)),
        failures_url=_url(
            "celery_panel:analytics_failures", window=window, task_name=name, backend=_backend_param(broker)
        ),
        **context,
    )


def analytics_failures(request: HttpRequest) -> HttpResponse:
    """Failures grouped by task name and exception type over the window, most failures first."""
    title = "Failures grouped"
    try:
        broker, window, name = _broker(request.GET), _window(request.GET), _task_name(request.GET, required=False)
    except BadParameter as exc:
        return _bad_request(request, title, exc)
    try:
        groups = read_model.failure_groups(broker.alias, window, task_name=name or None)
    except DatabaseError as exc:
        return _unavailable(request, title, broker, exc)
    return _render(
        request,
        "celery_panel/analytics_failures.html",
        title,
        broker,
        failures=_failure_links(broker, _visible(request, groups)),
        task_name=name,
        window=window,
        window_label=WINDOW_LABELS[window],
        windows=_windows(request, window),
        table_url=_url("celery_panel:analytics", window=window, backend=_backend_param(broker)),
        all_url=_with(request.GET, task_name=None),
    )


def overview_throughput(broker_alias: str) -> tuple[dict[str, Any] | None, str]:
    """The overview's throughput chart data for the last hour, or None and why it was not read."""
    try:
        return throughput_data(read_model.throughput(broker_alias, minutes=60)), ""
    except DatabaseError as exc:
        return None, _reason(exc)
