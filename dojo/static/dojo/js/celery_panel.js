/* The Celery panel of the System Settings page: the live status (queues, workers and their
 * running tasks, alerts), auto refresh, the queue purge and the history chart.
 *
 * Everything that comes from the API is inserted with .text() or as an attribute value,
 * never as markup: task arguments may hold anything.
 */
(function ($, window) {
  "use strict";

  var $panel = $("#celery-panel");
  if (!$panel.length) { return; }
  var document = window.document;
  var statusUrl = $panel.data("status-url");
  var purgeUrl = $panel.data("purge-url");
  var historyUrl = $panel.data("history-url");
  var defaultQueue = String($panel.data("default-queue"));
  var csrfToken = $panel.find("input[name=csrfmiddlewaretoken]").val();
  var $purge = $("#celery-purge");
  var $refresh = $("#celery-refresh");
  var $autoRefresh = $("#celery-auto-refresh");
  var $historyRange = $("#celery-history-range");

  var AUTO_CHOICES = [0, 2, 5, 15, 60];
  var STORAGE_KEY = "dojo.celery.autoRefreshSeconds";
  var HISTORY_EVERY_MS = 60000;  // auto refresh reloads the chart at most this often
  var REQUEST_TIMEOUT_MS = 30000;
  var ARGS_MAX = 80;
  // [name, seconds] pairs from dojo.ops.durations.UNITS, put on the page by the view.
  var UNITS = JSON.parse(document.getElementById("duration-units").textContent);

  var loading = false;
  var pendingFresh = null;  // null: nothing queued; else whether the queued status read must be fresh
  var timer = null;
  var autoSeconds = 0;
  var lastStatus = null;
  var lastReadAt = null;
  var purging = false;
  var errors = { status: "", purge: "", history: "" };
  var historyXhr = null;
  var historyRequestedAt = 0;

  /* 43200 -> "12 hours", 90 -> "1 minute 30 seconds", null or 0 -> "off". */
  function humanSeconds(seconds) {
    if (!seconds) { return "off"; }
    var parts = [];
    var rest = seconds;
    $.each(UNITS, function (_i, unit) {
      var count = Math.floor(rest / unit[1]);
      if (count) {
        parts.push(count + " " + unit[0] + (count === 1 ? "" : "s"));
        rest -= count * unit[1];
      }
    });
    return parts.join(" ");
  }

  /* How long a task has been running: "3.2 s", "4 min", "2 h 5 min", "3 d 4 h". */
  function runningTime(seconds) {
    if (seconds < 60) { return seconds.toFixed(1) + " s"; }
    var minutes = Math.floor(seconds / 60);
    if (minutes < 60) { return minutes + " min"; }
    var hours = Math.floor(minutes / 60);
    if (hours < 24) { return hours + " h" + (minutes % 60 ? " " + (minutes % 60) + " min" : ""); }
    return Math.floor(hours / 24) + " d" + (hours % 24 ? " " + (hours % 24) + " h" : "");
  }

  function nowSeconds() { return Date.now() / 1000; }

  function truncate(text, max) {
    return text.length > max ? text.slice(0, max - 1) + "…" : text;
  }

  function argsText(task) {
    var text = typeof task.args === "string" ? task.args : JSON.stringify(task.args === undefined ? null : task.args);
    if (task.kwargs && typeof task.kwargs === "object" && !$.isEmptyObject(task.kwargs)) {
      text += " " + JSON.stringify(task.kwargs);
    } else if (typeof task.kwargs === "string" && task.kwargs && task.kwargs !== "{}") {
      text += " " + task.kwargs;
    }
    return text;
  }

  function badge($el, ok, okText, badText) {
    $el.text(ok ? okText : badText).toggleClass("ok", ok).toggleClass("bad", !ok);
  }

  function errorText(xhr, textStatus, what) {
    if (textStatus === "timeout") { return what + " failed: no answer within " + REQUEST_TIMEOUT_MS / 1000 + " s."; }
    if (!xhr.status) { return what + " failed: the server did not answer."; }
    if (textStatus === "parsererror") { return what + " failed: the answer (HTTP " + xhr.status + ") is not JSON."; }
    var detail = xhr.responseJSON && (xhr.responseJSON.detail || JSON.stringify(xhr.responseJSON));
    return what + " failed (HTTP " + xhr.status + ")" + (detail ? ": " + detail : ".");
  }

  /* One message per source (status, purge, history), so one succeeding does not hide another's failure. */
  function setError(source, message) {
    errors[source] = message || "";
    var $box = $("#celery-error").empty();
    var shown = false;
    $.each(["status", "purge", "history"], function (_i, key) {
      if (errors[key]) {
        $box.append($("<div>").addClass("error-" + key).text(errors[key]));
        shown = true;
      }
    });
    $box.prop("hidden", !shown);
  }

  function setLoading(on) {
    loading = on;
    $("#celery-spinner").prop("hidden", !on);
  }

  function updatePurgeButton() {
    $purge.prop("disabled", purging || !lastStatus || !lastStatus.broker_status);
  }

  /* ---- rendering the status document ---- */

  function renderQueues(status) {
    var $body = $("#celery-queues tbody").empty();
    var names = Object.keys(status.queues || {});
    if (!names.length) {
      $body.append($("<tr>").append($("<td>").attr("colspan", 3).addClass("muted")
        .text(status.broker_status ? "No queue configured" : "unknown: the broker did not answer")));
      return;
    }
    $.each(names, function (_i, name) {
      var queue = status.queues[name];
      var $name = $("<td>").append($("<code>").text(name));
      if (name === status.queue) { $name.append(" ", $("<span>").addClass("muted").text("(default)")); }
      $body.append($("<tr>").attr("data-queue", name).append(
        $name,
        $("<td>").addClass("num queue-ready").text(queue.ready === null ? "unknown" : queue.ready),
        $("<td>").addClass("num queue-consumers").text(queue.consumers === null ? "unknown" : queue.consumers)
      ));
    });
  }

  function renderAlerts(alerts) {
    var $list = $("#celery-alerts").empty();
    if (!alerts.length) {
      $list.append($("<li>").addClass("muted no-alerts").text("No alerts"));
      return;
    }
    $.each(alerts, function (_i, alert) {
      var severity = alert.severity === "critical" ? "critical" : "warning";
      $list.append($("<li>").attr("data-code", alert.code).append(
        $("<span>").addClass("badge severity " + severity).text(alert.severity),
        " ",
        $("<span>").addClass("alert-message").text(alert.message)
      ));
    });
  }

  function renderTasks(status) {
    var $body = $("#celery-active tbody").empty();
    var active = (status.queue_details && status.queue_details.active) || {};
    var stats = status.worker_stats || {};
    if (!status.worker_names.length) {
      $body.append($("<tr>").append($("<td>").attr("colspan", 7).addClass("muted").text("No worker answered")));
      return;
    }
    $.each(status.worker_names, function (_i, worker) {
      var tasks = active[worker] || [];
      var pool = (stats[worker] && stats[worker].pool) || {};
      var concurrency = pool["max-concurrency"];
      var span = Math.max(1, tasks.length);
      var $first = $("<tr>").addClass("worker-first").attr("data-worker", worker).append(
        $("<td>").addClass("worker").attr("rowspan", span).text(worker),
        $("<td>").addClass("num concurrency").attr("rowspan", span)
          .text(concurrency === null || concurrency === undefined ? "?" : concurrency),
        $("<td>").addClass("num active-count").attr("rowspan", span).text(tasks.length)
          .toggleClass("saturated", !!concurrency && tasks.length >= concurrency)
      );
      if (!tasks.length) {
        $first.append($("<td>").attr("colspan", 4).addClass("muted").text("idle"));
        $body.append($first);
        return;
      }
      $.each(tasks, function (j, task) {
        var $row = j === 0 ? $first : $("<tr>").attr("data-worker", worker);
        var args = argsText(task);
        $row.addClass("task").attr("data-task-id", task.id).append(
          $("<td>").addClass("task-name").text(task.name || "?"),
          $("<td>").append($("<code>").addClass("task-id").text(task.id)),
          $("<td>").addClass("num running").data("start", task.time_start),
          $("<td>").addClass("args").append(
            $("<code>").addClass("task-args").attr("title", args).text(truncate(args, ARGS_MAX))
          )
        );
        $body.append($row);
      });
    });
    tick();
  }

  /* Every second: "read N s ago" and the running times, without asking the server anything. */
  function tick() {
    var now = nowSeconds();
    if (lastReadAt !== null) {
      var ago = Math.max(0, Math.round(now - lastReadAt));
      $("#celery-read-ago").text(ago + " s ago").attr("title", new Date(lastReadAt * 1000).toLocaleString());
    }
    $("#celery-active td.running").each(function () {
      var start = $(this).data("start");
      $(this).text(typeof start === "number" ? runningTime(Math.max(0, now - start)) : "not started");
    });
  }

  function renderDisabled(status) {
    lastStatus = null;
    $("#celery-broker-badge, #celery-worker-badge").text("disabled").removeClass("ok bad");
    $("#celery-queue-length").text("unknown");
    setError("status", status.message || "Celery is not enabled.");
  }

  function render(status) {
    if (status.enabled === false) { renderDisabled(status); return; }
    lastStatus = status;
    lastReadAt = status.read_at;
    badge($("#celery-broker-badge"), status.broker_status, "reachable", "unreachable");
    badge($("#celery-worker-badge"), status.worker_status, "running", "none answering");
    $("#celery-broker-url").text(status.broker_url);
    $("#celery-workers").text(status.workers + " answering");
    $("#celery-worker-names").text(status.worker_names.join(", "));
    $("#celery-queue-name").text(status.queue);
    $("#celery-queue-length").text(status.queue_length === null ? "unknown" : status.queue_length);
    $("#celery-active-total").text(status.active_tasks);
    $("#celery-reserved-total").text(status.reserved_tasks);
    $("#celery-scheduled-total").text(status.scheduled_tasks);
    $("#celery-task-time-limit").text(humanSeconds(status.task_time_limit));
    $("#celery-task-soft-time-limit").text(humanSeconds(status.task_soft_time_limit));
    $("#celery-task-default-expires").text(humanSeconds(status.task_default_expires));
    renderQueues(status);
    renderAlerts(status.alerts || []);
    renderTasks(status);
    setError("status", status.broker_status ? "" : "Celery broker unreachable: " + (status.error || "no answer"));
    tick();
  }

  /* ---- loading: one status request at a time ---- */

  function clearTimer() {
    if (timer !== null) { window.clearTimeout(timer); timer = null; }
  }

  function scheduleNext() {
    clearTimer();
    if (autoSeconds > 0 && !document.hidden) {
      timer = window.setTimeout(function () {
        timer = null;
        if (!document.hidden) { loadStatus(false); }
      }, autoSeconds * 1000);
    }
  }

  /* The cached status, or a fresh read (`fresh`); while a request is out the call is queued, not sent. */
  function loadStatus(fresh) {
    if (loading) {
      pendingFresh = !!pendingFresh || !!fresh;
      return;
    }
    clearTimer();
    setLoading(true);
    $.ajax({
      url: statusUrl,
      data: fresh ? { refresh: 1 } : {},
      dataType: "json",
      cache: false,
      timeout: REQUEST_TIMEOUT_MS
    })
      .done(function (status) {
        render(status);
        maybeLoadHistory();
      })
      .fail(function (xhr, textStatus) {
        lastStatus = null;
        setError("status", errorText(xhr, textStatus, "Loading the Celery status"));
      })
      .always(function () {
        setLoading(false);
        updatePurgeButton();
        if (pendingFresh !== null) {
          var queuedFresh = pendingFresh;
          pendingFresh = null;
          loadStatus(queuedFresh);
        } else {
          scheduleNext();
        }
      });
  }

  /* ---- auto refresh ---- */

  function storedChoice() {
    try {
      var stored = window.localStorage.getItem(STORAGE_KEY);
      return stored === null ? null : parseInt(stored, 10);
    } catch (_e) {
      return null;  // storage blocked: fall back to the site setting
    }
  }

  function initialAutoSeconds() {
    var stored = storedChoice();
    if (stored !== null && AUTO_CHOICES.indexOf(stored) >= 0) { return stored; }
    var configured = parseInt($panel.data("refresh-seconds"), 10) || 0;
    return AUTO_CHOICES.indexOf(configured) >= 0 ? configured : 0;
  }

  function setAutoSeconds(seconds, remember) {
    autoSeconds = AUTO_CHOICES.indexOf(seconds) >= 0 ? seconds : 0;
    $autoRefresh.val(String(autoSeconds));
    if (remember) {
      try {
        window.localStorage.setItem(STORAGE_KEY, String(autoSeconds));
      } catch (_e) { /* not remembered: the choice still applies to this page */ }
    }
    if (!loading) { scheduleNext(); }
  }

  function onVisibilityChange() {
    if (document.hidden) {
      clearTimer();
    } else if (autoSeconds > 0) {
      loadStatus(false);  // catch up at once, then the timer takes over again
    }
  }

  /* ---- history chart ---- */

  function historyRangeSeconds() {
    return parseInt($historyRange.val(), 10) || 3600;
  }

  function loadHistory() {
    if (historyXhr) { historyXhr.abort(); }
    historyRequestedAt = Date.now();
    var end = Date.now();
    var start = end - historyRangeSeconds() * 1000;
    var xhr = $.ajax({
      url: historyUrl,
      data: { since: new Date(start).toISOString() },
      dataType: "json",
      cache: false,
      timeout: REQUEST_TIMEOUT_MS
    });
    historyXhr = xhr;
    xhr
      .done(function (history) {
        setError("history", "");
        var queue = lastStatus ? lastStatus.queue : defaultQueue;
        window.DojoCeleryChart.draw($("#celery-chart")[0], history.points || [], {
          start: window.DojoCeleryChart.parseTime(history.since) || start,
          end: Math.max(end, Date.now()),
          queue: queue
        });
      })
      .fail(function (failed, textStatus) {
        if (textStatus === "abort") { return; }  // replaced by a newer request
        setError("history", errorText(failed, textStatus, "Loading the Celery history"));
        var $chart = $("#celery-chart");
        if (!$chart.find("svg").length) {  // an older chart stays; else say why there is none
          $chart.empty().append($("<p>").addClass("muted").text("The history could not be loaded."));
        }
      })
      .always(function () {
        if (historyXhr === xhr) { historyXhr = null; }
      });
  }

  function maybeLoadHistory() {
    if (historyXhr || document.hidden) { return; }
    if (Date.now() - historyRequestedAt >= HISTORY_EVERY_MS) { loadHistory(); }
  }

  /* ---- purge ---- */

  function purge() {
    if (!lastStatus || purging) { return; }
    var queue = lastStatus.queue;
    var question = "Purge queue \"" + queue + "\"? This removes " + lastStatus.queue_length +
      " waiting task(s) and cannot be undone.";
    if (!window.confirm(question)) { return; }
    purging = true;
    updatePurgeButton();
    setError("purge", "");
    $("#celery-purge-result").prop("hidden", true);
    $.ajax({
      url: purgeUrl,
      method: "POST",
      contentType: "application/json",
      data: JSON.stringify({ queue: queue }),
      dataType: "json",
      headers: { "X-CSRFToken": csrfToken },
      timeout: REQUEST_TIMEOUT_MS
    })
      .done(function (result) {
        $("#celery-purge-result").text("Purged " + result.purged + " task(s) from \"" + result.queue + "\".")
          .prop("hidden", false);
      })
      .fail(function (xhr, textStatus) {
        setError("purge", errorText(xhr, textStatus, "Purge"));
      })
      .always(function () {
        purging = false;
        updatePurgeButton();
        loadStatus(true);  // what the queue holds now, succeeded or not
      });
  }

  $refresh.on("click", function () { loadStatus(true); });
  $purge.on("click", purge);
  $autoRefresh.on("change", function () { setAutoSeconds(parseInt($autoRefresh.val(), 10) || 0, true); });
  $historyRange.on("change", loadHistory);
  $(document).on("visibilitychange", onVisibilityChange);
  window.setInterval(tick, 1000);

  setAutoSeconds(initialAutoSeconds(), false);
  loadStatus(false);
  loadHistory();
}(window.jQuery, window));
