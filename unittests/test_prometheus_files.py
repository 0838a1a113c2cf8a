"""deploy/prometheus/alerts.yml passes `promtool check rules` and every series it and
deploy/grafana/dojo-celery.json query exists in a live scrape of /metrics (rows written here for
the task families, a real Redis for the status families), which `promtool check metrics` accepts."""

import json
import re
import subprocess

import pytest
import yaml
from django.utils import timezone

from dojo.models import MonitorHeartbeat, TaskRollup
from unittests.conftest import ROOT, require
from unittests.ops.observe.test_metrics import assert_promtool_accepts, samples, scrape
from unittests.ops.observe.test_task_metrics import rows  # noqa: F401 - the fixture

RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "dojo-celery.json"
# A series name in PromQL: dojo's own families (names only, not functions, labels or variables).
SERIES = re.compile(r"\b((?:dojo_)?celery_[a-z_]+)\b")


def series_of(expression: str) -> set[str]:
    names = set(SERIES.findall(re.sub(r'"[^"]*"', '""', expression)))  # not inside label values
    return names


def dashboard_expressions() -> list[str]:
    board = json.loads(DASHBOARD.read_text())
    expressions = [target["expr"] for panel in board["panels"] for target in panel["targets"]]
    expressions += [variable["definition"] for variable in board["templating"]["list"] if "definition" in variable]
    return expressions


def rule_expressions() -> list[str]:
    return [rule["expr"] for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


def test_promtool_checks_the_rules():
    result = subprocess.run([require("promtool"), "check", "rules", str(RULES)], capture_output=True, timeout=30)
    output = (result.stdout + result.stderr).decode()
    assert result.returncode == 0, output
    assert "SUCCESS" in output and "8 rules found" in output, output


def test_every_series_the_dashboard_and_the_rules_query_is_in_a_live_scrape(redis_only, rows, api):  # noqa: F811
    """With a live monitor and a task whose failure rate is up (rows written here), as in production."""
    now = timezone.now()
    MonitorHeartbeat.objects.create(
        backend="default", hostname="mon", pid=1, started_at=now, last_beat_at=now, broker_connected=True
    )
    for period in (TaskRollup.Period.MINUTE, TaskRollup.Period.HOUR):
        start = now.replace(minute=0 if period == TaskRollup.Period.HOUR else now.minute, second=0, microsecond=0)
        TaskRollup.objects.create(
            period=period, bucket_start=start, backend="default", task_name="app.report", succeeded=5, failed=5
        )
    body = scrape(api)
    assert_promtool_accepts(body)
    scraped = {name for name, _labels in samples(body)}
    # a histogram's family name is queried through its _bucket/_sum/_count series
    scraped |= {re.sub(r"_(bucket|sum|count)$", "", name) for name in scraped}
    dashboard = set().union(*map(series_of, dashboard_expressions()))
    rules = set().union(*map(series_of, rule_expressions()))
    assert {"celery_tasks_total", "celery_task_runtime_seconds_bucket", "celery_task_wait_seconds_bucket"} <= dashboard
    assert {"dojo_celery_lost_tasks", "dojo_celery_beat_down", "dojo_celery_task_failure_rate_up"} <= rules
    assert dashboard - scraped == set()
    assert rules - scraped == set()


@pytest.mark.parametrize("quantile", ["0.5", "0.95", "0.99"])
def test_the_dashboard_draws_runtime_quantiles_from_the_histogram(quantile):
    wanted = f"histogram_quantile({quantile}, sum by (le, task) (rate(celery_task_runtime_seconds_bucket"
    assert any(expression.startswith(wanted) for expression in dashboard_expressions())
