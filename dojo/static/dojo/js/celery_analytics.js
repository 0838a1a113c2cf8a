/* The task analytics charts: each div[data-analytics-chart] names the json_script element holding
 * the read model's series (dojo.celery_panel.analytics.chart_data / throughput_data) and which
 * chart to draw from it; DojoCeleryChart.lines draws it. */
(function (window) {
  "use strict";

  var chart = window.DojoCeleryChart;

  /* A runtime tick: ms below a second. */
  function seconds(v) {
    if (v === 0) { return "0"; }
    if (v < 1) { return +(v * 1000).toPrecision(3) + " ms"; }
    return +v.toPrecision(3) + " s";
  }

  function line(key, cls, label, values) {
    return { key: key, cls: "series-" + cls, label: label, values: values };
  }

  var CHARTS = {
    runs: function (data) {
      return {
        title: "Runs by outcome", left: "runs per point", integer: true,
        series: [
          line("succeeded", "succeeded", "Succeeded", data.runs.succeeded),
          line("failed", "failed", "Failed", data.runs.failed),
          line("retried", "retried", "Retried", data.runs.retried),
          line("revoked", "revoked", "Revoked", data.runs.revoked)
        ]
      };
    },
    runtime: function (data) {
      return {
        title: "Runtime percentiles", left: "runtime", format: seconds,
        series: [
          line("p50", "p50", "p50", data.runtime.p50),
          line("p95", "p95", "p95", data.runtime.p95),
          line("p99", "p99", "p99", data.runtime.p99)
        ]
      };
    },
    wait: function (data) {
      return {
        title: "Wait (received to started), p95", left: "wait", format: seconds,
        series: [line("wait_p95", "wait", "p95 wait", data.wait.p95)]
      };
    },
    throughput: function (data) {
      return {
        title: "Tasks per minute", left: "tasks per minute", integer: true,
        series: [
          line("succeeded", "succeeded", "Succeeded", data.succeeded),
          line("failed", "failed", "Failed", data.failed)
        ]
      };
    }
  };

  function drawAll() {
    var boxes = window.document.querySelectorAll("[data-analytics-chart]");
    Array.prototype.forEach.call(boxes, function (box) {
      var source = window.document.getElementById(box.getAttribute("data-source"));
      if (!source) { return; }
      var data = JSON.parse(source.textContent);
      var options = CHARTS[box.getAttribute("data-analytics-chart")](data);
      options.times = data.times.map(chart.parseTime);
      options.start = data.since ? chart.parseTime(data.since) : options.times[0];
      options.end = data.until ? chart.parseTime(data.until) : options.times[options.times.length - 1];
      options.empty = "No data in this window";
      chart.lines(box, options);
    });
  }

  if (window.document.readyState === "loading") {
    window.document.addEventListener("DOMContentLoaded", drawAll);
  } else {
    drawAll();
  }
}(window));
