/* The Celery panel of the System Settings page: loads the status from the API and purges the queue. */
(function ($) {
  "use strict";

  var $panel = $("#celery-panel");
  if (!$panel.length) { return; }
  var statusUrl = $panel.data("status-url");
  var purgeUrl = $panel.data("purge-url");
  var refreshSeconds = parseInt($panel.data("refresh-seconds"), 10) || 0;
  var csrfToken = $panel.find("input[name=csrfmiddlewaretoken]").val();
  var $purge = $("#celery-purge");
  var $refresh = $("#celery-refresh");
  var loading = false;
  var lastStatus = null;

  var UNITS = [["day", 86400], ["hour", 3600], ["minute", 60], ["second", 1]];

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

  function badge($el, ok, okText, badText) {
    $el.text(ok ? okText : badText).toggleClass("ok", ok).toggleClass("bad", !ok);
  }

  function errorText(xhr, what) {
    var detail = xhr.responseJSON && (xhr.responseJSON.detail || JSON.stringify(xhr.responseJSON));
    if (!xhr.status) { return what + " failed: the server did not answer."; }
    return what + " failed (HTTP " + xhr.status + ")" + (detail ? ": " + detail : ".");
  }

  function showError(message) {
    $("#celery-error").text(message).prop("hidden", !message);
  }

  function setLoading(on) {
    loading = on;
    $("#celery-spinner").prop("hidden", !on);
    $refresh.prop("disabled", on);
    updatePurgeButton();
  }

  function updatePurgeButton() {
    $purge.prop("disabled", loading || !lastStatus || !lastStatus.broker_status);
  }

  function render(status) {
    lastStatus = status;
    badge($("#celery-broker-badge"), status.broker_status, "reachable", "unreachable");
    badge($("#celery-worker-badge"), status.worker_status, "running", "none answering");
    $("#celery-broker-url").text(status.broker_url);
    $("#celery-workers").text(status.workers + " answering");
    $("#celery-worker-names").text(status.worker_names.join(", "));
    $("#celery-queue-name").text(status.queue);
    $("#celery-queue-length").text(status.queue_length === null ? "unknown" : status.queue_length);
    $("#celery-task-time-limit").text(humanSeconds(status.task_time_limit));
    $("#celery-task-soft-time-limit").text(humanSeconds(status.task_soft_time_limit));
    $("#celery-task-default-expires").text(humanSeconds(status.task_default_expires));
    showError(status.broker_status ? "" : "Celery broker unreachable: " + (status.error || "no answer"));
  }

  function loadStatus() {
    if (loading) { return $.Deferred().resolve().promise(); }
    setLoading(true);
    return $.ajax({ url: statusUrl, dataType: "json", cache: false })
      .done(render)
      .fail(function (xhr) {
        lastStatus = null;
        showError(errorText(xhr, "Loading the Celery status"));
      })
      .always(function () { setLoading(false); });
  }

  function purge() {
    if (!lastStatus) { return; }
    var queue = lastStatus.queue;
    var question = "Purge queue \"" + queue + "\"? This removes " + lastStatus.queue_length +
      " waiting task(s) and cannot be undone.";
    if (!window.confirm(question)) { return; }
    $purge.prop("disabled", true);
    $.ajax({
      url: purgeUrl,
      method: "POST",
      contentType: "application/json",
      data: JSON.stringify({ queue: queue }),
      dataType: "json",
      headers: { "X-CSRFToken": csrfToken }
    })
      .done(function (result) {
        $("#celery-purge-result").text("Purged " + result.purged + " task(s) from \"" + result.queue + "\".")
          .prop("hidden", false);
        showError("");
        loadStatus();
      })
      .fail(function (xhr) {
        showError(errorText(xhr, "Purge"));
        updatePurgeButton();
      });
  }

  $refresh.on("click", loadStatus);
  $purge.on("click", purge);
  loadStatus();
  if (refreshSeconds > 0) {
    window.setInterval(function () { if (!document.hidden) { loadStatus(); } }, refreshSeconds * 1000);
  }
}(window.jQuery));
